"""Compare estimators on one dataset at equal bits, steps and seeds: a table shaped like the paper's table 1.

    python scripts/compare_estimators.py --estimators daps fsq vqvae gumbel --seeds 0 1 --out docs/compare_lafan \\
        -- train.steps=2000 train.num_threads=2

    python scripts/compare_estimators.py --estimators daps fsq --seeds 0 1 2 --out docs/compare_mnist \\
        -- data=mnist train.steps=3000 daps:estimator.ess_target=0.75

Each (estimator, seed) is one run of ``scripts/train_tokenizer.py estimator=E train.seed=S out_dir=OUT/runs/E_sS``
plus the overrides after ``--``; an override written ``E:key=value`` goes to estimator E's runs only (a setting
that other estimators do not have, such as DAPS's ESS target). A run whose ``final/`` exists is not repeated, an
interrupted one resumes from its checkpoints. Results: ``OUT/results.md`` and ``OUT/results.csv`` (beta-ELBO,
log p, L2, for motion MPJPE in mm, FID when the data config names Inception weights: mean +- standard error over
seeds, on the validation data, and the bits of each estimator's code) and ``OUT/val_log_p.png`` (validation log p
during training, one line per run).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("beta_elbo", "log_p", "l2", "mpjpe_mm", "fid")
"""Table columns, in order; a metric that no run reports (MPJPE for images, FID without Inception weights) is left
out."""


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--estimators",
        nargs="+",
        default=["daps", "fsq", "vqvae", "gumbel"],
        help="estimator configs (configs/estimator/): daps daps_na vqvae fsq gumbel grmck vae ppo",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="train.seed of each run")
    p.add_argument("--out", type=Path, required=True, help="output folder (runs/, results.md, results.csv, PNG)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the training runs")
    return p.parse_args(argv), overrides


def run_one(args: argparse.Namespace, estimator: str, seed: int, overrides: list[str]) -> Path:
    out = args.out / "runs" / f"{estimator}_s{seed}"
    if (out / "final" / "config.json").is_file():
        print(f"[skip] {estimator} seed {seed}: {out / 'final'} exists", flush=True)
        return out
    cmd = [
        args.python,
        str(ROOT / "scripts" / "train_tokenizer.py"),
        f"estimator={estimator}",
        f"train.seed={seed}",
        f"out_dir={out}",
        "train.progress=false",
        *for_estimator(overrides, estimator),
    ]
    print(f"[run] {estimator} seed {seed}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    (out).mkdir(parents=True, exist_ok=True)
    (out / "compare.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"error: {estimator} seed {seed} failed (exit {result.returncode}); see {out / 'compare.log'}")
    print(f"[done] {estimator} seed {seed} in {time.monotonic() - t0:.0f} s", flush=True)
    return out


def for_estimator(overrides: list[str], estimator: str) -> list[str]:
    """The overrides that apply to ``estimator``: plain ones, and ``E:key=value`` ones with E = ``estimator``."""
    out = []
    for o in overrides:
        target, sep, rest = o.partition(":")
        if not sep or "=" in target:  # no estimator prefix (a ':' inside a value does not count)
            out.append(o)
        elif target == estimator:
            out.append(rest)
    return out


def check_prefixes(overrides: list[str], estimators: list[str]) -> None:
    """Refuse an ``E:key=value`` override whose E is not among the estimators run (a typo would go unnoticed)."""
    for o in overrides:
        target, sep, _ = o.partition(":")
        if sep and "=" not in target and target not in estimators:
            raise SystemExit(f"error: override {o!r} is for estimator {target!r}, which is not in --estimators")


def final_metrics(run: Path) -> dict[str, float]:
    """The run's final validation metrics, plus ``bits`` of its code."""
    config = json.loads((run / "final" / "config.json").read_text())
    levels = (config.get("quantizer") or {}).get("levels")
    codes = math.prod(levels) if levels else config["net"]["vocab_size"]
    return {**(config.get("val_metrics") or {}), "bits": config["net"]["block_size"] * math.log2(codes)}


def mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, float("nan")
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def val_curve(run: Path) -> tuple[list[tuple[int, float]], str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    tag = "val/log_p_fixed_var" if "val/log_p_fixed_var" in tags else "val/log_p"
    label = "validation log p (variance 0.25)" if tag.endswith("fixed_var") else "validation log p"
    return ([(e.step, e.value) for e in acc.Scalars(tag)] if tag in tags else []), label


def write_tables(args: argparse.Namespace, rows: dict[str, list[dict[str, float]]]) -> None:
    metrics = [m for m in METRICS if any(m in r for runs in rows.values() for r in runs)]
    header = ["estimator", "seeds", "bits", *[f"{m}_mean" for m in metrics], *[f"{m}_se" for m in metrics]]
    lines = ["| estimator | seeds | bits | " + " | ".join(metrics) + " |", "|---" * (3 + len(metrics)) + "|"]
    with open(args.out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for est, runs in rows.items():
            stats = [
                mean_se([r[m] for r in runs if m in r]) if any(m in r for r in runs) else (math.nan,) * 2
                for m in metrics
            ]
            bits = runs[0]["bits"]
            w.writerow([est, len(runs), f"{bits:.1f}", *[s[0] for s in stats], *[s[1] for s in stats]])
            cells = [_cell(m, se) for m, se in stats]
            lines.append(f"| {est} | {len(runs)} | {bits:.1f} | " + " | ".join(cells) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


def _cell(mean: float, se: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.2f} ± {se:.2f}" if not math.isnan(se) else f"{mean:.2f}"


def plot_curves(args: argparse.Namespace, runs: dict[tuple[str, int], Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors, label = {}, "validation log p"
    for (est, seed), run in runs.items():
        curve, label = val_curve(run)
        if curve:
            color = colors.setdefault(est, f"C{len(colors)}")
            ax.plot(*zip(*curve, strict=True), color=color, alpha=0.8, label=est if seed == min(args.seeds) else None)
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "val_log_p.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    check_prefixes(overrides, args.estimators)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {(e, s): run_one(args, e, s, overrides) for e in args.estimators for s in args.seeds}
    rows: dict[str, list[dict[str, float]]] = {}
    for (est, _), run in runs.items():
        rows.setdefault(est, []).append(final_metrics(run))
    write_tables(args, rows)
    plot_curves(args, runs)
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
