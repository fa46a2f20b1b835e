"""DAPS math (Discrete Autoencoding via Policy Search, Algorithm 1 of the paper) as pure functions.

Conventions: ``N`` = batch size, ``K`` = latent samples per input ``x``, ``T`` = latent positions,
``V`` = vocabulary (codebook) size.

* ``rewards`` (N, K): ``r^k = log p_phi(x | z^k)`` (Gaussian log-likelihood of the decoder).
* ``log_q``   (N, K): ``log q_theta(z^k | x)``, summed over the ``T`` latent positions.

One DAPS step (``daps_loss``):

1. advantage ``A^k = r^k - logsumexp_k r^k`` (soft-max baseline; a mean baseline is an option),
2. target ``log q*(z|x) = (A + eta log q_theta) / (eta + beta) + const``; its log importance
   weight over the proposal ``q_theta`` is ``log w^k = (A^k - beta log q_theta(z^k|x)) / (eta + beta)``,
3. self-normalized weights ``w~^k = softmax_k(log w^k)``,
4. encoder loss ``-mean_n sum_k sg(w~^k) log q_theta(z^k|x)`` (weighted maximum likelihood),
5. decoder loss ``-mean_{n,k} r^k``,
6. ``ESS = mean_n (sum_k w^k)^2 / sum_k (w^k)^2`` and eta loss ``(ESS(eta) - ESS_target)^2``.

A per-row additive constant in ``log w`` (such as the baseline, or the unknown normalizer of ``q*``)
cancels in the self-normalized weights and in the ESS, so the choice of baseline only affects
numerical conditioning, not the result.

Nothing here holds state: the trainer owns the parameters (including ``log_eta``) and optimizers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "BetaSchedule",
    "DapsLoss",
    "advantages",
    "beta_elbo",
    "daps_loss",
    "decoder_loss",
    "effective_sample_size",
    "encoder_loss",
    "eta_loss",
    "kl_to_uniform",
    "log_importance_weights",
    "normalized_weights",
]

BASELINES = ("softmax", "mean")


def advantages(rewards: Tensor, baseline: str = "softmax") -> Tensor:
    """Advantages of the K samples of each input.

    ``"softmax"``: ``A^k = r^k - log sum_j exp(r^j)`` (the paper's soft-maximum value estimate).
    ``"mean"``:    ``A^k = r^k - (1/K) sum_j r^j``.

    Args:
        rewards: (N, K) log-likelihoods ``log p_phi(x | z^k)``.
        baseline: ``"softmax"`` or ``"mean"``.

    Returns:
        (N, K) advantages (differentiable wrt ``rewards``; the caller detaches if needed).
    """
    if baseline == "softmax":
        value = torch.logsumexp(rewards, dim=-1, keepdim=True)  # (N, 1)
    elif baseline == "mean":
        value = rewards.mean(dim=-1, keepdim=True)  # (N, 1)
    else:
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
    return rewards - value  # (N, K)


def log_importance_weights(adv: Tensor, log_q: Tensor, eta: float | Tensor, beta: float) -> Tensor:
    """Unnormalized log importance weights of the target ``q*`` over the proposal ``q_theta``.

    From ``log q*(z|x) = (A + eta log q_theta(z|x)) / (eta + beta) - log Z(x)`` (Eq. 5):
    ``log w^k = log q*(z^k|x) - log q_theta(z^k|x) + log Z(x)
    = (A^k - beta log q_theta(z^k|x)) / (eta + beta)``.

    Args:
        adv: (N, K) advantages.
        log_q: (N, K) ``log q_theta(z^k | x)`` summed over latent positions.
        eta: trust-region multiplier (> 0); a float or a 0-dim tensor (differentiable).
        beta: entropy weight (>= 0).

    Returns:
        (N, K) log weights, defined up to a per-row constant.
    """
    return (adv - beta * log_q) / (eta + beta)  # (N, K)


def normalized_weights(log_w: Tensor) -> Tensor:
    """Self-normalized importance weights ``w~^k = w^k / sum_j w^j = softmax_k(log w)``.

    Args:
        log_w: (N, K) log weights (any per-row offset).

    Returns:
        (N, K) weights, non-negative, summing to 1 over K.
    """
    return torch.softmax(log_w, dim=-1)  # (N, K)


def effective_sample_size(log_w: Tensor) -> Tensor:
    """Batch-mean effective sample size (Eq. 8).

    ``ESS = (1/N) sum_n (sum_k w_nk)^2 / sum_k w_nk^2``, computed in log space as
    ``exp(2 logsumexp_k(log w) - logsumexp_k(2 log w))``. Invariant to a per-row scale of ``w``;
    each row's value lies in ``[1, K]``.

    Args:
        log_w: (N, K) log weights.

    Returns:
        0-dim tensor (differentiable wrt ``log_w``).
    """
    log_ess = 2.0 * torch.logsumexp(log_w, dim=-1) - torch.logsumexp(2.0 * log_w, dim=-1)  # (N,)
    return log_ess.exp().mean()


def encoder_loss(weights: Tensor, log_q: Tensor) -> Tensor:
    """Weighted maximum-likelihood loss of the encoder (Eq. 6, Algorithm 1 line 9).

    ``L(theta) = -(1/N) sum_n sum_k sg(w~_nk) log q_theta(z_n^k | x_n)`` with self-normalized ``w~``.
    (``sum_k w~_k f_k`` is the self-normalized estimate of the paper's ``(1/K) sum_k w_k f_k``.)

    Args:
        weights: (N, K) self-normalized weights (detached here).
        log_q: (N, K) ``log q_theta(z^k | x)`` with gradient.

    Returns:
        scalar loss.
    """
    return -(weights.detach() * log_q).sum(dim=-1).mean()


def decoder_loss(rewards: Tensor) -> Tensor:
    """Decoder (generative model) loss, Algorithm 1 line 10: ``L(phi) = -(1/(N K)) sum_{n,k} r_nk``.

    Args:
        rewards: (N, K) ``log p_phi(x | z^k)`` with gradient wrt the decoder.

    Returns:
        scalar loss.
    """
    return -rewards.mean()


def eta_loss(ess: Tensor, ess_target: float) -> Tensor:
    """Step-size loss, Algorithm 1 line 11: ``L(eta) = (ESS(eta) - ESS_target)^2``.

    Args:
        ess: 0-dim ESS, differentiable wrt eta.
        ess_target: target ESS in absolute samples (the paper uses ``[K/4, 3K/4]``).

    Returns:
        scalar loss.
    """
    return (ess - ess_target) ** 2


class DapsLoss(NamedTuple):
    """Output of ``daps_loss``."""

    encoder: Tensor  # () grad only into log_q
    decoder: Tensor  # () grad only into rewards
    eta: Tensor  # () grad only into log_eta
    weights: Tensor  # (N, K) self-normalized weights, detached
    ess: Tensor  # () ESS of the weights used by the encoder, detached
    log_w: Tensor  # (N, K) log importance weights, detached


def daps_loss(
    rewards: Tensor,
    log_q: Tensor,
    log_eta: Tensor,
    beta: float,
    ess_target: float,
    baseline: str = "softmax",
) -> DapsLoss:
    """One DAPS step (Algorithm 1): the encoder, decoder and eta losses for a batch of K samples each.

    With ``eta = exp(log_eta)``:

    * ``A = advantages(sg(r))``; ``log w = (A - beta sg(log q)) / (sg(eta) + beta)``;
      ``w~ = softmax_k(log w)``.
    * encoder: ``-(1/N) sum_n sum_k sg(w~) log q``.
    * decoder: ``-(1/(N K)) sum r``.
    * eta: ``(ESS(log w_eta) - ESS_target)^2`` with ``log w_eta = (A - beta sg(log q)) / (eta + beta)``.

    Gradient routing (so the three losses can be summed and back-propagated once):

    * ``encoder`` depends on ``log_q`` only (rewards and eta are detached, weights are constants);
    * ``decoder`` depends on ``rewards`` only;
    * ``eta`` depends on ``log_eta`` only (rewards and log_q are detached in its ESS).

    Args:
        rewards: (N, K) ``log p_phi(x | z^k)``.
        log_q: (N, K) ``log q_theta(z^k | x)`` summed over latent positions.
        log_eta: 0-dim tensor, the trainable log trust-region multiplier (a float is accepted).
        beta: entropy weight (>= 0), e.g. from ``BetaSchedule``.
        ess_target: target ESS in samples, e.g. ``K / 2``.
        baseline: ``"softmax"`` or ``"mean"`` (no effect on the result up to rounding).

    Returns:
        ``DapsLoss(encoder, decoder, eta, weights, ess, log_w)``.
    """
    if rewards.shape != log_q.shape or rewards.dim() != 2:
        raise ValueError(f"rewards {tuple(rewards.shape)} and log_q {tuple(log_q.shape)} must both be (N, K)")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    log_eta = torch.as_tensor(log_eta, dtype=rewards.dtype, device=rewards.device)
    eta = log_eta.exp()  # ()

    adv = advantages(rewards.detach(), baseline)  # (N, K)
    log_q_sg = log_q.detach()  # (N, K)

    log_w = log_importance_weights(adv, log_q_sg, eta.detach(), beta)  # (N, K), constant
    weights = normalized_weights(log_w)  # (N, K), constant
    enc = encoder_loss(weights, log_q)

    dec = decoder_loss(rewards)

    log_w_eta = log_importance_weights(adv, log_q_sg, eta, beta)  # (N, K), grad -> log_eta
    ess_eta = effective_sample_size(log_w_eta)  # ()
    eta_l = eta_loss(ess_eta, ess_target)

    return DapsLoss(
        encoder=enc,
        decoder=dec,
        eta=eta_l,
        weights=weights,
        ess=ess_eta.detach(),
        log_w=log_w,
    )


@torch.no_grad()
def calibrate_log_eta(
    rewards: Tensor,
    log_q: Tensor,
    beta: float,
    ess_target: float,
    baseline: str = "softmax",
    bounds: tuple[float, float] = (-7.0, 14.0),
    iters: int = 60,
) -> float:
    """log eta at which the batch-mean ESS of the weights equals ``ess_target`` (bisection).

    The ESS of ``softmax((A - beta log q) / (eta + beta))`` grows monotonically with eta (from the ESS of the
    hardest weighting towards K), so a bisection on log eta within ``bounds`` finds the crossing; a target outside
    the reachable range gives the nearer bound. Used to start eta where its own update would take it after many
    steps (from eta_init = 100, the ablation saw hundreds of steps far from the target).

    Args:
        rewards, log_q: (N, K), as in :func:`daps_loss` (no gradient is taken).
        beta: entropy weight (>= 0).
        ess_target: target ESS in samples.

    Returns:
        log eta (float).
    """
    adv = advantages(rewards, baseline)  # (N, K)
    lo, hi = bounds

    def ess(log_eta: float) -> float:
        return float(effective_sample_size(log_importance_weights(adv, log_q, math.exp(log_eta), beta)))

    if ess(lo) >= ess_target:
        return lo
    if ess(hi) <= ess_target:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ess(mid) < ess_target else (lo, mid)
    return 0.5 * (lo + hi)


def kl_to_uniform(log_q: Tensor, num_positions: int, vocab_size: int) -> Tensor:
    """Monte-Carlo ``KL(q_theta(.|x) || Uniform(V^T)) = E_q[log q] + T log V``, per input.

    Estimated from the K samples ``z^k ~ q_theta(.|x)`` as ``(1/K) sum_k log q(z^k|x) + T log V``.

    Args:
        log_q: (N, K) ``log q_theta(z^k | x)`` of samples drawn from ``q_theta``.
        num_positions: T.
        vocab_size: V.

    Returns:
        (N,) KL estimates (nats).
    """
    return log_q.mean(dim=-1) + num_positions * math.log(vocab_size)  # (N,)


def beta_elbo(log_p: Tensor, log_q: Tensor, num_positions: int, vocab_size: int, beta: float) -> Tensor:
    """Monte-Carlo beta-ELBO per input: ``(1/K) sum_k log p(x|z^k) - beta KL(q || uniform)``.

    ``beta = 1`` gives the ELBO with a uniform prior over the ``V^T`` codes.

    Args:
        log_p: (N, K) ``log p_phi(x | z^k)``.
        log_q: (N, K) ``log q_theta(z^k | x)``.
        num_positions: T.
        vocab_size: V.
        beta: KL weight.

    Returns:
        (N,) beta-ELBO estimates (nats).
    """
    return log_p.mean(dim=-1) - beta * kl_to_uniform(log_q, num_positions, vocab_size)  # (N,)


BETA_KINDS = ("constant", "linear", "cosine", "exp")


@dataclass(frozen=True)
class BetaSchedule:
    """Annealing schedule for beta (the entropy / bit-rate knob).

    ``beta(step) = start`` for ``step <= warmup``, ``end`` for ``step >= warmup + steps``, and in between,
    with ``t = (step - warmup) / steps``:

    * ``"constant"``: always ``start``;
    * ``"linear"``:   ``start + (end - start) t``;
    * ``"cosine"``:   ``end + (start - end) (1 + cos(pi t)) / 2``;
    * ``"exp"``:      ``start (end / start)^t``, a constant factor per step (the authors' code: 3 -> 0.01 over
      the whole run); needs ``start, end > 0``.
    """

    kind: str = "exp"
    start: float = 3.0
    end: float = 0.01
    steps: int = 10000
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.kind not in BETA_KINDS:
            raise ValueError(f"unknown beta schedule kind {self.kind!r}; expected one of {BETA_KINDS}")
        if self.start < 0 or self.end < 0:
            raise ValueError(f"beta start/end must be >= 0, got start={self.start}, end={self.end}")
        if self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")
        if self.kind == "exp" and min(self.start, self.end) <= 0:
            raise ValueError(f"an exp beta schedule needs start, end > 0, got start={self.start}, end={self.end}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return float(self.start)
        t = min(max((step - self.warmup) / self.steps, 0.0), 1.0)
        if self.kind == "linear":
            return float(self.start + (self.end - self.start) * t)
        if self.kind == "exp":
            return float(self.start * (self.end / self.start) ** t)
        return float(self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t)))
