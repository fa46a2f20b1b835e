"""Gumbel-Softmax and GR-MCK baselines: conditional Gumbels against rejection sampling, straight-through codes,
gradients through the autoregressive sampling, and training."""

from __future__ import annotations

import pytest
import torch

from motiontok.baselines import RelaxedConfig, RelaxedEstimator
from motiontok.daps import BetaSchedule
from motiontok.models import DiscreteVAE
from motiontok.nets import TrajectoryNetConfig
from motiontok.relaxed import conditional_gumbels, gumbel_noise, relax, relaxed_sample

TINY = TrajectoryNetConfig(block_size=16, vocab_size=8, embed_dim=16, num_heads=2, num_layers=1)


def test_conditional_gumbels_match_rejection_sampling() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.5, -0.3, 1.2, 0.0], dtype=torch.float64)
    v = logits + gumbel_noise((400_000, 4), logits, g)  # unconditional draws
    for k in range(4):
        kept = v[v.argmax(-1) == k]  # brute force: keep the draws whose argmax is k
        cond = conditional_gumbels(logits, torch.tensor(k), 200_000, g)  # (N, 4)
        assert (cond.argmax(-1) == k).all()
        torch.testing.assert_close(cond.mean(0), kept.mean(0), atol=0.02, rtol=0)
        torch.testing.assert_close(cond.std(0), kept.std(0), atol=0.03, rtol=0)


@pytest.mark.parametrize("rb", [0, 4])
def test_relaxed_codes_are_hard_forward_and_carry_gradient(rb: int) -> None:
    logits = torch.randn(5, 8, requires_grad=True)
    codes, tokens = relax(logits, tau=1.0, rao_blackwell=rb, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(codes.detach(), torch.nn.functional.one_hot(tokens, 8).float())
    (codes * torch.randn(5, 8)).sum().backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("posterior", ["na", "ar"])
def test_relaxed_sampling_follows_the_posterior_and_backpropagates(posterior: str) -> None:
    torch.manual_seed(0)
    model = DiscreteVAE(TINY, posterior, posterior_init_std=0.5)
    memory = model.memory(torch.randn(2, 32, 127))
    codes, tokens, logits = relaxed_sample(model.posterior, memory, tau=1.0)
    assert codes.shape == (2, 16, 8) and tokens.shape == (2, 16)
    # the logits are the posterior's own conditionals along the sampled prefix (teacher forcing on hard codes)
    torch.testing.assert_close(logits, model.posterior.logits(memory, tokens), atol=1e-5, rtol=1e-5)
    model.decoder(codes)[0].sum().backward()
    first = next(model.posterior.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def _one_pass_per_position(posterior, memory, draw):
    """Brute force: position t's logits from a whole teacher-forced pass over the relaxed codes before it."""
    codes, logits = [], []
    placeholder = memory.new_zeros(memory.shape[0], 1, posterior.vocab_size)  # position t's own code is unread
    for t in range(posterior.block_size):
        prefix = torch.cat([*(c.unsqueeze(1) for c in codes), placeholder], dim=1)  # (B, t+1, V)
        logits.append(posterior.logits_soft(memory, prefix)[:, t])
        codes.append(draw(logits[-1]))
    return torch.stack(logits, 1)


def test_cached_relaxed_decoding_equals_one_pass_per_position() -> None:
    """decode_relaxed (one cached step per position, growing cache) gives the logits and the gradients of T
    teacher-forced passes over the same relaxed codes (GR-MCK draws, same noise)."""
    torch.manual_seed(0)
    model = DiscreteVAE(TINY, "ar", posterior_init_std=0.5)
    x = torch.randn(3, 32, 127)
    results = []
    for decode in (model.posterior.decode_relaxed, lambda m, d: _one_pass_per_position(model.posterior, m, d)):
        model.zero_grad()
        g, codes = torch.Generator().manual_seed(3), []

        def draw(lg, g=g, codes=codes):
            codes.append(relax(lg, 0.7, 2, g)[0])
            return codes[-1]

        logits = decode(model.memory(x), draw)
        loss = model.decoder(torch.stack(codes, 1))[0].square().sum() + logits.sin().sum()
        loss.backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (lg_a, grads_a), (lg_b, grads_b) = results
    torch.testing.assert_close(lg_a, lg_b, atol=1e-5, rtol=1e-5)
    assert len(grads_a) == len(grads_b) > 10
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rb", [0, 4])
def test_relaxed_estimator_lowers_its_loss(rb: int) -> None:
    torch.manual_seed(0)
    model = DiscreteVAE(TINY, "na", posterior_init_std=0.5)
    est = RelaxedEstimator(RelaxedConfig(rao_blackwell=rb, beta=BetaSchedule("constant", 0.01, 0.01, 1)))
    x = torch.randn(8, 32, 127)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        out = est(model, x, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 100, (losses[:3], losses[-3:])
    with pytest.raises(ValueError, match="categorical posterior"):
        est(DiscreteVAE(TINY, "vq"), x, 0)


def test_grmck_gradient_has_lower_variance_than_straight_through() -> None:
    """Toy problem: d/dlogits of <w, y> over many draws; Rao-Blackwellizing over K = 16 conditional draws cuts the
    variance of the gradient (same forward value, same expectation of the surrogate given z)."""
    logits0 = torch.tensor([0.3, -0.2, 0.8, 0.0, -1.0, 0.5])
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.0])

    def grads(rb: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(7)
        out = []
        for _ in range(3000):
            logits = logits0.clone().requires_grad_(True)
            codes, _ = relax(logits, tau=1.0, rao_blackwell=rb, generator=g)
            (codes * w).sum().backward()
            out.append(logits.grad)
        return torch.stack(out)  # (N, V)

    plain, rb = grads(0), grads(16)
    assert rb.var(0).sum() < 0.6 * plain.var(0).sum(), (rb.var(0).sum(), plain.var(0).sum())


def test_temperature_schedule_reaches_the_estimator() -> None:
    est = RelaxedEstimator(RelaxedConfig(tau=BetaSchedule("cosine", 1.0, 0.75, 10)))
    model = DiscreteVAE(TINY, "na")
    x = torch.randn(2, 32, 127)
    assert float(est(model, x, 0).metrics["charts/tau"]) == pytest.approx(1.0)
    assert float(est(model, x, 5).metrics["charts/tau"]) == pytest.approx(0.875)
    assert float(est(model, x, 10).metrics["charts/tau"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="tau must stay > 0"):
        RelaxedEstimator(RelaxedConfig(tau=BetaSchedule("linear", 1.0, 0.0, 10)))


def test_ppo_baseline_reuses_its_samples_for_its_epochs_and_learns() -> None:
    from motiontok.baselines import PPOConfig, PPOEstimator

    torch.manual_seed(0)
    model = DiscreteVAE(TINY, "ar", posterior_init_std=0.5)
    est = PPOEstimator(PPOConfig(num_samples=4, epochs=3, embed_dim=16, beta=BetaSchedule("constant", 0.01, 0.01, 1)))
    assert est.updates_per_batch == 3 and est.param_groups()["recognition"]
    x = torch.randn(6, 32, 127)
    opt = torch.optim.Adam([*model.parameters(), *est.parameters()], lr=3e-3)
    drawn, log_p = [], []
    for step in range(20):
        for _ in range(3):  # the trainer's inner loop
            out = est(model, x, step)
            drawn.append(est._rollout[0].clone())
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        log_p.append(float(out.metrics["charts/log_p"]))
    assert all(torch.equal(drawn[3 * b], drawn[3 * b + i]) for b in range(20) for i in (1, 2))  # same codes per batch
    assert not torch.equal(drawn[0], drawn[3])  # new codes for the next batch
    assert sum(log_p[-5:]) / 5 > sum(log_p[:5]) / 5 + 50, (log_p[:3], log_p[-3:])


def test_conditional_gumbels_stay_finite_for_extreme_logits() -> None:
    """Logits spread over hundreds of nats (a confident posterior late in training): the conditional draws, their
    softmax and its gradient stay finite, and the chosen code still wins (the plain exp form overflowed to NaN)."""
    logits = torch.tensor([[-300.0, 0.0, 150.0, -90.0]], requires_grad=True)
    index = torch.tensor([2])
    v = conditional_gumbels(logits, index, 64, torch.Generator().manual_seed(0))  # (64, 1, 4)
    assert torch.isfinite(v).all() and (v.argmax(-1) == 2).all()
    torch.softmax(v / 0.5, -1).mean(0)[0, 1].backward()
    assert torch.isfinite(logits.grad).all()
    rare = conditional_gumbels(logits, torch.tensor([0]), 64, torch.Generator().manual_seed(1))  # a -300 code chosen
    assert torch.isfinite(rare).all() and (rare.argmax(-1) == 0).all()
