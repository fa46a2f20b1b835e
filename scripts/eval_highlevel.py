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
    from control.highlevel import add_guidance_argument

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
    p.add_argument("--windows", type=int, default=15, help="windows generated per text (from a standing start)")
    add_guidance_argument(p)
    p.add_argument(
        "--judge",
        type=Path,
        help="high-level policy directory whose theme classifier judges faithfulness (default: the evaluated "
        "policy's own); pass the shipped one to compare policies with one judge",
    )
    p.add_argument(
        "--judge-cv",
        action="store_true",
        help="also measure the theme judge on true motion of files it was not fitted on (leave one file out, all "
        "files; about a minute): the ceiling of text faithfulness",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


LABEL_GOALS = {
    "stand": (0.0, 0.0, None),
    "turn": (0.0, 1.2, None),
    "walk": (1.0, 0.0, None),
    "run": (3.0, 0.0, None),
    "jump": (0.5, 0.0, None),
    "crouch": (0.3, 0.0, 0.6),
    "on_ground": (0.0, 0.0, 0.3),
}
"""COM goal (speed m/s, turn rate rad/s, height m or None to keep it) for each activity label's texts: inside the
label's band of control.labels.window_label (stand below 0.4 m/s, walk 0.4-1.5, run above 2.2, a turn above 0.8
rad/s) and at the label's median COM height in the data (crouch 0.60 m, on the ground 0.30 m)."""


def judged_share(planner_for, texts, windows: int, judge) -> float:
    """Share of generated windows (``windows`` per text, from a standing start) that ``judge`` accepts;
    ``planner_for(embedding, seed)`` makes the planner of a text, ``judge(windows (N, L, F))`` -> bools (N,)."""
    from control.runner import generate

    hits = []
    for i, emb in enumerate(texts):
        planner = planner_for(emb, i)
        rollout, L = generate(planner, windows), planner.tokenizer.window
        hits += list(judge(rollout.features[L:].reshape(-1, L, rollout.features.shape[1])))
    return sum(hits) / max(len(hits), 1)


def faithfulness(
    tokenizer, policy, config, clf, encoder, desc, texts_per_theme: int, windows: int, guidance: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Per theme: the share of generated windows the theme classifier ``clf`` recognises as that theme; per activity
    label: the share of windows generated from the label's texts (and a COM goal in its band, LABEL_GOALS) that
    control.labels.window_label labels so (a rule that is exact on true windows)."""
    import numpy as np

    from control.labels import LABELS, window_label
    from control.runner import Goal, Planner

    def planner_for(goal: Goal):
        return lambda emb, seed: Planner(tokenizer, policy, emb, goal, guidance=guidance, seed=seed)

    themes = {}
    for theme in config["themes"]:
        goal = Goal(min(config.get("theme_speeds", {}).get(theme, 0.0), 5.0))
        texts = encoder.encode(desc.texts(theme)[:texts_per_theme])
        themes[theme] = judged_share(
            planner_for(goal), texts, windows, lambda w, t=theme: np.array(clf.predict(w)) == t
        )
    labels = {}
    for label in LABELS:
        texts = encoder.encode(desc.label_paraphrases(label)[:texts_per_theme])
        judge = lambda w, lab=label: [window_label(x, tokenizer.fps) == lab for x in w]  # noqa: E731
        labels[label] = judged_share(planner_for(Goal(*LABEL_GOALS[label])), texts, windows, judge)
    return themes, labels


def judge_ceiling(dataset, themes: list[str], window: int, motion_windows: int) -> dict:
    """The theme judge's leave-one-file-out accuracy on consecutive true windows of every file (see
    ``control.theme_classifier.leave_one_file_out``), per theme and averaged over themes."""
    import numpy as np

    from control.theme_classifier import leave_one_file_out
    from envs.reference import theme_of
    from motiontok.data import MotionDataset

    ds = MotionDataset.load(dataset)
    starts = ds.window_starts(window, window)  # (N,) consecutive windows, files in order
    files = np.array(ds.clip_files)[np.searchsorted(ds.split_points, starts, side="right") - 1]
    known = np.array([theme_of(f) in themes for f in files])
    if not known.any():
        raise ValueError(f"{dataset}: no file of the policy's themes {themes} to measure the judge on")
    labels = np.array([themes.index(theme_of(f)) for f in files[known]])
    windows = ds.features[starts[known, None] + np.arange(window)]  # (N, L, F)
    acc = leave_one_file_out(windows, labels, files[known], themes, motion_windows)
    means = {f"mean_{unit}": round(float(np.nanmean(list(per.values()))), 4) for unit, per in acc.items()}
    rounded = {unit: {k: round(v, 3) for k, v in per.items()} for unit, per in acc.items()}
    return {**means, **rounded, "motion_windows": motion_windows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from control.highlevel import load_highlevel, load_theme_classifier
    from control.highlevel_data import HighLevelData, text_bank
    from control.labels import LABELS, window_label
    from control.text import TextEncoder, load_descriptions
    from motiontok import MotionTokenizer
    from motiontok.data import ensure_dataset
    from motiontok.errors import CheckpointError, MotionDataError

    torch.set_num_threads(args.threads)
    try:
        tokenizer = MotionTokenizer.load(args.tokenizer)
        policy, config = load_highlevel(args.checkpoint, tokenizer)
        clf = load_theme_classifier(args.judge or args.checkpoint)
        encoder = TextEncoder(args.text_encoder)
        bank, themes = text_bank(encoder, 0.0)
        dataset = ensure_dataset(args.dataset, args.data)
        data = HighLevelData(
            dataset, tokenizer, bank, themes, lambda w, fps: LABELS.index(window_label(w, fps)),
            args.val_files, progress=False, train=False,
        )  # fmt: skip
        cv = judge_ceiling(dataset, config["themes"], tokenizer.window, args.windows) if args.judge_cv else None
    except (CheckpointError, MotionDataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics = data.evaluate(policy, 0.0, None, guidance=args.guidance)
    faith, label_faith = faithfulness(
        tokenizer, policy, config, clf, encoder, load_descriptions(), args.texts_per_theme, args.windows, args.guidance
    )
    result = {
        **{k: round(v, 4) for k, v in metrics.items()},
        "text_faithfulness": round(sum(faith.values()) / max(len(faith), 1), 4),
        "text_faithfulness_per_theme": {k: round(v, 3) for k, v in faith.items()},
        "label_faithfulness": round(sum(label_faith.values()) / max(len(label_faith), 1), 4),
        "label_faithfulness_per_label": {k: round(v, 3) for k, v in label_faith.items()},
        "classifier_val_accuracy": config.get("classifier_val_accuracy"),
        **({"judge_cv": cv} if cv is not None else {}),
        "guidance": args.guidance,
        "checkpoint": str(args.checkpoint or "shipped"),
        "judge": str(args.judge or args.checkpoint or "shipped"),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
