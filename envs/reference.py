"""Reference motions for tracking: LAFAN1-H1 clips at the control rate, with the tokens that describe them.

Everything the environment needs per control step is precomputed once here, as flat arrays over all clips (one
row per 100 Hz step), so that N environments look their reference up with one fancy index:

* the true motion: qpos, qvel, world key-point positions and their heading-frame offsets from the root;
* the goal: the 64 tokens of the 32-frame (30 fps) window the step falls in, from the frozen tokenizer (greedy
  codes, encoded once per window, never per step), the next window's tokens, and the phase inside the window;
* the tokens' decoded motion: the joint angles, root features (height, tilt, velocity, yaw rate) and key-point
  offsets the tokenizer decodes from those tokens; the PD-offset action mode uses the joint angles as its base
  pose, the policy observes joints and root, evaluation compares key points.

A clip keeps only its whole windows (``32 * (T // 32)`` frames); a clip shorter than one window is an error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from motiontok import features as feat
from motiontok import robot
from motiontok.errors import MotionDataError
from motiontok.motion import MotionClip, forward_kinematics, load_motions
from motiontok.rotations import heading_of_mat, quat_to_mat, rot_z
from motiontok.tokenizer import MotionTokenizer


def theme_of(name: str) -> str:
    """LAFAN theme of a clip name: ``walk1_subject1`` -> ``walk``, ``fallAndGetUp2_subject3`` -> ``fallAndGetUp``."""
    match = re.match(r"[A-Za-z]+", name)
    return match.group(0) if match else name


def tokenizer_fingerprint(tokenizer: MotionTokenizer) -> str:
    """SHA-256 (hex, 16 chars) of the tokenizer's weights: token meanings differ between tokenizers, so a policy
    records the one it was trained with and refuses another."""
    h = hashlib.sha256()
    for name, tensor in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def local_key_points(qpos: np.ndarray, key_pos: np.ndarray) -> np.ndarray:
    """Key points relative to the root in the heading frame: qpos (..., 26), key_pos (..., 13, 3) -> (..., 13, 3)."""
    yaw = heading_of_mat(quat_to_mat(qpos[..., 3:7]))  # (...)
    heading_t = np.swapaxes(rot_z(yaw), -1, -2)  # (..., 3, 3)
    return np.einsum("...ij,...kj->...ki", heading_t, key_pos - qpos[..., None, :3])


@dataclass(frozen=True)
class ReferenceLibrary:
    """Flat per-step reference arrays over all clips at ``fps`` (see the module docstring). ``S`` = total steps."""

    names: tuple[str, ...]  # clip names
    clip_start: np.ndarray  # (C,) first step of each clip
    clip_len: np.ndarray  # (C,) steps of each clip
    fps: float
    qpos: np.ndarray  # (S, 26)
    qvel: np.ndarray  # (S, 25)
    key_pos: np.ndarray  # (S, 13, 3) world
    key_local: np.ndarray  # (S, 13, 3) heading frame, relative to the root
    tokens: np.ndarray  # (W, 64) int64, every window of every clip
    window: np.ndarray  # (S,) row of ``tokens`` for the step's window
    next_window: np.ndarray  # (S,) row of the following window of the same clip (the last window repeats)
    phase: np.ndarray  # (S,) position inside the window, [0, 1)
    decoded_joints: np.ndarray  # (S, 19) joint angles decoded from the window's tokens
    decoded_root: np.ndarray  # (S, 11) root features decoded from the tokens: height, swing 6D, velocity, yaw rate
    decoded_key_local: np.ndarray  # (S, 13, 3) key-point offsets decoded from the window's tokens
    tokenizer_id: str  # tokenizer_fingerprint of the tokenizer that made the tokens
    vocab_size: int  # the tokenizer's vocabulary

    @property
    def num_steps(self) -> int:
        return len(self.qpos)

    @functools.cached_property
    def clip_first(self) -> np.ndarray:
        """(S,) the first step of each step's clip."""
        return np.repeat(self.clip_start, self.clip_len)

    @functools.cached_property
    def clip_last(self) -> np.ndarray:
        """(S,) the last step of each step's clip."""
        return np.repeat(self.clip_start + self.clip_len - 1, self.clip_len)

    @property
    def themes(self) -> tuple[str, ...]:
        return tuple(theme_of(n) for n in self.names)

    def clip_index(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"unknown clip {name!r}; known clips: {', '.join(self.names)}")
        return self.names.index(name)

    @classmethod
    def build(
        cls,
        clips: list[MotionClip],
        tokenizer: MotionTokenizer,
        fps: float = robot.CONTROL_HZ,
    ) -> ReferenceLibrary:
        """Tokenize and resample ``clips`` (at the tokenizer's rate) for tracking at ``fps``."""
        if not clips:
            raise MotionDataError("no reference clips")
        tok_id = tokenizer_fingerprint(tokenizer)
        parts = [_cached_clip_arrays(c, tokenizer, tok_id, fps) for c in clips]
        return cls.from_parts([c.name for c in clips], parts, tok_id, tokenizer.vocab_size, fps)

    @classmethod
    def from_parts(
        cls, names: list[str], parts: list[dict[str, np.ndarray]], tok_id: str, vocab_size: int, fps: float
    ) -> ReferenceLibrary:
        """Concatenate per-clip arrays (of :func:`step_arrays`, window rows local to each clip)."""
        lens = np.array([len(p["qpos"]) for p in parts])
        offsets = np.concatenate([[0], np.cumsum([len(p["tokens"]) for p in parts])[:-1]])
        parts = [
            {**p, "window": p["window"] + off, "next_window": p["next_window"] + off}
            for p, off in zip(parts, offsets, strict=True)
        ]
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return cls(
            names=tuple(names),
            clip_start=np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64),
            clip_len=lens.astype(np.int64),
            fps=float(fps),
            tokenizer_id=tok_id,
            vocab_size=vocab_size,
            **cat,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        tokenizer: MotionTokenizer,
        clips: list[str] | None = None,
        themes: list[str] | None = None,
        fps: float = robot.CONTROL_HZ,
    ) -> ReferenceLibrary:
        """Load motions from ``path`` (directory of CSV/npz or one file), keep ``clips`` by name and/or by
        ``themes``, and build the library. Unknown clip names are an error."""
        path = Path(path)
        named = [path / f"{n}.csv" for n in clips or []]
        if named and path.is_dir() and all(f.is_file() for f in named):  # LAFAN layout: one CSV per clip
            motions = [c for f in named for c in load_motions(f, fps=tokenizer.fps)]
        else:
            motions = load_motions(path, fps=tokenizer.fps)
        known = {c.name: c for c in motions}
        if clips:
            unknown = sorted(set(clips) - set(known))
            if unknown:
                raise MotionDataError(f"{path}: unknown clips {unknown}; known: {sorted(known)}")
            motions = [known[n] for n in clips]
        if themes:
            motions = [c for c in motions if theme_of(c.name) in themes]
            if not motions:
                raise MotionDataError(f"{path}: no clip of themes {themes}")
        return cls.build(motions, tokenizer, fps)


CACHE_VERSION = 2
"""Bumped whenever :func:`_clip_arrays` changes what it computes."""


def cache_dir() -> Path:
    """Where per-clip reference arrays are cached: ``$MOTIONTOK_CACHE`` or ``~/.cache/motiontok``."""
    return Path(os.environ.get("MOTIONTOK_CACHE") or Path.home() / ".cache" / "motiontok") / "reference"


def _cached_clip_arrays(clip: MotionClip, tokenizer: MotionTokenizer, tok_id: str, fps: float) -> dict[str, np.ndarray]:
    """:func:`_clip_arrays`, cached on disk under a key of the clip's motion, the tokenizer and the rate
    (tokenizing and forward kinematics of all LAFAN clips take about a minute on one core)."""
    h = hashlib.sha256(clip.qpos.tobytes())
    h.update(f"{clip.fps}|{fps}|{tok_id}|{feat.FEATURE_LAYOUT}|{CACHE_VERSION}".encode())
    path = cache_dir() / f"{clip.name}-{h.hexdigest()[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            pass  # corrupt cache entry: recompute and overwrite
    arrays = _clip_arrays(clip, tokenizer, fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def _clip_arrays(clip: MotionClip, tokenizer: MotionTokenizer, fps: float) -> dict[str, np.ndarray]:
    """Per-step arrays of one clip (window rows local to the clip): its greedy tokens, their decoding and the
    true motion at ``fps``."""
    L = tokenizer.window
    if clip.fps != tokenizer.fps:
        clip = clip.resample(tokenizer.fps)
    n_win = clip.num_frames // L
    if n_win == 0:
        raise MotionDataError(f"{clip.name}: {clip.num_frames} frames, a reference needs at least {L} (one window)")
    clip = MotionClip(clip.name, clip.qpos[: n_win * L], clip.fps, clip.source)
    windows = feat.clip_features(clip).reshape(n_win, L, feat.FEATURE_DIM)  # (W, 32, 127)
    tokens = tokenizer.encode(torch.from_numpy(windows).float())  # (W, 64)
    decoded = tokenizer.decode(tokens).double().numpy().reshape(n_win * L, feat.FEATURE_DIM)  # (W*32, 127)
    return step_arrays(clip, tokens.numpy().astype(np.int64), decoded, fps)


def step_arrays(clip: MotionClip, tokens: np.ndarray, decoded: np.ndarray, fps: float) -> dict[str, np.ndarray]:
    """Per-step arrays at ``fps`` of a clip at the tokenizer's rate (W * L frames), its tokens (W, T) and their
    decoded features (W * L, 127): what :class:`ReferenceLibrary` holds per clip. ``run_policy.py`` builds one
    from each planned window (the plan as the reference, the planned tokens as the goal)."""
    n_win = len(tokens)
    L = clip.num_frames // n_win
    if n_win * L != clip.num_frames or decoded.shape != (clip.num_frames, feat.FEATURE_DIM):
        raise ValueError(f"{clip.num_frames} frames, {n_win} windows and decoded {decoded.shape} do not match")
    fine = clip.resample(fps)
    kin = forward_kinematics(fine.qpos)
    frame = np.arange(fine.num_frames) * (clip.fps / fps)  # (S,) fractional frame of each step
    window = np.minimum((frame // L).astype(np.int64), n_win - 1)
    decoded_fine = _interp_rows(decoded, frame)  # (S, 127)
    return {
        "qpos": fine.qpos,
        "qvel": fine.qvel(),
        "key_pos": kin.key_pos,
        "key_local": local_key_points(fine.qpos, kin.key_pos),
        "tokens": tokens,
        "window": window,
        "next_window": np.minimum(window + 1, n_win - 1),
        "phase": frame / L - window,
        "decoded_joints": decoded_fine[:, feat.FEATURE_SLICES["joint_pos"]],
        "decoded_root": decoded_fine[:, : feat.FEATURE_SLICES["root_yaw_rate"].stop],
        "decoded_key_local": decoded_fine[:, feat.FEATURE_SLICES["key_pos"]].reshape(-1, robot.NUM_KEY_POINTS, 3),
    }


def _interp_rows(rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``rows`` (T, D) at fractional row indices ``at`` (S,) in [0, T-1] -> (S, D)."""
    i0 = np.minimum(np.floor(at).astype(np.int64), len(rows) - 2)
    a = (at - i0)[:, None]
    return rows[i0] + a * (rows[i0 + 1] - rows[i0])


def load_reference(
    data: str | Path | None = None,
    tokenizer: MotionTokenizer | str | Path | None = None,
    clips: list[str] | None = None,
    themes: list[str] | None = None,
) -> ReferenceLibrary:
    """A library from a motion path (default: ``$MOTIONTOK_DATA``) and a tokenizer (object or directory; default:
    the shipped H1 tokenizer)."""
    if data is None:
        data = os.environ.get("MOTIONTOK_DATA")
        if not data:
            raise MotionDataError("no motion data: pass a path or set MOTIONTOK_DATA to the LAFAN1-H1 CSV folder")
    if not isinstance(tokenizer, MotionTokenizer):
        tokenizer = MotionTokenizer.load(tokenizer)
    return ReferenceLibrary.from_path(data, tokenizer, clips=clips, themes=themes)
