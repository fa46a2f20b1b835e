"""VQ-VAE and FSQ baselines: the quantizer bottleneck, its straight-through gradient, training, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from motiontok import MotionTokenizer
from motiontok.baselines import QuantizedConfig, QuantizedEstimator
from motiontok.data import fixed_windows, split_train_val
from motiontok.datamodules import MotionData
from motiontok.evaluation import evaluate_tokenizer
from motiontok.models import DiscreteVAE
from motiontok.nets import TrajectoryNetConfig
from motiontok.nets.quantizers import bits
from motiontok.normalizer import RunningNormalizer
from motiontok.trainer import TrainConfig, train
from tests.conftest import SYNTHETIC_VAL

TINY = TrajectoryNetConfig(block_size=16, vocab_size=64, embed_dim=16, num_heads=2, num_layers=1)
KINDS = {"vq": {"commitment": 0.25, "decay": 0.9}, "fsq": {"levels": [4, 4, 4]}}
VAL = [SYNTHETIC_VAL]


@pytest.fixture(scope="module")
def dataset(synthetic_dataset):
    return synthetic_dataset


def _train_and_evaluate(dataset, model, estimator, steps, out):
    """Validation-free training for ``steps``; metrics on the training windows before and after."""
    cfg = TrainConfig(
        steps=steps, batch_size=8, lr=3e-3, warmup_steps=5, eval_every=0, ckpt_every=steps, progress=False
    )
    tr, _ = split_train_val(dataset, VAL)
    norm = RunningNormalizer(127)
    norm.update(torch.from_numpy(tr.features))
    windows = fixed_windows(tr, 32, 8)
    before = evaluate_tokenizer(model, norm, windows, 30.0, robot_metrics=False)
    train(model, estimator, MotionData(dataset, VAL, model.cfg.length), cfg, out)
    return before, evaluate_tokenizer(model, norm, windows, 30.0, robot_metrics=False), norm, windows


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_codes_round_trip_and_gradient_reaches_the_encoder(kind: str) -> None:
    torch.manual_seed(0)
    model = DiscreteVAE(TINY, kind, quantizer=KINDS[kind])
    x = torch.randn(3, 32, 127)
    q = model.quantizer(model.memory(x))
    assert q.tokens.shape == (3, 16) and int(q.tokens.min()) >= 0 and int(q.tokens.max()) < model.num_codes
    model.eval()
    q = model.quantizer(model.memory(x))
    torch.testing.assert_close(model.quantizer.embed_tokens(q.tokens), q.codes, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.reconstruct(model.encode(x)), model.decoder.forward_embeddings(q.codes)[0])
    model.train()
    out = QuantizedEstimator(QuantizedConfig(kind))(model, x, step=0)
    out.loss.backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0  # straight-through to the encoder
    assert torch.isfinite(out.loss)


def test_fsq_bit_budget_matches_daps() -> None:
    model = DiscreteVAE(TrajectoryNetConfig(), "fsq", quantizer={"levels": [10, 10, 10]})
    assert model.num_codes == 1000 and bits(1000, 64) == pytest.approx(64 * math.log2(1000))  # 637.8
    assert bits(1000, 64) / bits(1024, 64) > 0.99
    with pytest.raises(ValueError, match="more than vocab_size"):
        DiscreteVAE(TINY, "fsq", quantizer={"levels": [10, 10]})
    with pytest.raises(ValueError, match="needs a model built with"):
        QuantizedEstimator(QuantizedConfig("vq"))(DiscreteVAE(TINY), torch.randn(1, 32, 127), 0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_training_improves_reconstruction_and_tokenizer_round_trips(kind: str, dataset, tmp_path) -> None:
    torch.manual_seed(0)
    model = DiscreteVAE(TINY, kind, quantizer=KINDS[kind])
    before, after, norm, windows = _train_and_evaluate(
        dataset, model, QuantizedEstimator(QuantizedConfig(kind)), 150, tmp_path / kind
    )
    assert after["l2"] < before["l2"] - 2.0, (before["l2"], after["l2"])
    assert after["log_p"] == after["log_p_greedy"] and after["kl"] == pytest.approx(16 * math.log(model.num_codes))
    tok = MotionTokenizer.load(tmp_path / kind / "final")
    assert tok.vocab_size == model.num_codes
    w = windows[:4].float()
    tokens = tok.encode(w)
    torch.testing.assert_close(
        tok.decode(tokens), norm.denormalize(model.eval().reconstruct(model.encode(norm.normalize(w))))
    )


def test_fsq_codes_and_indices_round_trip_exactly() -> None:
    fsq = DiscreteVAE(TrajectoryNetConfig(), "fsq", quantizer={"levels": [10, 10, 10]}).quantizer.fsq
    grid = fsq.implicit_codebook  # (1000, 3): every code on the level grid, in index order
    assert grid.shape == (1000, 3) and len(torch.unique(grid, dim=0)) == 1000
    torch.testing.assert_close(fsq.codes_to_indices(grid).long(), torch.arange(1000))


def test_vq_reports_code_usage() -> None:
    torch.manual_seed(0)
    model = DiscreteVAE(TINY, "vq")
    out = QuantizedEstimator(QuantizedConfig("vq"))(model, torch.randn(4, 32, 127), 0)
    usage = float(out.metrics["charts/batch_code_usage"])
    tokens = model.quantizer(model.memory(torch.randn(4, 32, 127))).tokens
    assert 0 < usage <= 1 and usage * model.num_codes == pytest.approx(round(usage * model.num_codes))
    assert tokens.max() < model.num_codes


def test_gaussian_vae_kl_matches_the_closed_form_and_trains(dataset, tmp_path) -> None:
    from torch.distributions import Normal, kl_divergence

    from motiontok.baselines import VAEConfig, VAEEstimator
    from motiontok.nets.quantizers import gaussian_kl

    mean, log_var = torch.randn(4, 16, 3), torch.randn(4, 16, 3)
    expected = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).flatten(1).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, log_var), expected)
    torch.manual_seed(0)
    model = DiscreteVAE(TINY, "gauss")
    before, after, _, _ = _train_and_evaluate(dataset, model, VAEEstimator(VAEConfig()), 100, tmp_path / "vae")
    assert after["beta_elbo"] > before["beta_elbo"], (before["beta_elbo"], after["beta_elbo"])
    assert after["kl"] > 0 and after["code_usage"] == 0.0  # no discrete codes to count
