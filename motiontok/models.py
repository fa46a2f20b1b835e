"""The discrete VAE: recognition model q(z|x) (context encoder + posterior head) and generative model p(x|z)
with its likelihood (Gaussian or Bernoulli, per network).

Estimators (``motiontok.estimators``) train it; ``motiontok.tokenizer.MotionTokenizer`` wraps it for users.
Inputs here are standardized (motion windows, natural images) or binary (MNIST); raw units live one level up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from motiontok.nets import (
    NETWORKS,
    ARPosterior,
    ImageNetConfig,
    NAPosterior,
    TrajectoryNetConfig,
    bernoulli_log_prob,
    gaussian_log_prob,
)
from motiontok.nets.quantizers import QUANTIZERS, GaussianBottleneck

POSTERIORS = {"ar": ARPosterior, "na": NAPosterior}
"""Posterior heads by name: ``ar`` (autoregressive, the paper's DAPS) and ``na`` (DAPS-NA)."""
BOTTLENECKS = (*POSTERIORS, *QUANTIZERS)
"""Every ``posterior`` kind: a categorical posterior head, or a deterministic quantizer (``vq``, ``fsq``)."""


class DiscreteVAE(nn.Module):
    """x (motion: (B, L, F); images: (B, C, S, S)) -> tokens (B, T) in [0, V) -> a distribution over x."""

    def __init__(
        self,
        cfg: TrajectoryNetConfig | ImageNetConfig,
        posterior: str = "ar",
        posterior_init_std: float | None = None,
        quantizer: dict[str, Any] | None = None,
        network: str = "trajectory",
    ) -> None:
        """``posterior_init_std`` overrides the std of the initial code-logit weights (None: ``cfg.init``'s own).
        With ``init=gpt`` 0.02 starts q(z|x) near uniform (slow to become informative on small budgets); ~0.25
        starts it peaked and already x-dependent. ``posterior="vq"`` or ``"fsq"`` replaces the posterior head by
        that quantizer (``quantizer``: its keyword arguments); the decoder then reads the quantized vectors.
        ``network`` names the encoder, decoder and likelihood (``nets.NETWORKS``); ``cfg`` is its config type."""
        super().__init__()
        if posterior not in BOTTLENECKS:
            raise ValueError(f"unknown posterior {posterior!r}; choose one of {sorted(BOTTLENECKS)}")
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; choose one of {sorted(NETWORKS)}")
        spec = NETWORKS[network]
        if not isinstance(cfg, spec.config):
            raise TypeError(f"network {network!r} takes a {spec.config.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        self.network = network
        self.likelihood = spec.likelihood
        self.posterior_kind = posterior
        self.quantizer_kwargs = dict(quantizer or {})
        self.encoder = spec.encoder(cfg)
        self.posterior = POSTERIORS[posterior](cfg.latent_config()) if posterior in POSTERIORS else None
        self.quantizer = None
        if posterior in QUANTIZERS:
            self.quantizer = QUANTIZERS[posterior](cfg.embed_dim, cfg.vocab_size, **self.quantizer_kwargs)
        elif posterior_init_std is not None:
            nn.init.normal_(self.posterior.head.weight, std=posterior_init_std)
        self.decoder = spec.decoder(cfg)

    @property
    def num_codes(self) -> int:
        """Values a token can take: the quantizer's codebook size, else ``cfg.vocab_size``."""
        return self.quantizer.vocab_size if self.quantizer is not None else self.cfg.vocab_size

    def memory(self, x: Tensor) -> Tensor:
        """Context of the recognition model: x -> (B, T, H)."""
        return self.encoder(x)

    @torch.no_grad()
    def encode(self, x: Tensor, greedy: bool = True, temperature: float = 1.0) -> Tensor:
        """x -> tokens (B, T): the posterior's greedy mode, or a sample from it (a quantizer's codes are
        deterministic)."""
        if isinstance(self.quantizer, GaussianBottleneck):  # the VAE baseline: the latent means (B, T, d) float
            return self.quantizer.stats(self.memory(x))[0]
        if self.quantizer is not None:
            return self.quantizer(self.memory(x)).tokens
        return self.posterior.sample(self.memory(x), greedy=greedy, temperature=temperature)

    def decode(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """Tokens (B, T), or relaxed codes (B, T, V), -> the likelihood's parameters: (mean, variance) for a
        Gaussian, (logits, None) for a Bernoulli; through the quantizer's codes if any."""
        if self.quantizer is not None:
            return self.decoder.forward_embeddings(self.quantizer.embed_tokens(tokens))
        return self.decoder(tokens)

    def log_likelihood(self, x: Tensor, params: tuple[Tensor, Tensor | None]) -> Tensor:
        """log p(x | decoder output ``params``) summed over each example: -> (B,)."""
        if self.likelihood == "bernoulli":
            return bernoulli_log_prob(x, params[0])
        return gaussian_log_prob(x, *params)

    def log_p(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) for tokens (B, T) or relaxed codes (B, T, V): -> (B,)."""
        return self.log_likelihood(x, self.decode(z))

    def log_p_embeddings(self, x: Tensor, e: Tensor) -> Tensor:
        """log p(x | continuous codes e (B, T, H)) (quantized or Gaussian latents): -> (B,)."""
        return self.log_likelihood(x, self.decoder.forward_embeddings(e))

    def mean_of(self, params: tuple[Tensor, Tensor | None]) -> Tensor:
        """The expected x under decoder output ``params``: the Gaussian mean, or the Bernoulli probabilities."""
        return torch.sigmoid(params[0]) if self.likelihood == "bernoulli" else params[0]

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` codes from the prior on the model's device: uniform tokens (n, T), or the Gaussian VAE's N(0, I)
        latents (n, T, d); decode them with :meth:`reconstruct`."""
        device = next(self.parameters()).device
        T = self.cfg.block_size
        if isinstance(self.quantizer, GaussianBottleneck):
            return torch.randn(n, T, self.quantizer.latent_dim, generator=generator).to(device)
        return torch.randint(self.num_codes, (n, T), generator=generator).to(device)

    def reconstruct(self, tokens: Tensor) -> Tensor:
        """Expected x given the tokens (B, T): motion (B, L, F) standardized, images (B, C, S, S)."""
        return self.mean_of(self.decode(tokens))


def model_record(model: DiscreteVAE) -> dict[str, Any]:
    """What :func:`build_model` needs to rebuild ``model`` (stored in every checkpoint's config)."""
    return {
        "network": model.network,
        "net": dataclasses.asdict(model.cfg),
        "posterior": model.posterior_kind,
        "quantizer": model.quantizer_kwargs,
    }


def build_model(record: dict[str, Any]) -> DiscreteVAE:
    """A fresh model from a :func:`model_record` (checkpoints before the ``network`` key are trajectory models)."""
    network = record.get("network", "trajectory")
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {sorted(NETWORKS)}")
    cfg = NETWORKS[network].config(**record["net"])
    return DiscreteVAE(cfg, record.get("posterior", "ar"), quantizer=record.get("quantizer"), network=network)
