"""IK playback (motiontok.ik) on small synthetic clips, optionally real data, and the eval CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from motiontok import robot
from motiontok.features import features_from_qpos, start_pose
from motiontok.ik import (
    MPJPE_TOLERANCE_MM,
    IKSolver,
    ik_targets_from_features,
    playback_features,
    solve_ik,
)
from motiontok.metrics import joint_rmse_deg, mpjpe_mm
from motiontok.motion import forward_kinematics, load_motions

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "eval_ik_playback.py"
FPS = 30.0


def synthetic_qpos(t: int = 20, seed: int = 0) -> np.ndarray:
    """(T, 26) smooth motion: joints oscillate around mid-range within 60% of each range (elbows kept bent,
    away from the straight-arm singularity), the root walks forward while turning and bobbing."""
    rng = np.random.default_rng(seed)
    lim = robot.joint_limits()  # (19, 2)
    mid, half = lim.mean(1), 0.5 * (lim[:, 1] - lim[:, 0])
    half = np.minimum(half, 0.6)  # at most +-0.6 rad of swing
    phase = rng.uniform(0, 2 * np.pi, robot.NUM_JOINTS)
    s = np.arange(t) / FPS  # (T,) seconds
    joints = mid + 0.6 * half * np.sin(2 * np.pi * 0.8 * s[:, None] + phase)  # (T, 19)
    yaw = 0.3 + 0.5 * s
    qpos = np.zeros((t, robot.NQ))
    qpos[:, 0] = 0.8 * s
    qpos[:, 1] = 0.1 * np.sin(s)
    qpos[:, 2] = 1.0 + 0.02 * np.sin(6 * s)
    qpos[:, 3] = np.cos(yaw / 2)
    qpos[:, 6] = np.sin(yaw / 2)  # rotation about z
    qpos[:, 7:] = joints
    return qpos


def write_csv(path: Path, qpos: np.ndarray) -> Path:
    """LAFAN1-H1 CSV: root xyz, root quaternion x y z w, 19 joint angles."""
    rows = np.concatenate([qpos[:, :3], qpos[:, 4:7], qpos[:, 3:4], qpos[:, 7:]], axis=1)
    np.savetxt(path, rows, delimiter=",", fmt="%.9f")
    return path


def test_ik_reproduces_true_key_points_and_joints():
    qpos = synthetic_qpos()
    key = forward_kinematics(qpos).key_pos  # (T, 13, 3)
    out = solve_ik(key, qpos[:, :7], init_joints=qpos[0, 7:])  # pure key-point IK (posture: previous frame)
    assert out.shape == qpos.shape
    assert mpjpe_mm(forward_kinematics(out).key_pos, key) < 0.5
    assert joint_rmse_deg(out[:, 7:], qpos[:, 7:]) < 0.5
    np.testing.assert_allclose(out[:, :3], qpos[:, :3], atol=1e-4)  # root follows its target


def test_playback_features_matches_reference():
    qpos = synthetic_qpos(seed=1)
    feats = features_from_qpos(qpos, FPS)
    xy, yaw = start_pose(qpos)
    key, root = ik_targets_from_features(feats, FPS, xy, yaw)
    ref_key = forward_kinematics(qpos).key_pos
    np.testing.assert_allclose(key, ref_key, atol=1e-9)  # features -> targets is exact
    np.testing.assert_allclose(root[:, :3], qpos[:, :3], atol=1e-9)
    for from_features in (True, False):
        out = playback_features(feats, FPS, xy, yaw, posture_from_features=from_features)
        assert mpjpe_mm(forward_kinematics(out).key_pos, ref_key) < 0.5
        assert joint_rmse_deg(out[:, 7:], qpos[:, 7:]) < 0.5


def test_unreachable_targets_respect_joint_limits():
    qpos = synthetic_qpos(t=6, seed=2)
    key = forward_kinematics(qpos).key_pos.copy()
    key[:, robot.KEY_POINT_NAMES.index("left_hand")] += [0.0, 2.0, 0.0]  # 2 m to the side: out of reach
    key[:, robot.KEY_POINT_NAMES.index("right_toe")] += [1.5, 0.0, 1.0]
    key[:, robot.KEY_POINT_NAMES.index("head")] += [0.0, 0.0, -0.8]
    init = qpos[0, 7:] + 5.0  # far outside the ranges: clipped before solving
    solver = IKSolver()
    out = solver.solve(key, qpos[:, :7], init_joints=init)
    lim = robot.joint_limits()
    assert np.isfinite(out).all()
    assert (out[:, 7:] >= lim[:, 0] - 1e-9).all() and (out[:, 7:] <= lim[:, 1] + 1e-9).all()
    assert solver.last_errors.min() > 0.5  # it really could not reach them
    assert (solver.iterations <= solver.config.max_iters).all()


def test_warm_start_from_previous_frame():
    qpos = synthetic_qpos(t=3, seed=3)
    key = forward_kinematics(qpos).key_pos
    solver = IKSolver()
    solver.reset(qpos[0, 7:])
    _, err0, steps0 = solver.step(key[0], qpos[0, :7])
    assert steps0 == 0 and err0 < 1e-9  # started at the exact pose
    q1, err1, steps1 = solver.step(key[1], qpos[1, :7])
    assert 1 <= steps1 <= 3 and err1 < solver.config.tol_m
    # Frame 2's targets are exactly where frame 1's solution is: no step needed, output unchanged.
    target2 = forward_kinematics(q1[None]).key_pos[0]
    q2, err2, steps2 = solver.step(target2, q1[:7])
    assert steps2 == 0 and err2 < 1e-9
    np.testing.assert_array_equal(q2, q1)
    # The same frame from a cold start (all joints zero) takes more steps.
    cold = IKSolver()
    cold.reset(np.zeros(robot.NUM_JOINTS))
    _, _, cold_steps = cold.step(key[1], qpos[1, :7])
    assert cold_steps > steps1


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MOTIONTOK_DATA"), reason="set MOTIONTOK_DATA to a LAFAN1-H1 CSV dir")
def test_real_clip_within_tolerance():
    data = Path(os.environ["MOTIONTOK_DATA"])
    preferred = data / "walk2_subject4.csv"
    path = preferred if preferred.is_file() else sorted(data.glob("*.csv"))[0]
    clip = load_motions(path)[0]
    qpos = clip.qpos[:150]
    feats = features_from_qpos(qpos, clip.fps)
    out = playback_features(feats, clip.fps, *start_pose(qpos))
    err = mpjpe_mm(forward_kinematics(out).key_pos, forward_kinematics(qpos).key_pos)
    assert err < MPJPE_TOLERANCE_MM, f"{clip.name}: mpjpe {err:.3f} mm"


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_cli_json_on_tiny_csv(tmp_path):
    csv = write_csv(tmp_path / "tiny_walk.csv", synthetic_qpos(t=30, seed=4))
    proc = _run_cli("--data", str(csv), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # stdout holds exactly one JSON object
    assert result["source"] == "ground_truth"
    assert result["clips"] == ["tiny_walk"] and result["frames"] == 30
    assert set(result["per_clip"]) == {"tiny_walk"}
    assert result["mpjpe_mm"] < 0.5 and result["joint_rmse_deg"] < 0.5
    assert result["ik_fps"] > 0
    assert result["foot_skate_mm"] >= 0 and result["ref_foot_skate_mm"] >= 0
    assert result["foot_skate_mm"] == pytest.approx(result["ref_foot_skate_mm"], abs=0.5)
    assert result["per_clip"]["tiny_walk"]["mpjpe_mm"] == pytest.approx(result["mpjpe_mm"])


def test_cli_missing_path_exits_2(tmp_path):
    missing = tmp_path / "nowhere" / "clips"
    proc = _run_cli("--data", str(missing), "--json")
    assert proc.returncode == 2
    assert str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.slow
def test_cli_video_side_by_side(tmp_path):
    csv = write_csv(tmp_path / "tiny_clip.csv", synthetic_qpos(t=10, seed=5))
    video = tmp_path / "out" / "side.mp4"
    proc = _run_cli("--data", str(csv), "--json", "--video", str(video), "--video-seconds", "0.2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    if "video_error" in result:  # headless machine without EGL/OSMesa: nothing to check
        pytest.skip(f"offscreen rendering unavailable: {result['video_error']}")
    assert result["video_frames"] == 4  # 0.2 s at 30 fps = frames 0..6, every 2nd frame for 15 fps
    import imageio.v2 as imageio

    with imageio.get_reader(str(video)) as reader:
        frames = list(reader.iter_data())
    assert len(frames) == 4
    assert frames[0].shape == (240, 640, 3)  # two 320x240 panels side by side
    left, right = frames[-1][:, :320].astype(float), frames[-1][:, 320:].astype(float)
    assert np.abs(left - right).mean() < 10  # IK reproduces the reference: the panels look alike
