"""The high-level policy (paper section 5, "Downstream task"; appendix I): text, the recent motion and a centre-of-mass
goal -> the 64 tokens of the next window, emitted autoregressively.

Context (the memory the token decoder cross-attends to), M = 1 + P + C_past + C_future positions:

* the text embedding (B, D_text) -> one position (a learned null embedding replaces it when the text is dropped:
  classifier-free guidance);
* the last P = 32 frames of pose features (B, P, 127), standardized by the tokenizer's normalizer;
* the COM trajectory: the last 32 and the next 32 COM positions (B, 64, 3), in the heading frame of the current
  frame, x/y relative to the current COM, z the height above the ground;

embedded per position, positions added, then a transformer encoder. The token decoder is the tokenizer's own
autoregressive head (``ARPosterior``: causal self-attention over the tokens so far, cross-attention to the memory,
KV-cached sampling), so there is one implementation of the decoding.

Trained by distillation (as in PoseGPT): the targets are the tokenizer's codes of the true next window; teacher
forcing with cross-entropy (:class:`DistillationObjective`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from control.theme_classifier import ThemeClassifier
from motiontok.checkpoint import load_checkpoint, strip_prefix
from motiontok.errors import CheckpointError
from motiontok.estimators import Estimator, EstimatorOutput
from motiontok.nets import ARPosterior, TrajectoryNetConfig, TransformerEncoder
from motiontok.paths import asset_dir

DEFAULT_GUIDANCE = 5.0
"""Classifier-free guidance weight of ``run_policy.py`` and ``eval_highlevel.py``, by measurement (3 texts x 15
windows per theme from a standing start): on the base policy theme faithfulness 0.22-0.27 at 1 (no guidance),
0.31-0.32 at 3, 0.42-0.44 at 5, 0.43 at 8 (two seed sets), the COM goal error 0.17-0.19 m at 1 and 0.20-0.22 m at 5;
on the shipped fine-tune 0.63 at both 5 and 8, with more COM error and MPJPE at 8
(assets/checkpoints/highlevel_h1/README.md)."""


def add_guidance_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--guidance`` option of every script that samples the policy, with :data:`DEFAULT_GUIDANCE` as default."""
    parser.add_argument(
        "--guidance",
        type=float,
        default=DEFAULT_GUIDANCE,
        help="classifier-free guidance weight on the text: 1 = off, higher follows it more (default: %(default)s)",
    )


@dataclass
class HighLevelConfig:
    """Sizes of the high-level policy; ``block_size`` and ``vocab_size`` must be the tokenizer's."""

    context_frames: int = 32
    """P: past pose frames seen."""
    com_past: int = 32
    com_future: int = 32
    text_dim: int = 384
    """Width of the text embedding (all-MiniLM-L6-v2: 384)."""
    feature_dim: int = 127
    embed_dim: int = 128
    num_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    block_size: int = 64
    vocab_size: int = 1024
    dropout: float = 0.0
    text_dropout: float = 0.1
    """Probability of training with the null text instead (classifier-free guidance at sampling)."""

    def __post_init__(self) -> None:
        if (self.context_frames, self.com_past, self.com_future) != (32, 32, 32):
            raise ValueError(
                "context_frames, com_past and com_future must be 32: the data pipeline and the runner work in "
                f"windows of 32 frames (got {self.context_frames}, {self.com_past}, {self.com_future})"
            )

    @property
    def memory_length(self) -> int:
        return 1 + self.context_frames + self.com_past + self.com_future

    def head_config(self) -> TrajectoryNetConfig:
        """The token decoder's sizes as the config ``ARPosterior`` takes (its frame fields unused)."""
        return TrajectoryNetConfig(
            feature_dim=1, length=self.block_size, block_size=self.block_size, vocab_size=self.vocab_size,
            embed_dim=self.embed_dim, num_heads=self.num_heads, num_layers=self.decoder_layers,
            dropout=self.dropout, memory_skip=False, init="gpt", pos_emb="learned",
        )  # fmt: skip


class Context(dict):
    """A batch of conditioning inputs: ``text`` (B, D_text), ``pose`` (B, P, 127) standardized, ``com`` (B, 64, 3),
    and for training ``tokens`` (B, T) long, the targets."""


class HighLevelPolicy(nn.Module):
    """Context -> q(tokens | text, pose, COM), an autoregressive categorical over the tokenizer's codes."""

    def __init__(self, cfg: HighLevelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.embed_dim
        self.text_proj = nn.Linear(cfg.text_dim, h)
        self.null_text = nn.Parameter(torch.zeros(h))
        self.pose_proj = nn.Linear(cfg.feature_dim, h)
        self.com_proj = nn.Linear(3, h)
        self.pos_emb = nn.Parameter(torch.randn(cfg.memory_length, h) * 0.02)
        self.encoder = TransformerEncoder(h, cfg.num_heads, cfg.encoder_layers, 4, cfg.dropout)
        self.head = ARPosterior(cfg.head_config())

    def memory(self, ctx: Context, drop_text: Tensor | None = None) -> Tensor:
        """The encoded context (B, M, H); rows where ``drop_text`` (B,) bool is true see the null text."""
        text = self.text_proj(ctx["text"])  # (B, H)
        if drop_text is not None:
            text = torch.where(drop_text[:, None], self.null_text.expand_as(text), text)
        parts = [text[:, None], self.pose_proj(ctx["pose"]), self.com_proj(ctx["com"])]  # (B, 1|P|64, H)
        return self.encoder(torch.cat(parts, 1) + self.pos_emb)  # (B, M, H)

    def logits(self, ctx: Context, drop_text: Tensor | None = None) -> Tensor:
        """Teacher-forced logits of the target tokens: -> (B, T, V)."""
        return self.head.logits(self.memory(ctx, drop_text), ctx["tokens"])

    @torch.no_grad()
    def sample(
        self,
        ctx: Context,
        temperature: float = 1.0,
        top_k: int = 0,
        guidance: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Tokens (B, T) of the next window. ``temperature`` <= 0 decodes greedily; ``top_k`` > 0 samples among
        the k most likely codes; ``guidance`` w != 1 mixes the conditional and text-free logits as
        uncond + w (cond - uncond) (classifier-free guidance)."""
        memory = self.memory(ctx)  # (B, M, H)
        if guidance != 1.0:
            null = self.memory(ctx, torch.ones(len(memory), dtype=torch.bool, device=memory.device))
            memory = torch.cat((memory, null))  # (2B, M, H): conditional rows, then text-free rows
        return self.head.sample(
            memory, greedy=temperature <= 0, temperature=max(temperature, 1e-6), generator=generator,
            top_k=top_k, guidance=guidance,
        )  # fmt: skip


class DistillationObjective(Estimator):
    """Cross-entropy of the tokenizer's codes of the true next window under the policy (teacher forcing), with
    the text dropped at rate ``text_dropout`` (so the policy also learns the text-free distribution)."""

    def forward(self, model: HighLevelPolicy, ctx: Context, step: int) -> EstimatorOutput:
        tokens = ctx["tokens"]  # (B, T)
        drop = torch.rand(len(tokens), device=tokens.device) < model.cfg.text_dropout  # (B,)
        logits = model.logits(ctx, drop)  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        accuracy = (logits.argmax(-1) == tokens).float().mean()
        metrics = {"losses/token_nll": nll.detach(), "charts/token_accuracy": accuracy.detach()}
        return EstimatorOutput(nll, metrics)


def config_dict(cfg: HighLevelConfig) -> dict:
    return dataclasses.asdict(cfg)


HIGHLEVEL_FORMAT = "motiontok.highlevel"


def load_highlevel(path: str | Path | None = None, tokenizer: Any = None) -> tuple[HighLevelPolicy, dict[str, Any]]:
    """A trained high-level policy (default: the shipped ``assets/checkpoints/highlevel_h1``) in eval mode, and its
    config. With ``tokenizer`` (a ``MotionTokenizer``), a policy trained on another tokenizer is refused: its
    codes would mean other motions."""
    from envs.reference import tokenizer_fingerprint

    path = Path(path) if path is not None else asset_dir() / "checkpoints" / "highlevel_h1"
    tensors, config, _ = load_checkpoint(path)
    if config.get("format") != HIGHLEVEL_FORMAT:
        raise CheckpointError(f"{path}: not a motiontok high-level policy (format={config.get('format')!r})")
    if tokenizer is not None and config.get("tokenizer_fingerprint") != tokenizer_fingerprint(tokenizer):
        raise CheckpointError(
            f"{path}: trained on tokenizer {config.get('tokenizer_fingerprint')}, not on the one loaded "
            f"({tokenizer_fingerprint(tokenizer)}); its codes would mean other motions. Retrain it "
            "(scripts/train_highlevel.py) or load the tokenizer it was trained with"
        )
    try:
        model = HighLevelPolicy(HighLevelConfig(**config["net"]))
        model.load_state_dict(strip_prefix(tensors, "model."))
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: weights do not match the recorded config ({err})") from None
    return model.eval(), config


def load_theme_classifier(path: str | Path | None = None) -> ThemeClassifier:
    """The theme classifier stored beside a high-level policy (see ``HighLevelData.export``)."""
    path = Path(path) if path is not None else asset_dir() / "checkpoints" / "highlevel_h1"
    tensors, config, _ = load_checkpoint(path)
    if config.get("format") != HIGHLEVEL_FORMAT or "themes" not in config:
        raise CheckpointError(f"{path}: not a motiontok high-level policy with a theme classifier")
    clf = ThemeClassifier(config["themes"])
    try:
        clf.load_state_dict(strip_prefix(tensors, "classifier."))
    except RuntimeError as err:
        raise CheckpointError(f"{path}: no usable theme classifier ({err})") from None
    return clf.eval()
