"""Speed of run_policy.py's physics mode, one CPU thread, rendering off; prints one JSON object.

    python bench/bench_run_policy.py [--lowlevel DIR] [--highlevel DIR] [--seconds 20]

A run of the main job is a chain of windows; each costs one plan (the robot's recent motion is resampled for the
context, the high-level policy samples 64 tokens, the tokenizer decodes them) and its execution (the plan becomes a
reference, then the control steps: observation, low-level policy, 5 physics substeps, fall test).
Both are timed here on the shipped checkpoints, over the windows of the main command (``--seconds 20``: 19 windows),
set-up excluded as in ``run_policy.py`` (loading the checkpoints and compiling the scene happen before its clock
starts), the control steps continuing through falls (the simulation is put
back on the plan's start when the robot falls) so that the figure does not depend on how long the robot
stays up:

* ``plan_ms``: mean time of one plan; ``control_step_ms``: mean time of the execution per 100 Hz control step;
* ``realtime_factor``: simulated seconds per wall second of windows made of one plan and its control steps (the
  issue's target: at least 10).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from control.highlevel import load_highlevel
from control.physics import TokenExecutor
from control.runner import Goal, Planner
from control.text import TextEncoder
from motiontok import MotionTokenizer

DEFAULT_LOWLEVEL = Path(__file__).resolve().parent.parent / "assets" / "checkpoints" / "lowlevel_h1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lowlevel", type=Path, default=DEFAULT_LOWLEVEL, help="low-level policy directory")
    p.add_argument("--highlevel", type=Path, help="high-level policy directory (default: the shipped one)")
    p.add_argument("--seconds", type=float, default=20.0, help="simulated seconds timed (whole windows)")
    args = p.parse_args()
    torch.set_num_threads(1)
    tok = MotionTokenizer.load()
    ex = TokenExecutor(tok, args.lowlevel)
    policy, _ = load_highlevel(args.highlevel, tok)
    planner = Planner(tok, policy, TextEncoder().encode(["walk forward"])[0], Goal(0.5), seed=0)
    windows = math.ceil(args.seconds * tok.fps / tok.window)  # as run_policy.py
    plan_s = step_s = 0.0
    steps = 0
    for _ in range(windows):
        t0 = time.perf_counter()
        plan = planner.plan(*ex.recent())
        t1 = time.perf_counter()
        states, _ = ex.execute(plan, restart_on_fall=True)
        plan_s, step_s = plan_s + t1 - t0, step_s + time.perf_counter() - t1
        steps += len(states)
    window_steps = steps / windows
    wall_per_window = plan_s / windows + step_s / steps * window_steps
    print(
        json.dumps(
            {
                "windows": windows,
                "plan_ms": round(1000 * plan_s / windows, 2),
                "control_step_ms": round(1000 * step_s / steps, 3),
                "realtime_factor": round(window_steps / ex.fps / wall_per_window, 2),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )
    ex.close()


if __name__ == "__main__":
    main()
