"""The 127-dimensional per-frame "relative pose" features, defined here and nowhere else.

Per frame t, with p the root (pelvis) position, R the root rotation, yaw the heading of R and H = Rz(yaw) the
heading frame (z up, x forward). The heading is the twist of R about world z (``rotations.heading_of_mat``):
R = H S with S a rotation about a horizontal axis, well defined in every frame but a pelvis upside down (layout
v2; v1 projected the pelvis x-axis on the ground, which flips when the pelvis pitches near 90 degrees and gave
yaw rates of up to 94 rad/s when getting up from the floor, see docs/heading.md):

=====  ===============  ====  ==========================================================================
index  name             size  definition
=====  ===============  ====  ==========================================================================
0      root_height      1     p_z (m, world)
1:7    root_rot6d       6     first two columns of S = H^T R: the pelvis' swing (pitch, roll), no heading
7:10   root_lin_vel     3     H_t^T (p_t - p_{t-1}) * fps: root velocity in the heading frame (m/s)
10     root_yaw_rate    1     wrap(yaw_t - yaw_{t-1}) * fps (rad/s)
11:30  joint_pos        19    hinge angles in robot.JOINT_NAMES order (rad)
30:49  joint_vel        19    (q_t - q_{t-1}) * fps (rad/s)
49:88  key_pos          39    H_t^T (k_t - p_t) for the 13 robot.KEY_POINTS, x/y/z per point (m)
88:127 key_vel          39    H_t^T (k_t - k_{t-1}) * fps: world velocity of each key point in the heading
                              frame (m/s); zero for a planted foot, which makes foot contact visible
=====  ===============  ====  ==========================================================================

Velocities are backward differences and frame 0 copies frame 1, so each frame only uses the past (what a
policy can observe). Root motion is stored as heading-frame velocities: features are invariant to where the
robot stands and which way it faces, and the inverse integrates them back (``qpos_from_features``), exactly up
to float error on true features. Why this choice: joint angles make the decoded motion directly playable,
key points give the spatial targets that IK and the MPJPE metric need, and key-point velocities carry
contact, all within the paper's 127 numbers.
"""

from __future__ import annotations

import numpy as np

from motiontok import robot
from motiontok.errors import MotionDataError
from motiontok.motion import MotionClip, forward_kinematics
from motiontok.rotations import (
    heading_of_mat,
    mat_to_quat,
    mat_to_rot6d,
    quat_to_mat,
    rot6d_to_mat,
    rot_z,
    wrap_angle,
)

FEATURE_SLICES: dict[str, slice] = {
    "root_height": slice(0, 1),
    "root_rot6d": slice(1, 7),
    "root_lin_vel": slice(7, 10),
    "root_yaw_rate": slice(10, 11),
    "joint_pos": slice(11, 30),
    "joint_vel": slice(30, 49),
    "key_pos": slice(49, 88),
    "key_vel": slice(88, 127),
}
"""Named column ranges of the feature vector (see the module docstring)."""
FEATURE_DIM = 127
FEATURE_LAYOUT = "h1-relpose-127-v2"
"""Name of this layout, recorded in datasets and checkpoints; bumped whenever any column's definition changes
(v2: the heading is the twist about z instead of the pelvis x-axis projected on the ground)."""
assert FEATURE_SLICES["key_vel"].stop == FEATURE_DIM == 11 + 2 * robot.NUM_JOINTS + 6 * robot.NUM_KEY_POINTS


def feature_names() -> list[str]:
    """One readable name per column, e.g. ``joint_pos/left_knee`` or ``key_vel/left_toe/z``."""
    names = ["root_height"] + [f"root_rot6d/{i}" for i in range(6)]
    names += [f"root_lin_vel/{a}" for a in "xyz"] + ["root_yaw_rate"]
    names += [f"joint_pos/{j}" for j in robot.JOINT_NAMES] + [f"joint_vel/{j}" for j in robot.JOINT_NAMES]
    for group in ("key_pos", "key_vel"):
        names += [f"{group}/{k}/{a}" for k in robot.KEY_POINT_NAMES for a in "xyz"]
    return names


def _backward_diff(x: np.ndarray, fps: float) -> np.ndarray:
    """(T, ...) -> (T, ...) backward difference times fps; frame 0 copies frame 1."""
    d = np.empty_like(x)
    d[1:] = (x[1:] - x[:-1]) * fps
    d[0] = d[1]
    return d


def features_from_qpos(qpos: np.ndarray, fps: float, key_pos: np.ndarray | None = None) -> np.ndarray:
    """(T, 26) qpos at ``fps`` -> (T, 127) features. ``key_pos`` (T, 13, 3) skips forward kinematics."""
    qpos = np.asarray(qpos, dtype=np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != robot.NQ or len(qpos) < 2:
        raise MotionDataError(f"qpos must have shape (T >= 2, {robot.NQ}), got {qpos.shape}")
    if key_pos is None:
        key_pos = forward_kinematics(qpos).key_pos
    root = qpos[:, :3]  # (T, 3)
    rot = quat_to_mat(qpos[:, 3:7] / np.linalg.norm(qpos[:, 3:7], axis=-1, keepdims=True))  # (T, 3, 3)
    yaw = heading_of_mat(rot)  # (T,)
    heading_t = np.swapaxes(rot_z(yaw), -1, -2)  # (T, 3, 3) H^T
    joints = qpos[:, 7:]  # (T, 19)

    feats = np.empty((len(qpos), FEATURE_DIM))
    feats[:, FEATURE_SLICES["root_height"]] = root[:, 2:3]
    feats[:, FEATURE_SLICES["root_rot6d"]] = mat_to_rot6d(heading_t @ rot)
    root_vel = np.empty_like(root)
    root_vel[1:] = np.einsum("tij,tj->ti", heading_t[1:], root[1:] - root[:-1]) * fps
    root_vel[0] = root_vel[1]
    feats[:, FEATURE_SLICES["root_lin_vel"]] = root_vel
    yaw_rate = np.empty_like(yaw)
    yaw_rate[1:] = wrap_angle(yaw[1:] - yaw[:-1]) * fps
    yaw_rate[0] = yaw_rate[1]
    feats[:, FEATURE_SLICES["root_yaw_rate"]] = yaw_rate[:, None]
    feats[:, FEATURE_SLICES["joint_pos"]] = joints
    feats[:, FEATURE_SLICES["joint_vel"]] = _backward_diff(joints, fps)
    rel = np.einsum("tij,tkj->tki", heading_t, key_pos - root[:, None])  # (T, 13, 3)
    feats[:, FEATURE_SLICES["key_pos"]] = rel.reshape(len(qpos), -1)
    key_vel = np.empty_like(key_pos)
    key_vel[1:] = np.einsum("tij,tkj->tki", heading_t[1:], key_pos[1:] - key_pos[:-1]) * fps
    key_vel[0] = key_vel[1]
    feats[:, FEATURE_SLICES["key_vel"]] = key_vel.reshape(len(qpos), -1)
    return feats


def clip_features(clip: MotionClip) -> np.ndarray:
    """(T, 127) features of a clip at its own frame rate."""
    return features_from_qpos(clip.qpos, clip.fps)


def check_features(features: np.ndarray) -> np.ndarray:
    """Validate a (T, 127) feature array (finite, right width) and return it as float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != FEATURE_DIM:
        raise MotionDataError(f"features must have shape (T, {FEATURE_DIM}), got {f.shape}")
    if not np.isfinite(f).all():
        raise MotionDataError("features contain NaN or inf")
    return f


def root_trajectory(
    features: np.ndarray, fps: float, start_xy: tuple[float, float] = (0.0, 0.0), start_yaw: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate the root from features: returns root positions (T, 3) and heading yaw (T,).

    Frame 0 is placed at ``start_xy`` facing ``start_yaw``; frame t adds ``yaw_rate_t / fps`` to the heading and
    ``H_t root_lin_vel_t / fps`` to the position (the exact inverse of the backward differences)."""
    f = check_features(features)
    yaw = start_yaw + np.concatenate([[0.0], np.cumsum(f[1:, FEATURE_SLICES["root_yaw_rate"]][:, 0]) / fps])
    heading = rot_z(yaw)  # (T, 3, 3)
    step = np.einsum("tij,tj->ti", heading, f[:, FEATURE_SLICES["root_lin_vel"]]) / fps  # (T, 3)
    xy = np.asarray(start_xy, dtype=np.float64) + np.concatenate([np.zeros((1, 2)), np.cumsum(step[1:, :2], 0)])
    root = np.concatenate([xy, f[:, FEATURE_SLICES["root_height"]]], axis=1)
    return root, yaw


def qpos_from_features(
    features: np.ndarray, fps: float, start_xy: tuple[float, float] = (0.0, 0.0), start_yaw: float = 0.0
) -> np.ndarray:
    """(T, 127) features -> (T, 26) H1 qpos: root integrated from velocities, orientation = Rz(yaw) * tilt,
    joint angles copied. Works on decoded (noisy) features too: the 6D rotation is re-orthonormalised."""
    f = check_features(features)
    root, yaw = root_trajectory(f, fps, start_xy, start_yaw)
    rot = rot_z(yaw) @ rot6d_to_mat(f[:, FEATURE_SLICES["root_rot6d"]])  # (T, 3, 3)
    return np.concatenate([root, mat_to_quat(rot), f[:, FEATURE_SLICES["joint_pos"]]], axis=1)


def key_points_from_features(
    features: np.ndarray, fps: float, start_xy: tuple[float, float] = (0.0, 0.0), start_yaw: float = 0.0
) -> np.ndarray:
    """World positions (T, 13, 3) of the key points described by the features: the integrated root plus the
    heading-frame offsets. These are the IK targets for playback."""
    f = check_features(features)
    root, yaw = root_trajectory(f, fps, start_xy, start_yaw)
    rel = f[:, FEATURE_SLICES["key_pos"]].reshape(len(f), robot.NUM_KEY_POINTS, 3)
    return root[:, None] + np.einsum("tij,tkj->tki", rot_z(yaw), rel)


def start_pose(qpos: np.ndarray) -> tuple[tuple[float, float], float]:
    """``(start_xy, start_yaw)`` of the first frame of a qpos trajectory, to anchor an inverse at the same spot."""
    rot = quat_to_mat(np.asarray(qpos[0, 3:7], dtype=np.float64))
    return (float(qpos[0, 0]), float(qpos[0, 1])), float(heading_of_mat(rot))
