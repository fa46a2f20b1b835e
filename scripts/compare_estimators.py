"""Compare estimators on one dataset at equal bits, steps and seeds: a table shaped like the paper's table 1.

    python scripts/compare_estimators.py --estimators daps fsq vqvae gumbel --seeds 0 1 --out docs/compare_lafan \
        -- train.steps=2000 train.num_threads=2

Each (estimator, seed) is one run of ``scripts/train_tokenizer.py estimator=E train.seed=S out_dir=OUT/runs/E_sS``
plus the overrides after ``--``; a run whose ``final/`` exists is not repeated, an interrupted one resumes from its
checkpoints. Results: ``OUT/results.md`` and ``OUT/results.csv`` (beta-ELBO, log p, L2 and, for motion, MPJPE in
mm: mean +- standard error over seeds, on the validation windows) and ``OUT/val_log_p.png`` (validation log p
during training, one line per run). Bits per window are printed per estimator (64 positions x log2 of the codes).
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
METRICS = ("beta_elbo", "log_p", "l2", "mpjpe_mm")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--estimators", nargs="+", default=["daps", "fsq", "vqvae", "gumbel"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
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
        *overrides,
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


def val_curve(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tag = "val/log_p_fixed_var" if "val/log_p_fixed_var" in acc.Tags()["scalars"] else "val/log_p"
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def write_tables(args: argparse.Namespace, rows: dict[str, list[dict[str, float]]]) -> None:
    header = ["estimator", "seeds", "bits", *[f"{m}_mean" for m in METRICS], *[f"{m}_se" for m in METRICS]]
    lines = ["| estimator | seeds | bits | " + " | ".join(METRICS) + " |", "|---" * (3 + len(METRICS)) + "|"]
    with open(args.out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for est, runs in rows.items():
            stats = [
                mean_se([r[m] for r in runs if m in r]) if any(m in r for r in runs) else (math.nan,) * 2
                for m in METRICS
            ]
            bits = runs[0]["bits"]
            w.writerow([est, len(runs), f"{bits:.1f}", *[s[0] for s in stats], *[s[1] for s in stats]])
            cells = [f"{m:.2f} ± {se:.2f}" if not math.isnan(se) else f"{m:.2f}" for m, se in stats]
            lines.append(f"| {est} | {len(runs)} | {bits:.1f} | " + " | ".join(cells) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


def plot_curves(args: argparse.Namespace, runs: dict[tuple[str, int], Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {}
    for (est, seed), run in runs.items():
        curve = val_curve(run)
        if curve:
            color = colors.setdefault(est, f"C{len(colors)}")
            ax.plot(*zip(*curve, strict=True), color=color, alpha=0.8, label=est if seed == min(args.seeds) else None)
    ax.set_xlabel("step")
    ax.set_ylabel("validation log p (variance 0.25)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "val_log_p.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
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
