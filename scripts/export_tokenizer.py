"""Ship a trained tokenizer: copy a run's final/ directory and write a README with its training record.

    python scripts/export_tokenizer.py --run runs/tokenizer --out assets/checkpoints/tokenizer_h1 \\
        --eval-json eval_tokenizer.json [--ik-json eval_ik.json] [--notes notes.md]

The README states the exact training command, the resolved config, the machine, the training time and the
validation metrics (from scripts/eval_tokenizer.py --json and, optionally, scripts/eval_ik_playback.py --json).
The copy loads with MotionTokenizer.load(out) before anything is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from motiontok import MotionTokenizer
from motiontok.errors import CheckpointError
from motiontok.records import export_parser, metrics_table, readme_text, ship, training_lines

KEYS = (
    "log_p",
    "log_p_greedy",
    "log_p_fixed_var",
    "l2",
    "l2_sample",
    "kl",
    "elbo",
    "beta_elbo",
    "beta",
    "entropy",
    "code_usage",
    "perplexity",
    "mpjpe_mm",
    "joint_rmse_deg",
    "windows",
)
IK_KEYS = ("mpjpe_mm", "local_mpjpe_mm", "joint_rmse_deg", "foot_skate_mm", "ref_foot_skate_mm", "frames", "ik_fps")


def render_readme(config: dict, eval_metrics: dict, ik_metrics: dict | None, notes: str = "") -> str:
    lines = [
        "# Shipped H1 tokenizer",
        "",
        "DAPS tokenizer for LAFAN1-H1 windows (32 frames x 127 features at 30 fps -> 64 tokens in [0, 1024)), "
        "produced by this project's `scripts/train_tokenizer.py` on the training files (the paper's four "
        "validation files held out). Load it with `MotionTokenizer.load()`.",
        "",
        "## How it was made",
        "",
        *training_lines(config),
        "",
        "## Validation (the paper's four validation files, consecutive windows)",
        "",
        "`python scripts/eval_tokenizer.py --checkpoint assets/checkpoints/tokenizer_h1 --data data/lafan1_h1.h5 "
        "--json` (log_p, l2, elbo in standardized units, summed over the window):",
        "",
        metrics_table(eval_metrics, KEYS),
    ]
    if ik_metrics:
        lines += [
            "",
            "IK playback of the reconstruction, `python scripts/eval_ik_playback.py --data <LAFAN1-H1 CSVs> "
            "--checkpoint assets/checkpoints/tokenizer_h1 --json`:",
            "",
            metrics_table(ik_metrics, IK_KEYS),
        ]
    return readme_text(lines, notes)


def main(argv: list[str] | None = None) -> int:
    parser = export_parser(__doc__, "output of scripts/eval_tokenizer.py --json")
    parser.add_argument("--ik-json", help="output of scripts/eval_ik_playback.py --json (optional)")
    args = parser.parse_args(argv)
    src = Path(args.run) / "final"
    try:
        tok = MotionTokenizer.load(src)
        eval_metrics = json.loads(Path(args.eval_json).read_text())
        ik_metrics = json.loads(Path(args.ik_json).read_text()) if args.ik_json else None
        notes = Path(args.notes).read_text() if args.notes else ""
    except (CheckpointError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    ship(src, out, render_readme(tok.config, eval_metrics, ik_metrics, notes), MotionTokenizer.load)
    print(f"exported {src} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
