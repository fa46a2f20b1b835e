"""Turn LAFAN1-H1 motion files into the HDF5 dataset the tokenizer trains on.

    python scripts/prepare_lafan.py --csv-dir ../shared/data/lafan1_h1 --out data/lafan1_h1.h5

Input: a directory of LAFAN1-H1 CSV files (and/or LocoMuJoCo Trajectory .npz files), one CSV, or one .npz.
Output: features (T, 127), qpos, COM, key points, split_points, clip names and fps (see motiontok.data).
The file is written to a temporary name and renamed, so an interrupted run leaves nothing partial.
"""

from __future__ import annotations

import argparse
import sys
import time

from motiontok.data import write_dataset
from motiontok.errors import MotionDataError
from motiontok.motion import load_motions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv-dir", required=True, help="directory of .csv/.npz motion files, or one such file")
    parser.add_argument("--out", required=True, help="output HDF5 path (e.g. data/lafan1_h1.h5)")
    parser.add_argument("--fps", type=float, default=30.0, help="resample every clip to this rate (default 30)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        clips = load_motions(args.csv_dir, fps=args.fps)
        out = write_dataset(clips, args.out, progress=True)
    except MotionDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    frames = sum(c.num_frames for c in clips)
    print(f"wrote {out}: {len(clips)} clips, {frames} frames at {args.fps:g} fps in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
