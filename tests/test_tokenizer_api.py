"""The public MotionTokenizer: round trips, whole trajectories, and clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from motiontok import MotionTokenizer
from motiontok import features as feat
from motiontok.errors import CheckpointError
from motiontok.models import DiscreteVAE
from motiontok.nets import TrajectoryNetConfig
from motiontok.normalizer import RunningNormalizer
from tests.conftest import synthetic_qpos

TINY = TrajectoryNetConfig(block_size=16, vocab_size=32, embed_dim=16, num_heads=2, num_layers=1)


def make_tokenizer(seed: int = 0) -> MotionTokenizer:
    torch.manual_seed(seed)
    model = DiscreteVAE(TINY)
    norm = RunningNormalizer(127)
    norm.update(torch.from_numpy(feat.features_from_qpos(synthetic_qpos(80, seed=seed), 30.0)))
    return MotionTokenizer(model, norm, 30.0)


@pytest.fixture
def tok():
    return make_tokenizer()


@pytest.fixture
def windows():
    f = feat.features_from_qpos(synthetic_qpos(96, seed=7), 30.0)
    return torch.from_numpy(f.reshape(3, 32, 127)).float()


def test_encode_decode_shapes_and_dtypes(tok, windows):
    z = tok.encode(windows)
    assert z.shape == (3, 16) and z.dtype == torch.long
    assert int(z.min()) >= 0 and int(z.max()) < 32
    torch.testing.assert_close(z, tok.encode(windows))  # greedy is deterministic
    x_hat = tok.decode(z)
    assert x_hat.shape == (3, 32, 127) and x_hat.dtype == torch.float32
    assert tok.decode(z, dtype=torch.float64).dtype == torch.float64
    assert tok.encode(windows.numpy()).shape == (3, 16)  # numpy in works too
    torch.manual_seed(0)
    sampled = torch.stack([tok.encode(windows, sample=True) for _ in range(5)])
    assert (sampled != sampled[0]).any()  # sampling is stochastic on an untrained posterior


def test_save_load_round_trip_gives_identical_outputs(tok, windows, tmp_path):
    path = tok.save(tmp_path / "tok", note="unit test")
    loaded = MotionTokenizer.load(path)
    z = tok.encode(windows)
    torch.testing.assert_close(loaded.encode(windows), z, rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(z), tok.decode(z), rtol=0, atol=0)
    assert json.loads((path / "config.json").read_text())["note"] == "unit test"
    assert loaded.fps == 30.0 and loaded.num_tokens == 16 and loaded.vocab_size == 32


def test_whole_trajectories(tok):
    qpos = synthetic_qpos(75, seed=3)  # 2 full windows + 11 frames
    tokens = tok.encode_qpos(qpos, fps=30.0)
    assert tokens.shape == (3, 16)  # last window aligned to the end
    q = tok.decode_qpos(tokens, num_frames=75)
    assert q.shape == (75, 26) and np.isfinite(q).all()
    np.testing.assert_allclose(np.linalg.norm(q[:, 3:7], axis=-1), 1.0, atol=1e-9)
    assert tok.decode_qpos(tokens).shape == (96, 26)
    assert tok.encode_qpos(synthetic_qpos(125, fps=50.0), fps=50.0).shape[0] == 3  # resampled to 30 fps
    rec = tok.reconstruct_features(feat.features_from_qpos(qpos, 30.0), fps=30.0)
    assert rec.shape == (75, 127)


def test_split_and_stitch_are_inverse(tok):
    f = np.random.default_rng(0).normal(size=(75, 127))
    w = tok.split_windows(f)
    assert w.shape == (3, 32, 127)
    np.testing.assert_array_equal(w[2], f[43:75])
    np.testing.assert_array_equal(tok.stitch_windows(w, 75), f)
    np.testing.assert_array_equal(tok.stitch_windows(tok.split_windows(f[:64]), 64), f[:64])


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (torch.zeros(2, 31, 127), ValueError, r"\(B, 32, 127\)"),
        (torch.zeros(32, 127), ValueError, r"\(B, 32, 127\)"),
        (torch.zeros(2, 32, 127, dtype=torch.long), TypeError, "float"),
        (torch.full((1, 32, 127), float("nan")), ValueError, "NaN"),
        (torch.full((1, 32, 127), float("inf")), ValueError, "inf"),
    ],
)
def test_encode_rejects_bad_input(tok, bad, error, match):
    with pytest.raises(error, match=match):
        tok.encode(bad)


def test_decode_rejects_bad_tokens(tok):
    with pytest.raises(ValueError, match=r"in \[0, 32\)"):
        tok.decode(torch.full((1, 16), 32))
    with pytest.raises(ValueError, match=r"in \[0, 32\)"):
        tok.decode(torch.full((1, 16), -1))
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        tok.decode(torch.zeros(1, 15, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        tok.decode(torch.zeros(1, 16))


def test_reconstruct_rejects_wrong_rate_and_short_clips(tok):
    with pytest.raises(ValueError, match="30 fps"):
        tok.reconstruct_features(np.zeros((40, 127)), fps=50.0)
    with pytest.raises(ValueError, match="at least 32 frames"):
        tok.split_windows(np.zeros((20, 127)))


def test_checkpoint_errors(tok, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        MotionTokenizer.load(tmp_path / "missing")
    path = tok.save(tmp_path / "tok")
    cfg = json.loads((path / "config.json").read_text())
    # A checkpoint of another format version.
    (path / "config.json").write_text(json.dumps(cfg | {"format_version": 99}))
    with pytest.raises(CheckpointError, match="format version 99"):
        MotionTokenizer.load(path)
    # A tokenizer trained on the v1 features (pelvis x-axis heading).
    (path / "config.json").write_text(json.dumps(cfg | {"feature_layout": "h1-relpose-127-v1"}))
    with pytest.raises(CheckpointError, match="feature layout 'h1-relpose-127-v1'"):
        MotionTokenizer.load(path)
    # Weights that do not fit the recorded config.
    (path / "config.json").write_text(json.dumps(cfg | {"net": cfg["net"] | {"embed_dim": 32}}))
    with pytest.raises(CheckpointError, match="do not match"):
        MotionTokenizer.load(path)
    # Corrupt files.
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        MotionTokenizer.load(path)
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "model.safetensors").write_bytes(b"\x00" * 50)
    with pytest.raises(CheckpointError, match="corrupt weights"):
        MotionTokenizer.load(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        MotionTokenizer.load(path)


def test_device_and_dtype_follow_the_caller(tok, windows):
    z = tok.encode(windows.double())  # float64 in
    assert z.device == windows.device
    assert tok.decode(z.int()).dtype == torch.float32  # int32 tokens accepted
    if torch.cuda.is_available():  # pragma: no cover - exercised on GPU machines
        gpu = tok.to("cuda")
        zc = gpu.encode(windows.cuda())
        assert zc.device.type == "cuda"
        torch.testing.assert_close(zc.cpu(), z)
