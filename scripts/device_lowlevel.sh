#!/usr/bin/env bash
# One chunk of low-level training on the lent device machine (16 cores + GPU), ready to run as one `run` call.
#
#   run(command="INIT=runs/ll/checkpoints/latest bash scripts/device_lowlevel.sh",
#       carry=[".devkit", "runs/ll/checkpoints/latest"], timeout_s=600)
#
# Starts a new run from the policy INIT (weights, step count and chunk history; a fresh optimizer and fresh
# episodes, so NUM_ENVS may differ from INIT's), trains walk and run for MINUTES with NUM_ENVS robots over all
# cores (the PPO update on the GPU when there is one), then packs the run's latest checkpoint, TensorBoard logs and
# summary into $OUT/ll.tgz.* (15 MiB parts). Back here:
#
#   mkdir -p runs/ll_dev && cat <files_at>/ll.tgz.* | tar xzf - -C runs/ll_dev
#   python scripts/train_lowlevel.py out_dir=runs/ll_next run.init_from=runs/ll_dev/checkpoints/latest ...
#
# The checkpoint's history records the device's chunk (machine, steps, wall time). Environment variables:
# INIT (default assets/checkpoints/lowlevel_h1), MINUTES (8), NUM_ENVS (512), N_STEPS (32), BATCH (4096),
# THREADS (physics threads, 0 = all cores), DEVICE (cuda when available), OUT (default /tmp/out), EXTRA (more
# hydra overrides). ../shared/DEVICE.md says how to build .devkit; try it here first with
# `MINUTES=0.2 NUM_ENVS=8 BATCH=64 OUT=/tmp/out bash scripts/device_lowlevel.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

INIT=${INIT:-assets/checkpoints/lowlevel_h1}
MINUTES=${MINUTES:-8}
NUM_ENVS=${NUM_ENVS:-512}
N_STEPS=${N_STEPS:-32}
BATCH=${BATCH:-4096}
THREADS=${THREADS:-0}
OUT=${OUT:-/tmp/out}
EXTRA=${EXTRA:-}
RUN=$(mktemp -d)/ll

if [[ -f .devkit/setup.sh ]]; then
    . .devkit/setup.sh # wheels, PYTHONPATH and MOTIONTOK_DATA on the device
fi
PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
if [[ ! -f "$INIT/config.json" ]]; then
    echo "error: INIT=$INIT is not a policy checkpoint (no config.json); carry it with the call" >&2
    exit 2
fi
DEVICE=${DEVICE:-$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
mkdir -p "$OUT"

# shellcheck disable=SC2086  # EXTRA is a list of overrides
PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 $PY scripts/train_lowlevel.py out_dir="$RUN" 'themes=[walk,run]' \
    run.init_from="$INIT" run.num_envs="$NUM_ENVS" ppo.n_steps="$N_STEPS" ppo.batch_size="$BATCH" \
    env.num_threads="$THREADS" run.device="$DEVICE" run.max_minutes="$MINUTES" run.total_steps=1000000000 \
    run.ckpt_every=2000000 run.progress=false $EXTRA 2>&1 | tee "$OUT/log.txt"

tar czf - -C "$RUN" checkpoints/latest tb summary.json | split -b 15M - "$OUT/ll.tgz."
ls -l "$OUT"
