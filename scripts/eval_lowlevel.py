"""Evaluate a low-level tracking policy on reference clips (physics, 100 Hz, deterministic actions).

    python scripts/eval_lowlevel.py --checkpoint assets/checkpoints/lowlevel_h1 --data $MOTIONTOK_DATA --json
    python scripts/eval_lowlevel.py --checkpoint runs/lowlevel/final --data DIR --clips walk2_subject4 --video out.mp4

Episodes start from reference states spread evenly over each clip and last up to --seconds (or the clip's end); an
episode fails by the standard fall rule (envs.rewards.TerminationConfig: BeyondMimic's), whatever rule the policy
was trained with.
The JSON has success_rate (no fall), mean_episode_s, mpjpe_mm (key points relative to the pelvis, against the true
reference), mpjpe_decoded_mm (against the tokens' decoded motion), clipped_action_share (mean-action
components beyond [-1, 1], which the environment clips), ceiling_success_rate and ceiling_mean_episode_s (the
same rule applied, without physics, to the robot posed exactly as the tokens decode, over the same episodes: what
a perfect follower of the tokens would score), per_theme and episodes.
Exit status: 0 ok, 2 bad arguments, data or checkpoint (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from control.lowlevel import load_actor, tracking_config
from control.lowlevel_eval import decoded_ceiling, run_episodes, spread_starts, summarize
from envs.reference import load_reference
from motiontok import MotionTokenizer
from motiontok.data import PAPER_VAL_FILES
from motiontok.errors import CheckpointError, MotionDataError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="low-level policy directory (e.g. runs/x/final)")
    p.add_argument("--data", required=True, type=Path, help="LAFAN1-H1 CSV folder (or a file)")
    p.add_argument(
        "--clips",
        nargs="+",
        metavar="NAME",
        help=f"clips to evaluate (default: the validation files {', '.join(PAPER_VAL_FILES)})",
    )
    p.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the shipped one)")
    p.add_argument("--episodes-per-clip", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0, help="episode length (default 10)")
    p.add_argument(
        "--video", type=Path, metavar="OUT.mp4", help="robot (left) beside the reference (right), first episode"
    )
    p.add_argument("--video-seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=0, help="physics threads (0 = all CPUs)")
    p.add_argument("--json", action="store_true", help="print only the JSON object to stdout")
    args = p.parse_args(argv)
    if args.episodes_per_clip < 1 or args.seconds <= 0:
        p.error("--episodes-per-clip must be >= 1 and --seconds > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    try:
        tokenizer = MotionTokenizer.load(args.tokenizer)
        ref = load_reference(args.data, tokenizer, clips=args.clips or list(PAPER_VAL_FILES))
        policy, config = load_actor(args.checkpoint, ref.tokenizer_id)
    except (MotionDataError, CheckpointError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    env = {**config.get("env", {}), "episode_seconds": args.seconds, "num_threads": args.threads}
    cfg = tracking_config({**env, "termination": {}})  # a fall is the standard rule's, whatever the policy trained with
    starts, clips = spread_starts(ref, args.episodes_per_clip, args.seconds)
    result = run_episodes(policy, ref, cfg, starts, record=0 if args.video else None)
    ceiling = decoded_ceiling(ref, starts, round(args.seconds * cfg.control_hz), cfg.termination)
    summary = summarize(result, clips, ref, cfg.control_hz, ceiling)
    summary["checkpoint"] = str(args.checkpoint)
    summary["num_timesteps"] = config.get("num_timesteps")
    if args.video:
        from motiontok.render import render_video

        render_video(
            [result["qpos_robot"], result["qpos_ref"]],
            args.video,
            cfg.control_hz,
            max_seconds=args.video_seconds or None,
        )
        summary["video"] = str(args.video)
    if args.json:
        print(json.dumps(summary))
    else:
        for theme, s in summary["per_theme"].items():
            print(
                f"{theme:>14}: success {s['success_rate']:.0%}  episode {s['mean_episode_s']:.2f} s  "
                f"MPJPE {s['mpjpe_mm']:.0f} mm (decoded {s['mpjpe_decoded_mm']:.0f})  "
                f"clipped {s['clipped_action_share']:.0%}  n={s['episodes']}  "
                f"(the tokens' ceiling: success {s['ceiling_success_rate']:.0%}, {s['ceiling_mean_episode_s']:.2f} s)"
            )
        print(
            f"{'all':>14}: success {summary['success_rate']:.0%}  episode {summary['mean_episode_s']:.2f} s  "
            f"MPJPE {summary['mpjpe_mm']:.0f} mm"
        )
    return 0 if np.isfinite(summary["mpjpe_mm"]) else 1


if __name__ == "__main__":
    sys.exit(main())
