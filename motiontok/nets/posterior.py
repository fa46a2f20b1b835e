"""Posterior heads of the recognition model q(z | x) (paper appendix G): given the encoder's memory (B, M, H), a
categorical over the V codes at each of the T latent positions.

* :class:`ARPosterior`: autoregressive, causal self-attention over the codes so far and cross-attention to the
  memory, with a KV cache for sampling (the DAPS tokenizer; also the high-level policy's head);
* :class:`NAPosterior`: independent categoricals per position ("DAPS-NA").

Plus the categorical helpers shared by the estimators: log-probability, entropy and sampling with temperature and
top-k. Shapes: B batch, T latent positions, V vocabulary size, H embed_dim.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motiontok.nets.trajectory import TrajectoryNetConfig, add_positions, init_weights
from motiontok.nets.transformer import TransformerDecoder


def categorical_log_prob(logits: Tensor, tokens: Tensor) -> Tensor:
    """logits (B, T, V), tokens (B, T) long -> (B,): sum over T of log-softmax at the tokens."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits.reshape(B * T, V), tokens.reshape(B * T), reduction="none")
    return -nll.view(B, T).sum(-1)


def categorical_entropy(logits: Tensor) -> Tensor:
    """logits (B, T, V) -> (B,): sum over T of the per-position categorical entropy."""
    logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
    return -(logp.exp() * logp).sum(-1).sum(-1)


def sample_categorical(
    logits: Tensor,
    greedy: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    top_k: int = 0,
) -> Tensor:
    """Draw one code per row: logits (..., V) -> (...) long, argmax if greedy else Gumbel-max.

    Gumbel-max: argmax(logits / temperature + G), G = -log(-log U), U ~ Uniform[0, 1) drawn in float32
    from ``generator`` (which must live on the logits' device): equal logits and generator states give
    equal samples, whatever loop the caller runs. (On CPU this is ~2x faster than ``exponential_``.)
    ``top_k`` > 0 samples among the k largest logits of each row only.
    """
    if greedy:
        return logits.argmax(-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0: all codes), got {top_k}")
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
    neg_gumbel = u.log_().neg_().log_()  # log(-log U) = -G; U = 0 gives +inf: never picked
    return (logits.float() / temperature - neg_gumbel).argmax(-1)


# -----------------------------------------------------------------------------
# recognition model: posterior heads q(z | x) given the memory


class Posterior(nn.Module):
    """Interface of the posterior heads over T positions with V codes each."""

    vocab_size: int
    block_size: int

    def logits(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced logits of q(z_t | z_<t, x): memory (B, T, H), tokens (B, T) -> (B, T, V)."""
        raise NotImplementedError

    def sample(
        self,
        memory: Tensor,
        greedy: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        num_samples: int = 1,
        static: bool = False,
        top_k: int = 0,
        guidance: float = 1.0,
    ) -> Tensor:
        """Draw z ~ q(. | x) (or its greedy mode): memory (B, T, H) -> tokens (B * num_samples, T) long, the
        ``num_samples`` draws of input b in rows b * num_samples .. (b + 1) * num_samples - 1. ``static``: no
        shape may change between decoding steps (for CUDA-graph capture); ``top_k`` and ``guidance``: see
        ``ARPosterior.sample``."""
        raise NotImplementedError

    def forward(self, memory: Tensor, tokens: Tensor) -> Tensor:
        return self.logits(memory, tokens)  # (B, T, V)

    def log_prob(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """log q(z | x) summed over the T positions: memory (B, T, H), tokens (B * S, T) -> (B * S,), where S
        samples per input are laid out as :meth:`sample` returns them (the memory is never copied S times)."""
        return categorical_log_prob(self._logits_per_row(memory, tokens), tokens)

    def entropy(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """Sum over positions of the teacher-forced per-position entropy: -> (B * S,) as in :meth:`log_prob`."""
        return categorical_entropy(self._logits_per_row(memory, tokens))

    def _logits_per_row(self, memory: Tensor, tokens: Tensor) -> Tensor:
        logits = self.logits(memory, tokens)  # (B * S, T, V), or (B, T, V) for heads that ignore tokens
        if logits.shape[0] != tokens.shape[0]:
            logits = logits.repeat_interleave(tokens.shape[0] // logits.shape[0], dim=0)
        return logits


class ARPosterior(Posterior):
    """Autoregressive head: causal self-attention over previous codes + cross-attention to the memory.

    Position t is predicted from [BOS, z_0, ..., z_{t-1}]; BOS is token index V of the embedding table.
    """

    def __init__(self, cfg: TrajectoryNetConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = cfg.vocab_size
        self.block_size = cfg.block_size
        self.bos = cfg.vocab_size
        self.tok_emb = nn.Embedding(cfg.vocab_size + 1, cfg.embed_dim)
        add_positions(self, cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.decoder = TransformerDecoder(cfg.embed_dim, cfg.num_heads, cfg.num_layers, cfg.mlp_ratio, cfg.dropout)
        self.head = nn.Linear(cfg.embed_dim, cfg.vocab_size)  # after the decoder's final LayerNorm
        init_weights(self, cfg.init)

    def _shift_right(self, tokens: Tensor) -> Tensor:
        bos = tokens.new_full((tokens.shape[0], 1), self.bos)
        return torch.cat((bos, tokens[:, :-1]), dim=1)  # (B, T): [BOS, z_0, ..., z_{T-2}]

    def _skip(self, h: Tensor, memory: Tensor, start: int) -> Tensor:
        """Add memory positions [start, start + t) to h (R, t, H); R = G * len(memory) rows in groups of G."""
        if not self.cfg.memory_skip:
            return h
        Bc, t = memory.shape[0], h.shape[1]
        return (h.view(Bc, -1, t, h.shape[2]) + memory[:, None, start : start + t]).view_as(h)

    def logits(self, memory: Tensor, tokens: Tensor) -> Tensor:
        T = tokens.shape[1]
        h = self.tok_emb(self._shift_right(tokens)) + self.pos_emb[:T]  # (B*S, T, H)
        h = self.drop(self._skip(h, memory, 0))
        h = self.decoder(h, memory)  # (B*S, T, H)
        return self.head(h)  # (B*S, T, V)

    def logits_soft(self, memory: Tensor, codes: Tensor) -> Tensor:
        """Teacher-forced logits with relaxed codes: memory (B, T, H), codes (B, t, V) one-hot or soft -> (B, t, V);
        position i reads codes[:, :i] through the embedding table (what Gumbel-Softmax back-propagates through)."""
        t = codes.shape[1]
        bos = self.tok_emb.weight[self.bos].expand(codes.shape[0], 1, -1)  # (B, 1, H)
        prev = codes[:, :-1] @ self.tok_emb.weight[: self.vocab_size]  # (B, t-1, H)
        h = torch.cat((bos, prev), dim=1) + self.pos_emb[:t]  # (B, t, H)
        h = self.drop(self._skip(h, memory, 0))
        return self.head(self.decoder(h, memory))  # (B, t, V)

    def decode_relaxed(self, memory: Tensor, draw: Callable[[Tensor], Tensor]) -> Tensor:
        """Autoregressive decoding on relaxed codes, differentiable end to end (the Gumbel-Softmax baselines): the
        logits (B, V) of each position go to ``draw``, which returns that position's code (B, V) (one-hot or
        soft), read by the later positions through the embedding table as in :meth:`logits_soft`. One cached
        decoder step per position (the cache grows out of place so autograd sees every step).
        memory (B, T, H) -> logits (B, T, V)."""
        B, T = memory.shape[0], self.block_size
        cache = self.decoder.new_cache(memory, T, differentiable=True)
        table = self.tok_emb.weight[: self.vocab_size]  # (V, H)
        x = self.tok_emb.weight[self.bos].expand(B, 1, -1)  # (B, 1, H): BOS
        logits = []
        for t in range(T):
            h = self.drop(self._skip(x + self.pos_emb[t], memory, t))  # (B, 1, H)
            logits.append(self.head(self.decoder.step(h, memory, cache)[:, 0]))  # (B, V)
            x = (draw(logits[-1]) @ table).unsqueeze(1)  # (B, 1, H)
        return torch.stack(logits, 1)

    @torch.no_grad()
    def sample(
        self,
        memory: Tensor,
        greedy: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        num_samples: int = 1,
        static: bool = False,
        top_k: int = 0,
        guidance: float = 1.0,
    ) -> Tensor:
        """T decoding steps. ``use_cache=False`` re-runs the whole prefix each step (slow reference); ``static``
        keeps every shape fixed across steps (the same codes, up to float rounding: what a CUDA graph captures).
        ``top_k``: see :func:`sample_categorical`. ``guidance`` w != 1: classifier-free guidance; ``memory`` then
        holds 2B rows (B conditional, then the same B without the condition), each step draws from
        uncond + w (cond - uncond) and feeds the code to both halves; -> (B, T)."""
        if guidance != 1.0:
            if num_samples != 1 or static or not use_cache:
                raise ValueError("guided sampling draws one sequence per condition, cached, not static")
            return self._sample_guided(memory, greedy, temperature, generator, top_k, guidance)
        B, T = memory.shape[0] * num_samples, self.block_size
        tokens = torch.empty(B, T, dtype=torch.long, device=memory.device)  # (B, T)
        if not use_cache:
            memory = memory.repeat_interleave(num_samples, dim=0)  # the slow reference copies it
            for t in range(T):
                logits = self.logits(memory, tokens[:, : t + 1])[:, -1]  # (B, V); z_t itself is unused
                tokens[:, t] = sample_categorical(logits, greedy, temperature, generator, top_k)
            return tokens
        cache = self.decoder.new_cache(memory, T, B, static)  # cross-attention keys/values computed once here
        tok_table, pos_table = self.tok_emb.weight, self.pos_emb  # (V+1, H), (T, H)
        head_w, head_b = self.head.weight, self.head.bias
        tok = torch.full((B,), self.bos, dtype=torch.long, device=memory.device)  # (B,)
        for t in range(T):
            x = self._skip((F.embedding(tok, tok_table) + pos_table[t]).unsqueeze(1), memory, t)  # (B, 1, H)
            if self.training and self.drop.p > 0.0:
                x = self.drop(x)
            h = self.decoder.step(x, memory, cache)  # (B, 1, H)
            tok = sample_categorical(F.linear(h[:, 0], head_w, head_b), greedy, temperature, generator, top_k)
            tokens[:, t] = tok
        return tokens

    def _sample_guided(
        self, memory: Tensor, greedy: bool, temperature: float, generator: torch.Generator | None, top_k: int, w: float
    ) -> Tensor:
        """Classifier-free guided decoding (see :meth:`sample`): memory (2B, M, H) -> tokens (B, T). The head is
        affine, so uncond + w (cond - uncond) of the logits is the head of the same mix of the hidden states:
        one (B, H) mix and a B-row head per step instead of a 2B-row head and three (B, V) operations."""
        if memory.shape[0] % 2:
            raise ValueError("guided sampling needs 2B memory rows: B conditional, then B unconditional")
        B2, T = memory.shape[0], self.block_size
        cache = self.decoder.new_cache(memory, T, B2)
        position = self._skip(self.pos_emb[:T].repeat(B2, 1, 1), memory, 0)  # (2B, T, H): every step's non-token input
        tok_table, head_w, head_b = self.tok_emb.weight, self.head.weight, self.head.bias
        tokens = torch.empty(B2 // 2, T, dtype=torch.long, device=memory.device)  # (B, T)
        tok = torch.full((B2,), self.bos, dtype=torch.long, device=memory.device)  # (2B,)
        for t in range(T):
            x = (F.embedding(tok, tok_table) + position[:, t]).unsqueeze(1)  # (2B, 1, H)
            cond, uncond = self.decoder.step(x, memory, cache)[:, 0].chunk(2)  # (B, H) each
            logits = F.linear(torch.lerp(uncond, cond, w), head_w, head_b)  # (B, V) = uncond + w (cond - uncond)
            tokens[:, t] = sample_categorical(logits, greedy, temperature, generator, top_k)
            tok = tokens[:, t].repeat(2)
        return tokens


class NAPosterior(Posterior):
    """Non-autoregressive head ("DAPS-NA"): an independent categorical per position from the memory."""

    def __init__(self, cfg: TrajectoryNetConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = cfg.vocab_size
        self.block_size = cfg.block_size
        self.head = nn.Linear(cfg.embed_dim, cfg.vocab_size)
        init_weights(self, cfg.init)

    def logits(self, memory: Tensor, tokens: Tensor | None = None) -> Tensor:
        return self.head(memory)  # (B, T, V); tokens are ignored

    @torch.no_grad()
    def sample(
        self,
        memory: Tensor,
        greedy: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        num_samples: int = 1,
        static: bool = False,
        top_k: int = 0,
        guidance: float = 1.0,
    ) -> Tensor:
        if guidance != 1.0:
            raise ValueError("classifier-free guidance needs the autoregressive posterior")
        logits = self.head(memory).repeat_interleave(num_samples, dim=0)  # (B * S, T, V); static by nature
        return sample_categorical(logits, greedy, temperature, generator, top_k)  # (B * S, T)
