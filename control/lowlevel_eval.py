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

from envs.reference import ReferenceLibrary, local_key_points, theme_of
from envs.rewards import TerminationConfig, should_terminate, tracking_errors
from envs.tracking import ACTION_CLIP, TrackingConfig, TrackingSim
from motiontok.motion import forward_kinematics
from motiontok.rotations import heading_of_mat, mat_to_quat, quat_to_mat, rot6d_to_mat, rot_z


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
        clipped += np.where(alive, (np.abs(action) > ACTION_CLIP).mean(-1), 0.0)
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


def decoded_pose_qpos(ref: ReferenceLibrary) -> np.ndarray:
    """(S, 26) the robot posed exactly as the tokens decode at every reference step: the decoded root height,
    swing (pitch and roll) and joint angles, on the true root's x, y and heading."""
    heading = rot_z(heading_of_mat(quat_to_mat(ref.qpos[:, 3:7])))  # (S, 3, 3)
    rot = heading @ rot6d_to_mat(ref.decoded_root[:, 1:7])  # (S, 3, 3)
    return np.concatenate([ref.qpos[:, :2], ref.decoded_root[:, :1], mat_to_quat(rot), ref.decoded_joints], 1)


def decoded_ceiling(
    ref: ReferenceLibrary, starts: np.ndarray, max_steps: int, rule: TerminationConfig
) -> dict[str, np.ndarray]:
    """The fall rule applied, step by step and without physics, to the robot posed exactly as the tokens decode
    (:func:`decoded_pose_qpos`), over the episodes of :func:`run_episodes` (from each start, up to ``max_steps``
    or the clip's end): per episode ``fell`` and ``steps``. What a perfect follower of the tokens would score,
    since the rule compares with the true reference and the tokens say where the hands and heels are only as well
    as the decoder reconstructs them."""
    qpos = decoded_pose_qpos(ref)  # (S, 26)
    key_pos = forward_kinematics(qpos).key_pos  # (S, 13, 3)
    still = np.zeros_like(ref.key_pos)  # velocities do not enter the rule: both sides get the same
    true = {"qpos": ref.qpos, "qvel": ref.qvel, "key_pos": ref.key_pos, "key_local": ref.key_local, "key_vel": still}
    posed = true | {"qpos": qpos, "key_pos": key_pos, "key_local": local_key_points(qpos, key_pos)}
    bad = should_terminate(tracking_errors(posed, true), rule)  # (S,)
    fell, steps = np.zeros(len(starts), bool), np.zeros(len(starts), np.int64)
    for e, s in enumerate(starts):
        end = min(s + max_steps, ref.clip_last[s])  # the last step the episode reaches
        hit = np.flatnonzero(bad[s + 1 : end + 1])
        fell[e], steps[e] = len(hit) > 0, hit[0] + 1 if len(hit) else end - s
    return {"fell": fell, "steps": steps}


def summarize(
    result: dict[str, np.ndarray],
    clips: np.ndarray,
    ref: ReferenceLibrary,
    fps: float,
    ceiling: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The evaluation JSON: overall and per LAFAN theme; with ``ceiling`` (:func:`decoded_ceiling` of the same
    episodes) also ``ceiling_success_rate`` and ``ceiling_mean_episode_s``."""

    def block(mask: np.ndarray) -> dict[str, Any]:
        out = {
            "success_rate": round(float(1.0 - result["fell"][mask].mean()), 4),
            "mean_episode_s": round(float(result["steps"][mask].mean() / fps), 3),
            "mpjpe_mm": round(float(1000 * result["key_err"][mask].mean()), 1),
            "mpjpe_decoded_mm": round(float(1000 * result["key_err_decoded"][mask].mean()), 1),
            "clipped_action_share": round(float(result["clipped"][mask].mean()), 4),
            "episodes": int(mask.sum()),
        }
        if ceiling is not None:
            out["ceiling_success_rate"] = round(float(1.0 - ceiling["fell"][mask].mean()), 4)
            out["ceiling_mean_episode_s"] = round(float(ceiling["steps"][mask].mean() / fps), 3)
        return out

    themes = np.array([theme_of(ref.names[c]) for c in clips])
    per_theme = defaultdict(dict)
    for t in sorted(set(themes)):
        per_theme[t] = block(themes == t)
    return {**block(np.ones(len(clips), bool)), "per_theme": dict(per_theme), "clips": list(ref.names)}
