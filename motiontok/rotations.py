"""Vectorised rotation helpers in numpy. Quaternions are scalar-first (w, x, y, z), as in MuJoCo.

Every function accepts arrays with arbitrary leading dimensions (``...``).
"""

from __future__ import annotations

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) (..., 4)."""
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b, (..., 4) x (..., 4) -> (..., 4)."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternion -> (..., 3, 3) rotation matrix."""
    q = np.asarray(q)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    m = np.empty((*q.shape[:-1], 3, 3), dtype=np.result_type(q.dtype, np.float32))  # filled entry by entry: the
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)  # control loop calls this on single states, where np.stack dominates
    m[..., 0, 1] = 2 * (x * y - w * z)
    m[..., 0, 2] = 2 * (x * z + w * y)
    m[..., 1, 0] = 2 * (x * y + w * z)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - w * x)
    m[..., 2, 0] = 2 * (x * z - w * y)
    m[..., 2, 1] = 2 * (y * z + w * x)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def mat_to_quat(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrix -> (..., 4) unit quaternion with w >= 0 (Shepperd's method)."""
    m = np.asarray(m, dtype=np.float64)
    lead = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # Four candidate (unnormalised) quaternions; pick the numerically largest diagonal term per row.
    cands = np.stack(
        [
            np.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
            np.stack(
                [
                    m[:, 2, 1] - m[:, 1, 2],
                    1 + 2 * m[:, 0, 0] - tr,
                    m[:, 0, 1] + m[:, 1, 0],
                    m[:, 0, 2] + m[:, 2, 0],
                ],
                -1,
            ),
            np.stack(
                [
                    m[:, 0, 2] - m[:, 2, 0],
                    m[:, 0, 1] + m[:, 1, 0],
                    1 + 2 * m[:, 1, 1] - tr,
                    m[:, 1, 2] + m[:, 2, 1],
                ],
                -1,
            ),
            np.stack(
                [
                    m[:, 1, 0] - m[:, 0, 1],
                    m[:, 0, 2] + m[:, 2, 0],
                    m[:, 1, 2] + m[:, 2, 1],
                    1 + 2 * m[:, 2, 2] - tr,
                ],
                -1,
            ),
        ],
        axis=1,
    )  # (N, 4 candidates, 4)
    choice = np.argmax(np.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1), axis=-1)  # (N,)
    q = cands[np.arange(len(m)), choice]
    q = quat_normalize(q)
    q = np.where(q[:, :1] < 0, -q, q)
    return q.reshape(*lead, 4)


def quat_slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; t in [0, 1] broadcast as (...,)."""
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)  # shorter arc
    dot = np.clip(np.abs(dot), -1.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    small = sin_theta < 1e-8
    safe = np.where(small, 1.0, sin_theta)
    w0 = np.where(small, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(small, t, np.sin(t * theta) / safe)
    return quat_normalize(w0 * q0 + w1 * q1)


def heading_of_mat(m: np.ndarray) -> np.ndarray:
    """Heading angle (..., 3, 3) -> (...): the twist of R about world z in its swing-twist decomposition.

    Every rotation factors as ``R = Rz(heading) S`` with ``S`` a rotation about a horizontal axis (the swing: pitch
    and roll, no turn). With R as a quaternion (w, x, y, z), ``heading = 2 atan2(z, w)``; from the matrix,
    ``atan2(R10 - R01, R00 + R11)``. Unlike the yaw of one body axis projected on the ground (undefined when
    that axis is vertical: lying down, getting up, a pitched jump), this is smooth for every orientation except
    one whose z-axis points straight down (swing of 180 degrees, since ``w^2 + z^2 = (1 + R22) / 2``). For an
    upright body it equals the yaw of the x-axis to second order in the tilt."""
    return np.arctan2(m[..., 1, 0] - m[..., 0, 1], m[..., 0, 0] + m[..., 1, 1])


def rot_z(yaw: np.ndarray) -> np.ndarray:
    """(...,) yaw angles -> (..., 3, 3) rotations about world z."""
    c, s = np.cos(yaw), np.sin(yaw)
    zero, one = np.zeros_like(yaw), np.ones_like(yaw)
    return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1), np.stack([zero, zero, one], -1)], axis=-2)


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Wrap angles to [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def mat_to_rot6d(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two columns, column-major (c0x, c0y, c0z, c1x, c1y, c1z)."""
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def rot6d_to_mat(r: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt; exact inverse of :func:`mat_to_rot6d` on rotations."""
    a, b = r[..., :3], r[..., 3:6]
    c0 = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-9)
    b = b - np.sum(c0 * b, axis=-1, keepdims=True) * c0
    c1 = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-9)
    c2 = np.cross(c0, c1)
    return np.stack([c0, c1, c2], axis=-1)
