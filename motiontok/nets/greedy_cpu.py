"""Greedy decoding of an :class:`ARPosterior` for a few windows on CPU, as one compiled loop (numba).

Encoding one window is 64 sequential decoder steps on 128-vectors. At that size a torch or NumPy op costs
its dispatch, not its arithmetic (about 1.5 us for a torch add, 0.4-1 us for a NumPy call, on the 2-core CPU
machines), and a step is about 130 of them. This module compiles the whole step loop of
``ARPosterior.sample(greedy=True)`` for one window with numba, so that a policy can re-plan in real time
(``bench/bench_sampling.py`` times it against the torch path). Exact rewrites keep the arithmetic small:

* LayerNorm into the next linear layer. With gain g, bias b, mean m(x) and r(x) = 1 / sqrt(var(x) + eps):
  ``LN(x) W^T + c = r(x) * (x @ Wc) + c'`` where ``Wc = (I - 11^T / C) diag(g) W^T`` (centring folded into
  the weights) and ``c' = W b + c``. A norm then costs r(x) and one scale.
* Cross-attention to the fixed memory into two products per step, all heads at once. For head h with
  memory keys K_h and values V_h (Tk, hd), query weights Wq_h (C, hd) and output columns Wo_h (hd, C):
  scores ``q_h K_h^T / sqrt(hd) = LN(x) A_h + a_h`` with ``A_h = Wq_h K_h^T / sqrt(hd)``, and the output
  ``sum_h softmax_h(.) (V_h Wo_h) + bo``; A and V Wo are computed once per window (in torch, batched).
* GELU(u) = u (1 + erf(u / sqrt 2)) / 2: the 1 / sqrt 2 factors go into the MLP's two weight matrices.

The logits equal the torch path's up to float32 rounding (tests compare logits and tokens). The loop compiles
on first use (a few seconds) and is cached beside this file for later processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import torch
from torch import Tensor, nn

from motiontok.nets.posterior import ARPosterior

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _jit(fn: Callable) -> Callable:
    """numba's nopython compile of ``fn``, cached on disk for later processes where numba finds a writable place
    (beside this file, else the user's cache folder; ``NUMBA_CACHE_DIR`` overrides), else compiled per process."""
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available": a read-only install without a home
        return numba.njit(nogil=True)(fn)


def _np(t: Tensor) -> np.ndarray:
    """A float64 copy (the folds are computed in float64, then stored as float32)."""
    return t.detach().to("cpu", torch.float64).numpy().copy()


@dataclass
class _Norm:
    """A LayerNorm folded into the linear map after it: ``LN(x) W^T + c = r(x) * (x @ w) + c``."""

    w: np.ndarray  # (C, out) float32, centred over its input axis
    c: np.ndarray  # (out,) float32
    eps: float


def _fold(ln: nn.LayerNorm, weight: Tensor, bias: Tensor, scale: float = 1.0) -> _Norm:
    """Fold ``ln`` into the linear map (weight (out, C), bias (out,)), whose output is then multiplied by scale."""
    g, b, W = _np(ln.weight), _np(ln.bias), _np(weight)
    w = (W * g).T  # (C, out): diag(g) W^T
    w = w - w.mean(0, keepdims=True)  # (I - 11^T / C) diag(g) W^T
    c = W @ b + _np(bias)
    return _Norm((w * scale).astype(np.float32), (c * scale).astype(np.float32), ln.eps)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-layer arrays stacked on a leading layer axis, C-contiguous float32 (the loop's BLAS calls need it)."""
    return np.ascontiguousarray(np.stack(arrays), np.float32)


@dataclass
class _Weights:
    """Every layer's weights stacked on a leading axis L, as (in, out) float32 arrays with the norms folded in."""

    qkv_w: np.ndarray  # (L, C, 3C): ln_1 + self-attention qkv, queries pre-scaled by 1 / sqrt(hd)
    qkv_c: np.ndarray  # (L, 3C)
    self_w: np.ndarray  # (L, C, C)
    self_b: np.ndarray  # (L, C)
    cross_b: np.ndarray  # (L, C)
    fc_w: np.ndarray  # (L, C, R*C): ln_3 + fc, pre-scaled by 1 / sqrt 2
    fc_c: np.ndarray  # (L, R*C)
    proj_w: np.ndarray  # (L, R*C, C), pre-scaled by 1 / sqrt 2
    proj_b: np.ndarray  # (L, C)
    eps: np.ndarray  # (L, 3) float64: the eps of ln_1, ln_2, ln_3


class GreedyDecoderCPU:
    """``ARPosterior`` greedy decoding on CPU: memory (B, T, C) -> tokens (B, T), a window at a time.

    Built from the posterior's current weights (a snapshot: build a new one after they change). Inference
    only: no dropout, no gradient. For a handful of windows; large batches are faster in torch (batched ops).
    """

    def __init__(self, posterior: ARPosterior) -> None:
        cfg = posterior.cfg
        C, nh = cfg.embed_dim, cfg.num_heads
        q_scale = 1.0 / math.sqrt(C // nh)
        self.num_heads, self.block_size, self.memory_skip, self.bos = nh, cfg.block_size, cfg.memory_skip, posterior.bos
        self.tok_emb = _np(posterior.tok_emb.weight).astype(np.float32)  # (V+1, C)
        self.pos_emb = _np(posterior.pos_emb).astype(np.float32)  # (T, C)
        blocks = list(posterior.decoder.blocks)
        qkv = [_fold(b.ln_1, b.self_attn.qkv.weight, b.self_attn.qkv.bias) for b in blocks]
        for n in qkv:
            n.w[:, :C] *= q_scale
            n.c[:C] *= q_scale
        fc = [_fold(b.ln_3, b.mlp.fc.weight, b.mlp.fc.bias, _SQRT_HALF) for b in blocks]
        self.weights = _Weights(
            qkv_w=_stack([n.w for n in qkv]),
            qkv_c=_stack([n.c for n in qkv]),
            self_w=_stack([_np(b.self_attn.proj.weight.T) for b in blocks]),
            self_b=_stack([_np(b.self_attn.proj.bias) for b in blocks]),
            cross_b=_stack([_np(b.cross_attn.proj.bias) for b in blocks]),
            fc_w=_stack([n.w for n in fc]),
            fc_c=_stack([n.c for n in fc]),
            proj_w=_stack([_np(b.mlp.proj.weight.T) * _SQRT_HALF for b in blocks]),
            proj_b=_stack([_np(b.mlp.proj.bias) for b in blocks]),
            eps=np.array([[b.ln_1.eps, b.ln_2.eps, b.ln_3.eps] for b in blocks], np.float64),
        )
        # cross-attention: the query side folded with ln_2 (pre-scaled), the key/value side kept for the memory
        self.cross_q = [_fold(b.ln_2, b.cross_attn.qkv.weight[:C], b.cross_attn.qkv.bias[:C], q_scale) for b in blocks]

        def snapshot(t: Tensor) -> Tensor:  # a copy, like the NumPy arrays
            return t.detach().to("cpu", torch.float32, copy=True)

        self.cross_kv = [(snapshot(b.cross_attn.qkv.weight[C:]), snapshot(b.cross_attn.qkv.bias[C:])) for b in blocks]
        self.cross_o = [snapshot(b.cross_attn.proj.weight) for b in blocks]
        self.head = _fold(posterior.decoder.ln_f, posterior.head.weight, posterior.head.bias)

    @torch.no_grad()
    def _cross_tables(self, memory: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Folded cross-attention of every layer for windows' memory (B, Tk, C): A (B, L, C, nh*Tk) centred like a
        folded norm, a (B, L, nh*Tk), VO (B, L, nh*Tk, C)."""
        B, Tk, C = memory.shape
        nh = self.num_heads
        hd = C // nh
        tables: list[tuple[Tensor, Tensor, Tensor]] = []
        for q, kv_proj, o in zip(self.cross_q, self.cross_kv, self.cross_o, strict=True):
            kv = nn.functional.linear(memory, *kv_proj)  # (B, Tk, 2C)
            k = kv[..., :C].reshape(B, Tk, nh, hd).permute(0, 2, 3, 1)  # (B, nh, hd, Tk)
            v = kv[..., C:].reshape(B, Tk, nh, hd).permute(0, 2, 1, 3)  # (B, nh, Tk, hd)
            wq = torch.from_numpy(q.w).reshape(C, nh, hd).permute(1, 0, 2)  # (nh, C, hd)
            bq = torch.from_numpy(q.c).reshape(nh, 1, hd)  # (nh, 1, hd)
            A = (wq @ k).permute(0, 2, 1, 3).reshape(B, C, nh * Tk)  # (B, C, nh*Tk); wq's centring carries over
            a = (bq @ k).reshape(B, nh * Tk)  # (B, nh*Tk)
            wo = o.reshape(C, nh, hd).permute(1, 2, 0)  # (nh, hd, C): head h's columns of Wo, as (in, out)
            tables.append((A, a, (v @ wo).reshape(B, nh * Tk, C)))  # VO (B, nh*Tk, C)
        return tuple(np.ascontiguousarray(torch.stack(t, 1).numpy()) for t in zip(*tables, strict=True))

    def __call__(self, memory: Tensor) -> np.ndarray:
        """memory (B, T, C) from the recognition encoder -> the greedy codes (B, T) int64."""
        return self._decode(memory, None)[0]

    def teacher_forced_logits(self, memory: Tensor, tokens: Tensor) -> np.ndarray:
        """Logits (B, T, V) float32 when the decoder is fed ``tokens`` (B, T) instead of its argmax."""
        return self._decode(memory, tokens)[1]

    def _decode(self, memory: Tensor, forced: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """Codes (B, T) int64 and logits (B, T, V) float32; ``forced`` (B, T) feeds these tokens, not the argmax."""
        memory = memory.detach().to("cpu", torch.float32)
        B, T = memory.shape[:2]
        if self.block_size != T:
            raise ValueError(f"memory has {T} positions, the posterior decodes {self.block_size}")
        A, a, vo = self._cross_tables(memory)
        inputs = self.pos_emb + (memory.numpy() if self.memory_skip else np.zeros((B, 1, 1), np.float32))  # (B, T, C)
        feed = np.full((B, T), -1, np.int64) if forced is None else forced.detach().cpu().numpy().astype(np.int64)
        tokens = np.empty((B, T), np.int64)
        logits = np.empty((B, T, self.head.c.shape[0]), np.float32)
        w = self.weights
        for b in range(B):
            _decode_window(
                self.tok_emb, np.ascontiguousarray(inputs[b]), feed[b], self.bos, self.num_heads,
                w.qkv_w, w.qkv_c, w.self_w, w.self_b, A[b], a[b], vo[b], w.cross_b,
                w.fc_w, w.fc_c, w.proj_w, w.proj_b, w.eps, self.head.w, self.head.c, self.head.eps,
                tokens[b], logits[b],
            )  # fmt: skip
        return tokens, logits


@_jit
def _inv_std(x: np.ndarray, eps: float) -> float:
    """1 / sqrt(var(x) + eps) for one vector x (C,), accumulated in float64."""
    s = 0.0
    s2 = 0.0
    for i in range(x.shape[0]):
        s += x[i]
        s2 += x[i] * x[i]
    mean = s / x.shape[0]
    return 1.0 / math.sqrt(max(s2 / x.shape[0] - mean * mean, 0.0) + eps)


@_jit
def _softmax_(s: np.ndarray) -> None:
    """Softmax of a 1-D array, in place."""
    m = s.max()
    total = 0.0
    for j in range(s.shape[0]):
        s[j] = math.exp(s[j] - m)
        total += s[j]
    s /= total


@_jit
def _decode_window(
    tok_emb, inputs, feed, bos, nh, qkv_w, qkv_c, self_w, self_b, A, a, vo, cross_b,
    fc_w, fc_c, proj_w, proj_b, eps, head_w, head_c, head_eps, tokens, logits,
):  # fmt: skip
    """The step loop for one window (shapes in ``_Weights``): inputs (T, C) = position embeddings (+ memory skip),
    A (L, C, nh*Tk), a (L, nh*Tk), vo (L, nh*Tk, C); feed (T,) the token fed after each step, or -1 for the
    argmax. Writes tokens (T,) and logits (T, V)."""
    T, C = inputs.shape
    L = qkv_w.shape[0]
    hd = C // nh
    Tk = a.shape[1] // nh
    keys = np.empty((L, nh, T, hd), np.float32)  # the self-attention cache of decoded positions
    values = np.empty((L, nh, T, hd), np.float32)
    y = np.empty(C, np.float32)  # self-attention output before its projection
    p = np.empty(T, np.float32)  # one head's attention weights over the decoded positions
    tok = bos
    for t in range(T):
        x = tok_emb[tok] + inputs[t]  # (C,)
        for layer in range(L):
            qkv = np.dot(x, qkv_w[layer]) * np.float32(_inv_std(x, eps[layer, 0])) + qkv_c[layer]  # (3C,)
            for h in range(nh):
                keys[layer, h, t] = qkv[C + h * hd : C + (h + 1) * hd]
                values[layer, h, t] = qkv[2 * C + h * hd : 2 * C + (h + 1) * hd]
            for h in range(nh):
                q = qkv[h * hd : (h + 1) * hd]
                k, v = keys[layer, h], values[layer, h]  # (T, hd), rows up to t are filled
                for j in range(t + 1):
                    p[j] = np.dot(q, k[j])
                _softmax_(p[: t + 1])
                y[h * hd : (h + 1) * hd] = np.dot(p[: t + 1], v[: t + 1])
            x = x + np.dot(y, self_w[layer]) + self_b[layer]
            s = np.dot(x, A[layer]) * np.float32(_inv_std(x, eps[layer, 1])) + a[layer]  # (nh*Tk,) cross scores
            for h in range(nh):
                _softmax_(s[h * Tk : (h + 1) * Tk])
            x = x + np.dot(s, vo[layer]) + cross_b[layer]
            r = np.float32(_inv_std(x, eps[layer, 2]))
            u = np.dot(x, fc_w[layer]) * r + fc_c[layer]  # (R*C,) fc(ln_3(x)) / sqrt 2
            for i in range(u.shape[0]):
                u[i] = u[i] * (1.0 + math.erf(u[i]))  # GELU; proj_w carries the other 1 / sqrt 2
            x = x + np.dot(u, proj_w[layer]) + proj_b[layer]
        z = np.dot(x, head_w) * np.float32(_inv_std(x, head_eps)) + head_c  # (V,)
        logits[t] = z
        tok = feed[t] if feed[t] >= 0 else z.argmax()
        tokens[t] = tok
