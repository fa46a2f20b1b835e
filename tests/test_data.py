"""HDF5 dataset, the prepare script, window sampling, train/val split and the Welford normalizer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from motiontok import features as feat
from motiontok.data import (
    MotionDataset,
    WindowSampler,
    dataset_layout,
    fixed_windows,
    split_train_val,
    write_dataset,
)
from motiontok.errors import MotionDataError
from motiontok.features import FEATURE_LAYOUT
from motiontok.motion import MotionClip
from motiontok.normalizer import RunningNormalizer
from tests.conftest import synthetic_qpos, write_csv

ROOT = Path(__file__).resolve().parent.parent


def _clips():
    return [
        MotionClip("a_subject1", synthetic_qpos(40, seed=1), 30.0, "a_subject1"),
        MotionClip("b_subject2", synthetic_qpos(35, seed=2), 30.0, "b_subject2"),
        MotionClip("c_subject3", synthetic_qpos(20, seed=3), 30.0, "c_subject3"),  # shorter than a window
    ]


@pytest.fixture
def dataset_path(tmp_path):
    return write_dataset(_clips(), tmp_path / "d.h5")


def test_written_file_holds_features_qpos_com_and_splits(dataset_path):
    clips = _clips()
    with h5py.File(dataset_path) as h5:
        assert h5["features"].shape == (95, 127) and h5["qpos"].shape == (95, 26) and h5["com"].shape == (95, 3)
        np.testing.assert_array_equal(h5["split_points"][:], [0, 40, 75, 95])
        assert h5.attrs["fps"] == 30.0
        np.testing.assert_allclose(h5["features"][40:75], feat.clip_features(clips[1]), atol=1e-5)
    assert not list(dataset_path.parent.glob(".*tmp"))


def test_split_by_file_and_missing_validation_file(dataset_path):
    train, val = split_train_val(dataset_path, ["b_subject2"])
    assert train.clip_names == ["a_subject1", "c_subject3"] and val.clip_names == ["b_subject2"]
    np.testing.assert_array_equal(train.split_points, [0, 40, 60])
    with pytest.raises(MotionDataError, match=r"validation files \['zzz'\]"):
        split_train_val(dataset_path, ["zzz"])


def test_windows_stay_inside_clips(dataset_path):
    ds = MotionDataset.load(dataset_path)
    starts = ds.window_starts(32)
    # clip a: starts 0..8, clip b: 40..43, clip c (20 frames): none
    np.testing.assert_array_equal(starts, [*range(0, 9), *range(40, 44)])
    sampler = WindowSampler(ds, 32, seed=0)
    batch = sampler.sample(64)
    assert batch.shape == (64, 32, 127)
    allowed = {tuple(ds.features[s : s + 32].ravel()[:3]) for s in starts}
    assert all(tuple(w.numpy().ravel()[:3]) in allowed for w in batch)
    assert fixed_windows(ds, 32, 32).shape == (2, 32, 127)  # one per long clip


def test_sampler_is_reproducible_and_covers_every_start(dataset_path):
    ds = MotionDataset.load(dataset_path)
    a, b = WindowSampler(ds, seed=3), WindowSampler(ds, seed=3)
    torch.testing.assert_close(a.sample(8), b.sample(8))
    idx = torch.randint(len(a.starts), (4000,), generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(idx, minlength=len(a.starts)).float()
    assert counts.min() > 0.6 * counts.mean()  # uniform over all valid starts


def test_dataset_errors(tmp_path):
    with pytest.raises(MotionDataError, match="no such dataset file"):
        MotionDataset.load(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(MotionDataError, match="not a readable motiontok dataset"):
        MotionDataset.load(bad)
    with pytest.raises(MotionDataError, match="different frame rates"):
        write_dataset(
            [MotionClip("a", synthetic_qpos(5), 30.0), MotionClip("b", synthetic_qpos(5), 50.0)],
            tmp_path / "x.h5",
        )
    assert not (tmp_path / "x.h5").exists()


def test_dataset_of_an_older_feature_layout_is_refused(dataset_path, tmp_path):
    old = tmp_path / "v1.h5"
    shutil.copy(dataset_path, old)
    with h5py.File(old, "a") as h5:
        del h5.attrs["feature_layout"]  # files written before v2 carry no layout: they hold v1 features
    assert dataset_layout(old) == "h1-relpose-127-v1" and dataset_layout(dataset_path) == FEATURE_LAYOUT
    with pytest.raises(MotionDataError, match="rebuild it"):
        MotionDataset.load(old)


def test_prepare_script(tmp_path):
    src = tmp_path / "csv"
    src.mkdir()
    write_csv(src / "walk1_subject1.csv", synthetic_qpos(40, seed=4))
    write_csv(src / "run1_subject2.csv", synthetic_qpos(36, seed=5))
    out = tmp_path / "out" / "lafan.h5"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/prepare_lafan.py"),
            "--csv-dir",
            str(src),
            "--out",
            str(out),
            "--fps",
            "50",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    ds = MotionDataset.load(out)
    assert ds.fps == 50.0 and ds.clip_names == ["run1_subject2", "walk1_subject1"]
    (src / "broken_subject3.csv").write_text("1,2,3\n")
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/prepare_lafan.py"),
            "--csv-dir",
            str(src),
            "--out",
            str(tmp_path / "never.h5"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2
    assert "broken_subject3.csv: line 1 has 3 columns" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "never.h5").exists()


def test_welford_normalizer_matches_numpy_batch_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, [0.5, 2.0, 1e-6, 7.0], size=(1000, 4))
    x[:, 2] = 4.2  # a constant column
    norm = RunningNormalizer(4)
    for chunk in np.array_split(x, [1, 17, 300, 301, 999]):  # uneven chunks, a single row too
        norm.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(norm.mean.numpy(), x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), x.var(0), rtol=1e-10, atol=1e-14)
    z = norm.normalize(torch.from_numpy(x).float())
    assert z.dtype == torch.float32
    np.testing.assert_allclose(z[:, [0, 1, 3]].mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(z[:, [0, 1, 3]].std(0, unbiased=False).numpy(), 1.0, atol=1e-4)
    assert torch.all(z[:, 2] == 0)  # constant column: floored std, no division by zero
    torch.testing.assert_close(norm.denormalize(z).double(), torch.from_numpy(x), atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        norm.update(torch.tensor([[np.nan, 0, 0, 0]]))
    with pytest.raises(RuntimeError, match="no statistics"):
        RunningNormalizer(4).normalize(torch.zeros(4))


def test_real_data_dataset(real_data_dir, tmp_path):
    """Prepare two real files and check the paper's split logic on them."""
    files = sorted(real_data_dir.glob("*.csv"))[:2]
    from motiontok.motion import load_csv

    clips = [load_csv(f) for f in files]
    path = write_dataset(clips, tmp_path / "real.h5")
    train, val = split_train_val(path, [files[1].stem])
    assert train.clip_files == [files[0].stem] and val.clip_files == [files[1].stem]
    w = WindowSampler(train).sample(4)
    assert w.shape == (4, 32, 127) and torch.isfinite(w).all()
