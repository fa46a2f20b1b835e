"""Per-feature standardization with Welford running statistics (paper appendix J), saved with models."""

from __future__ import annotations

import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """Running mean / variance per feature, merged batch by batch with Chan et al.'s parallel Welford update.

    Statistics are float64 buffers, so they travel in ``state_dict`` and checkpoints. ``normalize`` and
    ``denormalize`` follow the caller's dtype and device. Features whose standard deviation is below
    ``min_std`` (e.g. constant columns) are divided by ``min_std`` instead.
    """

    def __init__(self, num_features: int, min_std: float = 1e-3) -> None:
        super().__init__()
        self.num_features = num_features
        self.min_std = min_std
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(num_features, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch (..., F) into the statistics."""
        if x.shape[-1] != self.num_features:
            raise ValueError(f"expected {self.num_features} features, got shape {tuple(x.shape)}")
        x = x.reshape(-1, self.num_features).to(self.mean)
        if not torch.isfinite(x).all():
            raise ValueError("normalizer update got NaN or inf")
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / n)
        self.m2 += m2_b + delta**2 * (self.count * n_b / n)
        self.count.copy_(n)

    @property
    def var(self) -> torch.Tensor:
        """(F,) population variance."""
        return self.m2 / self.count.clamp(min=1.0)

    @property
    def std(self) -> torch.Tensor:
        """(F,) standard deviation, floored at ``min_std``."""
        return self.var.sqrt().clamp(min=self.min_std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw units (..., F) -> standardized units."""
        if self.count.item() == 0:
            raise RuntimeError("normalizer has no statistics yet: call update() first")
        return (x - self.mean.to(x)) / self.std.to(x)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardized units (..., F) -> raw units."""
        return x * self.std.to(x) + self.mean.to(x)
