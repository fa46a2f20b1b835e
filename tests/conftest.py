"""Shared fixtures: tiny synthetic H1 clips, and the real LAFAN1-H1 directory when MOTIONTOK_DATA is set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from motiontok import robot
from motiontok.motion import MotionClip
from motiontok.rotations import mat_to_quat, quat_to_mat, rot_z

DATA_ENV = "MOTIONTOK_DATA"

# Tests use tiny tensors: one thread avoids oversubscribing small CI machines (and is faster at these sizes).
torch.set_num_threads(1)


def synthetic_qpos(num_frames: int = 40, fps: float = 30.0, seed: int = 0) -> np.ndarray:
    """A smooth, physically plausible H1 trajectory: walking forward while turning, tilting slightly, with
    every joint oscillating inside its range."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps
    yaw = 0.3 + 0.8 * t + 0.2 * np.sin(2 * t)
    tilt = np.stack([0.05 * np.sin(3 * t), 0.08 * np.cos(2 * t)], -1)  # roll, pitch
    rx = np.stack([quat_to_mat(np.array([np.cos(a / 2), np.sin(a / 2), 0, 0])) for a in tilt[:, 0]])
    ry = np.stack([quat_to_mat(np.array([np.cos(a / 2), 0, np.sin(a / 2), 0])) for a in tilt[:, 1]])
    rot = rot_z(yaw) @ ry @ rx
    pos = np.stack([0.5 + 0.9 * t, -0.2 + 0.3 * np.sin(t), 1.0 + 0.03 * np.sin(4 * t)], -1)
    lo, hi = robot.joint_limits().T
    mid, amp = (lo + hi) / 2, (hi - lo) / 4
    phase = rng.uniform(0, 2 * np.pi, robot.NUM_JOINTS)
    freq = rng.uniform(0.5, 2.0, robot.NUM_JOINTS)
    joints = mid + amp * np.sin(2 * np.pi * freq * t[:, None] + phase)
    return np.concatenate([pos, mat_to_quat(rot), joints], axis=1)


@pytest.fixture
def clip() -> MotionClip:
    return MotionClip("synthetic", synthetic_qpos(), 30.0, "synthetic")


def write_csv(path: Path, qpos: np.ndarray) -> Path:
    """Write qpos (T, 26) in the LAFAN1-H1 CSV layout (quaternion x, y, z, w)."""
    rows = np.concatenate([qpos[:, :3], qpos[:, 4:7], qpos[:, 3:4], qpos[:, 7:]], axis=1)
    np.savetxt(path, rows, delimiter=",", fmt="%.9f")
    return path


@pytest.fixture
def real_data_dir() -> Path:
    """The LAFAN1-H1 CSV directory named by MOTIONTOK_DATA (the test is skipped without it)."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"{DATA_ENV} is not set")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"{DATA_ENV}={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def reference_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point the tracking references' on-disk cache (``MOTIONTOK_CACHE``) at a temporary folder for the session."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MOTIONTOK_CACHE", str(tmp_path_factory.mktemp("reference-cache")))
    yield
    mp.undo()


SYNTHETIC_VAL = "val_subject9"
"""Validation clip of :func:`synthetic_dataset`."""


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HDF5 dataset of three synthetic training clips (70 frames) and one validation clip (64 frames)."""
    from motiontok.data import write_dataset

    clips = [MotionClip(f"train{i}_subject1", synthetic_qpos(70, seed=i), 30.0, f"train{i}_subject1") for i in range(3)]
    clips.append(MotionClip(SYNTHETIC_VAL, synthetic_qpos(64, seed=9), 30.0, SYNTHETIC_VAL))
    return write_dataset(clips, tmp_path_factory.mktemp("data") / "synthetic.h5")
