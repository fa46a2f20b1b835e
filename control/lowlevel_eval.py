"""Evaluation of a low-level policy: episodes started from reference states spread over each clip, all run at
once in one :class:`envs.tracking.TrackingSim`, deterministic actions (the policy's mean).

Per episode: ``fell`` (terminated by the fall rule before its end), length, the key-point error while it ran and
the share of action components the environment clipped to [-1, 1] (a policy that lives at the clip lacks
authority: its mean action asks for more than the action scale gives).
MPJPE here is the mean distance of the 13 key points relative to the pelvis in the heading frame (the "local"
MPJPE of IK playback), so a slow drift of the whole body does not count, a wrong pose does. ``mpjpe_mm`` compares
with the true reference motion, ``mpjpe_decoded_mm`` with the motion the tokens decode to (what the policy is
told).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from envs.reference import ReferenceLibrary, theme_of
from envs.tracking import TrackingConfig, TrackingSim


def spread_starts(ref: ReferenceLibrary, per_clip: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """``per_clip`` start steps per clip, evenly spaced over the part that leaves ``seconds`` of reference
    (the whole clip when it is shorter). Returns (starts (E,), clip index (E,))."""
    starts, clips = [], []
    horizon = round(seconds * ref.fps)
    for c, (first, n) in enumerate(zip(ref.clip_start, ref.clip_len, strict=True)):
        last = first + max(n - 1 - horizon, 0)
        starts.append(np.linspace(first, last, per_clip).round().astype(np.int64))
        clips.append(np.full(per_clip, c))
    return np.concatenate(starts), np.concatenate(clips)


@torch.no_grad()
def run_episodes(
    policy: Any, ref: ReferenceLibrary, cfg: TrackingConfig, starts: np.ndarray, record: int | None = None
) -> dict[str, np.ndarray]:
    """Run one episode per start with the policy's mean action. Returns per-episode arrays ``fell``, ``steps``,
    ``key_err`` and ``key_err_decoded`` (mean m over its steps), ``clipped`` (share of action components beyond
    [-1, 1]), and with ``record`` = an episode index, that
    episode's robot and reference qpos (``qpos_robot``, ``qpos_ref``, (T, 26) each)."""
    sim = TrackingSim(ref, len(starts), cfg, seed=0)
    sim.reset(starts=starts)
    n = len(starts)
    alive, fell = np.ones(n, bool), np.zeros(n, bool)
    steps, err, err_dec, clipped = np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n)
    frames_robot, frames_ref = [], []
    obs = sim.observe()
    while alive.any():
        if record is not None and alive[record]:
            frames_robot.append(sim.qpos[record].copy())
            frames_ref.append(ref.qpos[sim.idx[record]].copy())
        action = policy.mean_action(torch.as_tensor(obs)).numpy()  # (N, 19), unclipped
        clipped += np.where(alive, (np.abs(action) > 1.0).mean(-1), 0.0)
        _, _, terminated, truncated = sim.step(action)
        key_local = sim.robot_state()["key_local"]
        dec = np.linalg.norm(key_local - ref.decoded_key_local[sim.idx], axis=-1).mean(-1)
        err += np.where(alive, sim.last_errors.key_dist, 0.0)
        err_dec += np.where(alive, dec, 0.0)
        steps += alive
        fell |= alive & terminated
        alive &= ~(terminated | truncated)
        obs = sim.observe()
    sim.close()
    out = {
        "fell": fell,
        "steps": steps,
        "key_err": err / steps,
        "key_err_decoded": err_dec / steps,
        "clipped": clipped / steps,
    }
    if record is not None:
        out["qpos_robot"], out["qpos_ref"] = np.array(frames_robot), np.array(frames_ref)
    return out


def summarize(result: dict[str, np.ndarray], clips: np.ndarray, ref: ReferenceLibrary, fps: float) -> dict[str, Any]:
    """The evaluation JSON: overall and per LAFAN theme."""

    def block(mask: np.ndarray) -> dict[str, Any]:
        return {
            "success_rate": round(float(1.0 - result["fell"][mask].mean()), 4),
            "mean_episode_s": round(float(result["steps"][mask].mean() / fps), 3),
            "mpjpe_mm": round(float(1000 * result["key_err"][mask].mean()), 1),
            "mpjpe_decoded_mm": round(float(1000 * result["key_err_decoded"][mask].mean()), 1),
            "clipped_action_share": round(float(result["clipped"][mask].mean()), 4),
            "episodes": int(mask.sum()),
        }

    themes = np.array([theme_of(ref.names[c]) for c in clips])
    per_theme = defaultdict(dict)
    for t in sorted(set(themes)):
        per_theme[t] = block(themes == t)
    return {**block(np.ones(len(clips), bool)), "per_theme": dict(per_theme), "clips": list(ref.names)}
