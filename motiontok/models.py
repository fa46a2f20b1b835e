"""The discrete VAE: recognition model q(z|x) (context encoder + posterior head) and generative model p(x|z).

Estimators (``motiontok.estimators``) train it; ``motiontok.tokenizer.MotionTokenizer`` wraps it for users.
Inputs here are standardized windows; raw units live one level up, with the normalizer.
"""

from __future__ import annotations

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

POSTERIORS = {"ar": ARPosterior, "na": NAPosterior}
"""Posterior heads by name: ``ar`` (autoregressive, the paper's DAPS) and ``na`` (DAPS-NA)."""


class DiscreteVAE(nn.Module):
    """x (B, L, F) standardized -> tokens (B, T) in [0, V) -> Gaussian over x."""

    def __init__(
        self, cfg: TrajectoryNetConfig, posterior: str = "ar", posterior_init_std: float | None = None
    ) -> None:
        """``posterior_init_std`` overrides the std of the initial code-logit weights (None: ``cfg.init``'s own).
        With ``init=gpt`` 0.02 starts q(z|x) near uniform (slow to become informative on small budgets); ~0.25
        starts it peaked and already x-dependent."""
        super().__init__()
        if posterior not in POSTERIORS:
            raise ValueError(f"unknown posterior {posterior!r}; choose one of {sorted(POSTERIORS)}")
        self.cfg = cfg
        self.posterior_kind = posterior
        self.encoder = TrajectoryEncoder(cfg)
        self.posterior = POSTERIORS[posterior](cfg)
        if posterior_init_std is not None:
            nn.init.normal_(self.posterior.head.weight, std=posterior_init_std)
        self.decoder = TrajectoryDecoder(cfg)

    def memory(self, x: Tensor) -> Tensor:
        """Context of the recognition model: (B, L, F) -> (B, T, H)."""
        return self.encoder(x)

    @torch.no_grad()
    def encode(self, x: Tensor, greedy: bool = True, temperature: float = 1.0) -> Tensor:
        """(B, L, F) -> tokens (B, T): the posterior's greedy mode, or a sample from it."""
        return self.posterior.sample(self.memory(x), greedy=greedy, temperature=temperature)

    def log_p(self, x: Tensor, tokens: Tensor) -> Tensor:
        """log p(x | z) summed over the window: (B, L, F), (B, T) -> (B,)."""
        mean, var = self.decoder(tokens)
        return gaussian_log_prob(x, mean, var)

    def reconstruct(self, tokens: Tensor) -> Tensor:
        """Decoder mean: tokens (B, T) -> (B, L, F) standardized."""
        return self.decoder(tokens)[0]
