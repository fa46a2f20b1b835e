#!/usr/bin/env python
"""Play motion features back on the H1 with IK and measure how close the result is to the reference.

For each clip: features of the reference (or the tokenizer's reconstruction of them, with --checkpoint) ->
IK targets (key points + root) -> IK joint angles (motiontok.ik.playback_features) -> forward kinematics.
Reported: MPJPE (mm) between played-back and reference key points (both anchored at the reference's start
pose, so root drift counts), local MPJPE (key points relative to each robot's pelvis in its heading frame:
pose error without drift), joint-angle RMSE (deg), foot skate (mm/frame, see motiontok.metrics) of the
playback and of the reference, IK frames/s.

Examples:
  python scripts/eval_ik_playback.py --data /path/to/lafan1_h1 --json
  python scripts/eval_ik_playback.py --data clips/ --clips walk2_subject4 --max-frames 150 --video out.mp4
  python scripts/eval_ik_playback.py --data clips/ --checkpoint runs/tok/checkpoint_dir --json
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco; only used by --video

import argparse
import json
import sys
import time
from pathlib import Path

from motiontok.data import PAPER_VAL_FILES as VALIDATION_CLIPS  # used by default when the data holds them

DEFAULT_FPS = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 ok, 2 bad arguments or unreadable data/checkpoint (one line on stderr).",
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="PATH",
        help="motion data: a directory of LAFAN1-H1 *.csv / LocoMuJoCo *.npz files, one .csv, or one .npz",
    )
    p.add_argument(
        "--clips",
        nargs="+",
        metavar="NAME",
        help="clip names (file stems) to evaluate; default: the 4 validation clips "
        f"({', '.join(VALIDATION_CLIPS)}) when all are in --data, else every clip",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        metavar="CKPT",
        help="tokenizer checkpoint: play back the tokenizer's reconstruction of the features instead of the "
        "true features (without it the result is the IK error floor)",
    )
    p.add_argument(
        "--fps",
        type=float,
        help="resample clips to this frame rate (default: the tokenizer's rate with --checkpoint, else 30)",
    )
    p.add_argument("--max-frames", type=int, metavar="N", help="use only the first N frames of each clip")
    p.add_argument(
        "--video",
        type=Path,
        metavar="OUT.mp4",
        help="write a side-by-side video of the first clip: reference left, played back right (needs EGL)",
    )
    p.add_argument(
        "--video-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="cap the video at S seconds of motion (default 10; 0: the whole evaluated clip). Software "
        "rendering makes about 4 video frames/s (15 video frames per second of motion)",
    )
    p.add_argument("--max-iters", type=int, default=10, help="most IK steps (QPs) per frame (default 10, early stop)")
    p.add_argument(
        "--posture",
        choices=("features", "previous"),
        default="features",
        help="target of IK's posture regulariser: the features' joint angles (default; also picks the "
        "branch where key points are ambiguous) or the previous frame's solution (pure key-point IK)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with the metrics to stdout (nothing else goes to stdout)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    args = p.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 2:
        p.error("--max-frames must be at least 2")
    if args.fps is not None and args.fps <= 0:
        p.error("--fps must be positive")
    if args.max_iters < 1:
        p.error("--max-iters must be at least 1")
    return args


def select_clips(clips: list, names: list[str] | None) -> list:
    from motiontok.errors import MotionDataError

    by_name = {c.name: c for c in clips}
    if names is None:
        if all(n in by_name for n in VALIDATION_CLIPS):
            return [by_name[n] for n in VALIDATION_CLIPS]
        return clips
    missing = [n for n in names if n not in by_name]
    if missing:
        raise MotionDataError(f"clip(s) not found in the data: {', '.join(missing)} (have: {', '.join(by_name)})")
    return [by_name[n] for n in names]


def evaluate(args: argparse.Namespace) -> dict:
    import numpy as np
    from tqdm import tqdm

    from motiontok import metrics, robot
    from motiontok.errors import CheckpointError, MotionDataError
    from motiontok.features import FEATURE_SLICES, features_from_qpos, start_pose
    from motiontok.ik import IKConfig, playback_features
    from motiontok.motion import forward_kinematics, load_motions

    tok = None
    if args.checkpoint is not None:
        if not args.checkpoint.exists():
            raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint")
        try:
            from motiontok.tokenizer import MotionTokenizer
        except ImportError as err:
            raise CheckpointError(f"cannot import the tokenizer to read {args.checkpoint}: {err}") from None

        tok = MotionTokenizer.load(args.checkpoint)
    fps = args.fps or float(getattr(tok, "fps", DEFAULT_FPS) if tok is not None else DEFAULT_FPS)
    if tok is not None and abs(fps - float(getattr(tok, "fps", fps))) > 1e-6:
        raise MotionDataError(f"{args.checkpoint}: the tokenizer works at {tok.fps:g} fps, not --fps {fps:g}")
    clips = select_clips(load_motions(args.data, fps=fps), args.clips)
    if args.max_frames is not None:
        clips = [type(c)(c.name, c.qpos[: args.max_frames], c.fps) for c in clips]
    config = IKConfig(max_iters=args.max_iters)
    limits = robot.joint_limits()

    per_clip: dict[str, dict] = {}
    total_frames, ik_seconds = 0, 0.0
    sum_err_mm, sum_local_err_mm, sq_joint, skate, ref_skate = 0.0, 0.0, 0.0, [], []
    video_pair = None
    bar = tqdm(total=sum(c.num_frames for c in clips), unit="frame", file=sys.stderr, disable=args.no_progress)
    for clip in clips:
        qpos = clip.qpos  # (T, 26)
        n = clip.num_frames
        ref_key = forward_kinematics(qpos).key_pos  # (T, 13, 3)
        feats = feats_true = features_from_qpos(qpos, clip.fps, key_pos=ref_key)  # (T, 127)
        if tok is not None:
            rec = np.asarray(tok.reconstruct_features(feats, clip.fps), dtype=np.float64)
            if rec.shape != feats.shape:
                raise CheckpointError(f"tokenizer returned features of shape {rec.shape}, expected {feats.shape}")
            feats = rec
        start_xy, start_yaw = start_pose(qpos)
        bar.set_description(clip.name)
        t0 = time.perf_counter()
        ik_qpos = playback_features(
            feats,
            clip.fps,
            start_xy,
            start_yaw,
            posture_from_features=args.posture == "features",
            config=config,
            progress=bar.update,
        )
        dt = time.perf_counter() - t0
        pred_key = forward_kinematics(ik_qpos).key_pos
        point_err = np.linalg.norm(pred_key - ref_key, axis=-1) * 1000.0  # (T, 13) mm
        out_of_range = (qpos[:, 7:] < limits[:, 0] - 1e-6) | (qpos[:, 7:] > limits[:, 1] + 1e-6)
        ks = FEATURE_SLICES["key_pos"]  # key points relative to the pelvis, in each robot's heading frame
        pred_local = features_from_qpos(ik_qpos, clip.fps, key_pos=pred_key)[:, ks].reshape(n, -1, 3)
        ref_local = feats_true[:, ks].reshape(n, -1, 3)
        stats = {
            "frames": n,
            "mpjpe_mm": metrics.mpjpe_mm(pred_key, ref_key),
            "local_mpjpe_mm": metrics.mpjpe_mm(pred_local, ref_local),
            "max_point_error_mm": float(point_err.max()),
            "p95_frame_error_mm": float(np.percentile(point_err.mean(1), 95)),
            "joint_rmse_deg": metrics.joint_rmse_deg(ik_qpos[:, 7:], qpos[:, 7:]),
            "foot_skate_mm": metrics.foot_skate_mm(pred_key),
            "ref_foot_skate_mm": metrics.foot_skate_mm(ref_key),
            "ref_frames_outside_joint_limits": int(out_of_range.any(1).sum()),
            "ik_fps": n / max(dt, 1e-9),
        }
        per_clip[clip.name] = stats
        total_frames += n
        ik_seconds += dt
        sum_err_mm += stats["mpjpe_mm"] * n
        sum_local_err_mm += stats["local_mpjpe_mm"] * n
        sq_joint += stats["joint_rmse_deg"] ** 2 * n
        skate.append(metrics.foot_skate_displacements_mm(pred_key))
        ref_skate.append(metrics.foot_skate_displacements_mm(ref_key))
        if video_pair is None:
            video_pair = (qpos, ik_qpos, clip.fps)
    bar.close()

    def _mean(parts: list) -> float:
        allv = np.concatenate(parts)
        return float(allv.mean()) if allv.size else 0.0

    result = {
        "source": "tokenizer" if tok is not None else "ground_truth",
        "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None,
        "data": str(args.data),
        "clips": [c.name for c in clips],
        "frames": total_frames,
        "fps": fps,
        "max_frames": args.max_frames,
        "mpjpe_mm": sum_err_mm / total_frames,
        "local_mpjpe_mm": sum_local_err_mm / total_frames,
        "joint_rmse_deg": float(np.sqrt(sq_joint / total_frames)),
        "foot_skate_mm": _mean(skate),
        "ref_foot_skate_mm": _mean(ref_skate),
        "ik_fps": total_frames / max(ik_seconds, 1e-9),
        "ik_max_iters": args.max_iters,
        "ik_posture": args.posture,
        "per_clip": per_clip,
    }
    if args.video is not None and video_pair is not None:
        from motiontok.render import render_video

        ref_q, ik_q, clip_fps = video_pair
        vbar = tqdm(unit="video frame", file=sys.stderr, disable=args.no_progress, desc="video")
        try:
            result["video_frames"] = render_video(
                [ref_q, ik_q],
                args.video,
                clip_fps,
                max_seconds=args.video_seconds or None,
                progress=vbar.update,
            )
            result["video"] = str(args.video)
        except Exception as err:  # no GL context, no ffmpeg, unwritable path: keep the metrics
            result["video_error"] = f"{type(err).__name__}: {err}"
            print(f"warning: video not written: {result['video_error']}", file=sys.stderr)
        vbar.close()
    return result


def print_report(result: dict) -> None:
    print(f"source: {result['source']}  frames: {result['frames']}  IK: {result['ik_fps']:.0f} frames/s")
    cols = ("mpjpe_mm", "local_mpjpe_mm", "joint_rmse_deg", "foot_skate_mm", "ref_foot_skate_mm")
    print(f"{'clip':24s} {'frames':>7s} " + " ".join(f"{c:>17s}" for c in cols))
    for name, s in [*result["per_clip"].items(), ("ALL", result)]:
        print(f"{name:24s} {s['frames']:7d} " + " ".join(f"{s[c]:17.3f}" for c in cols))
    if "video" in result:
        print(f"video: {result['video']} ({result['video_frames']} frames)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from motiontok.errors import CheckpointError, MotionDataError

    try:
        result = evaluate(args)
    except (MotionDataError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
