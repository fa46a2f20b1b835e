"""Estimators turn a batch into a loss for a model. DAPS is the first; the paper's baselines (VQ-VAE, FSQ,
Gumbel-Softmax, GR-MCK, Gaussian VAE) plug in as further subclasses of :class:`Estimator` with the same call.

An estimator is an ``nn.Module`` so that its own trainable state (DAPS's ``log_eta``) is optimised, saved and
synchronised by DistributedDataParallel together with the model (the trainer wraps both in one module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from motiontok import daps
from motiontok.daps import BetaSchedule
from motiontok.models import DiscreteVAE
from motiontok.nets.graphs import CudaGraphSampler


class EstimatorOutput(NamedTuple):
    loss: Tensor  # scalar to back-propagate
    metrics: dict[str, Tensor]  # detached scalars, namespaced ("losses/...", "charts/...")


class Estimator(nn.Module):
    """``forward(model, x, step) -> EstimatorOutput`` for a model-ready batch x (motion (B, L, F), images
    (B, C, S, S)); the likelihood is the model's (``DiscreteVAE.log_p``)."""

    def forward(self, model: nn.Module, x: Tensor, step: int) -> EstimatorOutput:  # pragma: no cover
        raise NotImplementedError

    def beta(self, step: int) -> float:
        """The KL weight in force at ``step`` (0 for estimators without one)."""
        return 0.0

    updates_per_batch: int = 1
    """Optimizer steps the trainer takes on each batch (the PPO baseline: several epochs over its samples)."""

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The estimator's own trainable parameters by role, for the optimizer: ``"recognition"`` and
        ``"generative"`` are trained like the networks of that side (e.g. a VQ codebook), ``"eta"`` at its own
        constant rate (DAPS's log eta). Every parameter must be declared: ``trainer.make_optimizer`` refuses an
        estimator whose parameters do not match its groups, so none joins a group silently."""
        return {}


@dataclass
class DapsConfig:
    """DAPS hyperparameters (paper section 3, figure 11: LAFAN)."""

    num_samples: int = 8
    """K: posterior samples per input."""
    ess_target: float = 0.33
    """Target effective sample size as a fraction of K (the authors' LAFAN config: 0.33; the paper's table: K/2;
    stable in [1/4, 3/4])."""
    eta_init: float = 100.0
    """Initial trust-region multiplier eta (trained as log eta)."""
    eta_auto: bool = False
    """Replace ``eta_init`` on the first step of a run (step 0) by the eta at which that batch's ESS meets the
    target (``daps.calibrate_log_eta``; averaged over DDP ranks). A resumed run keeps its trained eta."""
    baseline: str = "softmax"
    """Advantage baseline: 'softmax' (log-sum-exp over the K rewards) or 'mean'."""
    beta: BetaSchedule = field(default_factory=lambda: BetaSchedule("exp", 3.0, 0.01, 10_000))
    """Entropy weight schedule (the authors' code: exponential decay from 3 to 0.01 over the run)."""
    cuda_graph: bool = False
    """On a GPU, draw the K codes with one replayed CUDA graph of the whole decoding loop
    (``nets.graphs.CudaGraphSampler``) instead of launching every step's kernels. Off until measured on a GPU."""


class DapsEstimator(Estimator):
    """Algorithm 1: sample K codes per input without gradient, weight them by q*/q_theta, fit the encoder by
    weighted maximum likelihood, the decoder by maximum likelihood, and eta towards the ESS target."""

    def __init__(self, cfg: DapsConfig) -> None:
        super().__init__()
        if cfg.num_samples < 2:
            raise ValueError("DAPS needs num_samples >= 2")
        if not 0.0 < cfg.ess_target <= 1.0:
            raise ValueError(f"ess_target is a fraction of K in (0, 1], got {cfg.ess_target}")
        self.cfg = cfg
        self.log_eta = nn.Parameter(torch.tensor(math.log(cfg.eta_init)))
        self._graphed: CudaGraphSampler | None = None  # built on the first CUDA step when cfg.cuda_graph

    def beta(self, step: int) -> float:
        return self.cfg.beta(step)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"eta": [self.log_eta]}

    def forward(self, model: DiscreteVAE, x: Tensor, step: int) -> EstimatorOutput:
        B, K = x.shape[0], self.cfg.num_samples
        memory = model.memory(x)  # (B, T, H), shared by the K samples of each input (never copied K times)
        tokens = self.sample_codes(model, memory.detach())  # (B*K, T), no gradient
        log_q = model.posterior.log_prob(memory, tokens).view(B, K)  # (B, K)
        rewards = model.log_p(x.repeat_interleave(K, dim=0), tokens).view(B, K)  # (B, K)
        beta = self.beta(step)
        if self.cfg.eta_auto and step == 0:
            self.calibrate_eta(rewards.detach(), log_q.detach(), beta)
        out = daps.daps_loss(rewards, log_q, self.log_eta, beta, self.cfg.ess_target * K, self.cfg.baseline)
        T, V = model.cfg.block_size, model.cfg.vocab_size
        kl = daps.kl_to_uniform(log_q.detach(), T, V)  # (B,)
        metrics = {
            "losses/encoder": out.encoder.detach(),
            "losses/decoder": out.decoder.detach(),
            "losses/eta": out.eta.detach(),
            "charts/log_p": rewards.detach().mean(),
            "charts/log_q": log_q.detach().mean(),
            "charts/kl_uniform": kl.mean(),
            "charts/beta_elbo": (rewards.detach().mean(-1) - beta * kl).mean(),
            "charts/ess": out.ess,
            "charts/eta": self.log_eta.detach().exp(),
            "charts/beta": torch.tensor(beta),
        }
        return EstimatorOutput(out.encoder + out.decoder + out.eta, metrics)

    @torch.no_grad()
    def calibrate_eta(self, rewards: Tensor, log_q: Tensor, beta: float) -> None:
        """Set log eta so that this batch's ESS meets the target (the mean over DDP ranks, so replicas agree)."""
        target = self.cfg.ess_target * self.cfg.num_samples
        value = torch.tensor(daps.calibrate_log_eta(rewards, log_q, beta, target, self.cfg.baseline))
        value = value.to(self.log_eta.device, self.log_eta.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(value)
            value /= torch.distributed.get_world_size()
        self.log_eta.fill_(value)

    def sample_codes(self, model: DiscreteVAE, memory: Tensor) -> Tensor:
        """K codes per input from the posterior: (B, T, H) -> (B*K, T), as one CUDA graph when configured."""
        K = self.cfg.num_samples
        if not (self.cfg.cuda_graph and memory.is_cuda):
            return model.posterior.sample(memory, num_samples=K)
        if self._graphed is None or self._graphed.posterior is not model.posterior:
            self._graphed = CudaGraphSampler(model.posterior, K)
        return self._graphed(memory)
