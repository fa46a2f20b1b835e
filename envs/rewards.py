"""Tracking errors, reward terms and termination, vectorised over N environments (numpy).

Each reward term is ``weight * exp(-error / sigma^2)`` of one tracking error, so it is largest (= its weight) when
the robot sits exactly on the reference; ``action_rate`` is a penalty, ``-weight * |a_t - a_{t-1}|^2``. Terms,
sigmas and weights are named in :class:`RewardConfig` and logged one by one. The starting sigmas are
BeyondMimic's (anchor position 0.3 m, orientation 0.4 rad, body position 0.3 m, linear velocity 1.0 m/s,
angular velocity 3.14 rad/s) and its termination rule (anchor height error 0.25 m, tilt 0.8 rad, end-effector
height error 0.25 m); the joint terms are DeepMimic's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from motiontok import robot
from motiontok.rotations import quat_mul

END_EFFECTORS: tuple[int, ...] = tuple(
    robot.KEY_POINT_NAMES.index(n) for n in ("left_heel", "right_heel", "left_hand", "right_hand")
)
"""Key points whose height error ends an episode (feet and hands)."""


@dataclass
class RewardConfig:
    """Weights and sigmas of the named terms (an error e gives weight * exp(-e / sigma^2))."""

    weights: dict[str, float] = field(
        default_factory=lambda: {
            "key_pos": 1.0,
            "root_pos": 0.5,
            "root_ori": 0.5,
            "joint_pos": 1.0,
            "joint_vel": 0.25,
            "key_vel": 0.5,
            "root_ang_vel": 0.25,
            "action_rate": 0.01,  # x |a_t - a_(t-1)|^2 over 19 joints: ~0.4 at the initial noise (std 1)
        }
    )
    sigmas: dict[str, float] = field(
        default_factory=lambda: {
            "key_pos": 0.3,  # m, key points relative to the root in the heading frame
            "root_pos": 0.3,  # m, world
            "root_ori": 0.4,  # rad
            "joint_pos": 0.5,  # rad, root mean square over the 19 joints
            "joint_vel": 3.0,  # rad/s, root mean square
            "key_vel": 1.0,  # m/s, world velocity of the key points
            "root_ang_vel": 3.14,  # rad/s
        }
    )


@dataclass
class TerminationConfig:
    root_height: float = 0.25  # m, |z - z_ref| of the pelvis
    tilt: float = 0.8  # rad, angle between the pelvis' up axes
    end_effector_height: float = 0.25  # m, any of END_EFFECTORS


class Errors(NamedTuple):
    """Tracking errors of N environments, each (N,): squared unless named otherwise."""

    key_pos: np.ndarray  # mean over key points of |k_local - k_local_ref|^2
    root_pos: np.ndarray  # |p - p_ref|^2
    root_ori: np.ndarray  # rotation angle between the pelvis orientations, squared
    joint_pos: np.ndarray  # mean over joints of (q - q_ref)^2
    joint_vel: np.ndarray  # mean over joints of (qd - qd_ref)^2
    key_vel: np.ndarray  # mean over key points of |v - v_ref|^2
    root_ang_vel: np.ndarray  # |w - w_ref|^2 (pelvis frame)
    root_height: np.ndarray  # |z - z_ref| (not squared)
    tilt: np.ndarray  # angle between up axes, rad (not squared)
    end_effector_height: np.ndarray  # max over END_EFFECTORS of |z - z_ref| (not squared)
    key_dist: np.ndarray  # mean over key points of |k_local - k_local_ref| (m), for MPJPE


def quat_angle(q: np.ndarray, q_ref: np.ndarray) -> np.ndarray:
    """Rotation angle (rad) between unit quaternions (..., 4)."""
    conj = q * np.array([1.0, -1.0, -1.0, -1.0])
    w = np.abs(quat_mul(conj, q_ref)[..., 0])
    return 2.0 * np.arccos(np.clip(w, 0.0, 1.0))


def up_axis(q: np.ndarray) -> np.ndarray:
    """Body z axis in the world of unit quaternions (..., 4) -> (..., 3)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], -1)


def tracking_errors(robot_state: dict[str, np.ndarray], ref_state: dict[str, np.ndarray]) -> Errors:
    """Errors between robot and reference. Both dicts hold ``qpos`` (N, 26), ``qvel`` (N, 25), ``key_pos``
    (N, 13, 3) world, ``key_local`` (N, 13, 3) and ``key_vel`` (N, 13, 3)."""
    q, r = robot_state, ref_state
    key_diff = q["key_local"] - r["key_local"]  # (N, 13, 3)
    up_cos = np.sum(up_axis(q["qpos"][:, 3:7]) * up_axis(r["qpos"][:, 3:7]), axis=-1)
    ee_dz = np.abs(q["key_pos"][:, END_EFFECTORS, 2] - r["key_pos"][:, END_EFFECTORS, 2])  # (N, 4)
    return Errors(
        key_pos=np.mean(np.sum(key_diff**2, -1), -1),
        root_pos=np.sum((q["qpos"][:, :3] - r["qpos"][:, :3]) ** 2, -1),
        root_ori=quat_angle(q["qpos"][:, 3:7], r["qpos"][:, 3:7]) ** 2,
        joint_pos=np.mean((q["qpos"][:, 7:] - r["qpos"][:, 7:]) ** 2, -1),
        joint_vel=np.mean((q["qvel"][:, 6:] - r["qvel"][:, 6:]) ** 2, -1),
        key_vel=np.mean(np.sum((q["key_vel"] - r["key_vel"]) ** 2, -1), -1),
        root_ang_vel=np.sum((q["qvel"][:, 3:6] - r["qvel"][:, 3:6]) ** 2, -1),
        root_height=np.abs(q["qpos"][:, 2] - r["qpos"][:, 2]),
        tilt=np.arccos(np.clip(up_cos, -1.0, 1.0)),
        end_effector_height=ee_dz.max(-1),
        key_dist=np.mean(np.linalg.norm(key_diff, axis=-1), -1),
    )


def reward_terms(err: Errors, action_change_sq: np.ndarray, cfg: RewardConfig) -> dict[str, np.ndarray]:
    """Named reward terms (N,) each; their sum is the reward. ``action_change_sq`` = |a_t - a_{t-1}|^2 (N,)."""
    terms = {
        name: cfg.weights[name] * np.exp(-getattr(err, name) / cfg.sigmas[name] ** 2)
        for name in cfg.weights
        if name != "action_rate" and cfg.weights[name] != 0.0
    }
    terms["action_rate"] = -cfg.weights.get("action_rate", 0.0) * action_change_sq
    return terms


def termination_reasons(err: Errors, cfg: TerminationConfig) -> dict[str, np.ndarray]:
    """(N,) bool per rule of BeyondMimic's fall test: pelvis height, tilt, end-effector height."""
    return {
        "root_height": err.root_height > cfg.root_height,
        "tilt": err.tilt > cfg.tilt,
        "end_effector_height": err.end_effector_height > cfg.end_effector_height,
    }


def should_terminate(err: Errors, cfg: TerminationConfig) -> np.ndarray:
    """(N,) bool: the robot fell or left the reference (any of :func:`termination_reasons`)."""
    return np.logical_or.reduce(list(termination_reasons(err, cfg).values()))
