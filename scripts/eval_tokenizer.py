"""Evaluate a tokenizer on validation windows (paper table 1 metrics plus robot-space errors).

    python scripts/eval_tokenizer.py --checkpoint assets/checkpoints/tokenizer_h1 --data data/lafan1_h1.h5 --json

--data is a prepared HDF5 file (scripts/prepare_lafan.py) or motion files (a CSV directory, a CSV, an .npz).
By default the paper's validation files are used when present, else every clip; --files selects others.
Windows are the consecutive 32-frame windows of each clip (stride 32), in raw units, standardized by the
checkpoint's normalizer. log_p, l2, elbo are in standardized units (as in the paper); mpjpe_mm is measured on
the robot posed by the decoded features.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from motiontok import MotionTokenizer
from motiontok.data import PAPER_VAL_FILES, MotionDataset, fixed_windows
from motiontok.errors import CheckpointError, MotionDataError
from motiontok.evaluation import evaluate_tokenizer
from motiontok.features import clip_features
from motiontok.motion import load_motions


def load_windows(path: Path, files: list[str] | None, fps: float, window: int) -> tuple[torch.Tensor, list[str]]:
    """Raw windows (W, window, 127) of the chosen files, and the clip names used."""
    if path.suffix in (".h5", ".hdf5"):
        if files is None:
            names = MotionDataset.load(path).clip_files
            files = [f for f in PAPER_VAL_FILES if f in names] or None
        ds = MotionDataset.load(path, files=files)
        if abs(ds.fps - fps) > 1e-6:
            raise MotionDataError(f"{path}: dataset is at {ds.fps:g} fps, the tokenizer at {fps:g}")
        return fixed_windows(ds, window), ds.clip_names
    clips = load_motions(path, fps=fps)
    chosen = files or [f for f in PAPER_VAL_FILES if any(c.source == f for c in clips)] or None
    clips = [c for c in clips if chosen is None or c.source in chosen]
    wins = []
    for c in clips:
        f = clip_features(c)
        n = len(f) // window
        wins.append(f[: n * window].reshape(n, window, -1))
    if not clips or sum(len(w) for w in wins) == 0:
        raise MotionDataError(f"{path}: no clip of at least {window} frames among {chosen or 'all files'}")
    return torch.from_numpy(np.concatenate(wins)).float(), [c.name for c in clips]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="tokenizer directory (default: the shipped one)")
    parser.add_argument("--data", required=True, help="prepared .h5 dataset, or motion files (dir/CSV/.npz)")
    parser.add_argument("--files", nargs="+", default=None, help="source files (stems) to evaluate on")
    parser.add_argument(
        "--beta",
        type=float,
        default=None,
        help="beta of the reported beta-ELBO (default: the final beta of the checkpoint's schedule)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior samples")
    parser.add_argument("--json", action="store_true", help="print one JSON object (and nothing else) to stdout")
    args = parser.parse_args(argv)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    try:
        tok = MotionTokenizer.load(args.checkpoint, device=device)
        windows, clips = load_windows(Path(args.data), args.files, tok.fps, tok.window)
    except (MotionDataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    beta = args.beta
    if beta is None:
        beta = float(tok.config.get("config", {}).get("estimator", {}).get("beta", {}).get("end", 1.0))
    t0 = time.perf_counter()
    metrics = evaluate_tokenizer(tok.model, tok.normalizer, windows, tok.fps, beta, seed=args.seed)
    metrics |= {
        "clips": clips,
        "seconds": round(time.perf_counter() - t0, 2),
        "checkpoint": str(args.checkpoint or "shipped"),
    }
    if args.json:
        print(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            print(f"{k:>16}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
