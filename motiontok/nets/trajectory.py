"""LAFAN trajectory networks of DAPS (paper appendix G and G.1).

Recognition model q(z | x):
    x (B, L, F) -> TrajectoryEncoder: conv1d resample L -> T, positional embedding, transformer encoder
    -> memory (B, T, H) -> a posterior head of :mod:`motiontok.nets.posterior` (ARPosterior, autoregressive,
    or NAPosterior, "DAPS-NA") -> logits (B, T, V) over the V codes at each of the T latent positions.
Generative model p(x | z):
    z (B, T) tokens, or (B, T, V) soft one-hot, or (B, T, H) continuous codes -> TrajectoryDecoder:
    embeddings, positional embedding, transformer encoder, conv1d resample T -> L, linear -> mean (B, L, F)
    and a per-feature variance (F,): constant (LAFAN: 0.25, as in the authors' code) or learned in [0.01, 1].

Shapes: B batch, L frames per window, F features per frame, T latent positions (block size),
V vocabulary size, H embed_dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from motiontok.nets.transformer import Attention, TransformerEncoder

INITS = ("xavier", "gpt")
POS_EMBS = ("sinusoidal", "learned")
VARIANCES = ("constant", "learned")
VAR_MIN, VAR_MAX = 0.01, 1.0
"""Range of a learned decoder variance (the paper's image decoders clip to [0.01, 1])."""


@dataclass
class TrajectoryNetConfig:
    """Hyperparameters of the trajectory networks; defaults are the paper's LAFAN values (G.1)."""

    feature_dim: int = 127
    """F: features per frame (H1 relative-pose layout)."""
    length: int = 32
    """L: frames per window (trajectory segment length)."""
    block_size: int = 64
    """T: latent positions (tokens per window); 2*length, length or length//2."""
    vocab_size: int = 1024
    """V: number of codes each latent position can take."""
    embed_dim: int = 128
    """H: transformer width (token, positional and memory embeddings)."""
    num_heads: int = 4
    """Attention heads per layer; must divide embed_dim."""
    num_layers: int = 2
    """Transformer blocks in each encoder / decoder stack."""
    mlp_ratio: float = 4
    """MLP hidden width as a multiple of embed_dim."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches."""
    memory_skip: bool = True
    """Autoregressive posterior: add the encoding of latent position t (the recognition model resamples the
    window to exactly T positions) to the decoder's input at t, besides cross-attending to all of it. Without
    it, position t reaches its local features only through attention that is near-uniform at initialisation.
    Measured on LAFAN (CPU budget, same batches): greedy code perplexity at init 377 with it vs 259 without, and
    validation L2 60.1 at step 150 with it vs 68.3 at step 250 without (that posterior collapsed to ~3% of codes).
    Not in the paper; ``preset=paper`` turns it off."""
    init: str = "xavier"
    """Weight initialisation: ``xavier`` (the authors' code: xavier-uniform matrices, biases N(0, 1e-6), code
    embeddings N(0, 1)) or ``gpt`` (N(0, 0.02) for matrices and embeddings, zero biases; motiontok v1)."""
    pos_emb: str = "sinusoidal"
    """Positional embeddings: ``sinusoidal`` (fixed, the authors' code) or ``learned`` (N(0, 0.02), v1)."""
    variance: str = "constant"
    """Decoder variance: ``constant`` (``variance_value`` for every feature; the authors' LAFAN likelihood) or
    ``learned`` (per feature, ``0.01 + 0.99 sigmoid(u)``, starting at ``variance_value``: a gradient everywhere)."""
    variance_value: float = 0.25
    """The constant variance, or the learned variance's initial value (standardized units)."""

    def latent_config(self) -> TrajectoryNetConfig:
        """The config the posterior heads read (for the trajectory networks: this one)."""
        return self

    def __post_init__(self) -> None:
        for name in ("feature_dim", "length", "block_size", "vocab_size", "embed_dim", "num_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_layers < 0 or self.mlp_ratio <= 0:
            raise ValueError("num_layers must be >= 0 and mlp_ratio > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, allowed in (("init", INITS), ("pos_emb", POS_EMBS), ("variance", VARIANCES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not VAR_MIN <= self.variance_value <= VAR_MAX:
            raise ValueError(f"variance_value must lie in [{VAR_MIN}, {VAR_MAX}], got {self.variance_value}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(f"embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if not (
            self.block_size in (2 * self.length, self.length)
            or (self.length % 2 == 0 and self.block_size == self.length // 2)
        ):
            raise ValueError(
                f"block_size must be 2*length, length or length//2 (length={self.length}), got {self.block_size}"
            )


def _resample(in_channels: int, out_channels: int, in_len: int, out_len: int) -> nn.Module:
    """1D conv mapping (B, in_channels, in_len) -> (B, out_channels, out_len); length ratio 2, 1 or 1/2."""
    if out_len == 2 * in_len:  # paper: stride 2, kernel 4
        return nn.ConvTranspose1d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
    if 2 * out_len == in_len:
        return nn.Conv1d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
    if out_len == in_len:
        return nn.Conv1d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
    raise ValueError(f"cannot resample length {in_len} -> {out_len}")


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise every Linear and Embedding below ``module`` (convolutions keep torch's default).

    ``xavier``: xavier-uniform matrices (a fused q/k/v projection per C x C block, as three separate projections
    would be), biases N(0, 1e-6), embeddings N(0, 1). ``gpt``: N(0, 0.02) matrices and embeddings, zero biases."""
    fused = {id(m.qkv) for m in module.modules() if isinstance(m, Attention)}  # (3C, C) = q, k, v stacked
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if scheme == "gpt":
                nn.init.normal_(m.weight, std=0.02)
            else:
                for block in m.weight.split(m.in_features) if id(m) in fused else [m.weight]:
                    nn.init.xavier_uniform_(block)
            if m.bias is not None:
                nn.init.zeros_(m.bias) if scheme == "gpt" else nn.init.normal_(m.bias, std=1e-6)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02 if scheme == "gpt" else 1.0)


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """(length, dim) fixed positional table: sines in the first half, cosines in the second, frequencies
    geometric from 1 to 1/10000 rad per position."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))  # (half,)
    angle = torch.arange(length)[:, None] * freq  # (length, half)
    table = torch.zeros(length, dim)
    table[:, :half], table[:, half : 2 * half] = angle.sin(), angle.cos()
    return table


def add_positions(module: nn.Module, cfg: TrajectoryNetConfig) -> None:
    """``module.pos_emb`` (T, H): a fixed buffer (not saved) or a parameter, per ``cfg.pos_emb``."""
    if cfg.pos_emb == "sinusoidal":
        module.register_buffer("pos_emb", sinusoidal_positions(cfg.block_size, cfg.embed_dim), persistent=False)
    else:
        module.pos_emb = nn.Parameter(torch.randn(cfg.block_size, cfg.embed_dim) * 0.02)


def gaussian_log_prob(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Normal log density summed over all but the batch dim: x, mean (B, L, F), var (F,) -> (B,)."""
    logp = -0.5 * (math.log(2 * math.pi) + torch.log(var) + (x - mean) ** 2 / var)  # (B, L, F)
    return logp.flatten(1).sum(-1)


# -----------------------------------------------------------------------------
# recognition model: context encoder


class TrajectoryEncoder(nn.Module):
    """x (B, L, F), standardized -> memory (B, T, H) for the posterior heads."""

    def __init__(self, cfg: TrajectoryNetConfig):
        super().__init__()
        self.cfg = cfg
        self.resample = _resample(cfg.feature_dim, cfg.embed_dim, cfg.length, cfg.block_size)
        add_positions(self, cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(cfg.embed_dim, cfg.num_heads, cfg.num_layers, cfg.mlp_ratio, cfg.dropout)
        init_weights(self, cfg.init)

    def forward(self, x: Tensor) -> Tensor:
        h = self.resample(x.transpose(1, 2)).transpose(1, 2)  # (B, L, F) -> (B, T, H)
        h = self.drop(h + self.pos_emb)  # (B, T, H)
        return self.encoder(h)  # (B, T, H)


# -----------------------------------------------------------------------------
# generative model p(x | z)


class TrajectoryDecoder(nn.Module):
    """z -> (mean (B, L, F), var (F,)) of a Gaussian over the window; variance constant or learned (``cfg``)."""

    def __init__(self, cfg: TrajectoryNetConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        add_positions(self, cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(cfg.embed_dim, cfg.num_heads, cfg.num_layers, cfg.mlp_ratio, cfg.dropout)
        self.resample = _resample(cfg.embed_dim, cfg.embed_dim, cfg.block_size, cfg.length)
        self.out = nn.Linear(cfg.embed_dim, cfg.feature_dim)
        init_weights(self, cfg.init)
        if cfg.variance == "learned":  # var = VAR_MIN + (VAR_MAX - VAR_MIN) sigmoid(u): never a flat clamp
            u0 = math.log((cfg.variance_value - VAR_MIN) / (VAR_MAX - cfg.variance_value + 1e-12) + 1e-12)
            self.var_logit = nn.Parameter(torch.full((cfg.feature_dim,), u0))
        else:
            self.register_buffer("const_var", torch.full((cfg.feature_dim,), cfg.variance_value), persistent=False)

    @property
    def var(self) -> Tensor:
        """(F,) variance of every feature, standardized units."""
        if self.cfg.variance == "constant":
            return self.const_var
        return VAR_MIN + (VAR_MAX - VAR_MIN) * torch.sigmoid(self.var_logit)

    def embed(self, z: Tensor) -> Tensor:
        """Tokens (B, T) long, or code probabilities (B, T, V) float -> embeddings (B, T, H)."""
        if z.is_floating_point():
            return z @ self.tok_emb.weight  # (B, T, V) @ (V, H)
        return self.tok_emb(z)

    def forward_embeddings(self, e: Tensor) -> tuple[Tensor, Tensor]:
        """Continuous codes e (B, T, H) -> mean (B, L, F), var (F,)."""
        h = self.drop(e + self.pos_emb)  # (B, T, H)
        h = self.encoder(h)  # (B, T, H)
        h = self.resample(h.transpose(1, 2)).transpose(1, 2)  # (B, L, H)
        return self.out(h), self.var  # (B, L, F), (F,)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z: tokens (B, T) long or probabilities (B, T, V) -> mean (B, L, F), var (F,)."""
        return self.forward_embeddings(self.embed(z))
