"""How fast the heading turns in each motion file: the v2 heading (twist about z) against v1's (pelvis x-axis
projected on the ground), as a markdown table or JSON. docs/heading.md was written by this script.

    python scripts/heading_report.py --data ../shared/data/lafan1_h1            # markdown
    python scripts/heading_report.py --data ../shared/data/lafan1_h1 --json     # one JSON object per file

A person turns at most about 20 rad/s (a fast spin); larger rates are frames where the heading is ill-defined
(v1, pelvis pitched near 90 degrees) or single-frame jumps of the pelvis orientation in the data itself.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from motiontok import features as feat
from motiontok.errors import MotionDataError
from motiontok.motion import MotionClip, load_motions
from motiontok.rotations import quat_to_mat, wrap_angle

FAST = 20.0
"""rad/s: about the fastest a person spins."""


def yaw_rates(clip: MotionClip) -> dict[str, np.ndarray]:
    """|yaw rate| (rad/s) per frame, v1 (x-axis projection) and v2 (the features' ``root_yaw_rate``)."""
    q = clip.qpos[:, 3:7] / np.linalg.norm(clip.qpos[:, 3:7], axis=-1, keepdims=True)
    rot = quat_to_mat(q)  # (T, 3, 3)
    x_axis_yaw = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])  # (T,) the v1 heading
    v1 = np.abs(wrap_angle(np.diff(x_axis_yaw))) * clip.fps
    v2 = np.abs(feat.clip_features(clip)[1:, feat.FEATURE_SLICES["root_yaw_rate"]][:, 0])
    tilt = np.degrees(np.arccos(np.clip(rot[:, 2, 2], -1.0, 1.0)))  # (T,) pelvis z-axis from vertical
    return {"v1": v1, "v2": v2, "tilt": tilt}


def report(clip: MotionClip) -> dict[str, float | int | str]:
    r = yaw_rates(clip)
    return {
        "file": clip.name,
        "frames": clip.num_frames,
        "v1_max": round(float(r["v1"].max()), 1),
        "v1_fast_frames": int((r["v1"] > FAST).sum()),
        "v2_max": round(float(r["v2"].max()), 1),
        "v2_fast_frames": int((r["v2"] > FAST).sum()),
        "v2_max_frame": int(r["v2"].argmax()) + 1,
        "max_tilt_deg": round(float(r["tilt"].max()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="directory of LAFAN1-H1 .csv (or .npz) files, or one file")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a markdown table")
    args = parser.parse_args(argv)
    try:
        rows = [report(c) for c in load_motions(args.data)]
    except MotionDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(
        f"| file | frames | v1 max (rad/s) | v1 frames > {FAST:g} | v2 max (rad/s) | v2 frames > {FAST:g} | max tilt |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['file']} | {r['frames']} | {r['v1_max']} | {r['v1_fast_frames']} | {r['v2_max']} "
            f"| {r['v2_fast_frames']} | {r['max_tilt_deg']}° |"
        )
    v1_files = sum(r["v1_fast_frames"] > 0 for r in rows)
    v2_files = sum(r["v2_fast_frames"] > 0 for r in rows)
    print(f"\nfiles with frames above {FAST:g} rad/s: v1 {v1_files}, v2 {v2_files} of {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
