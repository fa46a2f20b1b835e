"""Pre-LayerNorm transformer building blocks with a KV cache for incremental decoding.

Reads top to bottom: caches -> Attention (self or cross, optional cache) -> MLP -> EncoderBlock /
DecoderBlock -> TransformerEncoder / TransformerDecoder.
Shapes: B batch, T sequence, C embed_dim, nh heads, hd head dim (C = nh * hd).

Incremental decoding (``TransformerDecoder.new_cache`` then ``step`` once per position) keeps, per layer:
  - the causal self-attention keys/values of all past positions, in a buffer pre-allocated for the
    maximum length and written in place (no ``torch.cat`` per step);
  - the cross-attention keys/values of the fixed memory, computed once when the cache is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class KVCache:
    """Keys and values of one attention layer.

    ``kv`` is (2, B, nh, T_max, hd): [0] keys, [1] values; positions ``[0, length)`` are valid.
    Self-attention: pre-allocated, filled step by step. Cross-attention: the context's keys/values
    (``length = Tk``), stored contiguous; if None, the attention layer computes them on first use.
    """

    kv: Tensor | None = None
    length: int = 0
    grow: bool = False
    """Self-attention: append out of place (``torch.cat``) instead of writing into a pre-allocated buffer; slower,
    but autograd can differentiate through the decoding (the relaxed Gumbel-Softmax baselines)."""

    def append(self, kv: Tensor) -> Tensor:
        """Add keys/values (2, B, nh, Tq, hd) at position ``length``; -> all valid ones (2, B, nh, length, hd)."""
        t0 = self.length
        self.length = t0 + kv.shape[3]
        if self.grow:
            self.kv = kv if self.kv is None else torch.cat((self.kv, kv), dim=3)
            return self.kv
        self.kv.narrow(3, t0, kv.shape[3]).copy_(kv)  # in place: no allocation per step
        return self.kv.narrow(3, 0, self.length)


@dataclass
class LayerCache:
    """Cache of one decoder layer: causal self-attention and cross-attention to the memory."""

    self_attn: KVCache
    cross_attn: KVCache


class _BlockWeights(NamedTuple):
    """A DecoderBlock's parameters gathered once per cache, for the functional one-position step."""

    ln_1: tuple[tuple[int, ...], Tensor, Tensor, float]  # F.layer_norm's (shape, weight, bias, eps)
    qkv: tuple[Tensor, Tensor]
    self_proj: tuple[Tensor, Tensor]
    ln_2: tuple[tuple[int, ...], Tensor, Tensor, float]
    cross_q: tuple[Tensor, Tensor]
    cross_proj: tuple[Tensor, Tensor]
    ln_3: tuple[tuple[int, ...], Tensor, Tensor, float]
    fc: tuple[Tensor, Tensor]
    mlp_proj: tuple[Tensor, Tensor]


@dataclass
class DecoderCache:
    """Per-layer caches of a TransformerDecoder; ``length`` positions decoded so far."""

    layers: list[LayerCache]
    weights: list[_BlockWeights] = field(default_factory=list, repr=False)
    causal: Tensor | None = None
    """(T_max, T_max) bool, row t true at key positions <= t: set for static-shape decoding (``static=True``),
    whose every step attends over the whole zero-initialised buffer with row t as its mask (no shape depends on
    t, so a CUDA graph can capture the whole decoding loop)."""

    @property
    def length(self) -> int:
        return self.layers[0].self_attn.length if self.layers else 0


def grouped_cross_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Cross-attention where each context serves a group of consecutive query rows.

    q (B, nh, Tq, hd); k, v (Bc, nh, Tk, hd) with B = G * Bc (rows b*G .. b*G+G-1 share context b, the order of
    ``repeat_interleave``). The G groups' queries are folded into the query axis, so the context's keys and values
    are projected and stored once per context instead of G times (cross-attention has no mask, so this is exact).
    -> (B, nh, Tq, hd)."""
    B, nh, Tq, hd = q.shape
    Bc = k.shape[0]
    if q.shape[0] == k.shape[0]:
        return F.scaled_dot_product_attention(q, k, v)
    if B % Bc:
        raise ValueError(f"{B} query rows cannot be grouped over {Bc} contexts")
    G = B // Bc
    q = q.reshape(Bc, G, nh, Tq, hd).transpose(1, 2).reshape(Bc, nh, G * Tq, hd)
    y = F.scaled_dot_product_attention(q, k, v)  # (Bc, nh, G*Tq, hd)
    return y.reshape(Bc, nh, G, Tq, hd).transpose(1, 2).reshape(B, nh, Tq, hd)


class Attention(nn.Module):
    """Multi-head attention, usable as self-attention (``context=None``) or cross-attention.

    For cross-attention the context may have fewer rows than x: x's rows then come in groups of
    ``len(x) // len(context)`` consecutive rows per context (see :func:`grouped_cross_attention`)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        # one fused projection: output rows [0, C) -> queries, [C, 2C) -> keys, [2C, 3C) -> values
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def context_kv(self, context: Tensor) -> Tensor:
        """Keys and values of a context for cross-attention: (B, Tk, C) -> (2, B, nh, Tk, hd), a view."""
        B, Tk, C = context.shape
        kv = F.linear(context, self.qkv.weight[C:], self.qkv.bias[C:])  # (B, Tk, 2C)
        return kv.view(B, Tk, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x (B, Tq, C), context (B, Tk, C) or None -> (B, Tq, C).

        With a cache, self-attention appends this call's keys/values at ``cache.length`` and attends
        to all cached positions; cross-attention uses (or computes once) the context's keys/values.
        """
        B, Tq, C = x.shape
        nh, hd = self.num_heads, self.head_dim
        mask = None
        is_causal = False
        if context is None:  # self-attention
            qkv = self.qkv(x).view(B, Tq, 3, nh, hd).permute(2, 0, 3, 1, 4)  # (3, B, nh, Tq, hd)
            q, kv = qkv[0], qkv[1:]  # (B, nh, Tq, hd), (2, B, nh, Tq, hd)
            if cache is not None:
                if cache.kv is None and not cache.grow:
                    raise ValueError("self-attention cache needs a pre-allocated kv buffer (new_cache)")
                t0 = cache.length
                t1 = t0 + Tq
                kv = cache.append(kv)  # (2, B, nh, t1, hd)
                if causal and Tq > 1:  # the queries sit at key positions t0 .. t1-1
                    mask = torch.ones(Tq, t1, dtype=torch.bool, device=x.device).tril(diagonal=t0)
                # Tq == 1: the single query is the newest position and may see every cached key
            else:
                is_causal = causal
        else:  # cross-attention: queries from x, keys/values from the context
            q = F.linear(x, self.qkv.weight[:C], self.qkv.bias[:C]).view(B, Tq, nh, hd).transpose(1, 2)
            if cache is not None and cache.kv is not None:
                kv = cache.kv
            else:
                kv = self.context_kv(context)  # (2, B, nh, Tk, hd)
                if cache is not None:  # reused at every step: contiguous is ~2x faster in CPU sdpa
                    kv = kv.contiguous()
                    cache.kv, cache.length = kv, kv.shape[3]
            is_causal = causal
        k, v = kv.unbind(0)  # (B or Bc, nh, Tk, hd) each
        drop = self.dropout if self.training else 0.0
        if context is not None and k.shape[0] != B and drop == 0.0:
            y = grouped_cross_attention(q, k, v)  # (B, nh, Tq, hd)
        else:
            if context is not None and k.shape[0] != B:  # dropout: fall back to an explicit copy per row
                k, v = (t.repeat_interleave(B // t.shape[0], 0) for t in (k, v))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=is_causal)
        y = self.proj(y.transpose(1, 2).reshape(B, Tq, C))  # (B, Tq, C)
        if drop > 0.0:
            y = F.dropout(y, drop, training=True)
        return y


class MLP(nn.Module):
    def __init__(self, embed_dim: int, mlp_ratio: float = 4, dropout: float = 0.0):
        super().__init__()
        hidden = int(mlp_ratio * embed_dim)
        self.fc = nn.Linear(embed_dim, hidden)
        self.proj = nn.Linear(hidden, embed_dim)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(F.gelu(self.fc(x)))  # (B, T, C)
        if self.dropout > 0.0 and self.training:
            y = F.dropout(y, self.dropout, training=True)
        return y


class EncoderBlock(nn.Module):
    """Pre-LN block: bidirectional self-attention + MLP."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float = 4, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim)
        self.attn = Attention(embed_dim, num_heads, dropout)
        self.ln_2 = nn.LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, mlp_ratio, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        return x + self.mlp(self.ln_2(x))


class DecoderBlock(nn.Module):
    """Pre-LN block: causal self-attention + cross-attention to the memory + MLP."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float = 4, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim)
        self.self_attn = Attention(embed_dim, num_heads, dropout)
        self.ln_2 = nn.LayerNorm(embed_dim)
        self.cross_attn = Attention(embed_dim, num_heads, dropout)
        self.ln_3 = nn.LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, memory: Tensor, cache: LayerCache | None = None) -> Tensor:
        """x (B, Tq, C), memory (B, Tk, C) -> (B, Tq, C); with a cache, x holds the next Tq positions."""
        if cache is None:
            x = x + self.self_attn(self.ln_1(x), causal=True)
            x = x + self.cross_attn(self.ln_2(x), memory)
        else:
            x = x + self.self_attn(self.ln_1(x), causal=True, cache=cache.self_attn)
            x = x + self.cross_attn(self.ln_2(x), memory, cache=cache.cross_attn)
        return x + self.mlp(self.ln_3(x))


class TransformerEncoder(nn.Module):
    """Stack of EncoderBlocks + final LayerNorm: (B, T, C) -> (B, T, C)."""

    def __init__(self, embed_dim: int, num_heads: int, num_layers: int, mlp_ratio: float = 4, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(EncoderBlock(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)  # (B, T, C)


class TransformerDecoder(nn.Module):
    """Stack of DecoderBlocks + final LayerNorm, teacher-forced (``forward``) or incremental (``step``)."""

    def __init__(self, embed_dim: int, num_heads: int, num_layers: int, mlp_ratio: float = 4, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.blocks = nn.ModuleList(DecoderBlock(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """Teacher forcing with a causal mask: x (B, T, C), memory (B, Tk, C) -> (B, T, C)."""
        for block in self.blocks:
            x = block(x, memory)
        return self.ln_f(x)

    def new_cache(
        self,
        memory: Tensor,
        max_len: int,
        batch_size: int | None = None,
        static: bool = False,
        differentiable: bool = False,
    ) -> DecoderCache:
        """Cache for decoding up to ``max_len`` positions against ``memory`` (Bc, Tk, C), for ``batch_size``
        sequences (default Bc; a multiple of Bc decodes that many sequences per memory row). ``static``: the
        steps keep every shape fixed (see :attr:`DecoderCache.causal`). ``differentiable``: the self-attention
        keys/values grow out of place (:attr:`KVCache.grow`), so gradients flow through every step.

        Self-attention buffers are allocated on the memory's device/dtype; the cross-attention
        keys/values of the memory are computed here, once (so make the cache under the grad mode
        of the steps: a cache made under ``torch.no_grad()`` passes no gradient to them).
        """
        if static and differentiable:
            raise ValueError("a static-shape cache writes in place: it cannot be differentiable")
        _, _, C = memory.shape
        B = batch_size or memory.shape[0]
        shape = (2, B, self.num_heads, max_len, C // self.num_heads)

        def self_cache() -> KVCache:
            if differentiable:
                return KVCache(grow=True)
            return KVCache(memory.new_zeros(shape) if static else memory.new_empty(shape))

        layers = [
            LayerCache(
                self_cache(),
                KVCache(block.cross_attn.context_kv(memory).contiguous(), memory.shape[1]),
            )
            for block in self.blocks
        ]
        causal = torch.ones(max_len, max_len, dtype=torch.bool, device=memory.device).tril() if static else None
        return DecoderCache(layers, [_gather_weights(block) for block in self.blocks], causal)

    def step(self, x: Tensor, memory: Tensor, cache: DecoderCache) -> Tensor:
        """Decode the next Tq positions (usually 1): x (B, Tq, C) -> (B, Tq, C), appended to ``cache``."""
        if x.shape[1] == 1 and not (self.training and self.dropout > 0.0):
            return self._step_one(x, cache)
        for block, layer_cache in zip(self.blocks, cache.layers, strict=True):
            x = block(x, memory, layer_cache)
        return self.ln_f(x)

    def _step_one(self, x: Tensor, cache: DecoderCache) -> Tensor:
        """The hot path of ``step`` for one position: the blocks' math (no dropout) in functional ops on
        weights gathered once per cache; ~30 fewer module calls and views per step than the blocks."""
        B, _, C = x.shape  # (B, 1, C)
        nh = self.num_heads
        hd = C // nh
        for w, layer_cache in zip(cache.weights, cache.layers, strict=True):
            sc = layer_cache.self_attn
            t = sc.length
            qkv = F.linear(F.layer_norm(x, *w.ln_1), *w.qkv)  # (B, 1, 3C)
            qkv = qkv.view(B, 3, nh, 1, hd).transpose(0, 1)  # (3, B, nh, 1, hd); Tq = 1: views only
            valid = sc.append(qkv[1:])  # keys/values of positions 0..t: (2, B, nh, t+1, hd)
            if cache.causal is None:
                k, v = valid.unbind(0)  # (B, nh, t+1, hd)
                y = F.scaled_dot_product_attention(qkv[0], k, v)  # (B, nh, 1, hd)
            else:  # static shapes: all T_max positions, the ones after t masked out
                k, v = sc.kv.unbind(0)  # (B, nh, T_max, hd)
                y = F.scaled_dot_product_attention(qkv[0], k, v, attn_mask=cache.causal[t : t + 1])  # (B, nh, 1, hd)
            x = x + F.linear(y.reshape(B, 1, C), *w.self_proj)  # (B, 1, C)
            q = F.linear(F.layer_norm(x, *w.ln_2), *w.cross_q).view(B, nh, 1, hd)
            k, v = layer_cache.cross_attn.kv.unbind(0)  # (Bc, nh, Tk, hd)
            y = grouped_cross_attention(q, k, v)  # (B, nh, 1, hd)
            x = x + F.linear(y.reshape(B, 1, C), *w.cross_proj)
            h = F.gelu(F.linear(F.layer_norm(x, *w.ln_3), *w.fc))  # (B, 1, R*C)
            x = x + F.linear(h, *w.mlp_proj)
        return self.ln_f(x)  # (B, 1, C)


def _gather_weights(block: DecoderBlock) -> _BlockWeights:
    C = block.ln_1.weight.shape[0]
    sa, ca, mlp = block.self_attn, block.cross_attn, block.mlp

    def ln(m: nn.LayerNorm) -> tuple[tuple[int, ...], Tensor, Tensor, float]:
        return m.normalized_shape, m.weight, m.bias, m.eps

    return _BlockWeights(
        ln_1=ln(block.ln_1),
        qkv=(sa.qkv.weight, sa.qkv.bias),
        self_proj=(sa.proj.weight, sa.proj.bias),
        ln_2=ln(block.ln_2),
        cross_q=(ca.qkv.weight[:C], ca.qkv.bias[:C]),
        cross_proj=(ca.proj.weight, ca.proj.bias),
        ln_3=ln(block.ln_3),
        fc=(mlp.fc.weight, mlp.fc.bias),
        mlp_proj=(mlp.proj.weight, mlp.proj.bias),
    )
