"""Wiring tests: the library's pieces are connected the way the math says.

* ``DapsEstimator`` against Algorithm 1 written out by hand here (not with ``motiontok.daps``): the ESS target is
  ``ess_target * K``, beta comes from the schedule at ``step``, and the summed loss sends each gradient where it
  belongs (encoder: weighted maximum likelihood with constant weights; decoder: maximum likelihood).
* Velocity features carry their ``fps`` factor: speeds are in m/s and rad/s, whatever the frame rate.
* ``WindowSampler`` draws real, within-clip windows, uniformly over every valid start.

The feature checks only use rotation-invariant quantities (norms) and frame-rate independence, so they hold for
any definition of the heading frame.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from motiontok import features as feat
from motiontok.daps import BetaSchedule
from motiontok.data import MotionDataset, WindowSampler, write_dataset
from motiontok.estimators import DapsConfig, DapsEstimator
from motiontok.models import DiscreteVAE
from motiontok.motion import MotionClip, forward_kinematics
from motiontok.nets import TrajectoryNetConfig
from tests.conftest import synthetic_qpos

# ---------------------------------------------------------------------------------------------------------------
# DapsEstimator against a hand-written Algorithm 1

NET = TrajectoryNetConfig(
    feature_dim=6, length=8, block_size=16, vocab_size=16, embed_dim=16, num_heads=2, num_layers=1
)
K = 8
BATCH = 3
ESS_FRACTION = 0.75  # the target is 0.75 * K = 6 samples
SCHEDULE = BetaSchedule("linear", start=3.0, end=0.5, steps=10)


def _setup(eta_init: float = 1.0) -> tuple[DiscreteVAE, DapsEstimator, torch.Tensor, list[torch.Tensor]]:
    """A tiny float64 model whose posterior draws are recorded, its estimator, and a batch x (B, L, F)."""
    torch.manual_seed(0)
    model = DiscreteVAE(NET, posterior_init_std=0.5).double()  # peaked posterior: log q varies between samples
    cfg = DapsConfig(num_samples=K, ess_target=ESS_FRACTION, eta_init=eta_init, beta=SCHEDULE)
    est = DapsEstimator(cfg).double()
    x = torch.randn(BATCH, NET.length, NET.feature_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    drawn: list[torch.Tensor] = []
    sample = model.posterior.sample

    def recording_sample(*args, **kwargs):
        tokens = sample(*args, **kwargs)
        drawn.append(tokens.clone())
        return tokens

    model.posterior.sample = recording_sample  # instance attribute: only this model records
    return model, est, x, drawn


def _reference(model: DiscreteVAE, x: torch.Tensor, tokens: torch.Tensor, log_eta: torch.Tensor, beta: float):
    """Algorithm 1 by hand for the K codes per input that the estimator drew (rows b*K .. b*K+K-1 belong to x_b).

    Returns (encoder loss, decoder loss, eta loss, ESS), with gradients into the model and ``log_eta``."""
    memory = model.memory(x)  # (B, T, H)
    logits = model.posterior.logits(memory.repeat_interleave(K, 0), tokens)  # (B*K, T, V) teacher-forced
    log_q = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0].sum(-1).view(BATCH, K)  # (B, K)
    mean, var = model.decoder(tokens)  # (B*K, L, F), (F,)
    err = (x.repeat_interleave(K, 0) - mean) ** 2 / var
    rewards = (-0.5 * (math.log(2 * math.pi) + torch.log(var) + err)).flatten(1).sum(-1).view(BATCH, K)  # (B, K)

    adv = rewards.detach() - rewards.detach().max(-1, keepdim=True).values  # any per-row baseline cancels

    def weights(eta: torch.Tensor) -> torch.Tensor:  # self-normalized q*/q_theta
        return torch.softmax((adv - beta * log_q.detach()) / (eta + beta), dim=-1)  # (B, K)

    eta = log_eta.exp()
    enc = -(weights(eta.detach()) * log_q).sum(-1).mean()
    dec = -rewards.mean()
    ess = (1.0 / (weights(eta) ** 2).sum(-1)).mean()
    eta_loss = (ess - ESS_FRACTION * K) ** 2
    return enc, dec, eta_loss, ess


def _run(step: int, eta_init: float = 1.0):
    """One estimator call at ``step``, backpropagated, and the hand-written reference on the same draws."""
    model, est, x, drawn = _setup(eta_init)
    out = est(model, x, step)
    assert len(drawn) == 1 and drawn[0].shape == (BATCH * K, NET.block_size)
    params = [*model.parameters(), est.log_eta]
    got = torch.autograd.grad(out.loss, params, allow_unused=True)
    log_eta = est.log_eta.detach().clone().requires_grad_()
    ref = _reference(model, x, drawn[0], log_eta, SCHEDULE(step))
    want = torch.autograd.grad(sum(ref[:3]), [*model.parameters(), log_eta], allow_unused=True)
    zeros = [torch.zeros_like(p) for p in params]
    got = [z if g is None else g for g, z in zip(got, zeros, strict=True)]
    want = [z if g is None else g for g, z in zip(want, zeros, strict=True)]
    return model, x, drawn[0], out.metrics, ref, got, want


def test_eta_is_driven_towards_ess_target_times_k():
    """ESS below ess_target*K (but above ess_target): the eta loss is (ESS - ess_target*K)^2, and its gradient
    tells the optimiser to raise eta (a target of ess_target samples would lower it)."""
    _, _, _, metrics, (_, _, eta_loss, ess), got, want = _run(step=0, eta_init=1.0)
    target = ESS_FRACTION * K
    assert ESS_FRACTION + 0.5 < ess.item() < target - 0.5  # the two readings of the target disagree in sign
    torch.testing.assert_close(metrics["charts/ess"], ess.detach(), rtol=1e-9, atol=0)
    torch.testing.assert_close(metrics["losses/eta"], (ess.detach() - target) ** 2, rtol=1e-9, atol=0)
    torch.testing.assert_close(metrics["losses/eta"], eta_loss.detach(), rtol=1e-9, atol=0)
    grad_log_eta = got[-1]
    torch.testing.assert_close(grad_log_eta, want[-1], rtol=1e-6, atol=1e-12)
    assert grad_log_eta.item() < 0  # descent raises eta, which raises the ESS towards 6


@pytest.mark.parametrize("step", [0, 4, 10])
def test_beta_follows_the_schedule_into_the_weights(step):
    """The encoder loss and ESS at ``step`` are those of the schedule's beta, and of no other beta."""
    model, x, tokens, metrics, (enc, _, eta_loss, ess), _, _ = _run(step)
    beta = SCHEDULE(step)
    assert metrics["charts/beta"].item() == pytest.approx(beta)
    torch.testing.assert_close(metrics["losses/encoder"], enc.detach(), rtol=1e-9, atol=0)
    torch.testing.assert_close(metrics["charts/ess"], ess.detach(), rtol=1e-9, atol=0)
    torch.testing.assert_close(metrics["losses/eta"], eta_loss.detach(), rtol=1e-9, atol=0)
    # The check has power: any other beta (0, the schedule's start or end) gives a visibly different loss.
    log_eta = torch.tensor(0.0, dtype=torch.float64)  # eta_init = 1
    for other in {0.0, SCHEDULE.start, SCHEDULE.end} - {beta}:
        enc_o, _, _, ess_o = _reference(model, x, tokens, log_eta, other)
        assert abs(enc_o.item() - enc.item()) > 1e-3 and abs(ess_o.item() - ess.item()) > 1e-3


def test_summed_loss_gradient_matches_algorithm_1():
    """Every parameter's gradient (context encoder, posterior, decoder, log eta) equals the hand-written one:
    the decoder is fitted by maximum likelihood, the encoder by weighted maximum likelihood with constant
    weights, eta only by its ESS loss."""
    model, _, _, _, _, got, want = _run(step=4)
    names = [n for n, _ in model.named_parameters()] + ["log_eta"]
    for name, g, w in zip(names, got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-10, msg=name)
    # Each part of the model is trained (not a vacuous comparison of zeros).
    for prefix in ("encoder.", "posterior.", "decoder."):
        assert any(g.abs().sum() > 0 for n, g in zip(names, got, strict=True) if n.startswith(prefix)), prefix


# ---------------------------------------------------------------------------------------------------------------
# Velocity features: units of m/s and rad/s

VEL = ("root_lin_vel", "root_yaw_rate", "joint_vel", "key_vel")


def _group(f: np.ndarray, name: str) -> np.ndarray:
    return f[:, feat.FEATURE_SLICES[name]]


def test_velocity_norms_are_world_speeds():
    """|root_lin_vel| and |key_vel| (any rotation of the world difference) are the world speeds in m/s."""
    fps = 30.0
    qpos = synthetic_qpos(40, fps=fps)
    f = feat.features_from_qpos(qpos, fps)
    key = forward_kinematics(qpos).key_pos  # (T, 13, 3) world
    key_speed = np.linalg.norm(key[1:] - key[:-1], axis=-1) * fps  # (T-1, 13)
    key_vel = _group(f, "key_vel").reshape(len(f), -1, 3)
    np.testing.assert_allclose(np.linalg.norm(key_vel[1:], axis=-1), key_speed, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(key_vel[0], key_vel[1])  # frame 0 copies frame 1
    root_speed = np.linalg.norm(qpos[1:, :3] - qpos[:-1, :3], axis=-1) * fps
    np.testing.assert_allclose(np.linalg.norm(_group(f, "root_lin_vel")[1:], axis=-1), root_speed, rtol=1e-9)
    np.testing.assert_allclose(_group(f, "joint_vel")[1:], (qpos[1:, 7:] - qpos[:-1, 7:]) * fps, rtol=1e-9)
    assert key_speed.max() > 0.5 and root_speed.min() > 0.5  # real motion: the fps factor matters


def test_velocities_do_not_depend_on_the_frame_rate():
    """The same motion sampled at 30 and 60 fps: the 30 fps difference over [t-2h, t] is the mean of the two
    60 fps differences over [t-2h, t-h] and [t-h, t], exactly for world-frame quantities and up to the heading's
    turn within one 60 fps frame for heading-frame ones. Without the fps factor they differ by 2x."""
    f30 = feat.features_from_qpos(synthetic_qpos(40, fps=30.0), 30.0)
    f60 = feat.features_from_qpos(synthetic_qpos(79, fps=60.0), 60.0)
    j = np.arange(1, 40)  # 30 fps frame j is 60 fps frame 2j (same time stamp)
    for name, tol in (("joint_vel", 1e-9), ("root_yaw_rate", 1e-9), ("root_lin_vel", 0.03), ("key_vel", 0.03)):
        a = _group(f30, name)[j]
        b = 0.5 * (_group(f60, name)[2 * j] + _group(f60, name)[2 * j - 1])
        scale = np.abs(a).max()
        assert scale > 0.5, name  # real motion: a missing factor of 30 vs 60 shows
        assert np.abs(a - b).max() < tol * scale, f"{name}: {np.abs(a - b).max()} vs scale {scale}"


def test_resampled_clip_has_the_same_speeds():
    """``MotionClip.resample``: the 60 fps copy of a 30 fps clip has the same world key-point speeds (m/s)."""
    clip = MotionClip("synthetic", synthetic_qpos(40, fps=30.0), 30.0)
    fast = clip.resample(60.0)
    k30 = _group(feat.clip_features(clip), "key_vel").reshape(clip.num_frames, -1, 3)
    k60 = _group(feat.clip_features(fast), "key_vel").reshape(fast.num_frames, -1, 3)
    j = np.arange(1, clip.num_frames)
    speed30 = np.linalg.norm(k30[j], axis=-1)
    # mean speed over the two half-steps: equal to the 30 fps speed up to the curvature of the path in one frame
    speed60 = 0.5 * (np.linalg.norm(k60[2 * j], axis=-1) + np.linalg.norm(k60[2 * j - 1], axis=-1))
    np.testing.assert_allclose(speed60, speed30, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------------------------------------------------------
# WindowSampler: uniform over every valid window start

WINDOW = 32
LENGTHS = (40, 35, 20)  # starts 0..8 and 40..43; the 20-frame clip is too short for a window


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    clips = [MotionClip(f"c{i}_subject1", synthetic_qpos(n, seed=i + 1), 30.0) for i, n in enumerate(LENGTHS)]
    return MotionDataset.load(write_dataset(clips, tmp_path_factory.mktemp("wiring") / "d.h5"))


def _chi2_bound(df: int, z: float = 5.0) -> float:
    """Wilson-Hilferty quantile of chi-square(df) at ``z`` standard deviations (z=5: p ~ 3e-7)."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


def test_sampler_draws_uniformly_over_every_within_clip_window(small_dataset):
    ds = small_dataset
    bounds = np.concatenate([[0], np.cumsum(LENGTHS)])
    valid = [s for a, b in itertools.pairwise(bounds) for s in range(a, b - WINDOW + 1)]
    assert len(valid) == 13
    # Every contiguous run of WINDOW rows in the file (also those straddling clips) -> its first row.
    rows = ds.features
    index = {rows[s : s + WINDOW].tobytes(): s for s in range(len(rows) - WINDOW + 1)}
    assert len(index) == len(rows) - WINDOW + 1  # windows are distinguishable

    sampler = WindowSampler(ds, WINDOW, seed=0)
    batches = [sampler.sample(100) for _ in range(26)]  # 2600 draws, 200 per valid start
    assert not torch.equal(batches[0], batches[1])  # the generator moves on between calls
    starts = []
    for batch in batches:
        assert batch.shape == (100, WINDOW, feat.FEATURE_DIM) and batch.dtype == torch.float32
        for w in batch.numpy():
            start = index.get(w.tobytes())
            assert start is not None, "a sampled window is not WINDOW consecutive rows of the dataset"
            starts.append(start)
    assert set(starts) <= set(valid), f"windows straddle clips or overrun: {sorted(set(starts) - set(valid))}"
    counts = np.array([starts.count(s) for s in valid])
    assert counts.min() > 0, "some valid windows are never drawn"
    expected = len(starts) / len(valid)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < _chi2_bound(len(valid) - 1), f"not uniform over starts: counts {counts.tolist()}"


def test_eta_auto_sets_the_first_steps_ess_on_target_and_only_then() -> None:
    model, est, x, _ = _setup(eta_init=100.0)
    est.cfg.eta_auto = True
    out = est(model, x, step=0)
    assert float(out.metrics["charts/ess"]) == pytest.approx(ESS_FRACTION * K, rel=1e-4)
    calibrated = float(est.log_eta.detach())
    assert abs(calibrated - math.log(100.0)) > 0.1
    est(model, x, step=1)  # later steps (and resumed runs) keep their eta
    assert float(est.log_eta.detach()) == calibrated
