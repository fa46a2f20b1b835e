#!/usr/bin/env python
"""Evaluate a high-level policy on the validation files: token NLL and accuracy (teacher forcing), the decoded
motion of sampled codes against the true next window (MPJPE, joint RMSE), the COM goal error, and text
faithfulness: motion generated from each theme's texts, judged by the theme classifier stored with the policy.

Examples:
  python scripts/eval_highlevel.py --checkpoint assets/checkpoints/highlevel_h1 --data ../shared/data/lafan1_h1 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from motiontok.data import PAPER_VAL_FILES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 ok, 2 unreadable data or checkpoint, or a policy of another tokenizer.",
    )
    p.add_argument("--checkpoint", type=Path, help="high-level policy directory (default: the shipped one)")
    p.add_argument("--data", type=Path, required=True, help="LAFAN1-H1 CSV folder (builds --dataset if missing)")
    p.add_argument("--dataset", type=Path, default=Path("data/lafan1_h1.h5"), help="prepared HDF5 dataset")
    p.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the shipped one)")
    p.add_argument("--text-encoder", type=Path, help="local BERT-family folder (default: all-MiniLM-L6-v2)")
    p.add_argument("--val-files", nargs="+", default=list(PAPER_VAL_FILES), help="validation file stems")
    p.add_argument("--texts-per-theme", type=int, default=3, help="paraphrases per theme for faithfulness")
    p.add_argument("--windows", type=int, default=3, help="windows generated per text (from a standing start)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight (1 = off)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def faithfulness(
    tokenizer, policy, config, encoder, desc, texts_per_theme: int, windows: int, guidance: float = 1.0
) -> dict[str, float]:
    """Per theme: the share of generated windows the theme classifier recognises as that theme."""
    from control.highlevel import load_theme_classifier
    from control.runner import Goal, Planner, generate

    clf = load_theme_classifier(config["_path"])
    L = tokenizer.window
    out = {}
    for theme in config["themes"]:
        texts = desc.texts(theme)[:texts_per_theme]
        goal = Goal(min(config.get("theme_speeds", {}).get(theme, 0.0), 5.0))
        hits = total = 0
        for i, emb in enumerate(encoder.encode(texts)):
            rollout = generate(Planner(tokenizer, policy, emb, goal, guidance=guidance, seed=i), windows)
            votes = clf.predict(rollout.features[L:].reshape(-1, L, rollout.features.shape[1]))
            hits, total = hits + votes.count(theme), total + len(votes)
        if total:
            out[theme] = hits / total
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from control.highlevel import load_highlevel
    from control.highlevel_data import HighLevelData, text_bank
    from control.text import LABELS, TextEncoder, load_descriptions, window_label
    from motiontok import MotionTokenizer
    from motiontok.data import ensure_dataset
    from motiontok.errors import CheckpointError, MotionDataError

    torch.set_num_threads(args.threads)
    try:
        tokenizer = MotionTokenizer.load(args.tokenizer)
        policy, config = load_highlevel(args.checkpoint, tokenizer)
        encoder = TextEncoder(args.text_encoder)
        bank, themes = text_bank(encoder, 0.0)
        dataset = ensure_dataset(args.dataset, args.data)
        data = HighLevelData(
            dataset, tokenizer, bank, themes, lambda w, fps: LABELS.index(window_label(w, fps)),
            args.val_files, progress=False, train=False,
        )  # fmt: skip
    except (CheckpointError, MotionDataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config["_path"] = args.checkpoint
    metrics = data.evaluate(policy, 0.0, None)
    faith = faithfulness(
        tokenizer, policy, config, encoder, load_descriptions(), args.texts_per_theme, args.windows, args.guidance
    )
    result = {
        **{k: round(v, 4) for k, v in metrics.items()},
        "text_faithfulness": round(sum(faith.values()) / max(len(faith), 1), 4),
        "text_faithfulness_per_theme": {k: round(v, 3) for k, v in faith.items()},
        "classifier_val_accuracy": config.get("classifier_val_accuracy"),
        "guidance": args.guidance,
        "checkpoint": str(args.checkpoint or "shipped"),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
