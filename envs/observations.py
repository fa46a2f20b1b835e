"""Observation vector of the tracking task: one flat float32 row per environment, in named blocks.

The actor reads ``tokens`` (and ``next_tokens``), and ``proprio``; the critic also reads ``privileged`` (the true
reference), which the actor never sees: the policy is steered by the tokens only. Token indices are stored as
exact float32 integers (< 2^24) and turned back into indices by the policy's embedding.

======================  ====  ================================================================================
block                   size  content
======================  ====  ================================================================================
tokens                  64    the current window's tokens
next_tokens             64    the next window's tokens (only with ``next_tokens=True``)
proprio                 97    phase in the window (1), joint angles (19), joint velocities x 0.05 (19), gravity
                              in the pelvis frame (3), pelvis angular velocity x 0.25 (3), previous action (19),
                              joint angles decoded from the tokens at this phase (19), pelvis linear velocity in
                              its own frame (3), root features decoded from the tokens (11: height, swing 6D,
                              heading-frame velocity, yaw rate)
privileged              92    reference - robot key points in the heading frame (39), pelvis height and its
                              reference (2), reference - robot pelvis position in the heading frame (3), pelvis
                              and reference velocity in the heading frame (6), reference - robot joint angles
                              (19), reference joint velocities x 0.05 (19), reference gravity in the pelvis
                              frame (3), phase (1)
======================  ====  ================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.reference import ReferenceLibrary
from motiontok import robot
from motiontok.rotations import heading_of_mat, quat_to_mat, rot_z

NUM_TOKENS = 64
PROPRIO = 1 + 4 * robot.NUM_JOINTS + 6 + 3 + 11  # 97: phase, 4 joint blocks, gravity, angular and linear velocity, root
PRIVILEGED = 3 * robot.NUM_KEY_POINTS + 2 + 3 + 6 + 2 * robot.NUM_JOINTS + 3 + 1  # 92
JOINT_VEL_SCALE = 0.05
ANG_VEL_SCALE = 0.25


@dataclass(frozen=True)
class ObsLayout:
    """Column ranges ``(start, stop)`` of the blocks; ``next_tokens`` is ``None`` when not observed."""

    tokens: tuple[int, int]
    next_tokens: tuple[int, int] | None
    proprio: tuple[int, int]
    privileged: tuple[int, int]

    @property
    def size(self) -> int:
        return self.privileged[1]

    @classmethod
    def make(cls, next_tokens: bool) -> ObsLayout:
        n = NUM_TOKENS
        nxt = (n, 2 * n) if next_tokens else None
        p0 = 2 * n if next_tokens else n
        return cls((0, n), nxt, (p0, p0 + PROPRIO), (p0 + PROPRIO, p0 + PROPRIO + PRIVILEGED))

    def as_dict(self) -> dict[str, tuple[int, int] | None]:
        return {k: getattr(self, k) for k in ("tokens", "next_tokens", "proprio", "privileged")}


def _heading_t(qpos: np.ndarray) -> np.ndarray:
    """(N, 3, 3) transpose of the heading frame of qpos (N, 26)."""
    return np.swapaxes(rot_z(heading_of_mat(quat_to_mat(qpos[:, 3:7]))), -1, -2)


def _gravity(qpos: np.ndarray) -> np.ndarray:
    """(N, 3) world down (0, 0, -1) in the pelvis frame = -(third row of R)."""
    return -quat_to_mat(qpos[:, 3:7])[:, 2, :]


def observe(
    layout: ObsLayout,
    ref: ReferenceLibrary,
    idx: np.ndarray,
    robot_state: dict[str, np.ndarray],
    ref_state: dict[str, np.ndarray] | None,
    prev_action: np.ndarray,
) -> np.ndarray:
    """(N, layout.size) float32 observations at reference steps ``idx`` (N,) (see the module docstring). With
    ``ref_state`` None (inference: only the actor reads the observation) the privileged block is zeros and the robot
    state needs only ``qpos`` and ``qvel``."""
    q, r = robot_state, ref_state
    n = len(idx)
    phase = ref.phase[idx][:, None]  # (N, 1)
    rot = quat_to_mat(q["qpos"][:, 3:7])  # (N, 3, 3) pelvis to world
    proprio = np.concatenate(
        [
            phase,
            q["qpos"][:, 7:],
            q["qvel"][:, 6:] * JOINT_VEL_SCALE,
            -rot[:, 2, :],  # world down in the pelvis frame (as _gravity)
            q["qvel"][:, 3:6] * ANG_VEL_SCALE,
            prev_action,
            ref.decoded_joints[idx],
            np.einsum("nji,nj->ni", rot, q["qvel"][:, :3]),  # R^T v: pelvis frame
            ref.decoded_root[idx],
        ],
        axis=1,
    )
    privileged = np.zeros((n, PRIVILEGED)) if r is None else _privileged(q, r, phase)
    blocks = [ref.tokens[ref.window[idx]]]
    if layout.next_tokens is not None:
        blocks.append(ref.tokens[ref.next_window[idx]])
    obs = np.concatenate([*blocks, proprio, privileged], axis=1).astype(np.float32)
    assert obs.shape == (n, layout.size), (obs.shape, layout)
    return obs


def _privileged(q: dict[str, np.ndarray], r: dict[str, np.ndarray], phase: np.ndarray) -> np.ndarray:
    """(N, PRIVILEGED) the critic's view of the true reference (see the module docstring)."""
    n = len(phase)
    heading_t = _heading_t(q["qpos"])  # (N, 3, 3)
    return np.concatenate(
        [
            (r["key_local"] - q["key_local"]).reshape(n, -1),
            q["qpos"][:, 2:3],
            r["qpos"][:, 2:3],
            np.einsum("nij,nj->ni", heading_t, r["qpos"][:, :3] - q["qpos"][:, :3]),
            np.einsum("nij,nj->ni", heading_t, q["qvel"][:, :3]),
            np.einsum("nij,nj->ni", heading_t, r["qvel"][:, :3]),
            r["qpos"][:, 7:] - q["qpos"][:, 7:],
            r["qvel"][:, 6:] * JOINT_VEL_SCALE,
            _gravity(r["qpos"]),
            phase,
        ],
        axis=1,
    )
