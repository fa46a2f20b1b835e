"""The 127-feature layout: shape, meaning of columns, and the features -> qpos -> features round trip."""

from __future__ import annotations

import numpy as np
import pytest

from motiontok import features as feat
from motiontok import robot
from motiontok.errors import MotionDataError
from motiontok.motion import MotionClip, load_csv
from motiontok.rotations import heading_of_mat, mat_to_quat, quat_mul, quat_to_mat, rot6d_to_mat, rot_z, wrap_angle

ROUND_TRIP_TOL = 1e-9
"""features -> qpos -> features is exact up to float error (integration inverts the backward differences)."""


def test_layout_is_127_named_columns():
    names = feat.feature_names()
    assert len(names) == feat.FEATURE_DIM == 127 and len(set(names)) == 127
    covered = sorted(i for s in feat.FEATURE_SLICES.values() for i in range(s.start, s.stop))
    assert covered == list(range(127))


def test_shape_and_column_meaning(clip):
    f = feat.clip_features(clip)
    assert f.shape == (clip.num_frames, 127)
    s = feat.FEATURE_SLICES
    np.testing.assert_allclose(f[:, s["root_height"]][:, 0], clip.qpos[:, 2])
    np.testing.assert_allclose(f[:, s["joint_pos"]], clip.qpos[:, 7:])
    np.testing.assert_allclose(f[3, s["joint_vel"]], (clip.qpos[3, 7:] - clip.qpos[2, 7:]) * clip.fps)
    # Root velocity in the heading frame has the world speed as its horizontal norm.
    world_v = (clip.qpos[3, :2] - clip.qpos[2, :2]) * clip.fps
    np.testing.assert_allclose(np.linalg.norm(f[3, s["root_lin_vel"]][:2]), np.linalg.norm(world_v), atol=1e-9)
    # The heading-free root rotation S is a pure swing: no twist about z, so S10 == S01 (rot6d columns 1 and 3).
    rot6d = f[:, s["root_rot6d"]]
    np.testing.assert_allclose(rot6d[:, 1], rot6d[:, 3], atol=1e-12)
    np.testing.assert_allclose(heading_of_mat(rot6d_to_mat(rot6d)), 0.0, atol=1e-12)


def test_features_are_invariant_to_where_the_robot_stands_and_faces(clip):
    """Moving and turning the whole clip about z changes no feature."""
    q = clip.qpos.copy()
    yaw = 1.1
    rz = np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])
    rot = quat_to_mat(rz)
    q[:, :3] = q[:, :3] @ rot.T + np.array([3.0, -2.0, 0.0])
    q[:, 3:7] = quat_mul(np.broadcast_to(rz, q[:, 3:7].shape), q[:, 3:7])
    np.testing.assert_allclose(feat.features_from_qpos(q, clip.fps), feat.clip_features(clip), atol=1e-9)


@pytest.mark.parametrize("fps", [30.0, 50.0, 100.0])
def test_round_trip_features_qpos_features(clip, fps):
    c = clip.resample(fps)
    f = feat.clip_features(c)
    xy, yaw = feat.start_pose(c.qpos)
    q = feat.qpos_from_features(f, fps, xy, yaw)
    np.testing.assert_allclose(q[:, :3], c.qpos[:, :3], atol=ROUND_TRIP_TOL)
    same_sign = np.sign(np.sum(q[:, 3:7] * c.qpos[:, 3:7], axis=-1, keepdims=True))
    np.testing.assert_allclose(q[:, 3:7] * same_sign, c.qpos[:, 3:7], atol=ROUND_TRIP_TOL)
    np.testing.assert_allclose(q[:, 7:], c.qpos[:, 7:], atol=ROUND_TRIP_TOL)
    np.testing.assert_allclose(feat.features_from_qpos(q, fps), f, atol=ROUND_TRIP_TOL)
    kp = feat.key_points_from_features(f, fps, xy, yaw)
    np.testing.assert_allclose(kp, c.kinematics().key_pos, atol=ROUND_TRIP_TOL)


def test_inverse_of_noisy_features_is_a_valid_pose(clip):
    f = feat.clip_features(clip) + np.random.default_rng(0).normal(0, 0.05, (clip.num_frames, 127))
    q = feat.qpos_from_features(f, clip.fps)
    np.testing.assert_allclose(np.linalg.norm(q[:, 3:7], axis=-1), 1.0, atol=1e-12)
    assert np.isfinite(q).all()
    # Start pose is honoured.
    q2 = feat.qpos_from_features(f, clip.fps, (1.0, 2.0), 0.5)
    np.testing.assert_allclose(q2[0, :2], [1.0, 2.0])
    assert heading_of_mat(quat_to_mat(q2[0, 3:7])) == pytest.approx(0.5 + heading_of_mat(quat_to_mat(q[0, 3:7])))


def test_bad_feature_input():
    with pytest.raises(MotionDataError, match=r"shape \(T, 127\)"):
        feat.qpos_from_features(np.zeros((5, 126)), 30.0)
    bad = np.zeros((5, 127))
    bad[2, 7] = np.nan
    with pytest.raises(MotionDataError, match="NaN"):
        feat.qpos_from_features(bad, 30.0)
    with pytest.raises(MotionDataError, match="qpos must have shape"):
        feat.features_from_qpos(np.zeros((4, 20)), 30.0)


def test_real_data_round_trip(real_data_dir):
    path = real_data_dir / "walk2_subject4.csv"
    if not path.exists():
        path = sorted(real_data_dir.glob("*.csv"))[0]
    c = load_csv(path)
    c = MotionClip(c.name, c.qpos[:600], c.fps, c.source)
    f = feat.clip_features(c)
    assert f.shape == (600, 127) and np.isfinite(f).all()
    xy, yaw = feat.start_pose(c.qpos)
    q = feat.qpos_from_features(f, c.fps, xy, yaw)
    np.testing.assert_allclose(q[:, :3], c.qpos[:, :3], atol=1e-8)
    np.testing.assert_allclose(q[:, 7:], c.qpos[:, 7:], atol=1e-12)
    np.testing.assert_allclose(feat.features_from_qpos(q, c.fps), f, atol=1e-8)
    assert robot.NUM_KEY_POINTS * 6 + 49 == 127


def _pitched_through_vertical(num_frames: int = 61, heading: float = 0.7) -> np.ndarray:
    """qpos of a body facing ``heading`` that pitches from upright to 120 degrees (past lying on its front), with
    a little roll: the pelvis x-axis passes through vertical, where the yaw of its ground projection flips."""
    q = np.tile(np.concatenate([[0.0, 0.0, 1.0], [1.0, 0, 0, 0], np.zeros(robot.NUM_JOINTS)]), (num_frames, 1))
    pitch = np.linspace(0.0, np.radians(120), num_frames)
    roll = 0.05 * np.sin(np.linspace(0, 3, num_frames))
    ry = quat_to_mat(np.stack([np.cos(pitch / 2), 0 * pitch, np.sin(pitch / 2), 0 * pitch], -1))
    rx = quat_to_mat(np.stack([np.cos(roll / 2), np.sin(roll / 2), 0 * roll, 0 * roll], -1))
    q[:, 3:7] = mat_to_quat(rot_z(np.full(num_frames, heading)) @ ry @ rx)
    return q


def test_heading_is_smooth_when_the_pelvis_pitches_through_vertical():
    q = _pitched_through_vertical()
    rot = quat_to_mat(q[:, 3:7])
    x_axis_yaw = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])  # the v1 heading: flips by ~pi at the vertical
    assert np.abs(wrap_angle(np.diff(x_axis_yaw))).max() > 2.0
    f = feat.features_from_qpos(q, 30.0)
    yaw_rate = f[:, feat.FEATURE_SLICES["root_yaw_rate"]][:, 0]
    assert np.abs(yaw_rate).max() < 2.0  # rad/s: only the roll couples into the twist
    np.testing.assert_allclose(heading_of_mat(rot[:1]), 0.7, atol=1e-12)  # pure pitch: heading unchanged
    qq = feat.qpos_from_features(f, 30.0, *feat.start_pose(q))
    np.testing.assert_allclose(feat.features_from_qpos(qq, 30.0), f, atol=ROUND_TRIP_TOL)


def test_real_data_heading_is_defined_in_every_frame(real_data_dir):
    """Every feature is finite on every frame of every clip, and no frame turns faster than the few single-frame
    pelvis snaps of the retargeted data (docs/heading.md: at most 31 rad/s, none in the fall/get-up clips, where
    the v1 heading reached 94 rad/s)."""
    from motiontok.motion import load_motions

    clips = load_motions(real_data_dir)
    assert len(clips) >= 4
    for c in clips:
        f = feat.clip_features(c)
        assert np.isfinite(f).all(), c.name
        rate = np.abs(f[:, feat.FEATURE_SLICES["root_yaw_rate"]][:, 0])
        assert rate.max() < 32.0, (c.name, rate.max())
        assert (rate > 25.0).sum() <= 2, c.name  # single-frame snaps only
        if c.name.startswith("fallAndGetUp"):
            assert rate.max() < 12.0, (c.name, rate.max())
