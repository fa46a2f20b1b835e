"""Ship a trained high-level policy: copy a run's final/ directory and write a README with its training record.

    python scripts/export_highlevel.py --run runs/highlevel --out assets/checkpoints/highlevel_h1 \\
        --eval-json eval_highlevel.json [--notes notes.md]

The README states the exact training command, the resolved config, the machine, the training time, the tokenizer
it was trained on and the validation figures of scripts/eval_highlevel.py --json. The copy must load with the
shipped tokenizer (control.highlevel.load_highlevel) before anything is replaced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from control.highlevel import load_highlevel
from motiontok import MotionTokenizer
from motiontok.errors import CheckpointError
from motiontok.records import export_parser, metrics_table, readme_text, ship, table, training_lines

KEYS = (
    "token_nll", "token_accuracy", "mpjpe_mm", "joint_rmse_deg", "com_goal_error_m", "text_faithfulness",
    "label_faithfulness",
)  # fmt: skip


def render_readme(config: dict, eval_metrics: dict, notes: str = "") -> str:
    per_theme = eval_metrics.get("text_faithfulness_per_theme", {})
    judge = eval_metrics.get("classifier_val_accuracy") or config.get("classifier_val_accuracy") or {}
    cv = eval_metrics.get("judge_cv", {}).get("per_window", {})  # leave-one-file-out accuracy per theme
    lines = [
        "# Shipped high-level policy",
        "",
        "Text + the last 32 frames + a COM goal -> the 64 tokens of the next window, for the shipped H1 tokenizer "
        f"(fingerprint `{config.get('tokenizer_fingerprint')}`), produced by this project's "
        "`scripts/train_highlevel.py` on the training files (the paper's four validation files held out). Load "
        "it with `control.highlevel.load_highlevel()`; run it with `scripts/run_policy.py`.",
        "",
        "## How it was made",
        "",
        *training_lines(config),
        f"- text encoder: `{config.get('text_encoder', '?')}`; themes: {', '.join(config.get('themes', []))}",
        "",
        "## Validation (the paper's four validation files)",
        "",
        "`python scripts/eval_highlevel.py --data <LAFAN1-H1 CSVs> --json` (token NLL in nats per token; MPJPE and "
        "joint RMSE of the decoded sampled window against the true next window; COM error in m):",
        "",
        metrics_table(eval_metrics, KEYS),
        "",
        "Text faithfulness per theme (share of generated windows the theme classifier recognises) and the "
        "classifier's own accuracy on true validation windows"
        + (
            ", and on the true windows of every file when fitted on all other files (`--judge-cv`: what the judge can "
            "recognise at best)"
            if cv
            else ""
        )
        + ":",
        "",
        "| theme | generated | true windows |" + (" true windows, file held out |" if cv else ""),
        "| --- | --- | --- |" + (" --- |" if cv else ""),
        *[
            f"| {t} | {per_theme.get(t, float('nan')):.2f} | {judge.get(t, float('nan')):.2f} |"
            + (f" {cv.get(t, float('nan')):.2f} |" if cv else "")
            for t in per_theme
        ],
    ]
    per_label = eval_metrics.get("label_faithfulness_per_label", {})
    if per_label:
        lines += [
            "",
            "Label faithfulness (motion generated from each activity label's texts with a COM goal in the label's "
            "speed band, judged by `control.labels.window_label`, a rule that is exact on true windows):",
            "",
            table(["label", "generated"], ([k, v] for k, v in per_label.items())),
        ]
    return readme_text(lines, notes)


def main(argv: list[str] | None = None) -> int:
    parser = export_parser(__doc__, "output of scripts/eval_highlevel.py --json")
    parser.add_argument("--tokenizer", help="the tokenizer it must load with (default: the shipped one)")
    args = parser.parse_args(argv)
    src = Path(args.run) / "final"
    try:
        tokenizer = MotionTokenizer.load(args.tokenizer)
        _, config = load_highlevel(src, tokenizer)  # refuses a policy of another tokenizer
        eval_metrics = json.loads(Path(args.eval_json).read_text())
        notes = Path(args.notes).read_text() if args.notes else ""
        ship(src, Path(args.out), render_readme(config, eval_metrics, notes), lambda p: load_highlevel(p, tokenizer))
    except (CheckpointError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {src} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
