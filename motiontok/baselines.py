"""The paper's baseline estimators (section 4, figure 11), behind the same interface as DAPS
(:class:`motiontok.estimators.Estimator`) and sharing its networks: VQ-VAE and FSQ (a quantizer replaces the
posterior head), straight-through Gumbel-Softmax and GR-MCK (relaxed codes, ``motiontok.relaxed``), a Gaussian VAE
and a PPO-style clipped policy gradient."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from motiontok.daps import BetaSchedule
from motiontok.estimators import Estimator, EstimatorOutput
from motiontok.models import DiscreteVAE


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
        log_p = model.log_p_embeddings(x, q.codes)  # (B,)
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
        log_p = model.log_p(x, codes)  # (B,): the forward pass decodes the hard codes
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
        log_p = model.log_p_embeddings(x, codes)  # (B,)
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
        log_p = model.log_p(x.repeat_interleave(K, 0), tokens)  # (B*K,)
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
