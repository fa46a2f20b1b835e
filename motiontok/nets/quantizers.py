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


QUANTIZERS = {"vq": VQQuantizer, "fsq": FSQQuantizer}
"""Quantizer bottlenecks by name (``DiscreteVAE(..., posterior="vq" | "fsq")``)."""


def bits(vocab_size: int, block_size: int) -> float:
    """Bits of a code of ``block_size`` positions with ``vocab_size`` values each."""
    return block_size * math.log2(vocab_size)
