"""Per-window activity labels (control.labels): unambiguous synthetic windows, bad input, and the real files whose
theme fixes what most of their windows are."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from control.labels import window_label, window_labels
from motiontok import robot
from motiontok.features import clip_features, features_from_qpos
from motiontok.motion import load_motions
from motiontok.rotations import mat_to_quat, rot_z

FPS = 30.0


def moving_window(speed: float = 0.0, height: float = 0.98, yaw_rate: float = 0.0, hop: float = 0.0) -> np.ndarray:
    """(32, 127) features of the H1 home pose translated forward at ``speed`` (m/s), its pelvis at ``height`` (m),
    turning at ``yaw_rate`` (rad/s), and with a ballistic hop of ``hop`` m apex in the middle of the window."""
    t = np.arange(33) / FPS
    qpos = np.tile(robot.load_model().key("home").qpos, (len(t), 1))
    yaw = yaw_rate * t
    qpos[:, 0], qpos[:, 1] = speed * t, 0.0
    qpos[:, 2] = height
    if hop > 0:
        v0 = np.sqrt(2 * 9.81 * hop)
        s = t - t[8]
        qpos[:, 2] += np.clip(v0 * s - 0.5 * 9.81 * s**2, 0.0, None)
    qpos[:, 3:7] = mat_to_quat(rot_z(yaw))
    return features_from_qpos(qpos, FPS)[1:]


@pytest.mark.parametrize(
    ("window", "label"),
    [
        (dict(), "stand"),
        (dict(speed=0.2), "stand"),
        (dict(speed=1.2), "walk"),
        (dict(speed=3.5), "run"),
        (dict(yaw_rate=1.5), "turn"),
        (dict(height=0.3), "on_ground"),
        (dict(hop=0.3), "jump"),
        (dict(hop=0.3, speed=1.0), "jump"),
    ],
)
def test_window_label_on_unambiguous_synthetic_windows(window: dict, label: str) -> None:
    assert window_label(moving_window(**window), FPS) == label


def test_window_label_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        window_label(np.zeros((32, 126)), FPS)
    with pytest.raises(ValueError, match="fps"):
        window_label(moving_window(), 0.0)


def label_counts(data_dir: Path, stem: str) -> collections.Counter:
    (clip,) = load_motions(data_dir / f"{stem}.csv")
    return collections.Counter(window_labels(clip_features(clip), clip.fps))


def test_window_labels_on_real_motion(real_data_dir: Path) -> None:
    walk = label_counts(real_data_dir, "walk2_subject4")
    assert walk["walk"] > 0.6 * walk.total() and walk["on_ground"] == walk["jump"] == 0
    fall = label_counts(real_data_dir, "fallAndGetUp1_subject1")
    assert fall["on_ground"] > 0.15 * fall.total()
    jumps = label_counts(real_data_dir, "jumps1_subject1")
    assert jumps["jump"] > 0.15 * jumps.total()
    run = label_counts(real_data_dir, "run2_subject1")
    assert run.most_common(1)[0][0] == "run"
