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


def leave_one_file_out(
    windows: np.ndarray, themes: np.ndarray, files: np.ndarray, theme_names: list[str], motion_windows: int = 15
) -> dict[str, dict[str, float]]:
    """How well the judge recognises true motion it was not fitted on, the ceiling of what text faithfulness can
    show. For every file, a classifier fitted on all other files judges that file's windows (N, L, F), given in
    time order with their theme indices (N,) and file names (N,). Returns per theme (over all its files) the share
    of windows recognised (``per_window``) and of motions, majority votes over ``motion_windows`` consecutive
    windows of a file (``per_motion``; a file's remainder shorter than that is left out)."""
    themes, files = np.asarray(themes), np.asarray(files)
    if not len(windows) == len(themes) == len(files):
        raise ValueError(f"windows, themes and files differ in length: {len(windows)}, {len(themes)}, {len(files)}")
    hits: dict[str, dict[str, list[bool]]] = {"per_window": {}, "per_motion": {}}
    for f in dict.fromkeys(files.tolist()):  # files in order of appearance
        held = files == f
        if len(np.unique(themes[held])) != 1:
            raise ValueError(f"file {f!r} has windows of several themes")
        if len(np.unique(themes[~held])) < 2:
            raise ValueError(f"leaving out {f!r} leaves fewer than two themes to fit on")
        clf = ThemeClassifier(theme_names, windows.shape[-1])
        clf.fit(windows[~held], themes[~held])
        with torch.no_grad():
            pred = clf(windows[held]).argmax(-1).numpy()  # (n,)
        theme = int(themes[held][0])
        votes = [np.bincount(pred[s : s + motion_windows], minlength=len(theme_names)).argmax()
                 for s in range(0, len(pred) - motion_windows + 1, motion_windows)]  # fmt: skip
        hits["per_window"].setdefault(theme_names[theme], []).extend(pred == theme)
        hits["per_motion"].setdefault(theme_names[theme], []).extend(np.array(votes) == theme)
    return {unit: {t: float(np.mean(h)) if h else float("nan") for t, h in per.items()} for unit, per in hits.items()}
