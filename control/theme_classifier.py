"""A simple classifier of motion themes (walk, run, dance, ...) from one window of features, trained on true windows;
it judges whether motion generated from a theme's text looks like that theme (text faithfulness).

Multinomial logistic regression on window statistics: the mean and standard deviation over the window's frames of
every feature (speed, height, joint angles and velocities, key points), standardized with the training windows'
statistics. Deliberately simple: its errors on true validation windows bound what it can say about generated ones
(report both).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


def window_stats(windows: np.ndarray | Tensor) -> Tensor:
    """Raw feature windows (N, L, F) -> (N, 2F): per-feature mean and standard deviation over the frames."""
    w = torch.as_tensor(np.asarray(windows), dtype=torch.float32)
    if w.ndim != 3:
        raise ValueError(f"expected windows (N, L, F), got {tuple(w.shape)}")
    return torch.cat((w.mean(1), w.std(1, unbiased=False)), dim=1)


class ThemeClassifier(nn.Module):
    """Window statistics -> logits over ``themes``."""

    def __init__(self, themes: list[str], feature_dim: int = 127) -> None:
        super().__init__()
        self.themes = list(themes)
        self.linear = nn.Linear(2 * feature_dim, len(themes))
        self.register_buffer("mean", torch.zeros(2 * feature_dim))
        self.register_buffer("std", torch.ones(2 * feature_dim))

    def forward(self, windows: np.ndarray | Tensor) -> Tensor:
        """(N, L, F) raw windows -> logits (N, K)."""
        return self.linear((window_stats(windows) - self.mean) / self.std)

    def fit(self, windows: np.ndarray, labels: np.ndarray, steps: int = 300, weight_decay: float = 1e-3) -> float:
        """Fit on windows (N, L, F) with theme indices (N,), classes weighted by inverse frequency (walk windows
        outnumber jumps ten to one); full-batch L-BFGS. Returns the training accuracy."""
        x = window_stats(windows)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp(min=1e-3))
        y = torch.as_tensor(labels, dtype=torch.long)
        counts = torch.bincount(y, minlength=len(self.themes)).float()
        weight = torch.where(counts > 0, counts.sum() / (len(self.themes) * counts.clamp(min=1)), torch.zeros(()))
        z = (x - self.mean) / self.std
        opt = torch.optim.LBFGS(self.linear.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(self.linear(z), y, weight=weight)
            loss = loss + weight_decay * self.linear.weight.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            return float((self.linear(z).argmax(-1) == y).float().mean())

    @torch.no_grad()
    def predict(self, windows: np.ndarray | Tensor) -> list[str]:
        """The theme of each window (N, L, F)."""
        return [self.themes[i] for i in self(windows).argmax(-1).tolist()]
