#!/usr/bin/env python
"""Type a description, and the H1 moves that way: text + a centre-of-mass goal -> the high-level policy plans 64
tokens per window from the robot's own recent motion -> the tokenizer decodes them -> the motion is played back.

Modes: without --kinematic the low-level policy executes the tokens in MuJoCo at 100 Hz (assets/checkpoints/
lowlevel_h1 or --lowlevel), each window planned from the robot's own recent motion, and the run stops if the robot
falls; --kinematic plays the planned motion back by inverse kinematics (no physics).

Examples:
  python scripts/run_policy.py --text "dance" --kinematic --seconds 20 --json
  python scripts/run_policy.py --text "walk forward" --speed 1.2 --turn-rate 0.3 --kinematic --video walk.mp4
  python scripts/run_policy.py --text "walk forward" --seconds 10 --json          # physics
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco; only used by --video

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_LOWLEVEL = Path(__file__).resolve().parent.parent / "assets" / "checkpoints" / "lowlevel_h1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from control.highlevel import add_guidance_argument

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1]
        + "\nExit status: 0 ok, 2 bad input (unknown text, bad goal, missing or mismatched checkpoint).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--text", required=True, help='what the robot should do, e.g. "dance", "walk forward", "run"')
    p.add_argument("--speed", type=float, help="COM goal speed in m/s (default: the matched theme's typical speed)")
    p.add_argument("--turn-rate", type=float, default=0.0, help="COM goal turn rate in rad/s, left > 0 (default 0)")
    p.add_argument(
        "--height", type=float, help="COM goal height in m, e.g. 0.6 to crouch, 0.3 to get down (default: keep it)"
    )
    p.add_argument("--seconds", type=float, default=20.0, help="length of the motion (default 20)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="token sampling temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely codes (0 = all)")
    add_guidance_argument(p)
    p.add_argument("--kinematic", action="store_true", help="IK playback of the decoded motion, no physics")
    p.add_argument("--video", type=Path, metavar="OUT.mp4", help="write a video of the robot (320x240, 15 fps)")
    p.add_argument("--viewer", action="store_true", help="play the result in MuJoCo's interactive viewer")
    p.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    p.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the shipped one)")
    p.add_argument("--highlevel", type=Path, help="high-level policy directory (default: the shipped one)")
    p.add_argument("--lowlevel", type=Path, default=DEFAULT_LOWLEVEL, help="low-level policy directory")
    p.add_argument("--text-encoder", type=Path, help="local BERT-family folder (default: all-MiniLM-L6-v2)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not math.isfinite(args.seconds) or not 0 < args.seconds <= 600:
        p.error(f"--seconds must be in (0, 600], got {args.seconds}")
    if not args.text.strip():
        p.error("--text is empty: describe a motion, e.g. --text 'dance'")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from control.highlevel import load_highlevel
    from control.runner import Goal, Planner
    from control.text import TextEncoder, ThemeMatcher, UnknownTextError, load_descriptions
    from motiontok import MotionTokenizer
    from motiontok.errors import CheckpointError

    torch.set_num_threads(args.threads)
    executor = None
    try:
        if not args.kinematic and not (args.lowlevel / "config.json").is_file():
            raise CheckpointError(
                f"{args.lowlevel}: no low-level policy there; run with --kinematic to play the planned motion back "
                "by IK, or train one with scripts/train_lowlevel.py and pass --lowlevel"
            )
        tokenizer = MotionTokenizer.load(args.tokenizer)
        policy, config = load_highlevel(args.highlevel, tokenizer)
        if not args.kinematic:
            from control.physics import TokenExecutor

            executor = TokenExecutor(tokenizer, args.lowlevel)  # refuses a policy of another tokenizer
        encoder = TextEncoder(args.text_encoder)
        match = ThemeMatcher(encoder, load_descriptions()).match(args.text)
        speed = args.speed if args.speed is not None else config.get("theme_speeds", {}).get(match.theme, 0.0)
        goal = Goal(speed, args.turn_rate, args.height)
    except (CheckpointError, UnknownTextError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    planner = Planner(
        tokenizer, policy, encoder.encode([args.text])[0], goal, temperature=args.temperature, top_k=args.top_k,
        guidance=args.guidance, seed=args.seed,
    )  # fmt: skip
    windows = math.ceil(args.seconds * tokenizer.fps / tokenizer.window)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=windows, desc="planning", unit="window", file=sys.stderr)
    t0 = time.perf_counter()
    progress = bar.update if bar else None
    if executor is None:
        run = run_kinematic(planner, windows, args.seconds, progress)
    else:
        try:
            run = run_physics_mode(planner, executor, windows, args.seconds, progress)
        finally:
            executor.close()
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    result = {
        "text": args.text,
        "theme_matched": match.theme,
        "text_similarity": round(match.similarity, 3),
        "mode": "kinematic" if executor is None else "physics",
        "com_goal": {"speed": goal.speed, "turn_rate": goal.turn_rate, "height": goal.height},
        **summarize(run, tokenizer, args.highlevel),
        "realtime_factor": round(run.seconds / wall, 2),
    }
    if args.video:
        from motiontok.render import render_video

        render_video([run.qpos_video], args.video, run.video_fps)
        result["video"] = str(args.video)
    if args.viewer:
        show(run.qpos_video, run.video_fps)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


@dataclass
class Run:
    """A finished run, either mode: the motion (qpos (T, 26) at ``video_fps``) to show, the motion's features
    (F, 127) and COM (F, 3) at the tokenizer's rate after the standing start, seconds produced, whether the robot
    fell, the planned tokens and the per-window COM goal errors."""

    qpos_video: np.ndarray
    video_fps: float
    features: np.ndarray
    com: np.ndarray
    seconds: float
    fell: bool
    replans: int
    goal_errors: list[float]


def run_kinematic(planner, windows: int, seconds: float, progress) -> Run:
    """Plan from the planned motion itself and play it back by IK (no physics)."""
    from control.physics import fallen
    from control.runner import generate

    tok = planner.tokenizer
    rollout = generate(planner, windows, progress)
    n = round(seconds * tok.fps) + tok.window  # the standing start, then the planned motion
    qpos = playback(rollout.features[:n], tok.fps)  # IK is causal: the frames shown, no more
    seconds_done = (len(qpos) - tok.window) / tok.fps
    return Run(
        qpos, tok.fps, rollout.features[tok.window : n], rollout.com[tok.window : n], seconds_done,
        any(fallen(q) for q in qpos), len(rollout.tokens), rollout.goal_errors,
    )  # fmt: skip


def run_physics_mode(planner, executor, windows: int, seconds: float, progress) -> Run:
    """Plan from the robot's own motion and execute each window with the low-level policy in MuJoCo."""
    from control.physics import run_physics
    from motiontok import features as feat
    from motiontok.motion import MotionClip, forward_kinematics

    tok = planner.tokenizer
    rollout = run_physics(planner, executor, windows, progress)
    qpos = rollout.qpos[: round(seconds * rollout.fps)]
    motion = MotionClip("robot", qpos, rollout.fps).resample(tok.fps).qpos if len(qpos) > 1 else qpos
    return Run(
        qpos, rollout.fps, feat.features_from_qpos(motion, tok.fps), forward_kinematics(motion).com,
        len(qpos) / rollout.fps, rollout.fell, len(rollout.tokens), rollout.goal_errors,
    )  # fmt: skip


def summarize(run: Run, tokenizer, highlevel: Path | None) -> dict:
    """The JSON metrics of a run: length, fall, COM speed and goal error, replans and the recognised theme
    (majority vote of the theme classifier over the whole windows produced)."""
    from control.highlevel import load_theme_classifier

    L = tokenizer.window
    whole = len(run.features) // L * L
    votes = load_theme_classifier(highlevel).predict(run.features[:whole].reshape(-1, L, 127)) if whole else []
    com_speed = np.linalg.norm(np.diff(run.com[:, :2], axis=0), axis=1) * tokenizer.fps
    return {
        "seconds_simulated": round(run.seconds, 2),
        "fell": run.fell,
        "mean_com_speed": round(float(com_speed.mean()), 3) if len(com_speed) else 0.0,
        "com_goal_error": round(float(np.mean(run.goal_errors)), 3),
        "replans": run.replans,
        "theme_recognised": max(set(votes), key=votes.count) if votes else None,
        "theme_votes": {t: votes.count(t) for t in sorted(set(votes))},
    }


def playback(features, fps: float):
    """IK playback of the planned features (T, 127) -> qpos (T, 26) (``motiontok.ik.playback_features``)."""
    from motiontok.ik import playback_features

    return playback_features(features, fps)


def show(qpos, fps: float) -> None:
    """Play ``qpos`` (T, 26) in MuJoCo's passive viewer at real time (needs a display)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        print("note: no display; --viewer skipped (use --video)", file=sys.stderr)
        return
    import mujoco
    import mujoco.viewer

    from motiontok.robot import load_model

    model = load_model(scene=True)
    data = mujoco.MjData(model)
    with mujoco.viewer.launch_passive(model, data) as viewer:
        for q in qpos:
            if not viewer.is_running():
                break
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            viewer.sync()
            time.sleep(1.0 / fps)


if __name__ == "__main__":
    sys.exit(main())
