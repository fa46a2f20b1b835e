"""Greedy decoding of an :class:`ARPosterior` for a few windows on CPU, in NumPy.

Encoding one window is 64 sequential decoder steps on 128-vectors: at that size the cost is per-op overhead,
not arithmetic, and a NumPy op on a small array costs a fraction of a torch op (about 0.4 us against 1.5 us
for an add, 4 us against 11 us for a 128 x 384 product, measured on the 2-core CPU machines). This module
runs the math of ``ARPosterior.sample(greedy=True)`` one window at a time with fewer and cheaper ops, so
that a policy can re-plan in real time (``bench/bench_sampling.py`` times both paths). Exact rewrites:

* LayerNorm into the next linear layer. With gain g, bias b, mean m(x) and r(x) = 1 / sqrt(var(x) + eps):
  ``LN(x) W^T + c = r(x) * (x @ Wc) + c'`` where ``Wc = (I - 11^T / C) diag(g) W^T`` (centring folded into
  the weights) and ``c' = W b + c``. A norm then costs two dot products (x.1 and x.x) and scalar math.
* Cross-attention to the fixed memory into two products per step, all heads at once. For head h with
  memory keys K_h and values V_h (Tk, hd), query weights Wq_h (C, hd) and output columns Wo_h (hd, C):
  scores ``q_h K_h^T / sqrt(hd) = LN(x) A_h + a_h`` with ``A_h = Wq_h K_h^T / sqrt(hd)``, and the output
  ``sum_h softmax_h(.) (V_h Wo_h) + bo``; A and V Wo are computed once per window.
* GELU(u) = u (1 + erf(u / sqrt 2)) / 2: the 1 / sqrt 2 factors go into the MLP's two weight matrices.

The logits equal the torch path's up to float32 rounding (tests compare logits and tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import erf
from torch import Tensor, nn

from motiontok.nets.trajectory import ARPosterior

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _np(t: Tensor) -> np.ndarray:
    """A float64 copy (the folds are computed in float64, then stored as float32)."""
    return t.detach().to("cpu", torch.float64).numpy().copy()


@dataclass
class _Norm:
    """A LayerNorm folded into the linear map after it: ``LN(x) W^T + c = r(x) * (x @ w) + c``."""

    w: np.ndarray  # (C, out) float32, centred over its input axis
    c: np.ndarray  # (out,) float32
    eps: float
    ones: np.ndarray  # (C,) float32: the mean of x as a BLAS dot (a third of the cost of ``sum``)


def _fold(ln: nn.LayerNorm, weight: Tensor, bias: Tensor, scale: float = 1.0) -> _Norm:
    """Fold ``ln`` into the linear map (weight (out, C), bias (out,)), whose output is then multiplied by scale."""
    g, b, W = _np(ln.weight), _np(ln.bias), _np(weight)
    w = (W * g).T  # (C, out): diag(g) W^T
    w = w - w.mean(0, keepdims=True)  # (I - 11^T / C) diag(g) W^T
    c = W @ b + _np(bias)
    return _Norm((w * scale).astype(np.float32), (c * scale).astype(np.float32), ln.eps, np.ones(len(g), np.float32))


def _inv_std(x: np.ndarray, n: _Norm) -> np.float32:
    """1 / sqrt(var(x) + eps) of the norm ``n`` for one vector x (C,)."""
    C = x.shape[0]
    mean = float(x.dot(n.ones)) / C
    return np.float32(1.0 / math.sqrt(max(float(x.dot(x)) / C - mean * mean, 0.0) + n.eps))


def _apply(x: np.ndarray, n: _Norm) -> np.ndarray:
    """LN(x) W^T + c for one vector x (C,), with the fold of :func:`_fold`."""
    return (x @ n.w) * _inv_std(x, n) + n.c


def _softmax(s: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p


@dataclass
class _Layer:
    """One decoder block's weights as (in, out) float32 arrays, norms folded in."""

    qkv: _Norm  # ln_1 + self-attention qkv, queries pre-scaled by 1 / sqrt(hd)
    self_w: np.ndarray  # (C, C)
    self_b: np.ndarray  # (C,)
    cross_q: _Norm  # ln_2 + cross-attention queries (pre-scaled); folded with the keys per window
    cross_kv: tuple[Tensor, Tensor]  # the block's key/value projection (2C, C), (2C,), applied to the memory
    cross_o: Tensor  # output projection (C, C)
    cross_b: np.ndarray  # (C,)
    fc: _Norm  # ln_3 + fc, pre-scaled by 1 / sqrt 2
    proj_w: np.ndarray  # (R*C, C), pre-scaled by 1 / sqrt 2
    proj_b: np.ndarray  # (C,)


class GreedyDecoderCPU:
    """``ARPosterior`` greedy decoding in NumPy float32: memory (B, T, C) -> tokens (B, T), a window at a time.

    Built from the posterior's current weights (build a new one after they change). Inference only: no
    dropout, no gradient. For a handful of windows on CPU; large batches are faster in torch (batched ops).
    """

    def __init__(self, posterior: ARPosterior) -> None:
        cfg = posterior.cfg
        C, nh = cfg.embed_dim, cfg.num_heads
        q_scale = 1.0 / math.sqrt(C // nh)
        self.num_heads, self.block_size, self.memory_skip, self.bos = nh, cfg.block_size, cfg.memory_skip, posterior.bos
        self.tok_emb = _np(posterior.tok_emb.weight).astype(np.float32)  # (V+1, C)
        self.pos_emb = _np(posterior.pos_emb).astype(np.float32)  # (T, C)
        self.layers: list[_Layer] = []
        for block in posterior.decoder.blocks:
            sa, ca, mlp = block.self_attn, block.cross_attn, block.mlp
            qkv = _fold(block.ln_1, sa.qkv.weight, sa.qkv.bias)
            qkv.w[:, :C] *= q_scale
            qkv.c[:C] *= q_scale
            cpu32 = {"device": "cpu", "dtype": torch.float32, "copy": True}  # a snapshot, like the NumPy arrays
            self.layers.append(
                _Layer(
                    qkv=qkv,
                    self_w=_np(sa.proj.weight.T).astype(np.float32),
                    self_b=_np(sa.proj.bias).astype(np.float32),
                    cross_q=_fold(block.ln_2, ca.qkv.weight[:C], ca.qkv.bias[:C], q_scale),
                    cross_kv=(ca.qkv.weight[C:].detach().to(**cpu32), ca.qkv.bias[C:].detach().to(**cpu32)),
                    cross_o=ca.proj.weight.detach().to(**cpu32),
                    cross_b=_np(ca.proj.bias).astype(np.float32),
                    fc=_fold(block.ln_3, mlp.fc.weight, mlp.fc.bias, _SQRT_HALF),
                    proj_w=(_np(mlp.proj.weight.T) * _SQRT_HALF).astype(np.float32),
                    proj_b=_np(mlp.proj.bias).astype(np.float32),
                )
            )
        self.head = _fold(posterior.decoder.ln_f, posterior.head.weight, posterior.head.bias)

    def _cross_tables(self, layer: _Layer, memory: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Folded cross-attention of one layer for windows' memory (B, Tk, C):
        A (B, C, nh*Tk) centred like a folded norm, a (B, nh*Tk), VO (B, nh*Tk, C)."""
        B, Tk, C = memory.shape
        nh = self.num_heads
        hd = C // nh
        kv = nn.functional.linear(memory, *layer.cross_kv)  # (B, Tk, 2C)
        k = kv[..., :C].reshape(B, Tk, nh, hd).permute(0, 2, 3, 1)  # (B, nh, hd, Tk)
        v = kv[..., C:].reshape(B, Tk, nh, hd).permute(0, 2, 1, 3)  # (B, nh, Tk, hd)
        wq = torch.from_numpy(layer.cross_q.w).reshape(C, nh, hd).permute(1, 0, 2)  # (nh, C, hd)
        bq = torch.from_numpy(layer.cross_q.c).reshape(nh, 1, hd)  # (nh, 1, hd)
        A = (wq @ k).permute(0, 2, 1, 3).reshape(B, C, nh * Tk)  # (B, C, nh*Tk); wq's centring carries over
        a = (bq @ k).reshape(B, nh * Tk)  # (B, nh*Tk)
        wo = layer.cross_o.reshape(C, nh, hd).permute(1, 2, 0)  # (nh, hd, C): head h's columns of Wo, as (in, out)
        vo = (v @ wo).reshape(B, nh * Tk, C)  # (B, nh*Tk, C)
        return A.numpy(), a.numpy(), vo.numpy()

    def __call__(self, memory: Tensor) -> np.ndarray:
        """memory (B, T, C) from the recognition encoder -> the greedy codes (B, T) int64."""
        return np.array([tokens for tokens, _ in self._decode(memory)], np.int64).reshape(len(memory), -1)

    def teacher_forced_logits(self, memory: Tensor, tokens: Tensor) -> np.ndarray:
        """Logits (B, T, V) float32 when the decoder is fed ``tokens`` (B, T) instead of its argmax."""
        return np.stack([logits for _, logits in self._decode(memory, tokens)])

    @torch.no_grad()
    def _decode(self, memory: Tensor, forced: Tensor | None = None) -> list[tuple[list[int], np.ndarray | None]]:
        """Per window: (codes, logits (T, V) when ``forced`` is given, else None)."""
        memory = memory.detach().to("cpu", torch.float32)
        B, T = memory.shape[:2]
        if self.block_size != T:
            raise ValueError(f"memory has {T} positions, the posterior decodes {self.block_size}")
        tables = [self._cross_tables(layer, memory) for layer in self.layers]
        inputs = self.pos_emb + (memory.numpy() if self.memory_skip else np.zeros((B, 1, 1), np.float32))  # (B, T, C)
        return [
            self._decode_one(
                [(A[b], a[b], vo[b]) for A, a, vo in tables], inputs[b], None if forced is None else forced[b].tolist()
            )
            for b in range(B)
        ]

    def _decode_one(
        self, tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]], inputs: np.ndarray, forced: list[int] | None
    ) -> tuple[list[int], np.ndarray | None]:
        """The step loop for one window: inputs (T, C) = position embeddings (+ memory skip)."""
        T, C = inputs.shape
        nh = self.num_heads
        hd = C // nh
        Tk = tables[0][1].shape[0] // nh
        cache = [np.empty((T, 3 * C), np.float32) for _ in self.layers]  # rows [q | k | v] of decoded positions
        out: list[int] = []
        logits = None if forced is None else np.empty((T, self.head.c.shape[0]), np.float32)
        tok = self.bos
        for t in range(T):
            x = self.tok_emb[tok] + inputs[t]  # (C,)
            for L, (A, a, vo), kv in zip(self.layers, tables, cache, strict=True):
                kv[t] = _apply(x, L.qkv)  # (3C,)
                past = kv[: t + 1].reshape(t + 1, 3, nh, hd)  # a view
                s = kv[t, :C].reshape(nh, 1, hd) @ past[:, 1].transpose(1, 2, 0)  # (nh, 1, t+1)
                e = np.exp(s - s.max(-1, keepdims=True))
                y = e @ past[:, 2].transpose(1, 0, 2)  # (nh, 1, hd), normalised after the product
                y /= e.sum(-1, keepdims=True)
                x += y.reshape(C) @ L.self_w + L.self_b
                s = (x @ A) * _inv_std(x, L.cross_q) + a  # (nh*Tk,) cross-attention scores
                x += _softmax(s.reshape(nh, Tk)).reshape(nh * Tk) @ vo + L.cross_b
                h = _apply(x, L.fc)  # (R*C,) = fc(ln_3(x)) / sqrt 2
                x += (h * (1.0 + erf(h))) @ L.proj_w + L.proj_b  # GELU, proj_w carries the other 1 / sqrt 2
            z = _apply(x, self.head)  # (V,)
            if forced is None:
                tok = int(z.argmax())
            else:
                logits[t] = z
                tok = forced[t]
            out.append(tok)
        return out, logits
