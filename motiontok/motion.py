"""Motion clips of the H1: loading (LAFAN1-H1 CSV, LocoMuJoCo Trajectory ``.npz``), resampling, kinematics.

A :class:`MotionClip` is a qpos trajectory ``(T, 26) = [x, y, z, qw, qx, qy, qz, q_1..q_19]`` at a frame rate.
Everything else (velocities, key-point positions, COM) is derived from it with MuJoCo.
"""

from __future__ import annotations

import itertools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import mujoco
import numpy as np

from motiontok import robot
from motiontok.errors import MotionDataError
from motiontok.rotations import mat_to_quat, quat_normalize, quat_slerp

QUAT_NORM_TOL = 1e-3
"""A stored root quaternion whose norm differs from 1 by more than this is rejected."""
CSV_COLUMNS = 26


class Kinematics(NamedTuple):
    """Forward kinematics of a qpos trajectory."""

    key_pos: np.ndarray  # (T, 13, 3) world positions of robot.KEY_POINTS
    key_quat: np.ndarray  # (T, 13, 4) world orientations (w, x, y, z) of the key-point frames
    com: np.ndarray  # (T, 3) whole-body centre of mass, world frame


@dataclass(frozen=True)
class MotionClip:
    """One H1 motion: ``qpos`` (T, 26) sampled at ``fps``; ``name`` identifies it in datasets and reports,
    ``source`` is the stem of the file it came from (train/validation splits are made by file)."""

    name: str
    qpos: np.ndarray
    fps: float
    source: str = ""

    def __post_init__(self) -> None:
        qpos = np.asarray(self.qpos, dtype=np.float64)
        if qpos.ndim != 2 or qpos.shape[1] != robot.NQ:
            raise MotionDataError(f"{self.name}: qpos must have shape (T, {robot.NQ}), got {qpos.shape}")
        if len(qpos) < 2:
            raise MotionDataError(f"{self.name}: a clip needs at least 2 frames, got {len(qpos)}")
        if not np.isfinite(qpos).all():
            bad = int(np.argwhere(~np.isfinite(qpos))[0, 0])
            raise MotionDataError(f"{self.name}: non-finite value (NaN/inf) in frame {bad}")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise MotionDataError(f"{self.name}: fps must be positive, got {self.fps}")
        norm = np.linalg.norm(qpos[:, 3:7], axis=-1)
        off = np.abs(norm - 1.0) > QUAT_NORM_TOL
        if off.any():
            i = int(np.argmax(off))
            raise MotionDataError(f"{self.name}: root quaternion of frame {i} has norm {norm[i]:.4f}, not 1")
        qpos[:, 3:7] = quat_normalize(qpos[:, 3:7])
        object.__setattr__(self, "qpos", qpos)
        object.__setattr__(self, "fps", float(self.fps))

    @property
    def num_frames(self) -> int:
        return len(self.qpos)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (self.num_frames - 1) / self.fps

    def resample(self, fps: float) -> MotionClip:
        """The clip at another frame rate: linear interpolation of positions and joint angles, slerp of the root
        quaternion. Frames at time stamps shared with the original are reproduced exactly."""
        if fps == self.fps:
            return self
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        n = int(np.floor(self.duration * fps + 1e-9)) + 1
        u = np.arange(n) * (self.fps / fps)  # (n,) fractional source frame index
        i0 = np.minimum(np.floor(u + 1e-9).astype(int), self.num_frames - 2)
        a = np.clip(u - i0, 0.0, 1.0)  # (n,)
        q0, q1 = self.qpos[i0], self.qpos[i0 + 1]  # (n, 26)
        out = q0 + a[:, None] * (q1 - q0)
        out[:, 3:7] = quat_slerp(q0[:, 3:7], q1[:, 3:7], a)
        return MotionClip(self.name, out, fps, self.source)

    def qvel(self) -> np.ndarray:
        """(T, 25) MuJoCo generalized velocities by backward differences (frame 0 copies frame 1): world linear
        velocity of the root, root angular velocity in the root frame, 19 joint velocities."""
        model = robot.load_model()
        dt = 1.0 / self.fps
        qvel = np.zeros((self.num_frames, robot.NV))
        for t in range(1, self.num_frames):
            mujoco.mj_differentiatePos(model, qvel[t], dt, self.qpos[t - 1], self.qpos[t])
        qvel[0] = qvel[1]
        return qvel

    def kinematics(self) -> Kinematics:
        """Key-point poses and whole-body COM of every frame."""
        return forward_kinematics(self.qpos)


def forward_kinematics(qpos: np.ndarray) -> Kinematics:
    """MuJoCo forward kinematics of each row of ``qpos`` (T, 26)."""
    model = robot.load_model()
    data = mujoco.MjData(model)
    sites = robot.key_point_site_ids(model)
    n = len(qpos)
    key_pos = np.empty((n, robot.NUM_KEY_POINTS, 3))
    key_mat = np.empty((n, robot.NUM_KEY_POINTS, 3, 3))
    com = np.empty((n, 3))
    root = model.body(robot.ROOT_BODY).id
    for t in range(n):
        data.qpos[:] = qpos[t]
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        key_pos[t] = data.site_xpos[sites]
        key_mat[t] = data.site_xmat[sites].reshape(-1, 3, 3)
        com[t] = data.subtree_com[root]
    return Kinematics(key_pos, mat_to_quat(key_mat), com)


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_csv(path: str | Path, fps: float = robot.DATA_FPS) -> MotionClip:
    """One LAFAN1-H1 CSV file (no header, 26 columns: root xyz, root quaternion x y z w, 19 joint angles)."""
    path = Path(path)
    if not path.is_file():
        raise MotionDataError(f"{path}: no such file")
    text = path.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise MotionDataError(f"{path}: empty file")
    rows = np.empty((len(lines), CSV_COLUMNS))
    for i, line in enumerate(lines):
        cells = line.split(",")
        if len(cells) != CSV_COLUMNS:
            raise MotionDataError(f"{path}: line {i + 1} has {len(cells)} columns, expected {CSV_COLUMNS}")
        try:
            rows[i] = [float(c) for c in cells]
        except ValueError:
            raise MotionDataError(f"{path}: line {i + 1} holds a value that is not a number") from None
    if not np.isfinite(rows).all():
        i = int(np.argwhere(~np.isfinite(rows))[0, 0])
        raise MotionDataError(f"{path}: NaN or inf on line {i + 1}")
    qpos = np.concatenate([rows[:, 0:3], rows[:, 6:7], rows[:, 3:6], rows[:, 7:]], axis=1)  # xyzw -> wxyz
    return _clip(path.stem, qpos, fps, path)


def load_npz(path: str | Path) -> list[MotionClip]:
    """A LocoMuJoCo ``Trajectory`` file: flat arrays ``qpos`` (N, nq), optional ``split_points`` (clip
    boundaries into the stacked rows), ``frequency`` (Hz) and ``joint_names`` (used to reorder the hinges into
    H1 order; names may carry a ``_joint`` suffix). Quaternions are scalar-first."""
    path = Path(path)
    if not path.is_file():
        raise MotionDataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise MotionDataError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=True) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise MotionDataError(f"{path}: not a readable .npz file ({err})") from None
    if "qpos" not in arrays:
        raise MotionDataError(f"{path}: no 'qpos' array (found: {sorted(arrays)})")
    qpos = np.asarray(arrays["qpos"], dtype=np.float64)
    if qpos.ndim != 2 or len(qpos) == 0:
        raise MotionDataError(f"{path}: 'qpos' must be a non-empty 2-D array, got shape {qpos.shape}")
    if "frequency" not in arrays:
        raise MotionDataError(f"{path}: no 'frequency' entry, cannot tell the frame rate")
    fps = float(np.asarray(arrays["frequency"]).item())
    if "joint_names" in arrays and arrays["joint_names"].ndim == 1:
        qpos = _reorder_columns(path, qpos, [str(n) for n in arrays["joint_names"]])
    elif qpos.shape[1] != robot.NQ:
        raise MotionDataError(f"{path}: qpos has {qpos.shape[1]} columns, expected {robot.NQ} for the H1")
    bounds = [0, len(qpos)]
    if "split_points" in arrays:
        bounds = sorted({0, len(qpos), *(int(s) for s in np.asarray(arrays["split_points"]).ravel())})
        if bounds[0] < 0 or bounds[-1] > len(qpos):
            raise MotionDataError(f"{path}: split_points outside [0, {len(qpos)}]")
    clips = [
        _clip(f"{path.stem}_{i}" if len(bounds) > 2 else path.stem, qpos[a:b], fps, path)
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
        if b - a >= 2
    ]
    if not clips:
        raise MotionDataError(f"{path}: no clip of at least 2 frames")
    return clips


def load_motions(path: str | Path, fps: float | None = None) -> list[MotionClip]:
    """Every clip under ``path``: a directory of ``*.csv``/``*.npz`` files, one CSV, or one ``.npz``.
    With ``fps`` the clips are resampled to that rate. Clips are sorted by name."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".npz"))
        if not files:
            raise MotionDataError(f"{path}: directory holds no .csv or .npz motion files")
    elif path.is_file():
        files = [path]
    else:
        raise MotionDataError(f"{path}: no such file or directory")
    clips: list[MotionClip] = []
    for f in files:
        if f.suffix == ".csv":
            clips.append(load_csv(f))
        elif f.suffix == ".npz":
            clips.extend(load_npz(f))
        else:
            raise MotionDataError(f"{f}: unsupported motion file type (expected .csv or .npz)")
    if fps is not None:
        clips = [c.resample(fps) for c in clips]
    return sorted(clips, key=lambda c: c.name)


def _clip(name: str, qpos: np.ndarray, fps: float, path: Path) -> MotionClip:
    try:
        return MotionClip(name, qpos, fps, path.stem)
    except MotionDataError as err:
        raise MotionDataError(f"{path}: {str(err).split(': ', 1)[-1]}") from None


def _reorder_columns(path: Path, qpos: np.ndarray, joint_names: list[str]) -> np.ndarray:
    """Map a LocoMuJoCo qpos (free joint first, hinges in the file's order) onto H1 qpos order."""
    names = [n.removesuffix("_joint") for n in joint_names]
    if qpos.shape[1] != 7 + len(names) - 1:
        raise MotionDataError(f"{path}: qpos has {qpos.shape[1]} columns but joint_names implies {6 + len(names)}")
    hinge = {n: 7 + i for i, n in enumerate(names[1:])}
    missing = [n for n in robot.JOINT_NAMES if n not in hinge]
    if missing:
        raise MotionDataError(f"{path}: joints missing for the H1: {missing}")
    return np.concatenate([qpos[:, :7], qpos[:, [hinge[n] for n in robot.JOINT_NAMES]]], axis=1)
