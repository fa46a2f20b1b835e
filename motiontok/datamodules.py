"""Data modules: what the trainer (``motiontok.trainer.train``) needs of a dataset, for motion and for images.

A data module draws model-ready training batches from its own ``torch.Generator`` (saved with every checkpoint, so
a resumed run draws the same batches), holds the statistics that standardize its data (saved with the weights),
describes a checkpoint of a model trained on it, and provides the two callbacks the trainer calls: ``evaluate``
(validation metrics) and ``export`` (the finished model, in the form its users load).

* :class:`MotionData` — LAFAN1-H1 windows from a prepared HDF5 file, standardized by Welford statistics of the
  training files (paper appendix J); exported as a ``MotionTokenizer`` directory.
* :class:`ImageData` — binarized MNIST (idx files), CIFAR-10 (python batches) or an ImageNet-style image folder
  (random crop and flip), standardized per channel (appendix J; binarized MNIST stays {0, 1}: its Bernoulli
  likelihood needs binary targets, and an affine map of the encoder's input is absorbed by its first layer).
  Exported as an ``ImageVAE`` directory with a reconstruction grid and uniform-prior samples as PNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from motiontok.checkpoint import load_checkpoint, save_checkpoint, strip_prefix
from motiontok.data import WindowSampler, fixed_windows, split_train_val
from motiontok.errors import CheckpointError
from motiontok.evaluation import evaluate_model, evaluate_tokenizer
from motiontok.image_data import ImageFolderDataset, ImageStandardizer, load_cifar10, load_mnist
from motiontok.models import DiscreteVAE, build_model, model_record
from motiontok.normalizer import RunningNormalizer
from motiontok.tokenizer import MotionTokenizer, tokenizer_config


class DataModule(Protocol):
    """The trainer's view of a dataset."""

    generator: torch.Generator
    """The batch-sampling stream (checkpointed)."""

    def setup(self, seed: int, device: torch.device) -> None:
        """Seed the batch stream (the trainer passes ``train.seed + 1000 * rank``); later batches go to ``device``."""

    def sample(self, batch_size: int) -> Tensor:
        """A model-ready training batch on the device."""

    def state_tensors(self) -> dict[str, Tensor]:
        """Statistics saved with the weights (prefixed names)."""

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore :meth:`state_tensors` from a checkpoint's tensors."""

    def checkpoint_config(self, model: DiscreteVAE, **extra: Any) -> dict[str, Any]:
        """``config.json`` of a training checkpoint of ``model`` (plus ``extra`` records)."""

    def evaluate(self, model: DiscreteVAE, beta: float, limit: int | None) -> dict[str, float]:
        """Validation metrics: on the first ``limit`` examples during training, on all (and the costly metrics)
        when ``limit`` is None; empty without validation data."""

    def export(self, model: DiscreteVAE, path: Path, **records: Any) -> None:
        """Write the finished model to the directory ``path`` for its users."""


class MotionData:
    """LAFAN1-H1 windows (B, L, 127) of a prepared dataset, standardized by the training files' statistics."""

    def __init__(self, path: str | Path, val_files: list[str], length: int) -> None:
        self.train_set, val_set = split_train_val(path, val_files)
        self.length, self.fps = length, self.train_set.fps
        self.normalizer = RunningNormalizer(self.train_set.features.shape[1])
        self.normalizer.update(torch.from_numpy(self.train_set.features))
        self.val_windows = fixed_windows(val_set, length) if val_set is not None else None  # (W, L, F) raw
        self.sampler: WindowSampler | None = None
        self.device = torch.device("cpu")

    def setup(self, seed: int, device: torch.device) -> None:
        self.sampler = WindowSampler(self.train_set, self.length, seed=seed)
        self.device = device
        self.normalizer.to(device)

    @property
    def generator(self) -> torch.Generator:
        return self.sampler.generator

    def sample(self, batch_size: int) -> Tensor:
        return self.normalizer.normalize(self.sampler.sample(batch_size).to(self.device))  # (B, L, F)

    def state_tensors(self) -> dict[str, Tensor]:
        return {f"normalizer.{k}": v for k, v in self.normalizer.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.normalizer.load_state_dict(strip_prefix(tensors, "normalizer."))

    def checkpoint_config(self, model: DiscreteVAE, **extra: Any) -> dict[str, Any]:
        return tokenizer_config(model, self.fps, **extra)

    def evaluate(self, model: DiscreteVAE, beta: float, limit: int | None) -> dict[str, float]:
        if self.val_windows is None:
            return {}
        windows = self.val_windows if limit is None else self.val_windows[:limit]
        return evaluate_tokenizer(model, self.normalizer, windows, self.fps, beta, robot_metrics=limit is None)

    def export(self, model: DiscreteVAE, path: Path, **records: Any) -> None:
        MotionTokenizer(model, self.normalizer, self.fps).save(path, **records)


IMAGE_DATASETS = ("mnist", "cifar10", "imagenet")
IMAGE_FORMAT = "motiontok.image_vae"


class ImageData:
    """Images (B, C, S, S) of MNIST (binarized), CIFAR-10 or an image folder (``root/train``, ``root/val``)."""

    def __init__(
        self,
        dataset: str,
        root: str | Path,
        image_size: int = 256,
        standardize_images: int = 2000,
        val_images: int = 10_000,
        fid_weights: str | Path | None = None,
    ) -> None:
        """``image_size``: the image folder's crop; ``standardize_images``: how many training images of an image
        folder estimate the channel statistics (the tensor datasets use all); ``val_images``: the most validation
        images evaluated; ``fid_weights``: a local copy of pytorch-fid's Inception weights, for the FID of the
        reconstructions against the validation images in the final evaluation (RGB datasets only)."""
        if dataset not in IMAGE_DATASETS:
            raise ValueError(f"unknown image dataset {dataset!r}; choose one of {IMAGE_DATASETS}")
        self.name, root = dataset, Path(root)
        self.fid_weights = Path(fid_weights) if fid_weights else None
        if self.fid_weights is not None and dataset == "mnist":
            raise ValueError("FID needs RGB images; MNIST has none (leave data.fid_weights unset)")
        self.folder: ImageFolderDataset | None = None
        self.standardizer: ImageStandardizer | None = None
        if dataset == "mnist":
            self.train, self.val = load_mnist(root, "train"), load_mnist(root, "test")[:val_images]  # (N, 1, 28, 28)
        elif dataset == "cifar10":
            self.train, self.val = load_cifar10(root, "train")[0], load_cifar10(root, "test")[0][:val_images]
            self.standardizer = ImageStandardizer(3).fit(self.train)
        else:
            self.folder = ImageFolderDataset(root / "train", image_size, train=True)
            val = ImageFolderDataset(root / "val", image_size, train=False)
            self.train = None
            self.val = torch.stack([val[i][0] for i in range(min(len(val), val_images))])  # (N, 3, S, S) uint8
            n = min(len(self.folder), standardize_images)
            self.standardizer = ImageStandardizer(3).fit(self.folder[i][0][None] for i in range(n))
        self.generator = torch.Generator()
        self.device = torch.device("cpu")

    def setup(self, seed: int, device: torch.device) -> None:
        self.generator.manual_seed(seed)
        self.device = device

    def prepare(self, images: Tensor) -> Tensor:
        """Dataset units (uint8 levels, or MNIST's {0, 1}) -> model-ready float images on the device."""
        x = images.to(self.device)
        return self.standardizer.normalize(x) if self.standardizer is not None else x.float()

    def to_pixels(self, x: Tensor) -> Tensor:
        """Model units -> images in [0, 1] (for PNGs and FID): (B, C, S, S)."""
        if self.standardizer is None:
            return x.clamp(0, 1)
        return (self.standardizer.denormalize(x) / 255.0).clamp(0, 1)

    def sample(self, batch_size: int) -> Tensor:
        n = len(self.folder) if self.folder is not None else len(self.train)
        idx = torch.randint(n, (batch_size,), generator=self.generator)  # uniform, with replacement
        if self.folder is None:
            return self.prepare(self.train[idx])
        self.folder.set_epoch(int(torch.randint(2**31 - 1, (), generator=self.generator)))  # fresh crops
        return self.prepare(torch.stack([self.folder[int(i)][0] for i in idx]))

    def val_batches(self, limit: int | None, batch_size: int = 256) -> Iterator[Tensor]:
        val = self.val if limit is None else self.val[:limit]
        return (self.prepare(val[i : i + batch_size]) for i in range(0, len(val), batch_size))

    def state_tensors(self) -> dict[str, Tensor]:
        if self.standardizer is None:
            return {}
        return {f"standardizer.{k}": v for k, v in self.standardizer.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if self.standardizer is not None:
            self.standardizer.load_state_dict(strip_prefix(tensors, "standardizer."))

    def checkpoint_config(self, model: DiscreteVAE, **extra: Any) -> dict[str, Any]:
        return {"format": IMAGE_FORMAT, "format_version": 1, "dataset": self.name, **model_record(model), **extra}

    def evaluate(self, model: DiscreteVAE, beta: float, limit: int | None) -> dict[str, float]:
        with_fid = limit is None and self.fid_weights is not None
        metrics, recon = evaluate_model(model, self.val_batches(limit), beta, keep_recon=with_fid)
        if with_fid:
            metrics["fid"] = self.fid(recon)
        return metrics

    def fid(self, recon: list[Tensor], batch_size: int = 256) -> float:
        """FID between reconstructions (batches (b, 3, S, S) in model units, CPU) and the validation images they
        reconstruct, Inception features computed batch by batch on the data's device."""
        from motiontok import fid

        def features(images: Tensor) -> np.ndarray:  # (b, 3, S, S) model units -> (b, 2048)
            pixels = self.to_pixels(images.to(self.device))
            return fid.inception_features(pixels, self.fid_weights, device=str(self.device))

        fake = np.concatenate([features(r) for r in recon])
        real = np.concatenate(
            [features(self.prepare(self.val[i : i + batch_size])) for i in range(0, len(fake), batch_size)]
        )
        return fid.frechet_distance(*fid.activation_statistics(real), *fid.activation_statistics(fake))

    def export(self, model: DiscreteVAE, path: Path, **records: Any) -> None:
        from motiontok.image_report import save_image_grid

        tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | self.state_tensors()
        save_checkpoint(path, tensors, self.checkpoint_config(model, **records))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            x = self.prepare(self.val[:32])
            recon = model.reconstruct(model.encode(x))
            samples = model.reconstruct(model.sample_prior(32, torch.Generator().manual_seed(0)))
        model.train(was_training)
        save_image_grid(path / "reconstructions.png", torch.stack((self.to_pixels(x), self.to_pixels(recon)), 1))
        save_image_grid(path / "prior_samples.png", self.to_pixels(samples)[:, None])


def load_image_vae(path: str | Path) -> tuple[DiscreteVAE, ImageStandardizer | None, dict[str, Any]]:
    """An exported image model (``ImageData.export``): (model in eval mode, the channel standardizer or None for
    binarized MNIST, the config with its training records)."""
    tensors, config, _ = load_checkpoint(path)
    if config.get("format") != IMAGE_FORMAT:
        raise CheckpointError(f"{path}: not a motiontok image model (format={config.get('format')!r})")
    try:
        model = build_model(config)
        model.load_state_dict(strip_prefix(tensors, "model."))
        standardizer = None
        if any(k.startswith("standardizer.") for k in tensors):
            standardizer = ImageStandardizer(model.cfg.channels)
            standardizer.load_state_dict(strip_prefix(tensors, "standardizer."))
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: weights do not match the recorded config ({err})") from None
    return model.eval(), standardizer, config
