"""Train the high-level policy (hydra config: configs/train_highlevel.yaml).

    python scripts/train_highlevel.py                   # CPU default
    python scripts/train_highlevel.py --cfg job         # print the resolved config

Running the same command again resumes from out_dir/checkpoints/latest. The result is out_dir/final/.
"""

from __future__ import annotations

import json
import sys

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from control.highlevel import DistillationObjective, HighLevelConfig, HighLevelPolicy
from control.highlevel_data import HighLevelData, text_bank
from control.labels import LABELS, window_label
from control.text import TextEncoder
from motiontok.data import ensure_dataset
from motiontok.errors import CheckpointError, MotionDataError
from motiontok.tokenizer import MotionTokenizer
from motiontok.trainer import TrainConfig, train


@hydra.main(config_path="../configs", config_name="train_highlevel", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        train_cfg = TrainConfig(**OmegaConf.to_container(cfg.train, resolve=True))
        if train_cfg.num_threads > 0:
            torch.set_num_threads(train_cfg.num_threads)
        tokenizer = MotionTokenizer.load(cfg.tokenizer)
        encoder = TextEncoder(cfg.text_encoder)
        bank, themes = text_bank(encoder, cfg.label_text)
        dataset = ensure_dataset(cfg.dataset, cfg.source)
        data = HighLevelData(
            dataset, tokenizer, bank, themes, lambda w, fps: LABELS.index(window_label(w, fps)),
            list(cfg.val_files), cfg.stride, progress=train_cfg.progress, standing_context=cfg.standing_context,
        )  # fmt: skip
        torch.manual_seed(train_cfg.seed)  # the initial weights
        net = HighLevelConfig(
            **OmegaConf.to_container(cfg.net, resolve=True), text_dim=encoder.dim, feature_dim=127,
            block_size=tokenizer.num_tokens, vocab_size=tokenizer.vocab_size,
        )  # fmt: skip
        records = {
            "config": OmegaConf.to_container(cfg, resolve=True),
            "command": " ".join(sys.argv),
            "text_encoder": encoder.name,
            "labels": list(LABELS),
        }
        final = train(HighLevelPolicy(net), DistillationObjective(), data, train_cfg, cfg.out_dir, records)
    except (MotionDataError, CheckpointError, FileNotFoundError, ValueError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if final:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in final.items()}))


if __name__ == "__main__":
    main()
