"""Image dataset loaders: IDX/MNIST, CIFAR-10 python batches, image folders, and the standardizer."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from motiontok.image_data import (
    DatasetError,
    ImageFolderDataset,
    ImageStandardizer,
    load_cifar10,
    load_mnist,
    load_mnist_labels,
    read_idx,
    resize_short_side,
)

MNIST_DIR = Path(os.environ.get("MOTIONTOK_MNIST", "/work/shared/data/mnist"))
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: magic 00 00 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ----------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)  # non-square: catches swapped dims
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    got_images = read_idx(write_idx(tmp_path / f"img{suffix}", images, gz))
    got_labels = read_idx(write_idx(tmp_path / f"lab{suffix}", labels, gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (4, 5, 3)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_multibyte_types_are_big_endian(tmp_path: Path) -> None:
    ints = np.array([[1, -2, 70000], [3, 256, -(2**31)]], dtype=np.int32)
    floats = np.array([0.5, -1.25, 3e5], dtype=np.float32)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i", ints)), ints)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f", floats)), floats)
    assert read_idx(tmp_path / "i").flags.writeable


def test_read_idx_errors(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(DatasetError, match="truncated payload"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"\x00")
    with pytest.raises(DatasetError, match="trailing bytes"):
        read_idx(tmp_path / "long")
    (tmp_path / "magic").write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(DatasetError, match="bad IDX magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "type").write_bytes(b"\x00\x00\x07" + data[3:])
    with pytest.raises(DatasetError, match="bad IDX magic"):
        read_idx(tmp_path / "type")
    (tmp_path / "header").write_bytes(data[:9])
    with pytest.raises(DatasetError, match="truncated IDX header"):
        read_idx(tmp_path / "header")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:-12])
    with pytest.raises(DatasetError, match="gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DatasetError, match=r"nope.*not found"):
        read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------- MNIST


def test_load_mnist_binarizes_at_half_and_finds_both_spellings(tmp_path: Path) -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 3, 4], images[0, 3, 5], images[1, 27, 0] = 127, 128, 255
    write_idx(tmp_path / "t10k-images.idx3-ubyte", images)  # dot spelling, uncompressed
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 2], dtype=np.uint8), gz=True)
    x = load_mnist(tmp_path, "test")
    assert x.shape == (2, 1, 28, 28) and x.dtype == torch.float32
    assert x[0, 0, 3, 4] == 0 and x[0, 0, 3, 5] == 1 and x[1, 0, 27, 0] == 1 and x.sum() == 2
    raw = load_mnist(tmp_path, "test", binarize=False)
    assert raw[0, 0, 3, 4] == pytest.approx(127 / 255) and raw[1, 0, 27, 0] == 1.0
    assert load_mnist_labels(tmp_path, "test").tolist() == [7, 2]


def test_load_mnist_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "valid")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(5, dtype=np.uint8))  # labels where images belong
    with pytest.raises(DatasetError, match="3-D"):
        load_mnist(tmp_path, "train")


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST at {MNIST_DIR} (set MOTIONTOK_MNIST)")
def test_real_mnist_test_split() -> None:
    x = load_mnist(MNIST_DIR, "test")
    labels = load_mnist_labels(MNIST_DIR, "test")
    assert x.shape == (10000, 1, 28, 28)
    assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    assert 0.05 < x.mean().item() < 0.25  # digits are thin strokes on a black background
    assert labels.shape == (10000,) and labels.min() == 0 and labels.max() == 9
    assert len(torch.unique(labels)) == 10


# ------------------------------------------------------------------------------------------------ CIFAR-10


def write_cifar_batches(folder: Path, per_batch: int = 2) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Tiny batches in the original format (bytes keys); returns {name: (data (N, 3072), labels)}."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(b + k) % 10 for k in range(per_batch)]
        record = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * 2}
        with (folder / name).open("wb") as f:
            pickle.dump(record, f, protocol=2)
        batches[name] = (data, labels)
    return batches


def test_cifar_layout_is_channel_plane_then_row_major(tmp_path: Path) -> None:
    batches = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    data, labels = batches["test_batch"]
    data[:] = 0
    data[0, 5 * 32 + 17] = 200  # R plane, row 5, col 17
    data[0, 1024 + 30 * 32 + 2] = 150  # G plane, row 30, col 2
    data[1, 2048 + 0 * 32 + 31] = 99  # B plane, row 0, col 31
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as f:
        pickle.dump({b"labels": labels, b"data": data}, f, protocol=2)
    images, got_labels = load_cifar10(tmp_path, "test")
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert images[0, 0, 5, 17] == 200 and images[0, 1, 30, 2] == 150 and images[1, 2, 0, 31] == 99
    assert images.sum() == 200 + 150 + 99
    assert got_labels.tolist() == labels


def test_cifar_train_concatenates_batches_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_cifar_batches(folder)
    for root in (tmp_path, folder):  # parent folder or the batch folder itself
        images, labels = load_cifar10(root, "train")
        assert images.shape == (10, 3, 32, 32)
        expected = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
        np.testing.assert_array_equal(images.reshape(10, -1).numpy(), expected)
        assert labels.tolist() == [lab for i in range(1, 6) for lab in batches[f"data_batch_{i}"][1]]


def test_cifar_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path, "train")
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10(tmp_path, "train")
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar10(tmp_path, "test")
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match="3072"):
        load_cifar10(tmp_path, "test")


# ------------------------------------------------------------------------------------------- image folder


def save_png(path: Path, array: np.ndarray) -> Path:
    """array (H, W, 3) uint8 -> PNG (lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")
    return path


def noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    save_png(root / "cat" / "a.png", np.full((20, 40, 3), (255, 0, 0), np.uint8))
    save_png(root / "dog" / "b.PNG", noise(16, 24, 0))  # short side already 16: no resize
    save_png(root / "dog" / "sub" / "c.png", np.full((30, 20, 3), (0, 0, 255), np.uint8))
    Image.fromarray(noise(8, 8, 1)).save(root / "dog" / "d.JPEG", format="JPEG")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_lists_classes_and_shapes(folder: Path) -> None:
    ds = ImageFolderDataset(folder, size=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    assert [p.name for p, _ in ds.samples] == ["a.png", "b.PNG", "d.JPEG", "c.png"]
    for i in range(len(ds)):
        x, label = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and label == ds.samples[i][1]
    red, _ = ds[0]
    assert (red[0] == 255).all() and (red[1:] == 0).all()


def test_resize_short_side() -> None:
    assert resize_short_side(Image.new("RGB", (40, 20)), 10).size == (20, 10)
    assert resize_short_side(Image.new("RGB", (20, 30)), 10).size == (10, 15)
    assert resize_short_side(Image.new("RGB", (7, 9)), 21).size == (21, 27)  # upsampling too


def test_eval_is_centre_crop(folder: Path) -> None:
    x, _ = ImageFolderDataset(folder, size=16, train=False)[1]
    full = torch.from_numpy(noise(16, 24, 0)).permute(2, 0, 1)
    torch.testing.assert_close(x, full[:, :, 4:20])


def test_train_crop_and_flip_are_random_valid_and_reproducible(folder: Path) -> None:
    full = torch.from_numpy(noise(16, 24, 0)).permute(2, 0, 1)  # (3, 16, 24)
    windows = {
        (left, flip): (full[:, :, left : left + 16].flip(-1) if flip else full[:, :, left : left + 16])
        for left in range(9)
        for flip in (False, True)
    }
    ds, again = ImageFolderDataset(folder, size=16, seed=3), ImageFolderDataset(folder, size=16, seed=3)
    seen = set()
    for epoch in range(24):
        ds.set_epoch(epoch)
        again.set_epoch(epoch)
        x = ds[1][0]
        torch.testing.assert_close(x, again[1][0])  # same seed and epoch -> same crop
        torch.testing.assert_close(x, ds[1][0])
        matches = [key for key, w in windows.items() if torch.equal(w, x)]
        assert len(matches) == 1, "output is not a 16x16 window (or its mirror) of the image"
        seen.add(matches[0])
    assert len({left for left, _ in seen}) >= 4 and {flip for _, flip in seen} == {False, True}
    other = ImageFolderDataset(folder, size=16, seed=4)
    differs = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        other.set_epoch(epoch)
        differs.append(not torch.equal(ds[1][0], other[1][0]))
    assert any(differs), "the seed has no effect"


def test_image_folder_errors(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        ImageFolderDataset(tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no .* images"):
        ImageFolderDataset(tmp_path / "empty")
    (folder / "cat" / "zz_bad.png").write_bytes(b"this is not a png")
    png = (folder / "cat" / "a.png").read_bytes()
    (folder / "cat" / "zz_cut.png").write_bytes(png[: len(png) // 2])
    ds = ImageFolderDataset(folder, size=16)
    names = [p.name for p, _ in ds.samples]
    with pytest.raises(DatasetError, match=r"zz_bad\.png"):
        ds[names.index("zz_bad.png")]
    with pytest.raises(DatasetError, match=r"zz_cut\.png"):
        ds[names.index("zz_cut.png")]


# ------------------------------------------------------------------------------------------ standardizer


def test_standardizer_matches_brute_force_per_channel() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 5, 7), generator=g, dtype=torch.uint8)
    images[:, 2] //= 4  # channels with different statistics
    st = ImageStandardizer().fit(images)
    for c in range(3):
        values = images[:, c].double().flatten().numpy()
        assert st.mean[c].item() == pytest.approx(values.mean(), rel=1e-12)
        assert st.std[c].item() == pytest.approx(values.std(), rel=1e-12)  # population std
    z = st.normalize(images)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.double().mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.double().std((0, 2, 3), correction=0), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(st.denormalize(z), images.float(), atol=1e-4, rtol=0)
    single = st.normalize(images[0].double())  # (C, H, W) and float64 also work
    torch.testing.assert_close(single, z[0].double(), atol=1e-6, rtol=0)


def test_standardizer_batches_and_state_dict(tmp_path: Path) -> None:
    images = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 5 + 2
    whole = ImageStandardizer().fit(images)
    streamed = ImageStandardizer().fit(images.split([3, 1, 6]))
    torch.testing.assert_close(streamed.mean, whole.mean)
    torch.testing.assert_close(streamed.std, whole.std)
    state = whole.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    torch.save(state, tmp_path / "st.pt")
    restored = ImageStandardizer()
    restored.load_state_dict(torch.load(tmp_path / "st.pt", weights_only=True))
    torch.testing.assert_close(restored.normalize(images), whole.normalize(images))
    with pytest.raises(RuntimeError, match="fit"):
        ImageStandardizer().normalize(images)
    with pytest.raises(ValueError, match="shape"):
        ImageStandardizer(num_channels=1).fit(images)
    with pytest.raises(ValueError, match="missing"):
        restored.load_state_dict({"mean": state["mean"]})
