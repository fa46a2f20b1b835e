"""Train the DAPS motion tokenizer, or any estimator on any dataset (hydra config: configs/train_tokenizer.yaml).

    python scripts/train_tokenizer.py                                 # CPU default (~1.5 h on 2 cores)
    python scripts/train_tokenizer.py preset=paper out_dir=runs/paper # paper budget, for a GPU
    python scripts/train_tokenizer.py data=mnist estimator=fsq        # binarized MNIST, FSQ baseline
    torchrun --nproc_per_node 2 scripts/train_tokenizer.py ...        # DistributedDataParallel
    python scripts/train_tokenizer.py --cfg job                       # print the resolved config

Running the same command again resumes from out_dir/checkpoints/latest. The result is out_dir/final/, a
MotionTokenizer directory (load it with MotionTokenizer.load(path)); for images an ImageVAE directory
(motiontok.datamodules.load_image_vae) with reconstructions.png and prior_samples.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from motiontok.daps import BetaSchedule
from motiontok.data import ensure_dataset
from motiontok.datamodules import DataModule, ImageData, MotionData
from motiontok.errors import CheckpointError, MotionDataError
from motiontok.image_data import DatasetError
from motiontok.models import DiscreteVAE
from motiontok.nets import NETWORKS
from motiontok.registry import ESTIMATORS
from motiontok.trainer import TrainConfig, train


def make_data(cfg: DictConfig) -> DataModule:
    """The data module of ``cfg.data`` (``kind``: motion or image)."""
    data = cfg.data
    if data.get("kind", "motion") == "image":
        return ImageData(data.dataset, data.root, data.image_size, data.get("standardize_images", 2000),
                         data.val_images, data.get("fid_weights"))  # fmt: skip
    path = ensure_dataset(data.path, data.source, data.fps)
    return MotionData(path, list(data.val_files), cfg.tokenizer.net.length)


@hydra.main(config_path="../configs", config_name="train_tokenizer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    est_cfg = OmegaConf.to_container(cfg.estimator, resolve=True)
    name = est_cfg.pop("name")
    if name not in ESTIMATORS:
        raise SystemExit(f"error: unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    est_cls, est_cfg_cls = ESTIMATORS[name]
    quantizer = est_cfg.pop("quantizer", None)  # the VQ baselines' bottleneck replaces the posterior head
    posterior = est_cfg.get("bottleneck") or cfg.tokenizer.posterior  # daps_na: na; vqvae: vq; fsq: fsq; vae: gauss
    if "bottleneck" not in {f.name for f in dataclasses.fields(est_cfg_cls)}:
        est_cfg.pop("bottleneck", None)
    foreign = sorted(set(est_cfg) - {f.name for f in dataclasses.fields(est_cfg_cls)})
    if foreign:  # a preset's DAPS settings (e.g. ess_target) reaching a baseline that has no such setting
        print(f"note: estimator {name!r} has no setting {', '.join(foreign)}; ignored", file=sys.stderr)
        est_cfg = {k: v for k, v in est_cfg.items() if k not in foreign}
    for key in ("beta", "tau"):  # schedules
        if isinstance(est_cfg.get(key), dict):
            est_cfg[key] = BetaSchedule(**est_cfg[key])
    network = cfg.tokenizer.get("network", "trajectory")
    if network not in NETWORKS:
        raise SystemExit(f"error: unknown tokenizer.network {network!r}; choose one of {sorted(NETWORKS)}")
    try:
        data = make_data(cfg)
        torch.manual_seed(cfg.train.seed)  # the initial weights too
        model = DiscreteVAE(
            NETWORKS[network].config(**cfg.tokenizer.net),
            posterior,
            cfg.tokenizer.posterior_init_std if quantizer is None else None,
            quantizer=quantizer,
            network=network,
        )
        estimator = est_cls(est_cfg_cls(**est_cfg))
        records = {"config": OmegaConf.to_container(cfg, resolve=True), "command": " ".join(sys.argv)}
        final = train(model, estimator, data, TrainConfig(**cfg.train), cfg.out_dir, records)
    except (MotionDataError, CheckpointError, DatasetError, ValueError, TypeError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if final:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in final.items()}))


if __name__ == "__main__":
    main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, leave without the interpreter's teardown once everything is written and the process group
        # is destroyed: gloo's threads can still abort a rank at exit ("terminate called without an active
        # exception", seen once in CI), which torchrun then reports as a failed run although the work is done.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
