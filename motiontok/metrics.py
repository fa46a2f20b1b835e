"""Motion-quality metrics (pure numpy): key-point error, joint-angle error, foot skate.

All key-point arrays are world positions in metres, shape (T, K, 3) with K = 13 in ``robot.KEY_POINTS``
order (any leading shape works for :func:`mpjpe_mm`). Results are in mm or degrees.
"""

from __future__ import annotations

import numpy as np

from motiontok import robot

CONTACT_MARGIN_M = 0.03
"""A foot point is in contact when it is less than this above the clip's low foot height."""
CONTACT_PERCENTILE = 5.0
"""Percentile of all foot-point heights of a clip that defines its ground level."""


def mpjpe_mm(pred_key_pos: np.ndarray, ref_key_pos: np.ndarray) -> float:
    """Mean per-joint position error (mm): Euclidean distance between predicted and reference key points,
    averaged over frames and key points. Shapes (..., K, 3), equal; inputs in metres."""
    pred, ref = np.asarray(pred_key_pos, np.float64), np.asarray(ref_key_pos, np.float64)
    if pred.shape != ref.shape or pred.shape[-1] != 3:
        raise ValueError(f"key-point arrays must have equal shapes (..., 3), got {pred.shape} and {ref.shape}")
    return float(np.linalg.norm(pred - ref, axis=-1).mean() * 1000.0)


def joint_rmse_deg(pred_joints: np.ndarray, ref_joints: np.ndarray) -> float:
    """Root-mean-square joint-angle error (degrees) over all frames and joints. Shapes (T, J), equal, radians
    (pass ``qpos[:, 7:]`` for the 19 H1 hinges; no angle wrapping, hinges have bounded ranges)."""
    pred, ref = np.asarray(pred_joints, np.float64), np.asarray(ref_joints, np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"joint arrays must have equal shapes, got {pred.shape} and {ref.shape}")
    return float(np.degrees(np.sqrt(np.mean((pred - ref) ** 2))))


def foot_contacts(
    key_pos: np.ndarray,
    foot_index: tuple[int, ...] = robot.FOOT_POINT_INDEX,
    margin_m: float = CONTACT_MARGIN_M,
    percentile: float = CONTACT_PERCENTILE,
) -> np.ndarray:
    """(T-1, F) bool: foot point f is in contact over the step t -> t+1.

    Ground level is the ``percentile``-th percentile of the heights (z) of all foot points over all frames of
    this clip; a point is low in a frame when its height is below ground level + ``margin_m``; a contact
    step needs the point low in both frames t and t+1."""
    key_pos = np.asarray(key_pos, np.float64)
    if key_pos.ndim != 3 or key_pos.shape[-1] != 3:
        raise ValueError(f"key_pos must have shape (T, K, 3), got {key_pos.shape}")
    height = key_pos[:, foot_index, 2]  # (T, F)
    threshold = np.percentile(height, percentile) + margin_m
    low = height < threshold
    return low[:-1] & low[1:]


def foot_skate_displacements_mm(
    key_pos: np.ndarray,
    foot_index: tuple[int, ...] = robot.FOOT_POINT_INDEX,
    margin_m: float = CONTACT_MARGIN_M,
    percentile: float = CONTACT_PERCENTILE,
) -> np.ndarray:
    """(N,) horizontal displacement (mm) of each contact step (see :func:`foot_contacts`): the xy distance a
    foot point moves from frame t to t+1 while in contact. N = number of contact steps (point x step)."""
    key_pos = np.asarray(key_pos, np.float64)
    contact = foot_contacts(key_pos, foot_index, margin_m, percentile)  # (T-1, F)
    xy = key_pos[:, foot_index, :2]  # (T, F, 2)
    step = np.linalg.norm(xy[1:] - xy[:-1], axis=-1) * 1000.0  # (T-1, F)
    return step[contact]


def foot_skate_mm(
    key_pos: np.ndarray,
    foot_index: tuple[int, ...] = robot.FOOT_POINT_INDEX,
    margin_m: float = CONTACT_MARGIN_M,
    percentile: float = CONTACT_PERCENTILE,
) -> float:
    """Foot skate (mm per frame): mean horizontal displacement of a foot point between consecutive frames,
    averaged over contact events.

    Foot points are ``robot.FOOT_POINT_INDEX`` (heels and toes on the soles). A contact event is one foot
    point over one step t -> t+1 with the point's height below (5th percentile of all foot-point heights of
    the clip + 0.03 m) in both frames. The value depends on the frame rate (it is per frame): compare clips
    at the same fps (30 for LAFAN1-H1). Returns 0.0 when the clip has no contact event. Points of a foot
    lifted above the others (more than the margin) are never in contact and do not count."""
    disp = foot_skate_displacements_mm(key_pos, foot_index, margin_m, percentile)
    return float(disp.mean()) if disp.size else 0.0
