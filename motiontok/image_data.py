"""Image datasets for the paper's vision experiments: MNIST, CIFAR-10 and ImageNet-256 (an image folder).

Paper references (``/work/shared/paper/daps-paper.txt``):

* Section 4 ("Datasets"): "MNIST: 28×28 (binary)", "CIFAR-10: 32×32", "ImageNet-256: 256×256".
  The paper does not say how MNIST is binarized (static or dynamic); :func:`load_mnist` uses a fixed
  (static) threshold: a pixel is 1 when its grey level / 255 is above 0.5.
* Appendix J ("Images"): "For ImageNet-256, we randomly crop and flip the images. All images are
  standardized using their empirical mean and standard deviation. CIFAR-10 and MNIST are also standardized
  similarly." -> :class:`ImageFolderDataset` (random crop + flip when training) and
  :class:`ImageStandardizer` (per-channel mean and standard deviation of the training set).

Every loader raises :class:`DatasetError` naming the file and what was expected when input is missing or
malformed. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MNIST_PREFIX = {"train": "train", "test": "t10k"}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

# IDX type code (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


class DatasetError(ValueError):
    """An image dataset file is missing, truncated or malformed."""


# ----------------------------------------------------------------------------------------------------- IDX


def _read_bytes(path: Path) -> bytes:
    """Whole file contents, gunzipped when the file is gzip (detected by its magic bytes, not its name)."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected an IDX file, optionally gzip-compressed)")
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path}: corrupt or truncated gzip data ({err})") from err


def _parse_idx_header(data: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, dims, header length) of an IDX byte string."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"{path}: bad IDX magic number {data[:4].hex() or '(empty file)'}; expected 00 00 <type code "
            f"in {sorted(hex(c) for c in _IDX_DTYPES)}> <ndim>"
        )
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetError(f"{path}: truncated IDX header: {ndim} dimensions need {header_len} bytes, got {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return np.dtype(_IDX_DTYPES[data[2]]), dims, header_len


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed, into an array of shape ``dims``.

    Layout: magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the row-major
    big-endian payload. The result is writable and in native byte order.
    """
    path = Path(path)
    data = _read_bytes(path)
    dtype, dims, header_len = _parse_idx_header(data, path)
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header_len
    if got != expected:
        problem = "truncated payload" if got < expected else "trailing bytes after payload"
        raise DatasetError(f"{path}: {problem}: dims {dims} of {dtype.str} need {expected} bytes, got {got}")
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # copy: writable, native byte order


# --------------------------------------------------------------------------------------------------- MNIST


def _check_split(split: str, allowed: Iterable[str]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {sorted(allowed)}, got {split!r}")


def _find_mnist_file(root: Path, split: str, kind: str) -> Path:
    """Locate e.g. ``train-images-idx3-ubyte`` under ``root`` (also ``.idx3-ubyte`` spelling, ``.gz``)."""
    _check_split(split, MNIST_PREFIX)
    prefix, ndim = MNIST_PREFIX[split], 3 if kind == "images" else 1
    names = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    names += [name + ".gz" for name in names]
    folders = [root, root / "raw", root / "MNIST" / "raw"]  # the last two: torchvision's layout
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise DatasetError(f"{root}: no MNIST {split} {kind} file found; expected one of {names} (in {root} or raw/)")


def load_mnist(root: str | Path, split: str = "train", binarize: bool = True) -> torch.Tensor:
    """MNIST images as a float tensor (N, 1, 28, 28).

    Grey levels are scaled to [0, 1]. With ``binarize`` (the paper's "binary" MNIST, section 4; the method
    is not stated there) each pixel is statically thresholded: 1.0 where level / 255 > 0.5, else 0.0.
    """
    path = _find_mnist_file(Path(root), split, "images")
    images = read_idx(path)  # (N, 28, 28) uint8
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{path}: expected a 3-D uint8 image array, got {images.dtype} of shape {images.shape}")
    x = torch.from_numpy(images).unsqueeze(1).float() / 255.0  # (N, 1, H, W) in [0, 1]
    return (x > 0.5).float() if binarize else x


def load_mnist_labels(root: str | Path, split: str = "train") -> torch.Tensor:
    """MNIST labels as an int64 tensor (N,) with values 0..9."""
    path = _find_mnist_file(Path(root), split, "labels")
    labels = read_idx(path)  # (N,) uint8
    if labels.ndim != 1:
        raise DatasetError(f"{path}: expected a 1-D label array, got shape {labels.shape}")
    return torch.from_numpy(labels.astype(np.int64))


# ------------------------------------------------------------------------------------------------ CIFAR-10


def _cifar_folder(root: Path) -> Path:
    """The ``cifar-10-batches-py`` folder: ``root`` itself or its child of that name."""
    for folder in (root / CIFAR_DIR, root):
        if (folder / "test_batch").is_file() or (folder / "data_batch_1").is_file():
            return folder
    raise DatasetError(f"{root}: no CIFAR-10 python batches found; expected {root}/{CIFAR_DIR}/data_batch_1")


def _dict_get(batch: dict, key: str, path: Path) -> object:
    """Value for ``key`` whether the pickle stored bytes keys (the original files) or str keys."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DatasetError(f"{path}: CIFAR batch has no {key!r} entry (keys: {list(batch)[:6]})")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data (N, 3072) uint8, labels (N,) int64) of one pickled batch. Only open files you trust (pickle)."""
    if not path.is_file():
        raise DatasetError(f"{path}: CIFAR-10 batch file not found")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DatasetError(f"{path}: not a readable CIFAR-10 pickle ({err})") from err
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data = np.asarray(_dict_get(batch, "data", path))
    labels = np.asarray(_dict_get(batch, "labels", path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: expected data of shape (N, 3072) uint8, got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    return data, labels


def load_cifar10(root: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the original "python version" batches: images (N, 3, 32, 32) uint8, labels (N,) int64.

    ``root`` is the ``cifar-10-batches-py`` folder or its parent. ``train`` reads ``data_batch_1..5`` (all
    required), ``test`` reads ``test_batch``. Each row of a batch is the R plane, then G, then B (1024 values
    each, row-major 32x32).
    """
    _check_split(split, CIFAR_BATCHES)
    folder = _cifar_folder(Path(root))
    parts = [_read_cifar_batch(folder / name) for name in CIFAR_BATCHES[split]]
    data = np.concatenate([p[0] for p in parts])  # (N, 3072)
    labels = np.concatenate([p[1] for p in parts])  # (N,)
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32))  # (N, C, H, W)
    return images, torch.from_numpy(labels)


# ------------------------------------------------------------------------------------------- image folder


def _list_images(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(file, class index)]) of images under ``root/<class>/...``, sorted."""
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder not found (expected <root>/<class>/<image>.jpg|png)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    samples = [
        (p, label)
        for label, name in enumerate(classes)
        for p in sorted((root / name).rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not samples:
        raise DatasetError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images found in class subfolders")
    return classes, samples


def _open_rgb(path: Path) -> Image.Image:
    """Decode an image file fully, as RGB."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: cannot decode image ({err})") from err


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize (bicubic) so that the shorter side is exactly ``size``, keeping the aspect ratio."""
    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img.resize(new, Image.Resampling.BICUBIC)


def crop_params(height: int, width: int, size: int, generator: torch.Generator | None) -> tuple[int, int, bool]:
    """(top, left, flip) of a ``size``x``size`` crop: random crop + coin-flip when ``generator`` is given,
    centre crop without flip when it is None."""
    if generator is None:
        return (height - size) // 2, (width - size) // 2, False
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    flip = bool(torch.rand((), generator=generator) < 0.5)
    return top, left, flip


class ImageFolderDataset(Dataset):
    """Images under ``root/<class>/`` (jpg/jpeg/png, any case), as (3, size, size) uint8 tensors + labels.

    Each image is resized so its short side is ``size``, then (``train``) randomly cropped to ``size`` x
    ``size`` and flipped horizontally with probability 1/2 (paper appendix J), or (not ``train``) centre
    cropped. The randomness of item ``i`` comes from a ``torch.Generator`` seeded from (``seed``, epoch,
    ``i``), so it is reproducible and independent of DataLoader workers and ordering; call
    :meth:`set_epoch` to draw new crops each epoch.
    """

    def __init__(self, root: str | Path, size: int = 256, train: bool = True, seed: int = 0) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.root = Path(root)
        self.size, self.train, self.seed, self.epoch = size, train, seed, 0
        self.classes, self.samples = _list_images(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the crops/flips of another epoch (training only)."""
        self.epoch = epoch

    def generator(self, index: int) -> torch.Generator:
        """The generator that draws item ``index``'s crop and flip in the current epoch."""
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        img = resize_short_side(_open_rgb(path), self.size)
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)  # (3, H, W)
        top, left, flip = crop_params(x.shape[1], x.shape[2], self.size, self.generator(index) if self.train else None)
        x = x[:, top : top + self.size, left : left + self.size]  # (3, size, size)
        return (x.flip(-1) if flip else x).contiguous(), label


# ------------------------------------------------------------------------------------------ standardizer


class ImageStandardizer:
    """Per-channel standardization with the training set's empirical mean and standard deviation
    (paper appendix J: "All images are standardized using their empirical mean and standard deviation").

    Statistics are in the units of the data given to :meth:`fit` (e.g. uint8 levels 0..255 or floats in
    [0, 1]); feed :meth:`normalize` data in the same units. They are merged batch by batch in float64
    (Chan et al.'s parallel update), so ``fit`` also accepts an iterable of batches too large to stack.
    """

    def __init__(self, num_channels: int = 3, min_std: float = 1e-6) -> None:
        self.num_channels, self.min_std = num_channels, min_std
        self._reset()

    def _reset(self) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.mean = torch.zeros(self.num_channels, dtype=torch.float64)  # (C,)
        self.m2 = torch.zeros(self.num_channels, dtype=torch.float64)  # (C,) sum of squared deviations

    def _update(self, images: torch.Tensor) -> None:
        """Fold a batch (N, C, H, W) into the statistics."""
        if images.ndim != 4 or images.shape[1] != self.num_channels:
            raise ValueError(f"expected images (N, {self.num_channels}, H, W), got shape {tuple(images.shape)}")
        x = images.to(torch.float64).transpose(0, 1).reshape(self.num_channels, -1)  # (C, N*H*W)
        n_b = x.shape[1]
        if n_b == 0:
            return
        mean_b = x.mean(1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(1)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * n_b / n)
        self.count = n

    def fit(self, images: torch.Tensor | Iterable[torch.Tensor]) -> ImageStandardizer:
        """Reset, then estimate statistics from a tensor (N, C, H, W) or an iterable of such batches."""
        self._reset()
        for batch in [images] if isinstance(images, torch.Tensor) else images:
            self._update(batch)
        if self.count.item() == 0:
            raise ValueError("ImageStandardizer.fit got no pixels")
        return self

    @property
    def std(self) -> torch.Tensor:
        """(C,) population standard deviation, floored at ``min_std``."""
        return (self.m2 / self.count.clamp(min=1.0)).sqrt().clamp(min=self.min_std)

    def _stats_like(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        if self.count.item() == 0:
            raise RuntimeError("ImageStandardizer has no statistics: call fit() or load_state_dict() first")
        if x.ndim < 3 or x.shape[-3] != self.num_channels:
            raise ValueError(f"expected images (..., {self.num_channels}, H, W), got shape {tuple(x.shape)}")
        dtype = x.dtype if x.is_floating_point() else torch.float32
        shape = (self.num_channels, 1, 1)
        return self.mean.to(x.device, dtype).view(shape), self.std.to(x.device, dtype).view(shape), dtype

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C, H, W) data units -> standardized float (float32 for integer input)."""
        mean, std, dtype = self._stats_like(x)
        return (x.to(dtype) - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C, H, W) standardized -> data units (float; not rounded or clipped)."""
        mean, std, dtype = self._stats_like(x)
        return x.to(dtype) * std + mean

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Statistics as tensors only (safe for ``torch.load(weights_only=True)``)."""
        return {"count": self.count.clone(), "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore statistics written by :meth:`state_dict`."""
        missing = {"count", "mean", "m2"} - set(state)
        if missing:
            raise ValueError(f"ImageStandardizer state is missing {sorted(missing)}")
        if state["mean"].shape != (self.num_channels,) or state["m2"].shape != (self.num_channels,):
            raise ValueError(
                f"ImageStandardizer state has shape {tuple(state['mean'].shape)}, expected ({self.num_channels},)"
            )
        self.count = state["count"].to(torch.float64).reshape(()).clone()
        self.mean = state["mean"].to(torch.float64).clone()
        self.m2 = state["m2"].to(torch.float64).clone()
