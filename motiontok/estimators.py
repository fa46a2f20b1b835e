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
from motiontok.nets import gaussian_log_prob
from motiontok.nets.graphs import CudaGraphSampler


class EstimatorOutput(NamedTuple):
    loss: Tensor  # scalar to back-propagate
    metrics: dict[str, Tensor]  # detached scalars, namespaced ("losses/...", "charts/...")


class Estimator(nn.Module):
    """``forward(model, x, step) -> EstimatorOutput`` for a standardized batch x (B, L, F)."""

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
        mean, var = model.decoder(tokens)  # (B*K, L, F), (F,)
        rewards = gaussian_log_prob(x.repeat_interleave(K, dim=0), mean, var).view(B, K)  # (B, K)
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


@dataclass
class QuantizedConfig:
    """VQ-VAE / FSQ baselines: the model's quantizer (``posterior=vq|fsq``) does the work; nothing to tune here."""

    bottleneck: str = "vq"
    """The model's bottleneck this estimator trains (``vq`` or ``fsq``); the training script builds the model
    with it."""


class QuantizedEstimator(Estimator):
    """VQ-VAE and FSQ (paper section 2): maximise log p(x | quantized encoding) with the straight-through
    gradient, plus the quantizer's own loss (VQ's commitment term; FSQ has none). No ELBO: the posterior is a
    point mass, so the KL to the uniform prior is the constant T log V."""

    def __init__(self, cfg: QuantizedConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, model: DiscreteVAE, x: Tensor, step: int) -> EstimatorOutput:
        if model.quantizer is None:
            raise ValueError(
                f"the {self.cfg.bottleneck} estimator needs a model built with posterior={self.cfg.bottleneck!r}"
            )
        q = model.quantizer(model.memory(x))  # codes (B, T, H), tokens (B, T)
        mean, var = model.decoder.forward_embeddings(q.codes)  # (B, L, F), (F,)
        log_p = gaussian_log_prob(x, mean, var)  # (B,)
        usage = torch.unique(q.tokens).numel() / model.num_codes
        metrics = {
            "losses/decoder": -log_p.detach().mean(),
            "losses/quantizer": q.aux_loss.detach(),
            "charts/log_p": log_p.detach().mean(),
            "charts/batch_code_usage": torch.tensor(usage),
        }
        return EstimatorOutput(-log_p.mean() + q.aux_loss, metrics)


@dataclass
class RelaxedConfig:
    """Straight-through Gumbel-Softmax (``rao_blackwell=0``) or GR-MCK (K > 0); figure 11, LAFAN: tau 1.0,
    initial beta 2."""

    tau: BetaSchedule = field(default_factory=lambda: BetaSchedule("constant", 1.0, 1.0, 1))
    """Temperature schedule (the same schedule type as beta; CIFAR-10's GR-MCK: cosine 1.0 -> 0.75)."""
    rao_blackwell: int = 0
    """K conditional Gumbel draws averaged per code (GR-MCK); 0 = plain straight-through Gumbel-Softmax."""
    beta: BetaSchedule = field(default_factory=lambda: BetaSchedule("exp", 2.0, 0.01, 10_000))


class RelaxedEstimator(Estimator):
    """Maximise the beta-ELBO ``log p(x | y) - beta KL(q || uniform)`` with relaxed codes y
    (``motiontok.relaxed``); the KL is summed over positions, each position's conditional q(z_t | z_<t, x) taken
    along the sampled prefix (exact per position)."""

    def __init__(self, cfg: RelaxedConfig) -> None:
        super().__init__()
        if min(cfg.tau.start, cfg.tau.end) <= 0 or cfg.rao_blackwell < 0:
            raise ValueError(f"tau must stay > 0 and rao_blackwell >= 0, got {cfg.tau}, {cfg.rao_blackwell}")
        self.cfg = cfg

    def beta(self, step: int) -> float:
        return self.cfg.beta(step)

    def forward(self, model: DiscreteVAE, x: Tensor, step: int) -> EstimatorOutput:
        from motiontok.relaxed import relaxed_sample

        if model.posterior is None:
            raise ValueError("Gumbel-Softmax estimators need a categorical posterior (posterior=ar or na)")
        tau = self.cfg.tau(step)
        codes, _, logits = relaxed_sample(model.posterior, model.memory(x), tau, self.cfg.rao_blackwell)
        mean, var = model.decoder(codes)  # (B, L, F): the forward pass decodes the hard codes
        log_p = gaussian_log_prob(x, mean, var)  # (B,)
        log_probs = torch.log_softmax(logits, -1)  # (B, T, V)
        V = logits.shape[-1]
        kl = (log_probs.exp() * (log_probs + math.log(V))).sum((-1, -2))  # (B,)
        beta = self.beta(step)
        metrics = {
            "losses/decoder": -log_p.detach().mean(),
            "charts/log_p": log_p.detach().mean(),
            "charts/kl_uniform": kl.detach().mean(),
            "charts/beta_elbo": (log_p - beta * kl).detach().mean(),
            "charts/beta": torch.tensor(beta),
            "charts/tau": torch.tensor(tau),
        }
        return EstimatorOutput(-(log_p - beta * kl).mean(), metrics)


@dataclass
class VAEConfig:
    """The Gaussian VAE baseline (``posterior=gauss``): beta-ELBO with the closed-form KL to N(0, I)."""

    bottleneck: str = "gauss"
    beta: BetaSchedule = field(default_factory=lambda: BetaSchedule("constant", 1.0, 1.0, 1))


class VAEEstimator(Estimator):
    """Maximise ``log p(x | z) - beta KL(q(z|x) || N(0, I))`` with one reparameterised sample per window."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def beta(self, step: int) -> float:
        return self.cfg.beta(step)

    def forward(self, model: DiscreteVAE, x: Tensor, step: int) -> EstimatorOutput:
        from motiontok.nets.quantizers import GaussianBottleneck

        if not isinstance(model.quantizer, GaussianBottleneck):
            raise ValueError("the vae estimator needs a model built with posterior='gauss'")
        codes, _, kl = model.quantizer(model.memory(x))  # (B, T, H), _, (B,)
        log_p = gaussian_log_prob(x, *model.decoder.forward_embeddings(codes))  # (B,)
        beta = self.beta(step)
        metrics = {
            "losses/decoder": -log_p.detach().mean(),
            "charts/log_p": log_p.detach().mean(),
            "charts/kl": kl.detach().mean(),
            "charts/beta_elbo": (log_p - beta * kl).detach().mean(),
            "charts/beta": torch.tensor(beta),
        }
        return EstimatorOutput(-(log_p - beta * kl).mean(), metrics)


@dataclass
class PPOConfig:
    """The PPO-style autoencoding baseline: q(z|x) is a policy whose reward is log p(x|z) - beta log q(z|x)."""

    num_samples: int = 8
    """Codes sampled per input and batch (without gradient, from the policy before the update)."""
    epochs: int = 4
    """Optimizer steps on each batch of samples (``updates_per_batch``)."""
    clip: float = 0.2
    """PPO's ratio clipping."""
    embed_dim: int = 128
    """Width of the model's memory (the critic's input): ``tokenizer.net.embed_dim``."""
    beta: BetaSchedule = field(default_factory=lambda: BetaSchedule("exp", 2.0, 0.01, 10_000))


class PPOEstimator(Estimator):
    """Clipped policy-gradient baseline: per batch, K codes per input are drawn once with their log q; for each of
    ``epochs`` optimizer steps the encoder maximises PPO's clipped surrogate of the advantage ``r - V(x)`` (a
    critic on the mean-pooled memory, trained by squared error), the decoder maximises log p(x|z)."""

    def __init__(self, cfg: PPOConfig) -> None:
        super().__init__()
        if cfg.num_samples < 1 or cfg.epochs < 1 or cfg.clip <= 0:
            raise ValueError(f"num_samples and epochs must be >= 1 and clip > 0, got {cfg}")
        self.cfg = cfg
        self.updates_per_batch = cfg.epochs
        h = cfg.embed_dim
        self.critic = nn.Sequential(nn.Linear(h, h), nn.ELU(), nn.Linear(h, 1))
        self._calls = 0  # forward calls; a new batch every ``epochs`` calls (the trainer's inner loop)
        self._rollout: tuple[Tensor, Tensor] | None = None  # the batch's codes (B*K, T) and their old log q

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"recognition": list(self.critic.parameters())}

    def beta(self, step: int) -> float:
        return self.cfg.beta(step)

    def forward(self, model: DiscreteVAE, x: Tensor, step: int) -> EstimatorOutput:
        K = self.cfg.num_samples
        memory = model.memory(x)  # (B, T, H)
        if self._calls % self.updates_per_batch == 0:  # first update on this batch: draw its codes
            tokens = model.posterior.sample(memory.detach(), num_samples=K)  # (B*K, T)
            with torch.no_grad():
                self._rollout = (tokens, model.posterior.log_prob(memory, tokens))  # old log q (B*K,)
        self._calls += 1
        tokens, old_log_q = self._rollout
        log_q = model.posterior.log_prob(memory, tokens)  # (B*K,)
        log_p = gaussian_log_prob(x.repeat_interleave(K, 0), *model.decode(tokens))  # (B*K,)
        beta = self.beta(step)
        value = self.critic(memory.mean(1)).squeeze(-1).repeat_interleave(K)  # (B*K,)
        reward = (log_p - beta * old_log_q).detach()
        adv = reward - value.detach()
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        ratio = torch.exp(log_q - old_log_q)
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - self.cfg.clip, 1 + self.cfg.clip) * adv)
        critic_loss = ((value - reward) ** 2).mean() / reward.var().clamp_min(1.0)
        metrics = {
            "losses/encoder": -surrogate.detach().mean(),
            "losses/critic": critic_loss.detach(),
            "charts/log_p": log_p.detach().mean(),
            "charts/clip_fraction": ((ratio - 1).abs() > self.cfg.clip).float().mean().detach(),
            "charts/beta": torch.tensor(beta),
        }
        return EstimatorOutput(-surrogate.mean() - log_p.mean() + critic_loss, metrics)


ESTIMATORS = {
    "daps": (DapsEstimator, DapsConfig),
    "vqvae": (QuantizedEstimator, QuantizedConfig),
    "fsq": (QuantizedEstimator, QuantizedConfig),
    "gumbel": (RelaxedEstimator, RelaxedConfig),
    "grmck": (RelaxedEstimator, RelaxedConfig),
    "vae": (VAEEstimator, VAEConfig),
    "ppo": (PPOEstimator, PPOConfig),
}
"""Estimators by name -> (class, config dataclass)."""
