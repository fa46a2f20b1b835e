"""Autoregressive sampling replayed as one CUDA graph.

On a GPU, drawing 64 codes step by step costs ~10 kernel launches per layer and step whatever the batch: the
lent H100 spent 63 of a DAPS step's 103 ms there at batch 256, about the same at batch 64 (launch-bound).
:class:`CudaGraphSampler` captures the whole static-shape decoding loop (``Posterior.sample(static=True)``) once
per input shape and replays it: one launch per call. The weights are read where they live, so in-place optimizer
updates are seen by every replay (re-capture after replacing parameter tensors, e.g. ``module.to()``).

The noise comes from the default CUDA generator (graph-safe: each replay draws new numbers); a ``generator``
argument is not supported here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from motiontok.nets.posterior import Posterior


class CudaGraphSampler:
    """``sampler(memory) -> tokens``: ``posterior.sample(memory, num_samples=num_samples)`` as a replayed graph.

    Re-captures when the memory's shape, dtype or device changes; the returned tokens are a fresh tensor."""

    def __init__(self, posterior: Posterior, num_samples: int) -> None:
        self.posterior = posterior
        self.num_samples = num_samples
        self._key: tuple | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._memory: Tensor | None = None  # static input (Bc, T, H)
        self._tokens: Tensor | None = None  # static output (Bc * S, T)

    @torch.no_grad()
    def __call__(self, memory: Tensor) -> Tensor:
        if memory.device.type != "cuda":
            raise ValueError("CudaGraphSampler needs CUDA tensors")
        key = (tuple(memory.shape), memory.dtype, memory.device)
        if key != self._key:
            self._capture(memory)
            self._key = key
        self._memory.copy_(memory)
        self._graph.replay()
        return self._tokens.clone()

    def _capture(self, memory: Tensor) -> None:
        self._memory = memory.detach().clone()
        stream = torch.cuda.Stream(memory.device)
        stream.wait_stream(torch.cuda.current_stream(memory.device))
        with torch.cuda.stream(stream):  # warm-up outside the graph (allocator, cuBLAS handles)
            for _ in range(2):
                self.posterior.sample(self._memory, num_samples=self.num_samples, static=True)
        torch.cuda.current_stream(memory.device).wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._tokens = self.posterior.sample(self._memory, num_samples=self.num_samples, static=True)
