#!/usr/bin/env python
"""Throughput of feature extraction, forward kinematics and IK playback; prints ONE JSON object.

Data: --data PATH (dir / CSV / .npz), else $MOTIONTOK_DATA, else a synthetic clip. From a directory the
validation clip walk2_subject4 is used when present, else the first clip. Takes well under 2 minutes.

  python bench/bench_features_ik.py [--data /path/to/lafan1_h1] [--frames 3000] [--ik-frames 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="motion data (default: $MOTIONTOK_DATA, else synthetic)")
    p.add_argument("--frames", type=int, default=3000, help="frames for feature/FK timing (default 3000)")
    p.add_argument("--ik-frames", type=int, default=300, help="frames for IK timing (default 300)")
    p.add_argument("--noise", type=float, default=0.01, help="key-point noise (m) of the noisy IK run")
    return p.parse_args()


def synthetic_qpos(t: int, fps: float):
    """(T, 26) smooth motion within joint limits (root walking forward and turning)."""
    import numpy as np

    from motiontok import robot

    lim = robot.joint_limits()
    mid, half = lim.mean(1), np.minimum(0.5 * (lim[:, 1] - lim[:, 0]), 0.6)
    s = np.arange(t) / fps
    phase = np.linspace(0, 2 * np.pi, robot.NUM_JOINTS, endpoint=False)
    yaw = 0.3 * s
    qpos = np.zeros((t, robot.NQ))
    qpos[:, 0], qpos[:, 2] = 1.0 * s, 1.0
    qpos[:, 3], qpos[:, 6] = np.cos(yaw / 2), np.sin(yaw / 2)
    qpos[:, 7:] = mid + 0.6 * half * np.sin(2 * np.pi * 0.8 * s[:, None] + phase)
    return qpos


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> int:
    args = parse_args()
    import numpy as np

    from motiontok.errors import MotionDataError
    from motiontok.features import FEATURE_SLICES, features_from_qpos, start_pose
    from motiontok.ik import IKSolver, ik_targets_from_features
    from motiontok.metrics import mpjpe_mm
    from motiontok.motion import forward_kinematics, load_motions

    data = args.data or (Path(os.environ["MOTIONTOK_DATA"]) if os.environ.get("MOTIONTOK_DATA") else None)
    fps = 30.0
    if data is not None:
        try:
            clips = load_motions(data)
        except (MotionDataError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        clip = next((c for c in clips if c.name == "walk2_subject4"), clips[0])
        qpos, fps, source = clip.qpos, clip.fps, clip.name
    else:
        qpos, source = synthetic_qpos(args.frames, fps), "synthetic"
    qpos = qpos[: args.frames]
    n = len(qpos)

    forward_kinematics(qpos[:10])  # warm-up (model load)
    kin, t_fk = timed(forward_kinematics, qpos)
    feats, t_feat = timed(features_from_qpos, qpos, fps)

    m = min(args.ik_frames, n)
    q_ik, f_ik = qpos[:m], feats[:m]
    key, root = ik_targets_from_features(f_ik, fps, *start_pose(q_ik))
    joints = f_ik[:, FEATURE_SLICES["joint_pos"]]
    solver = IKSolver()
    out, t_ik = timed(solver.solve, key, root, joints[0], joints)
    err = mpjpe_mm(forward_kinematics(out).key_pos, kin.key_pos[:m])
    noisy = key + np.random.default_rng(0).normal(0.0, args.noise, key.shape)
    noisy_joints = joints + np.random.default_rng(1).normal(0.0, 5 * args.noise, joints.shape)
    noisy_solver = IKSolver()
    _, t_noisy = timed(noisy_solver.solve, noisy, root, noisy_joints[0], noisy_joints)

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    result = {
        "source": source,
        "frames": n,
        "fps": fps,
        "features_fps": n / t_feat,
        "features_fps_note": "features_from_qpos including its forward kinematics",
        "fk_fps": n / t_fk,
        "ik_frames": m,
        "ik_fps": m / t_ik,
        "ik_mean_iters": float(solver.iterations.mean()),
        "ik_mpjpe_mm": err,
        "ik_noisy_fps": m / t_noisy,
        "ik_noisy_mean_iters": float(noisy_solver.iterations.mean()),
        "ik_noise_m": args.noise,
        "ik_solver": solver.solver,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "mujoco": version("mujoco"),
            "mink": version("mink"),
            "daqp": version("daqp"),
            "qpsolvers": version("qpsolvers"),
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
