"""Brute-force tests of the DAPS math on tiny latent spaces (T=2 positions, V=3 codes -> 9 configurations)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from motiontok.daps import (
    BetaSchedule,
    advantages,
    beta_elbo,
    daps_loss,
    decoder_loss,
    effective_sample_size,
    encoder_loss,
    eta_loss,
    kl_to_uniform,
    log_importance_weights,
    normalized_weights,
)

T, V = 2, 3
CONFIGS = torch.tensor(list(itertools.product(range(V), repeat=T)))  # (9, T), index = z0 * V + z1
C = CONFIGS.shape[0]


def _product_q(seed: int) -> torch.Tensor:
    """Per-position log-probabilities (T, V) of a random product categorical, float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(T, V, generator=g, dtype=torch.float64), dim=-1)  # (T, V)


def _config_log_q(pos_log_q: torch.Tensor) -> torch.Tensor:
    """log q(z) of the 9 configurations, summed over positions: (9,)."""
    return pos_log_q[torch.arange(T), CONFIGS].sum(-1)  # (9,)


def _exact_target(r: torch.Tensor, log_q: torch.Tensor, eta: float, beta: float) -> torch.Tensor:
    """Exact q*(z) ∝ exp((r(z) + eta log q_theta(z)) / (eta + beta)) over all configs (not using daps.py)."""
    logits = (r + eta * log_q) / (eta + beta)
    return torch.exp(logits - torch.logsumexp(logits, dim=-1, keepdim=True))


def _sample_configs(pos_log_q: torch.Tensor, n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """Draw (n, k) configuration indices from the product distribution, position by position."""
    idx = torch.zeros(n * k, dtype=torch.long)
    for t in range(T):
        z_t = torch.multinomial(pos_log_q[t].exp(), n * k, replacement=True, generator=g)  # (n*k,)
        idx = idx * V + z_t
    return idx.view(n, k)  # (n, k)


def _random_batch(n: int = 4, k: int = 8, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    rewards = 3.0 * torch.randn(n, k, generator=g, dtype=dtype) - 10.0  # (N, K)
    log_q = -5.0 * torch.rand(n, k, generator=g, dtype=dtype) - 1.0  # (N, K)
    return rewards, log_q


# 1. Self-normalized importance sampling converges to the exact q*.
@pytest.mark.parametrize(("eta", "beta"), [(1.0, 0.5), (0.4, 2.0)])
def test_snis_estimate_of_target_converges_to_exact_q_star(eta: float, beta: float) -> None:
    pos_log_q = _product_q(seed=1)
    log_q_cfg = _config_log_q(pos_log_q)  # (9,)
    r_cfg = 1.5 * torch.randn(C, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 4.0
    q_star = _exact_target(r_cfg, log_q_cfg, eta, beta)  # (9,)
    assert (q_star - log_q_cfg.exp()).abs().max() > 0.05  # target differs from the proposal

    n = 8  # independent repeats
    g = torch.Generator().manual_seed(3)
    errors = {}
    for k in (20, 20000):
        idx = _sample_configs(pos_log_q, n, k, g)  # (N, K)
        w = normalized_weights(log_importance_weights(advantages(r_cfg[idx]), log_q_cfg[idx], eta, beta))
        est = torch.zeros(n, C, dtype=torch.float64).scatter_add_(1, idx, w)  # (N, 9): sum_k w_k 1[z_k = c]
        errors[k] = (est - q_star).abs().max(-1).values.mean().item()
    assert errors[20000] < 0.02
    assert errors[20000] < errors[20] / 5


# 2. The baseline is a per-row constant and cancels in the normalized weights.
def test_baselines_give_identical_normalized_weights() -> None:
    rewards, log_q = _random_batch()
    a_soft = advantages(rewards, "softmax")
    a_mean = advantages(rewards, "mean")
    assert torch.allclose(torch.logsumexp(a_soft, -1), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(a_mean.mean(-1), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    for eta, beta in [(0.1, 0.01), (2.0, 1.0)]:
        w_soft = normalized_weights(log_importance_weights(a_soft, log_q, eta, beta))
        w_mean = normalized_weights(log_importance_weights(a_mean, log_q, eta, beta))
        w_raw = normalized_weights(log_importance_weights(rewards, log_q, eta, beta))
        torch.testing.assert_close(w_soft, w_mean)
        torch.testing.assert_close(w_soft, w_raw)
        torch.testing.assert_close(w_soft.sum(-1), torch.ones(4, dtype=torch.float64))


def test_unknown_baseline_raises() -> None:
    with pytest.raises(ValueError, match="baseline"):
        advantages(torch.zeros(2, 3), "median")


# 3. ESS bounds and invariances.
def test_ess_bounds_scale_invariance_and_extremes() -> None:
    k = 16
    g = torch.Generator().manual_seed(4)
    for scale in (0.1, 1.0, 10.0, 100.0):
        log_w = scale * torch.randn(32, k, generator=g)  # (N, K)
        per_row = torch.stack([effective_sample_size(row[None]) for row in log_w])  # (N,)
        assert (per_row >= 1.0 - 1e-5).all() and (per_row <= k + 1e-4).all()
        torch.testing.assert_close(effective_sample_size(log_w), per_row.mean())
        shift = 50.0 * torch.randn(32, 1, generator=g)  # per-row rescaling of the weights
        torch.testing.assert_close(effective_sample_size(log_w + shift), effective_sample_size(log_w))
    assert effective_sample_size(torch.zeros(3, k)).item() == pytest.approx(k)
    assert effective_sample_size(torch.full((3, k), -7.0)).item() == pytest.approx(k)
    dominated = torch.zeros(3, k)
    dominated[:, 5] = 200.0
    assert effective_sample_size(dominated).item() == pytest.approx(1.0)


# 4. Larger eta -> target closer to q_theta -> higher ESS.
def test_ess_increases_monotonically_with_eta() -> None:
    rewards, log_q = _random_batch(n=6, k=8, seed=5)
    adv = advantages(rewards)
    for beta in (0.0, 0.01, 1.0):
        etas = torch.logspace(-3, 3, 25).tolist()
        ess = torch.stack([effective_sample_size(log_importance_weights(adv, log_q, e, beta)) for e in etas])
        assert (ess[1:] >= ess[:-1] - 1e-9).all()
        assert ess[-1] > 7.5 and ess[-1] - ess[0] > 4.0  # eta -> inf: w -> const, ESS -> K


# 5. ESS formula against the direct definition.
def test_ess_matches_direct_formula_float64() -> None:
    g = torch.Generator().manual_seed(6)
    log_w = 2.0 * torch.randn(5, 7, generator=g, dtype=torch.float64)
    w = log_w.exp()
    direct = (w.sum(-1) ** 2 / (w**2).sum(-1)).mean()
    torch.testing.assert_close(effective_sample_size(log_w), direct, rtol=1e-12, atol=0)
    # and through the normalized weights: 1 / sum_k w~^2
    torch.testing.assert_close(effective_sample_size(log_w), (1 / (normalized_weights(log_w) ** 2).sum(-1)).mean())


# 6. Gradient routing of daps_loss.
def _leaves(seed: int = 7):
    rewards, log_q = _random_batch(n=3, k=5, seed=seed)
    return (
        rewards.requires_grad_(),
        log_q.requires_grad_(),
        torch.tensor(0.3, dtype=torch.float64, requires_grad=True),
    )


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs, allow_unused=True, retain_graph=True)


def _is_zero(g) -> bool:
    return g is None or bool((g == 0).all())


def test_daps_loss_gradient_routing() -> None:
    rewards, log_q, log_eta = _leaves()
    out = daps_loss(rewards, log_q, log_eta, beta=0.5, ess_target=2.5)
    n, k = rewards.shape

    g_r, g_q, g_e = _grads(out.encoder, (rewards, log_q, log_eta))
    assert _is_zero(g_r) and _is_zero(g_e)
    torch.testing.assert_close(g_q, -out.weights / n)  # d/dlog_q of -mean_n sum_k w log q

    g_r, g_q, g_e = _grads(out.eta, (rewards, log_q, log_eta))
    assert _is_zero(g_r) and _is_zero(g_q)
    assert g_e is not None and g_e.abs().item() > 0

    g_r, g_q, g_e = _grads(out.decoder, (rewards, log_q, log_eta))
    assert g_q is None and g_e is None
    torch.testing.assert_close(g_r, torch.full_like(rewards, -1.0 / (n * k)))

    for t in (out.weights, out.ess, out.log_w):
        assert not t.requires_grad
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(n, dtype=torch.float64))
    adv = advantages(rewards.detach())
    eta = math.exp(0.3)
    torch.testing.assert_close(out.log_w, log_importance_weights(adv, log_q.detach(), eta, 0.5))
    torch.testing.assert_close(out.ess, effective_sample_size(out.log_w))
    torch.testing.assert_close(out.eta, eta_loss(out.ess, 2.5))
    torch.testing.assert_close(out.decoder, decoder_loss(rewards))
    torch.testing.assert_close(out.encoder, encoder_loss(out.weights, log_q))


def test_daps_loss_summed_backward_fills_each_leaf_from_its_own_loss() -> None:
    rewards, log_q, log_eta = _leaves(seed=8)
    out = daps_loss(rewards, log_q, log_eta, beta=0.5, ess_target=2.5, baseline="mean")
    ref = [_grads(loss, (x,))[0] for loss, x in ((out.encoder, log_q), (out.decoder, rewards), (out.eta, log_eta))]
    (out.encoder + out.decoder + out.eta).backward()
    for x, g in zip((log_q, rewards, log_eta), ref, strict=True):
        torch.testing.assert_close(x.grad, g)


@pytest.mark.parametrize("direction", ["below", "above"])
def test_sgd_step_on_log_eta_moves_ess_toward_target(direction: str) -> None:
    rewards, log_q = _random_batch(n=4, k=8, seed=9)
    k = rewards.shape[1]
    log_eta = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    ess0 = daps_loss(rewards, log_q, log_eta, beta=0.1, ess_target=1.0).ess.item()
    target = min(ess0 + 2.0, k - 0.5) if direction == "below" else max(ess0 - 1.0, 1.0)
    assert (ess0 < target) == (direction == "below")

    opt = torch.optim.SGD([log_eta], lr=1e-3)
    out = daps_loss(rewards, log_q, log_eta, beta=0.1, ess_target=target)
    opt.zero_grad()
    out.eta.backward()
    opt.step()
    ess1 = daps_loss(rewards, log_q, log_eta, beta=0.1, ess_target=target).ess.item()
    assert (log_eta.item() > 0.0) == (direction == "below")  # ESS too low -> eta grows
    assert abs(ess1 - target) < abs(ess0 - target)


# 7. Encoder loss with exact weights is the cross-entropy to q*, minimised at q*.
def test_encoder_loss_with_exact_weights_is_cross_entropy_and_fits_q_star() -> None:
    eta, beta = 0.7, 0.3
    g = torch.Generator().manual_seed(10)
    logits0 = torch.randn(C, generator=g, dtype=torch.float64)
    log_q0 = torch.log_softmax(logits0, -1)  # (9,)
    r = 2.0 * torch.randn(C, generator=g, dtype=torch.float64)
    q_star = _exact_target(r, log_q0, eta, beta)  # (9,)

    # Enumerating every configuration once, the importance weights q*/q_theta times q_theta are q*.
    log_w = log_importance_weights(advantages(r[None]), log_q0[None], eta, beta)  # (1, 9)
    torch.testing.assert_close(normalized_weights(log_w + log_q0[None])[0], q_star)

    logits = logits0.clone().requires_grad_()
    log_q = torch.log_softmax(logits, -1)[None]  # (1, 9): "K = 9 samples", one per configuration
    loss = encoder_loss(q_star[None], log_q)
    torch.testing.assert_close(loss, -(q_star * log_q[0]).sum())
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(grad, log_q0.exp() - q_star)  # cross-entropy gradient wrt logits

    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        encoder_loss(q_star[None], torch.log_softmax(logits, -1)[None]).backward()
        opt.step()
    assert (torch.softmax(logits.detach(), -1) - q_star).abs().max() < 5e-3


# 8. KL to the uniform prior and the beta-ELBO.
def test_kl_to_uniform_extremes_and_beta_elbo() -> None:
    n, k = 3, 4
    uniform = torch.full((n, k), -T * math.log(V))
    torch.testing.assert_close(kl_to_uniform(uniform, T, V), torch.zeros(n))
    torch.testing.assert_close(kl_to_uniform(torch.zeros(n, k), T, V), torch.full((n,), T * math.log(V)))

    log_p = torch.randn(n, k, generator=torch.Generator().manual_seed(11))
    log_q = -torch.rand(n, k, generator=torch.Generator().manual_seed(12))
    kl = kl_to_uniform(log_q, T, V)
    torch.testing.assert_close(beta_elbo(log_p, log_q, T, V, beta=1.0), log_p.mean(-1) - kl)
    torch.testing.assert_close(beta_elbo(log_p, log_q, T, V, beta=0.0), log_p.mean(-1))
    torch.testing.assert_close(beta_elbo(log_p, log_q, T, V, beta=0.25), log_p.mean(-1) - 0.25 * kl)


def test_kl_to_uniform_monte_carlo_matches_exact_kl() -> None:
    pos_log_q = _product_q(seed=13)
    exact = (pos_log_q.exp() * (pos_log_q + math.log(V))).sum()  # sum_t KL(q_t || U(V))
    idx = _sample_configs(pos_log_q, 4, 20000, torch.Generator().manual_seed(14))
    est = kl_to_uniform(_config_log_q(pos_log_q)[idx], T, V)  # (4,)
    assert (est - exact).abs().max() < 0.03


# 9. Beta schedules.
def test_beta_schedule_cosine_and_linear() -> None:
    for kind in ("cosine", "linear"):
        s = BetaSchedule(kind=kind, start=2.0, end=0.01, steps=100, warmup=10)
        assert s(0) == s(10) == 2.0
        assert s(110) == pytest.approx(0.01) and s(10_000) == pytest.approx(0.01)
        assert s(60) == pytest.approx((2.0 + 0.01) / 2)  # both pass the midpoint at t = 1/2
        values = [s(i) for i in range(0, 130)]
        assert all(b <= a for a, b in itertools.pairwise(values))
        assert values[11] < 2.0 and values[109] > 0.01
    cos, lin = BetaSchedule("cosine", 2.0, 0.0, 100), BetaSchedule("linear", 2.0, 0.0, 100)
    assert cos(25) > lin(25) and cos(75) < lin(75)  # half-cosine: slow start, slow end
    up = BetaSchedule("linear", start=0.0, end=1.0, steps=4)
    assert [up(i) for i in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_beta_schedule_constant_and_validation() -> None:
    c = BetaSchedule(kind="constant", start=0.5, end=0.01, steps=10)
    assert {c(i) for i in (0, 5, 10, 10**6)} == {0.5}
    assert BetaSchedule()(0) == 3.0 and BetaSchedule()(10_000) == pytest.approx(0.01)
    e = BetaSchedule(kind="exp", start=3.0, end=0.01, steps=10)  # a constant factor per step, 3 -> 0.01
    ratios = [e(i + 1) / e(i) for i in range(10)]
    assert ratios == pytest.approx([(0.01 / 3.0) ** 0.1] * 10) and e(10) == pytest.approx(0.01) and e(99) == e(10)
    with pytest.raises(ValueError):
        BetaSchedule(kind="exp", end=0.0)
    with pytest.raises(ValueError):
        BetaSchedule(kind="cosh")
    with pytest.raises(ValueError):
        BetaSchedule(start=-1.0)
    with pytest.raises(ValueError):
        BetaSchedule(end=-0.1)
    with pytest.raises(ValueError):
        BetaSchedule(steps=0)
    with pytest.raises(ValueError):
        BetaSchedule(warmup=-1)
    with pytest.raises(AttributeError):
        BetaSchedule().start = 1.0  # type: ignore[misc]


def test_calibrated_eta_meets_the_ess_target_and_matches_a_grid_search() -> None:
    from motiontok.daps import calibrate_log_eta

    g = torch.Generator().manual_seed(3)
    rewards = torch.randn(6, 8, generator=g, dtype=torch.float64) * 40.0  # (N, K) spread-out log-likelihoods
    log_q = -torch.rand(6, 8, generator=g, dtype=torch.float64) * 300.0
    for beta, target in ((0.01, 2.64), (1.0, 4.0), (3.0, 6.0)):
        log_eta = calibrate_log_eta(rewards, log_q, beta, target)
        adv = rewards - torch.logsumexp(rewards, -1, keepdim=True)

        def ess_at(le: float, adv: torch.Tensor = adv, beta: float = beta) -> float:
            return float(effective_sample_size(log_importance_weights(adv, log_q, math.exp(le), beta)))

        assert ess_at(log_eta) == pytest.approx(target, rel=1e-6)
        grid = torch.linspace(-7, 14, 20001).tolist()  # brute force: the grid point closest to the target
        best = min(grid, key=lambda le: abs(ess_at(le) - target))
        assert log_eta == pytest.approx(best, abs=2e-3)
    assert calibrate_log_eta(rewards, log_q, 0.01, 8.5) == 14.0  # above K: unreachable, the upper bound
    assert calibrate_log_eta(torch.zeros(2, 8), torch.zeros(2, 8), 0.01, 1.0) == -7.0  # equal rewards: ESS = K
