"""``MotionTokenizer``: the public face of a trained DAPS tokenizer, importable without hydra, control or envs.

from motiontok import MotionTokenizer
tok = MotionTokenizer.load()                 # the shipped H1 tokenizer
tokens = tok.encode(windows)                 # (B, 32, 127) raw features -> (B, 64) long
windows_hat = tok.decode(tokens)             # (B, 64) -> (B, 32, 127) raw features
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from motiontok import features as feat
from motiontok.checkpoint import load_checkpoint, save_checkpoint, strip_prefix
from motiontok.errors import CheckpointError
from motiontok.models import DiscreteVAE, build_model, model_record
from motiontok.motion import MotionClip
from motiontok.nets import ARPosterior
from motiontok.normalizer import RunningNormalizer
from motiontok.paths import asset_dir

if TYPE_CHECKING:
    from motiontok.nets.greedy_cpu import GreedyDecoderCPU

FORMAT = "motiontok.tokenizer"
FORMAT_VERSION = 1
GREEDY_CPU_MAX_BATCH = 8
"""Greedy ``encode`` of at most this many windows on CPU runs the compiled decoder (``nets.greedy_cpu``), which
wins while per-op overhead dominates; larger batches use torch's batched ops (crossover between 8 and 16
windows in bench/bench_sampling.py on the 2-core machines)."""
DEFAULT_CHECKPOINT = asset_dir() / "checkpoints" / "tokenizer_h1"


def tokenizer_config(model: DiscreteVAE, fps: float, **extra: Any) -> dict[str, Any]:
    """The ``config.json`` contents that :meth:`MotionTokenizer.load` needs (plus any ``extra`` records)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "feature_layout": feat.FEATURE_LAYOUT,
        **model_record(model),
        "fps": fps,
        **extra,
    }


class MotionTokenizer(nn.Module):
    """A trained tokenizer with its normalizer: raw (B, 32, 127) feature windows <-> (B, 64) tokens."""

    def __init__(
        self,
        model: DiscreteVAE,
        normalizer: RunningNormalizer,
        fps: float,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.normalizer = normalizer
        self.fps = float(fps)
        self.config = dict(config or {})
        """The loaded ``config.json`` (training records included), empty for a tokenizer built in code."""
        self._greedy_cpu: tuple[tuple[tuple[int, int], ...], GreedyDecoderCPU] | None = None
        self.eval()

    # ------------------------------------------------------------------ properties
    @property
    def window(self) -> int:
        return self.model.cfg.length

    @property
    def num_tokens(self) -> int:
        return self.model.cfg.block_size

    @property
    def vocab_size(self) -> int:
        return self.model.num_codes  # the quantizer's codebook when smaller (FSQ: 1,000)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ windows <-> tokens
    @torch.no_grad()
    def encode(self, x: Tensor | np.ndarray, sample: bool = False, temperature: float = 1.0) -> Tensor:
        """Raw feature windows (B, 32, 127) -> tokens (B, 64) long on the input's device.

        Greedy (the posterior's mode, deterministic) by default; ``sample=True`` draws from q(z|x)."""
        x_t = torch.as_tensor(x)
        if x_t.ndim != 3 or x_t.shape[1:] != (self.window, self.model.cfg.feature_dim):
            raise ValueError(
                f"encode expects (B, {self.window}, {self.model.cfg.feature_dim}) feature windows, "
                f"got {tuple(x_t.shape)}"
            )
        if not x_t.is_floating_point():
            raise TypeError(f"encode expects a float tensor, got {x_t.dtype}")
        if not torch.isfinite(x_t).all():
            raise ValueError("encode got NaN or inf in its input")
        z = self.normalizer.normalize(x_t.to(self.device, torch.float32))
        fast = self._greedy_decoder_cpu() if not sample and len(z) <= GREEDY_CPU_MAX_BATCH else None
        if fast is not None:
            tokens = torch.from_numpy(fast(self.model.memory(z)))  # (B, T), same codes as the torch path
        else:
            tokens = self.model.encode(z, greedy=not sample, temperature=temperature)  # (B, T)
        return tokens.to(x_t.device)

    def _greedy_decoder_cpu(self) -> GreedyDecoderCPU | None:
        """The compiled greedy decoder for an autoregressive posterior on CPU, rebuilt whenever a posterior
        parameter was replaced or modified in place (tracked by the tensors' version counters)."""
        posterior = self.model.posterior
        if self.device.type != "cpu" or not isinstance(posterior, ARPosterior) or posterior.training:
            return None
        from motiontok.nets.greedy_cpu import GreedyDecoderCPU  # numba is imported on first use only

        key = tuple((p.data_ptr(), p._version) for p in posterior.parameters())
        if self._greedy_cpu is None or self._greedy_cpu[0] != key:
            self._greedy_cpu = (key, GreedyDecoderCPU(posterior))
        return self._greedy_cpu[1]

    @torch.no_grad()
    def decode(self, tokens: Tensor | np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
        """Tokens (B, 64) in [0, vocab) -> raw feature windows (B, 32, 127) (decoder mean) on the tokens' device."""
        z = torch.as_tensor(tokens)
        if z.ndim != 2 or z.shape[1] != self.num_tokens:
            raise ValueError(f"decode expects tokens of shape (B, {self.num_tokens}), got {tuple(z.shape)}")
        if z.is_floating_point() or z.is_complex() or z.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor, got {z.dtype}")
        if z.numel() and (int(z.min()) < 0 or int(z.max()) >= self.vocab_size):
            raise ValueError(
                f"tokens must lie in [0, {self.vocab_size}); got values in [{int(z.min())}, {int(z.max())}]"
            )
        mean = self.model.reconstruct(z.to(self.device, torch.long))  # (B, L, F) standardized
        return self.normalizer.denormalize(mean).to(z.device, dtype)

    # ------------------------------------------------------------------ whole trajectories
    def split_windows(self, features: np.ndarray) -> np.ndarray:
        """(T, 127) -> (W, 32, 127): consecutive windows; the last one is aligned to the end of the clip
        (overlapping its predecessor) so that every frame is covered. T must be at least 32."""
        f = feat.check_features(features)
        T, L = len(f), self.window
        if T < L:
            raise ValueError(f"a trajectory needs at least {L} frames, got {T}")
        starts = list(range(0, T - L + 1, L))
        if starts[-1] + L < T:
            starts.append(T - L)
        return np.stack([f[s : s + L] for s in starts])

    def stitch_windows(self, windows: np.ndarray, num_frames: int) -> np.ndarray:
        """Inverse of :meth:`split_windows`: (W, 32, 127) -> (num_frames, 127)."""
        L = self.window
        out = windows[: num_frames // L].reshape(-1, windows.shape[-1])  # whole windows laid end to end
        rest = num_frames - len(out)
        if rest > 0:
            out = np.concatenate([out, windows[-1][L - rest :]], axis=0)
        return out

    def reconstruct_features(self, features: np.ndarray, fps: float | None = None) -> np.ndarray:
        """Encode (greedy) and decode a whole (T, 127) feature trajectory at the tokenizer's rate."""
        self._check_fps(fps)
        windows = self.split_windows(features)
        rec = self.decode(self.encode(torch.from_numpy(windows).float())).double().numpy()
        return self.stitch_windows(rec, len(features))

    def encode_qpos(self, qpos: np.ndarray, fps: float) -> Tensor:
        """A whole H1 qpos trajectory (T, 26) at ``fps`` -> tokens (W, 64) of its windows (see
        :meth:`split_windows`); the trajectory is resampled to the tokenizer's rate first."""
        clip = MotionClip("input", np.asarray(qpos), fps).resample(self.fps)
        windows = self.split_windows(feat.clip_features(clip))
        return self.encode(torch.from_numpy(windows).float())

    def decode_qpos(
        self,
        tokens: Tensor | np.ndarray,
        num_frames: int | None = None,
        start_xy: tuple[float, float] = (0.0, 0.0),
        start_yaw: float = 0.0,
    ) -> np.ndarray:
        """Tokens (W, 64) -> qpos (num_frames, 26) at the tokenizer's rate, root integrated from ``start_xy`` /
        ``start_yaw``. ``num_frames`` defaults to W * 32 (windows laid end to end)."""
        windows = self.decode(tokens).double().cpu().numpy()
        n = num_frames if num_frames is not None else len(windows) * self.window
        return feat.qpos_from_features(self.stitch_windows(windows, n), self.fps, start_xy, start_yaw)

    def _check_fps(self, fps: float | None) -> None:
        if fps is not None and abs(fps - self.fps) > 1e-6:
            raise ValueError(f"this tokenizer works at {self.fps:g} fps; resample the motion (got {fps:g})")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, **extra: Any) -> Path:
        """Write weights (safetensors) and config (JSON) to the directory ``path`` atomically."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"normalizer.{k}": v for k, v in self.normalizer.state_dict().items()}
        return save_checkpoint(path, tensors, tokenizer_config(self.model, self.fps, **extra))

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device | None = None) -> MotionTokenizer:
        """Load a tokenizer (or a training checkpoint) directory; default: the shipped H1 tokenizer."""
        path = Path(path) if path is not None else DEFAULT_CHECKPOINT
        tensors, config, _ = load_checkpoint(path)
        if config.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a motiontok tokenizer checkpoint (format={config.get('format')!r})")
        if config.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format version {config.get('format_version')}, this motiontok reads "
                f"{FORMAT_VERSION}; retrain or use a matching motiontok release"
            )
        if config.get("feature_layout") != feat.FEATURE_LAYOUT:
            raise CheckpointError(
                f"{path}: trained on feature layout {config.get('feature_layout')!r}, this motiontok computes "
                f"{feat.FEATURE_LAYOUT!r}; retrain it or use a matching motiontok release"
            )
        if config.get("network", "trajectory") != "trajectory":
            raise CheckpointError(f"{path}: a {config['network']!r} model, not a motion tokenizer")
        try:
            model = build_model(config)
            normalizer = RunningNormalizer(model.cfg.feature_dim)
            model.load_state_dict(strip_prefix(tensors, "model."))
            normalizer.load_state_dict(strip_prefix(tensors, "normalizer."))
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path}: weights do not match the recorded config ({err})") from None
        tok = cls(model, normalizer, config["fps"], config)
        return tok.to(device) if device is not None else tok
