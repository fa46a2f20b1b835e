"""The discrete VAE: recognition model q(z|x) (context encoder + posterior head) and generative model p(x|z).

Estimators (``motiontok.estimators``) train it; ``motiontok.tokenizer.MotionTokenizer`` wraps it for users.
Inputs here are standardized windows; raw units live one level up, with the normalizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from motiontok.nets import (
    ARPosterior,
    NAPosterior,
    TrajectoryDecoder,
    TrajectoryEncoder,
    TrajectoryNetConfig,
    gaussian_log_prob,
)
from motiontok.nets.quantizers import QUANTIZERS, GaussianBottleneck

POSTERIORS = {"ar": ARPosterior, "na": NAPosterior}
"""Posterior heads by name: ``ar`` (autoregressive, the paper's DAPS) and ``na`` (DAPS-NA)."""
BOTTLENECKS = (*POSTERIORS, *QUANTIZERS)
"""Every ``posterior`` kind: a categorical posterior head, or a deterministic quantizer (``vq``, ``fsq``)."""


class DiscreteVAE(nn.Module):
    """x (B, L, F) standardized -> tokens (B, T) in [0, V) -> Gaussian over x."""

    def __init__(
        self,
        cfg: TrajectoryNetConfig,
        posterior: str = "ar",
        posterior_init_std: float | None = None,
        quantizer: dict[str, Any] | None = None,
    ) -> None:
        """``posterior_init_std`` overrides the std of the initial code-logit weights (None: ``cfg.init``'s own).
        With ``init=gpt`` 0.02 starts q(z|x) near uniform (slow to become informative on small budgets); ~0.25
        starts it peaked and already x-dependent. ``posterior="vq"`` or ``"fsq"`` replaces the posterior head by
        that quantizer (``quantizer``: its keyword arguments); the decoder then reads the quantized vectors."""
        super().__init__()
        if posterior not in BOTTLENECKS:
            raise ValueError(f"unknown posterior {posterior!r}; choose one of {sorted(BOTTLENECKS)}")
        self.cfg = cfg
        self.posterior_kind = posterior
        self.quantizer_kwargs = dict(quantizer or {})
        self.encoder = TrajectoryEncoder(cfg)
        self.posterior = POSTERIORS[posterior](cfg) if posterior in POSTERIORS else None
        self.quantizer = None
        if posterior in QUANTIZERS:
            self.quantizer = QUANTIZERS[posterior](cfg.embed_dim, cfg.vocab_size, **self.quantizer_kwargs)
        elif posterior_init_std is not None:
            nn.init.normal_(self.posterior.head.weight, std=posterior_init_std)
        self.decoder = TrajectoryDecoder(cfg)

    @property
    def num_codes(self) -> int:
        """Values a token can take: the quantizer's codebook size, else ``cfg.vocab_size``."""
        return self.quantizer.vocab_size if self.quantizer is not None else self.cfg.vocab_size

    def memory(self, x: Tensor) -> Tensor:
        """Context of the recognition model: (B, L, F) -> (B, T, H)."""
        return self.encoder(x)

    @torch.no_grad()
    def encode(self, x: Tensor, greedy: bool = True, temperature: float = 1.0) -> Tensor:
        """(B, L, F) -> tokens (B, T): the posterior's greedy mode, or a sample from it (a quantizer's codes are
        deterministic)."""
        if isinstance(self.quantizer, GaussianBottleneck):  # the VAE baseline: the latent means (B, T, d) float
            return self.quantizer.stats(self.memory(x))[0]
        if self.quantizer is not None:
            return self.quantizer(self.memory(x)).tokens
        return self.posterior.sample(self.memory(x), greedy=greedy, temperature=temperature)

    def decode(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens (B, T) -> the decoder's (mean (B, L, F), var (F,)), through the quantizer's codes if any."""
        if self.quantizer is not None:
            return self.decoder.forward_embeddings(self.quantizer.embed_tokens(tokens))
        return self.decoder(tokens)

    def log_p(self, x: Tensor, tokens: Tensor) -> Tensor:
        """log p(x | z) summed over the window: (B, L, F), (B, T) -> (B,)."""
        return gaussian_log_prob(x, *self.decode(tokens))

    def reconstruct(self, tokens: Tensor) -> Tensor:
        """Decoder mean: tokens (B, T) -> (B, L, F) standardized."""
        return self.decode(tokens)[0]
