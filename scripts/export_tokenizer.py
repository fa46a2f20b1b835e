"""Ship a trained tokenizer: copy a run's final/ directory and write a README with its training record.

    python scripts/export_tokenizer.py --run runs/tokenizer --out assets/checkpoints/tokenizer_h1 \\
        --eval-json eval_tokenizer.json [--ik-json eval_ik.json] [--notes notes.md]

The README states the exact training command, the resolved config, the machine, the training time and the
validation metrics (from scripts/eval_tokenizer.py --json and, optionally, scripts/eval_ik_playback.py --json).
The copy loads with MotionTokenizer.load(out) before anything is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from motiontok import MotionTokenizer
from motiontok.errors import CheckpointError

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


def _table(metrics: dict, keys: tuple[str, ...]) -> str:
    rows = [
        f"| `{k}` | {metrics[k]:.4g} |" if isinstance(metrics[k], float) else f"| `{k}` | {metrics[k]} |"
        for k in keys
        if k in metrics
    ]
    return "| metric | value |\n| --- | --- |\n" + "\n".join(rows)


def _stages(config: dict) -> list[str]:
    """Lines on the earlier training stages a run started from (``train.init_from``), newest first."""
    lines, total, source = [], config.get("train_seconds", 0.0), config.get("init_from")
    while source:
        total += source.get("train_seconds", 0.0)
        lines.append(
            f"- started from the weights of `{source['path']}`: {source.get('step')} steps, "
            f"{source.get('train_seconds', 0):.0f} s, by `python {source.get('command', '?')}`"
        )
        source = source.get("init_from")
    return lines + ([f"- training time, all stages: {total:.0f} s ({total / 3600:.2f} h)"] if lines else [])


def render_readme(config: dict, eval_metrics: dict, ik_metrics: dict | None, notes: str = "") -> str:
    hours = config.get("train_seconds", 0.0) / 3600
    machine = config.get("machine", {})
    cfg = config.get("config", {})
    lines = [
        "# Shipped H1 tokenizer",
        "",
        "DAPS tokenizer for LAFAN1-H1 windows (32 frames x 127 features at 30 fps -> 64 tokens in [0, 1024)), "
        "produced by this project's `scripts/train_tokenizer.py` on the training files (the paper's four "
        "validation files held out). Load it with `MotionTokenizer.load()`.",
        "",
        "## How it was made",
        "",
        f"- command: `python {config.get('command', '?')}` (from the repository root, data prepared by "
        "`scripts/prepare_lafan.py`)",
        f"- steps: {config.get('step')}, batch {cfg.get('train', {}).get('batch_size')}, "
        f"{config.get('world_size', 1)} process(es)",
        f"- training time: {config.get('train_seconds', 0):.0f} s ({hours:.2f} h)",
        f"- machine: {machine.get('processor', '?')}, {machine.get('cpu_count', '?')} CPUs, device "
        f"{machine.get('device', '?')}, {machine.get('threads', '?')} torch thread(s), torch {machine.get('torch')}, "
        f"{machine.get('platform', '?')}",
        *_stages(config),
        "- resolved config: `config.json` (`config` key), also the hydra record of the run",
        "",
        "## Validation (the paper's four validation files, consecutive windows)",
        "",
        "`python scripts/eval_tokenizer.py --checkpoint assets/checkpoints/tokenizer_h1 --data data/lafan1_h1.h5 "
        "--json` (log_p, l2, elbo in standardized units, summed over the window):",
        "",
        _table(eval_metrics, KEYS),
    ]
    if ik_metrics:
        lines += [
            "",
            "IK playback of the reconstruction, `python scripts/eval_ik_playback.py --data <LAFAN1-H1 CSVs> "
            "--checkpoint assets/checkpoints/tokenizer_h1 --json`:",
            "",
            _table(ik_metrics, IK_KEYS),
        ]
    if notes.strip():
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training output directory (holds final/)")
    parser.add_argument("--out", required=True, help="destination directory (replaced)")
    parser.add_argument("--eval-json", required=True, help="output of scripts/eval_tokenizer.py --json")
    parser.add_argument("--ik-json", help="output of scripts/eval_ik_playback.py --json (optional)")
    parser.add_argument("--notes", help="a Markdown file appended as the README's Notes section (optional)")
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
    tmp = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=".export-"))
    shutil.copytree(src, tmp / "ckpt")
    (tmp / "ckpt" / "README.md").write_text(render_readme(tok.config, eval_metrics, ik_metrics, notes))
    MotionTokenizer.load(tmp / "ckpt")  # the copy is loadable
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.move(tmp / "ckpt", out)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"exported {src} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
