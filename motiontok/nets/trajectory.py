"""LAFAN trajectory networks of DAPS (paper appendix G and G.1).

Recognition model q(z | x):
    x (B, L, F) -> TrajectoryEncoder: conv1d resample L -> T, positional embedding, transformer encoder
    -> memory (B, T, H) -> posterior head: ARPosterior (autoregressive, cross-attention to the memory,
    KV cache for sampling) or NAPosterior (independent categorical per position, "DAPS-NA")
    -> logits (B, T, V) over the V codes at each of the T latent positions.
Generative model p(x | z):
    z (B, T) tokens, or (B, T, V) soft one-hot, or (B, T, H) continuous codes -> TrajectoryDecoder:
    embeddings, positional embedding, transformer encoder, conv1d resample T -> L, linear -> mean (B, L, F)
    and a per-feature variance (F,): constant (LAFAN: 0.25, as in the authors' code) or learned in [0.01, 1].

Shapes: B batch, L frames per window, F features per frame, T latent positions (block size),
V vocabulary size, H embed_dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motiontok.nets.transformer import Attention, TransformerDecoder, TransformerEncoder

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


def _add_positions(module: nn.Module, cfg: TrajectoryNetConfig) -> None:
    """``module.pos_emb`` (T, H): a fixed buffer (not saved) or a parameter, per ``cfg.pos_emb``."""
    if cfg.pos_emb == "sinusoidal":
        module.register_buffer("pos_emb", sinusoidal_positions(cfg.block_size, cfg.embed_dim), persistent=False)
    else:
        module.pos_emb = nn.Parameter(torch.randn(cfg.block_size, cfg.embed_dim) * 0.02)


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
        _add_positions(self, cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(cfg.embed_dim, cfg.num_heads, cfg.num_layers, cfg.mlp_ratio, cfg.dropout)
        init_weights(self, cfg.init)

    def forward(self, x: Tensor) -> Tensor:
        h = self.resample(x.transpose(1, 2)).transpose(1, 2)  # (B, L, F) -> (B, T, H)
        h = self.drop(h + self.pos_emb)  # (B, T, H)
        return self.encoder(h)  # (B, T, H)


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
        _add_positions(self, cfg)
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
        """Classifier-free guided decoding (see :meth:`sample`): memory (2B, M, H) -> tokens (B, T)."""
        if memory.shape[0] % 2:
            raise ValueError("guided sampling needs 2B memory rows: B conditional, then B unconditional")
        B2, T = memory.shape[0], self.block_size
        cache = self.decoder.new_cache(memory, T, B2)
        tokens = torch.empty(B2 // 2, T, dtype=torch.long, device=memory.device)  # (B, T)
        tok = torch.full((B2,), self.bos, dtype=torch.long, device=memory.device)  # (2B,)
        for t in range(T):
            x = self._skip((self.tok_emb(tok) + self.pos_emb[t]).unsqueeze(1), memory, t)  # (2B, 1, H)
            cond, uncond = self.head(self.decoder.step(x, memory, cache)[:, 0]).chunk(2)  # (B, V) each
            tokens[:, t] = sample_categorical(uncond + w * (cond - uncond), greedy, temperature, generator, top_k)
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


# -----------------------------------------------------------------------------
# generative model p(x | z)


class TrajectoryDecoder(nn.Module):
    """z -> (mean (B, L, F), var (F,)) of a Gaussian over the window; variance constant or learned (``cfg``)."""

    def __init__(self, cfg: TrajectoryNetConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        _add_positions(self, cfg)
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
