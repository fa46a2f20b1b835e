"""Pictures of an image model: grids of images written as PNG (reconstructions next to their inputs, samples
decoded from the uniform prior)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from motiontok.checkpoint import atomic_path


def image_grid(images: Tensor, columns: int = 8, pad: int = 2) -> np.ndarray:
    """Groups of images (N, G, C, S, S) in [0, 1] -> one uint8 picture (rows, cols, 3): ``columns`` groups per
    row, the G images of a group side by side (e.g. an input and its reconstruction), ``pad`` white pixels
    between tiles. Grey images (C = 1) are repeated to RGB."""
    if images.ndim != 5 or images.shape[2] not in (1, 3):
        raise ValueError(f"expected image groups (N, G, C, S, S) with C 1 or 3, got {tuple(images.shape)}")
    n, g, c, s, _ = images.shape
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    x = np.repeat(x, 3, axis=2) if c == 1 else x  # (N, G, 3, S, S)
    cols = min(columns, n) * g
    rows = -(-n // columns)
    out = np.ones((rows * (s + pad) + pad, cols * (s + pad) + pad, 3), np.float32)
    for i in range(n):
        for j in range(g):
            r, col = divmod(i, columns)
            top, left = pad + r * (s + pad), pad + (col * g + j) * (s + pad)
            out[top : top + s, left : left + s] = x[i, j].transpose(1, 2, 0)
    return (out * 255).round().astype(np.uint8)


def save_image_grid(path: str | Path, images: Tensor, columns: int = 8) -> Path:
    """Write :func:`image_grid` of ``images`` (N, G, C, S, S) as a PNG, atomically (temporary file, rename)."""
    with atomic_path(path) as tmp:
        Image.fromarray(image_grid(images, columns)).save(tmp, format="PNG")
    return Path(path)
