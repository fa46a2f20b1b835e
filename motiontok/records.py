"""Shipping a trained model: the README that records how it was made (command, steps, time, machine, earlier
stages) and its validation figures, written with an atomic copy of the run's checkpoint that must load before it
replaces the destination. Used by ``scripts/export_tokenizer.py``, ``scripts/export_highlevel.py`` and
``scripts/export_lowlevel.py``."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def cell(value: Any) -> str:
    """A Markdown table cell: floats to 4 significant digits, anything else as ``str``."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (cells formatted by :func:`cell`)."""
    lines = [header, ["---"] * len(header), *([cell(v) for v in row] for row in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def metrics_table(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
    """A two-column Markdown table of the ``keys`` present in ``metrics`` (floats to 4 significant digits)."""
    return table(["metric", "value"], ([f"`{k}`", metrics[k]] for k in keys if k in metrics))


def _stages(config: dict[str, Any]) -> list[str]:
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


def training_lines(config: dict[str, Any]) -> list[str]:
    """The "How it was made" bullet list of a checkpoint config written by the project's trainer."""
    machine = config.get("machine", {})
    cfg = config.get("config", {})
    seconds = config.get("train_seconds", 0.0)
    return [
        f"- command: `python {config.get('command', '?')}` (from the repository root)",
        f"- steps: {config.get('step')}, batch {cfg.get('train', {}).get('batch_size')}, "
        f"{config.get('world_size', 1)} process(es)",
        f"- training time: {seconds:.0f} s ({seconds / 3600:.2f} h)",
        f"- machine: {machine.get('processor', '?')}, {machine.get('cpu_count', '?')} CPUs, device "
        f"{machine.get('device', '?')}, {machine.get('threads', '?')} torch thread(s), torch {machine.get('torch')}, "
        f"{machine.get('platform', '?')}",
        *_stages(config),
        "- resolved config: `config.json` (`config` key), also the hydra record of the run",
    ]


def ship(src: Path, out: Path, readme: str, check: Callable[[Path], Any], ignore: tuple[str, ...] = ()) -> None:
    """Copy the checkpoint directory ``src`` to ``out`` with ``readme`` as its README.md: built in a temporary
    sibling, checked with ``check(copy)`` (which raises if the copy does not load), then moved into place. Files
    matching the glob patterns ``ignore`` (e.g. a trainer state) are left out of the copy."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".export-"))
    try:
        shutil.copytree(src, tmp / "ckpt", ignore=shutil.ignore_patterns(*ignore))
        (tmp / "ckpt" / "README.md").write_text(readme)
        check(tmp / "ckpt")
        if out.exists():
            shutil.rmtree(out)
        shutil.move(tmp / "ckpt", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_parser(doc: str, eval_help: str) -> argparse.ArgumentParser:
    """The arguments every export script takes: ``--run``, ``--out``, ``--eval-json`` and ``--notes``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training output directory (holds final/)")
    parser.add_argument("--out", required=True, help="destination directory (replaced)")
    parser.add_argument("--eval-json", required=True, help=eval_help)
    parser.add_argument("--notes", help="a Markdown file appended as the README's Notes section (optional)")
    return parser


def readme_text(lines: list[str], notes: str = "") -> str:
    """README lines, with ``notes`` (Markdown) as a final Notes section when not empty."""
    if notes.strip():
        lines = [*lines, "", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"
