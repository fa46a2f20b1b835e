"""Motion loading (CSV, npz), validation of bad input, resampling, kinematics."""

from __future__ import annotations

import numpy as np
import pytest

from motiontok import robot
from motiontok.errors import MotionDataError
from motiontok.motion import MotionClip, forward_kinematics, load_csv, load_motions, load_npz
from motiontok.rotations import quat_to_mat
from tests.conftest import synthetic_qpos, write_csv


def test_csv_round_trip_reorders_quaternion(tmp_path):
    qpos = synthetic_qpos(12)
    clip = load_csv(write_csv(tmp_path / "walk9_subject7.csv", qpos))
    assert clip.name == "walk9_subject7" and clip.source == "walk9_subject7" and clip.fps == 30.0
    np.testing.assert_allclose(clip.qpos, qpos, atol=1e-8)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("1,2,3\n", "line 1 has 3 columns, expected 26"),
        (",".join(["0"] * 26) + "\n" + ",".join(["0"] * 25) + "\n", "line 2 has 25 columns"),
        (",".join(["nan"] + ["0"] * 25), "NaN or inf on line 1"),
        (",".join(["0"] * 3 + ["0", "0", "0", "1"] + ["inf"] + ["0"] * 18), "NaN or inf on line 1"),
        (",".join(["0"] * 3 + ["0", "0", "0", "1.5"] + ["0"] * 19) * 1 + "\n" + ",".join(["0"] * 26), "norm"),
        (",".join(["abc"] * 26), "not a number"),
    ],
)
def test_bad_csv_gives_one_clear_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(MotionDataError) as err:
        load_csv(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_paths(tmp_path):
    with pytest.raises(MotionDataError, match="no such file or directory"):
        load_motions(tmp_path / "nope")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(MotionDataError, match=r"holds no \.csv or \.npz"):
        load_motions(empty)


def test_npz_with_split_points_and_joint_names(tmp_path):
    a, b = synthetic_qpos(10, seed=1), synthetic_qpos(7, seed=2)
    stacked = np.concatenate([a, b])
    # LocoMuJoCo names with a suffix and hinges in reversed order: the loader must put them back.
    names = ["root"] + [f"{j}_joint" for j in reversed(robot.JOINT_NAMES)]
    shuffled = np.concatenate([stacked[:, :7], stacked[:, 7:][:, ::-1]], axis=1)
    path = tmp_path / "traj.npz"
    np.savez(
        path,
        qpos=shuffled,
        qvel=np.zeros((17, 25)),
        split_points=np.array([0, 10, 17]),
        frequency=np.array(50.0),
        joint_names=np.array(names),
    )
    clips = load_npz(path)
    assert [c.name for c in clips] == ["traj_0", "traj_1"]
    assert all(c.fps == 50.0 and c.source == "traj" for c in clips)
    np.testing.assert_allclose(clips[0].qpos, a, atol=1e-12)
    np.testing.assert_allclose(clips[1].qpos, b, atol=1e-12)
    assert len(load_motions(tmp_path)) == 2  # a directory with one npz


def test_bad_npz(tmp_path):
    no_qpos = tmp_path / "no_qpos.npz"
    np.savez(no_qpos, qvel=np.zeros((3, 25)), frequency=np.array(30.0))
    with pytest.raises(MotionDataError, match=r"no_qpos.npz: no 'qpos' array"):
        load_npz(no_qpos)
    no_freq = tmp_path / "no_freq.npz"
    np.savez(no_freq, qpos=synthetic_qpos(5))
    with pytest.raises(MotionDataError, match="frequency"):
        load_npz(no_freq)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(MotionDataError, match=r"garbage.npz: not a readable .npz"):
        load_npz(garbage)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, qpos=np.zeros((4, 20)), frequency=np.array(30.0))
    with pytest.raises(MotionDataError, match="expected 26"):
        load_npz(wrong)


@pytest.mark.parametrize("fps", [50.0, 100.0, 60.0, 20.0])
def test_resample_keeps_unit_quaternions_and_matches_shared_stamps(clip, fps):
    out = clip.resample(fps)
    assert out.fps == fps
    np.testing.assert_allclose(np.linalg.norm(out.qpos[:, 3:7], axis=-1), 1.0, atol=1e-12)
    assert out.duration == pytest.approx(clip.duration, abs=1.0 / fps)
    # Time stamps present in both grids: k / gcd-rate.
    t_src = np.arange(clip.num_frames) / clip.fps
    t_dst = np.arange(out.num_frames) / fps
    shared = [(i, j) for i, ts in enumerate(t_src) for j, td in enumerate(t_dst) if abs(ts - td) < 1e-9]
    assert len(shared) >= 3
    for i, j in shared:
        np.testing.assert_allclose(out.qpos[j], clip.qpos[i], atol=1e-12)


def test_resample_slerp_is_on_the_great_circle():
    """Half-way between two root orientations 90 degrees apart about z is the 45 degree rotation."""
    qpos = np.zeros((2, 26))
    qpos[0, 3] = 1.0
    qpos[1, 3:7] = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]
    mid = MotionClip("turn", qpos, 1.0).resample(2.0).qpos[1, 3:7]
    np.testing.assert_allclose(mid, [np.cos(np.pi / 8), 0, 0, np.sin(np.pi / 8)], atol=1e-12)


def test_clip_validation():
    with pytest.raises(MotionDataError, match="at least 2 frames"):
        MotionClip("x", synthetic_qpos(1), 30.0)
    with pytest.raises(MotionDataError, match="shape"):
        MotionClip("x", np.zeros((5, 25)), 30.0)
    with pytest.raises(MotionDataError, match="fps"):
        MotionClip("x", synthetic_qpos(3), 0.0)


def test_forward_kinematics_matches_site_offsets(clip):
    kin = forward_kinematics(clip.qpos[:3])
    assert kin.key_pos.shape == (3, robot.NUM_KEY_POINTS, 3) and kin.com.shape == (3, 3)
    # The head site is a fixed offset on the torso: check it against torso pose computed by hand.
    model = robot.load_model()
    import mujoco

    data = mujoco.MjData(model)
    data.qpos[:] = clip.qpos[0]
    mujoco.mj_kinematics(model, data)
    torso = model.body("torso_link").id
    head = data.xpos[torso] + data.xmat[torso].reshape(3, 3) @ np.array([0.045, 0.0, 0.68])
    np.testing.assert_allclose(kin.key_pos[0, robot.KEY_POINT_NAMES.index("head")], head, atol=1e-12)
    np.testing.assert_allclose(quat_to_mat(kin.key_quat[0, 0]), data.site_xmat[0].reshape(3, 3), atol=1e-9)
    # COM lies within the robot's extent, around pelvis height.
    assert 0.5 < kin.com[0, 2] < 1.4


def test_qvel_matches_finite_differences(clip):
    qvel = clip.qvel()
    assert qvel.shape == (clip.num_frames, robot.NV)
    np.testing.assert_allclose(qvel[5, :3], (clip.qpos[5, :3] - clip.qpos[4, :3]) * clip.fps, atol=1e-9)
    np.testing.assert_allclose(qvel[5, 6:], (clip.qpos[5, 7:] - clip.qpos[4, 7:]) * clip.fps, atol=1e-9)
    np.testing.assert_allclose(qvel[0], qvel[1])


def test_real_csv_directory(real_data_dir):
    clips = load_motions(real_data_dir)
    assert len(clips) >= 1
    for c in clips[:3]:
        assert c.fps == 30.0 and c.qpos.shape[1] == 26
        np.testing.assert_allclose(np.linalg.norm(c.qpos[:, 3:7], axis=-1), 1.0, atol=1e-12)
