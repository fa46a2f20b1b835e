# The two commands of the README:  `make demo` (set up + run the main job) and `make test` (set up + tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
MOTIONTOK_DATA ?= $(abspath ../shared/data/lafan1_h1)
export MOTIONTOK_DATA
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_PIP_ARGS ?=
DEMO_CLIP ?= dance2_subject2
DEMO_OUT ?= outputs

.PHONY: setup demo demo-physics demo-ik test lint bench data train clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first (CPU build 2.13.0), so no dependency pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[dev,text]"
	touch $@

setup: $(BIN)/.installed

# Main job: type a description and the H1 moves that way. The shipped high-level policy plans 64 tokens per window
# from the text, the motion so far and a COM goal; the shipped tokenizer decodes them; the motion is played back by
# IK (--kinematic: the shipped low-level policy does not keep the robot up yet, see README "Known limits").
# Writes outputs/demo.mp4 and prints the metrics as JSON.
DEMO_TEXT ?= dance
demo: setup
	@mkdir -p $(DEMO_OUT)
	@echo "run_policy.py --kinematic: IK playback of the planned motion (the physics mode's low-level policy falls; see README)"
	MUJOCO_GL=egl $(BIN)/python scripts/run_policy.py --text "$(DEMO_TEXT)" --kinematic --seconds 20 \
		--video $(DEMO_OUT)/demo.mp4 --json

# The same in physics: the low-level policy executes the tokens in MuJoCo at 100 Hz (stops when the robot falls).
demo-physics: setup
	@mkdir -p $(DEMO_OUT)
	MUJOCO_GL=egl $(BIN)/python scripts/run_policy.py --text "walk forward" --seconds 10 \
		--video $(DEMO_OUT)/demo_physics.mp4 --json

# The tokenizer alone: a validation clip encoded to tokens, decoded, played back on the H1 by inverse kinematics,
# rendered side by side with the reference (outputs/demo_ik.mp4), metrics as JSON.
demo-ik: setup
	@mkdir -p $(DEMO_OUT)
	MUJOCO_GL=egl $(BIN)/python scripts/eval_ik_playback.py --data $(MOTIONTOK_DATA) --clips $(DEMO_CLIP) \
		--checkpoint assets/checkpoints/tokenizer_h1 --video $(DEMO_OUT)/demo_ik.mp4 --json

test: setup
	MUJOCO_GL=egl $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/bench_features_ik.py --data $(MOTIONTOK_DATA)
	$(BIN)/python bench/bench_sampling.py
	$(BIN)/python bench/bench_daps_step.py
	$(BIN)/python bench/bench_env.py --data $(MOTIONTOK_DATA)
	$(BIN)/python bench/bench_run_policy.py

data: setup
	$(BIN)/python scripts/prepare_lafan.py --csv-dir $(MOTIONTOK_DATA) --out data/lafan1_h1.h5

train: data
	$(BIN)/python scripts/train_tokenizer.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
