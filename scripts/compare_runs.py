"""Compare tokenizer training runs side by side: a markdown table of their final validation metrics and
validation-L2 curves (docs/ablation.md was made with it).

    python scripts/compare_runs.py runs/a runs/b --names "baseline" "new init" > table.md

Each run is an ``out_dir`` of scripts/train_tokenizer.py. Metrics come from ``RUN/eval.json`` when present
(``scripts/eval_tokenizer.py --checkpoint RUN/final --json > RUN/eval.json``), else from the validation metrics
recorded in ``RUN/final/config.json``; the curve from the ``val/l2`` scalars in ``RUN/tb``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    ("mpjpe_mm", "key-point MPJPE (mm)", "{:.0f}"),
    ("joint_rmse_deg", "joint RMSE (deg)", "{:.1f}"),
    ("l2", "L2", "{:.1f}"),
    ("log_p_fixed_var", "log p (var 0.25)", "{:,.0f}"),
    ("code_usage", "code usage", "{:.0%}"),
    ("perplexity", "perplexity", "{:.0f}"),
)


def final_metrics(run: Path) -> dict[str, Any]:
    """The run's validation metrics (eval.json first, then final/config.json)."""
    if (run / "eval.json").is_file():
        return json.loads((run / "eval.json").read_text())
    config = run / "final" / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{run}: no eval.json and no final/config.json (has the run finished?)")
    return json.loads(config.read_text()).get("val_metrics", {})


def l2_curve(run: Path) -> list[tuple[int, float]]:
    """(step, validation L2) pairs logged during training, empty without TensorBoard logs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    if "val/l2" not in acc.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in acc.Scalars("val/l2")]


def table(runs: list[Path], names: list[str]) -> str:
    head = "| run | " + " | ".join(title for _, title, _ in COLUMNS) + " | val L2 during training |"
    lines = [head, "| --- |" + " ---: |" * len(COLUMNS) + " --- |"]
    for run, name in zip(runs, names, strict=True):
        m = final_metrics(run)
        cells = [fmt.format(m[key]) if key in m else "n/a" for key, _, fmt in COLUMNS]
        curve = ", ".join(f"{v:.1f}" for _, v in l2_curve(run))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {curve} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (out_dir of train_tokenizer.py)")
    parser.add_argument("--names", nargs="+", default=None, help="a label per run (default: directory names)")
    args = parser.parse_args(argv)
    names = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs):
        print(f"error: {len(args.runs)} runs but {len(names)} names", file=sys.stderr)
        return 2
    try:
        print(table(args.runs, names))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
