"""Deterministic quantizer bottlenecks of the VQ baselines (paper section 2, "Vector Quantization"), from
``vector-quantize-pytorch``; the recognition model's memory (B, T, H) is quantized position by position (the
paper: "self-attention is used for VQ-based methods"), and the generative model reads the quantized vectors.

* ``vq`` — VQ-VAE: nearest of V learned codes, straight-through gradient to the encoder, commitment loss
  ``beta ||z_e - sg(e)||^2`` (beta = ``commitment``, 0.25 as in the VQ-VAE paper). The codebook follows an
  exponential moving average of its assigned encodings (``decay``; the library's standard, more stable than
  the codebook loss of the original paper, which it replaces), so it has no gradient-trained parameters.
* ``fsq`` — FSQ: each position's encoding is projected to ``len(levels)`` numbers, each bounded and rounded to
  one of its levels (straight-through), and projected back. ``levels`` = [10, 10, 10] (figure 11, LAFAN) gives
  1,000 codes per position: 64 x log2(1000) = 637.8 bits against DAPS's 64 x 10 = 640, the closest product of
  levels not above 1,024.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn


class Quantized(NamedTuple):
    codes: Tensor  # (B, T, H) quantized vectors, straight-through gradient to the input
    tokens: Tensor  # (B, T) long, indices in [0, vocab_size)
    aux_loss: Tensor  # () the quantizer's own loss (commitment), 0 when it has none


class VQQuantizer(nn.Module):
    """VQ-VAE bottleneck over (B, T, H) with V codes of size H (EMA codebook)."""

    def __init__(self, embed_dim: int, vocab_size: int, commitment: float = 0.25, decay: float = 0.99):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.vocab_size = vocab_size
        self.vq = VectorQuantize(dim=embed_dim, codebook_size=vocab_size, decay=decay, commitment_weight=commitment)

    def forward(self, memory: Tensor) -> Quantized:
        codes, tokens, loss = self.vq(memory)  # (B, T, H), (B, T), ()
        return Quantized(codes, tokens.long(), loss.reshape(()))

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """(B, T) -> the codes' vectors (B, T, H)."""
        return self.vq.get_codes_from_indices(tokens)


class FSQQuantizer(nn.Module):
    """FSQ bottleneck over (B, T, H): prod(levels) codes per position."""

    def __init__(self, embed_dim: int, vocab_size: int, levels: tuple[int, ...] = (10, 10, 10)):
        """``vocab_size``: the most codes allowed (the bit budget); prod(levels) must not exceed it."""
        super().__init__()
        from vector_quantize_pytorch import FSQ

        self.vocab_size = math.prod(levels)
        if self.vocab_size > vocab_size:
            raise ValueError(
                f"FSQ levels {list(levels)} give {self.vocab_size} codes, more than vocab_size {vocab_size}"
            )
        self.fsq = FSQ(levels=list(levels), dim=embed_dim)

    def forward(self, memory: Tensor) -> Quantized:
        codes, tokens = self.fsq(memory)  # (B, T, H), (B, T)
        return Quantized(codes, tokens.long(), memory.new_zeros(()))

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.fsq.indices_to_codes(tokens)


def bits(vocab_size: int, block_size: int) -> float:
    """Bits of a code of ``block_size`` positions with ``vocab_size`` values each."""
    return block_size * math.log2(vocab_size)


class GaussianBottleneck(nn.Module):
    """The Gaussian VAE baseline's latent: per position a diagonal Gaussian of ``latent_dim`` numbers (default 3,
    the dimensions of one FSQ code), sampled by reparameterisation; KL to N(0, I) in closed form. Not discrete:
    its "tokens" are the latent means (B, T, d) float, which ``embed_tokens`` maps back to the decoder's input."""

    def __init__(self, embed_dim: int, vocab_size: int, latent_dim: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        self.vocab_size = vocab_size
        self.to_stats = nn.Linear(embed_dim, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, embed_dim)

    def stats(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H) -> mean, log variance (B, T, d)."""
        mean, log_var = self.to_stats(memory).chunk(2, dim=-1)
        return mean, log_var.clamp(-12.0, 8.0)

    def forward(self, memory: Tensor, generator=None) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder input (B, T, H) of a sampled latent, the latent (B, T, d), KL(q || N(0, I)) per window (B,)."""
        mean, log_var = self.stats(memory)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * eps
        return self.from_latent(z), z, gaussian_kl(mean, log_var)

    def embed_tokens(self, z: Tensor) -> Tensor:
        return self.from_latent(z)


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) summed over all but the batch dim: (B, ...) -> (B,)."""
    return 0.5 * (mean**2 + log_var.exp() - 1.0 - log_var).flatten(1).sum(-1)


QUANTIZERS = {"vq": VQQuantizer, "fsq": FSQQuantizer, "gauss": GaussianBottleneck}
"""Bottlenecks that replace the posterior head, by name (``DiscreteVAE(..., posterior="vq" | "fsq" | "gauss")``)."""
