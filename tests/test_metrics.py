"""Hand-computed cases for motiontok.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from motiontok import robot
from motiontok.metrics import (
    foot_contacts,
    foot_skate_displacements_mm,
    foot_skate_mm,
    joint_rmse_deg,
    mpjpe_mm,
)

HEEL_L, TOE_L, HEEL_R, TOE_R = robot.FOOT_POINT_INDEX


def _still_pose(t: int) -> np.ndarray:
    """(T, 13, 3) key points, all feet on the ground (z = 0), everything else at 1 m, nothing moving."""
    key = np.zeros((t, robot.NUM_KEY_POINTS, 3))
    key[:, :, 2] = 1.0
    key[:, list(robot.FOOT_POINT_INDEX), 2] = 0.0
    return key


def test_mpjpe_of_translated_points_is_the_offset():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(7, 13, 3))
    assert mpjpe_mm(ref + np.array([0.003, 0.004, 0.0]), ref) == pytest.approx(5.0, abs=1e-9)
    assert mpjpe_mm(ref, ref) == 0.0


def test_mpjpe_averages_over_points_and_frames():
    ref = np.zeros((2, 2, 3))
    pred = ref.copy()
    pred[0, 0, 0] = 0.004  # one point of one frame off by 4 mm, the three others exact
    assert mpjpe_mm(pred, ref) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mpjpe_mm(pred[:1], ref)


def test_joint_rmse_deg():
    ref = np.zeros((4, 2))
    pred = ref.copy()
    pred[:, 0] = 0.1  # 0.1 rad error on one of two joints in every frame
    assert joint_rmse_deg(pred, ref) == pytest.approx(math.degrees(math.sqrt(0.01 / 2)))
    assert joint_rmse_deg(ref, ref) == 0.0


def test_planted_feet_do_not_skate():
    key = _still_pose(10)
    assert foot_contacts(key).all()
    assert foot_skate_mm(key) == 0.0


def test_sliding_foot_gives_its_speed_per_frame():
    # Left foot slides on the ground at 0.3 m/s sampled at 30 fps = 10 mm per frame; the right foot is
    # lifted 0.2 m (never in contact) and moves fast, which must not count.
    t = 12
    key = _still_pose(t)
    x = np.arange(t) * 0.3 / 30.0
    key[:, [HEEL_L, TOE_L], 0] += x[:, None]
    key[:, [HEEL_R, TOE_R], 2] = 0.2
    key[:, [HEEL_R, TOE_R], 1] += np.arange(t)[:, None] * 0.05
    contacts = foot_contacts(key)
    assert contacts.shape == (t - 1, 4)
    assert contacts[:, :2].all() and not contacts[:, 2:].any()
    disp = foot_skate_displacements_mm(key)
    assert disp.shape == (2 * (t - 1),)
    np.testing.assert_allclose(disp, 10.0)
    assert foot_skate_mm(key) == pytest.approx(10.0)


def test_contact_needs_both_frames_low():
    # Left heel on the ground for frames 0..4, lifted 0.1 m from frame 5: contact only on steps 0->1 .. 3->4.
    key = _still_pose(10)
    key[5:, HEEL_L, 2] = 0.1
    key[:, HEEL_L, 0] = np.arange(10) * 0.002  # 2 mm per frame, also while lifted
    contacts = foot_contacts(key)
    np.testing.assert_array_equal(contacts[:, 0], np.arange(9) < 4)
    disp = foot_skate_displacements_mm(key)
    assert np.count_nonzero(disp) == 4
    assert disp.sum() == pytest.approx(8.0)
    assert foot_skate_mm(key) == pytest.approx(8.0 / (4 + 3 * 9))  # 4 sliding + 27 still contact steps


def test_threshold_is_relative_to_the_clip_ground_level():
    # The same sliding motion 1 m higher (e.g. a platform) still counts: ground = 5th percentile of heights.
    key = _still_pose(6)
    key[:, [HEEL_L, TOE_L], 0] += np.arange(6)[:, None] * 0.005
    raised = key.copy()
    raised[..., 2] += 1.0
    assert foot_skate_mm(raised) == pytest.approx(foot_skate_mm(key))
    # Margin: a point 2 cm above ground is in contact, 4 cm is not.
    key[:, HEEL_R, 2] = 0.02
    key[:, TOE_R, 2] = 0.04
    contacts = foot_contacts(key)
    assert contacts[:, 2].all() and not contacts[:, 3].any()


def test_no_contact_gives_zero():
    # Every foot point alternates between 0 and 0.1 m: never low in two consecutive frames.
    key = _still_pose(8)
    key[1::2, list(robot.FOOT_POINT_INDEX), 2] = 0.1
    key[:, list(robot.FOOT_POINT_INDEX), 0] = np.arange(8)[:, None] * 0.01
    assert not foot_contacts(key).any()
    assert foot_skate_displacements_mm(key).size == 0
    assert foot_skate_mm(key) == 0.0
