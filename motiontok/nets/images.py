"""Image networks of the paper's vision experiments (appendix F; section 4 "Architectures").

* :class:`PatchEncoder` — the recognition model's vision transformer: the image is cut into non-overlapping
  square patches, each flattened and embedded by a linear layer ("patch_ffwd"), positions added, then a
  transformer encoder; its output is the memory (B, T, H) that a posterior head attends to (cross-attention for
  the autoregressive methods, directly quantized per position for VQ methods). When the patches are not the T
  latent positions (MNIST: 16 patches, 8 codes), a linear map over the patch axis resamples P -> T, as the
  trajectory encoder's convolution resamples frames to positions.
* :class:`ResNetDecoder` — the generative model for CIFAR-10 / ImageNet: code embeddings (B, T, H) reshaped into a
  square grid, a 3x3 convolution to ``hidden``, residual blocks (batch norm, ReLU), then stride-2 transposed
  convolutions up to the image size; 2C output channels = the mean and, through ``0.01 + 0.99 sigmoid``, a
  learned per-pixel variance in [0.01, 1] (the paper's clipped variance, with a gradient everywhere).
* :class:`MLPDecoder` — MNIST's generative model: 512-unit MLP from the concatenated code embeddings to one
  Bernoulli logit per pixel.

All decoders share the trajectory decoder's interface: ``embed(z)`` (tokens or code probabilities -> embeddings),
``forward_embeddings(e)`` and ``forward(z)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from motiontok.nets.trajectory import VAR_MAX, VAR_MIN, TrajectoryNetConfig
from motiontok.nets.transformer import TransformerEncoder


@dataclass(frozen=True)
class ImageNetConfig:
    """Sizes of the vision networks (F.2 CIFAR-10 defaults: 32x32 images, 8x8 patches of 4x4, 64 codes of 512)."""

    image_size: int = 32
    channels: int = 3
    num_patches: int = 64
    block_size: int = 64  # latent length T
    vocab_size: int = 512  # V
    embed_dim: int = 128  # H
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: float = 4.0
    hidden_dim: int = 64  # ResNet width H_2
    num_res_blocks: int = 2
    mlp_hidden: int = 512  # MNIST decoder
    memory_skip: bool = True  # the autoregressive posterior adds memory[t] at position t (TrajectoryNetConfig's)
    init: str = "gpt"  # the posterior's initialisation (TrajectoryNetConfig's)
    pos_emb: str = "learned"  # the posterior's positions (TrajectoryNetConfig's)
    dropout: float = 0.0

    def latent_config(self) -> TrajectoryNetConfig:
        """The sizes the posterior heads read (latent length, vocabulary, width, depth, init), as the
        trajectory networks' config type that ``ARPosterior`` / ``NAPosterior`` take; its frame fields are
        unused by the heads (``length`` = ``block_size``, ``feature_dim`` 1)."""
        return TrajectoryNetConfig(
            feature_dim=1, length=self.block_size, block_size=self.block_size, vocab_size=self.vocab_size,
            embed_dim=self.embed_dim, num_heads=self.num_heads, num_layers=self.num_layers,
            mlp_ratio=self.mlp_ratio, dropout=self.dropout, memory_skip=self.memory_skip, init=self.init,
            pos_emb=self.pos_emb,
        )  # fmt: skip

    @property
    def patch_size(self) -> int:
        side = math.isqrt(self.num_patches)
        if side * side != self.num_patches or self.image_size % side:
            raise ValueError(f"{self.num_patches} patches do not tile a {self.image_size}px square image")
        return self.image_size // side

    @property
    def grid(self) -> int:
        """Side of the square grid of latent codes."""
        side = math.isqrt(self.block_size)
        if side * side != self.block_size:
            raise ValueError(f"block_size {self.block_size} is not a square number")
        return side


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, S, S) -> (B, (S/p)^2, C p p): row-major patches, each flattened channel-first."""
    b, c, s, _ = images.shape
    n = s // patch
    x = images.reshape(b, c, n, patch, n, patch).permute(0, 2, 4, 1, 3, 5)  # (B, n, n, C, p, p)
    return x.reshape(b, n * n, c * patch * patch)


class PatchEncoder(nn.Module):
    """images (B, C, S, S) -> memory (B, T, H)."""

    def __init__(self, cfg: ImageNetConfig):
        super().__init__()
        self.cfg = cfg
        self.patch = cfg.patch_size
        self.embed = nn.Linear(cfg.channels * self.patch**2, cfg.embed_dim)
        self.pos_emb = nn.Parameter(torch.randn(cfg.num_patches, cfg.embed_dim) * 0.02)
        self.encoder = TransformerEncoder(cfg.embed_dim, cfg.num_heads, cfg.num_layers, cfg.mlp_ratio)
        self.to_latent = nn.Linear(cfg.num_patches, cfg.block_size) if cfg.num_patches != cfg.block_size else None

    def forward(self, images: Tensor) -> Tensor:
        s = self.cfg.image_size
        if images.ndim != 4 or images.shape[1:] != (self.cfg.channels, s, s):
            raise ValueError(f"expected images (B, {self.cfg.channels}, {s}, {s}), got {tuple(images.shape)}")
        h = self.encoder(self.embed(patchify(images, self.patch)) + self.pos_emb)  # (B, P, H)
        if self.to_latent is not None:
            h = self.to_latent(h.transpose(1, 2)).transpose(1, 2)  # (B, T, H)
        return h


class _Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 1),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class _CodeDecoder(nn.Module):
    """Token / probability embedding shared by the image decoders."""

    def __init__(self, cfg: ImageNetConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.embed_dim)

    def embed(self, z: Tensor) -> Tensor:
        """Tokens (B, T) long, or code probabilities (B, T, V) float -> embeddings (B, T, H)."""
        return z @ self.tok_emb.weight if z.is_floating_point() else self.tok_emb(z)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.forward_embeddings(self.embed(z))

    def forward_embeddings(self, e: Tensor) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        raise NotImplementedError


class ResNetDecoder(_CodeDecoder):
    """codes -> (mean (B, C, S, S), variance (B, C, S, S) in [0.01, 1])."""

    def __init__(self, cfg: ImageNetConfig):
        super().__init__(cfg)
        ups = int(math.log2(cfg.image_size // cfg.grid))
        if 2**ups * cfg.grid != cfg.image_size:
            raise ValueError(f"a {cfg.grid}x{cfg.grid} code grid cannot be upsampled by 2x steps to {cfg.image_size}")
        w = cfg.hidden_dim
        layers: list[nn.Module] = [nn.Conv2d(cfg.embed_dim, w, 3, padding=1)]
        layers += [_Residual(w) for _ in range(cfg.num_res_blocks)]
        layers += [nn.BatchNorm2d(w), nn.ReLU()]
        for i in range(ups):
            last = i == ups - 1
            layers.append(nn.ConvTranspose2d(w, 2 * cfg.channels if last else w, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
        if ups == 0:
            layers.append(nn.Conv2d(w, 2 * cfg.channels, 1))
        self.net = nn.Sequential(*layers)

    def forward_embeddings(self, e: Tensor) -> tuple[Tensor, Tensor]:
        b, _, h = e.shape  # (B, T, H)
        g = self.cfg.grid
        out = self.net(e.transpose(1, 2).reshape(b, h, g, g))  # (B, 2C, S, S)
        mean, var_logit = out.chunk(2, dim=1)
        return mean, VAR_MIN + (VAR_MAX - VAR_MIN) * torch.sigmoid(var_logit)


class MLPDecoder(_CodeDecoder):
    """codes -> (Bernoulli logits (B, C, S, S), None): MNIST's 512-unit MLP."""

    def __init__(self, cfg: ImageNetConfig):
        super().__init__(cfg)
        pixels = cfg.channels * cfg.image_size**2
        self.net = nn.Sequential(
            nn.Linear(cfg.block_size * cfg.embed_dim, cfg.mlp_hidden), nn.ReLU(),
            nn.Linear(cfg.mlp_hidden, cfg.mlp_hidden), nn.ReLU(),
            nn.Linear(cfg.mlp_hidden, pixels),
        )  # fmt: skip

    def forward_embeddings(self, e: Tensor) -> tuple[Tensor, None]:
        s, c = self.cfg.image_size, self.cfg.channels
        return self.net(e.flatten(1)).view(len(e), c, s, s), None


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log p(x | logits) summed per image: x in {0, 1}, (B, ...) -> (B,)."""
    return -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
