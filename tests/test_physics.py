"""Physics mode of run_policy.py: planned windows as references, a simulation that follows plan after plan, the
robot's own recent motion as the next context, the fall test, and the script end to end with a small policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from control.lowlevel import PolicyConfig, PPOConfig, make_ppo, save_policy
from control.physics import TokenExecutor, fallen, resample_tail
from control.runner import Plan
from envs.reference import ReferenceLibrary, step_arrays
from envs.tracking import TrackingConfig, TrackingSim
from envs.vec_env import H1TrackingVecEnv
from motiontok import MotionTokenizer, robot
from motiontok.motion import MotionClip
from motiontok.rotations import mat_to_quat, rot_z
from tests.conftest import synthetic_qpos
from tests.test_run_policy import _run, highlevel_dir  # noqa: F401 (fixture)

SMALL = PolicyConfig(embed_dim=8, conv_channels=8, token_features=16, net_arch=[32])

pytestmark = pytest.mark.usefixtures("reference_cache")


@pytest.fixture(scope="module")
def tokenizer() -> MotionTokenizer:
    return MotionTokenizer.load()


@pytest.fixture(scope="module")
def walk(tokenizer: MotionTokenizer) -> ReferenceLibrary:
    return ReferenceLibrary.build([MotionClip("walk9_subject0", synthetic_qpos(64, seed=3), 30.0)], tokenizer)


@pytest.fixture(scope="module")
def lowlevel_dir(walk: ReferenceLibrary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small low-level policy on the shipped tokenizer's tokens."""
    env = H1TrackingVecEnv(walk, 2, TrackingConfig(num_threads=1))
    model = make_ppo(env, env.sim.layout, walk.vocab_size, SMALL, PPOConfig(n_steps=8, batch_size=16), seed=0)
    path = save_policy(tmp_path_factory.mktemp("ll") / "ll", model, env, {"policy": vars(SMALL), "env": {}}, False)
    env.close()
    return path


def test_a_plan_becomes_the_reference_its_greedy_codes_would_build(tokenizer: MotionTokenizer) -> None:
    """step_arrays on a window and its own greedy codes = what ReferenceLibrary.build makes of that clip."""
    clip = MotionClip("walk8_subject0", synthetic_qpos(32, seed=5), 30.0)
    built = ReferenceLibrary.build([clip], tokenizer)
    decoded = tokenizer.decode(torch.from_numpy(built.tokens)).double().numpy()[0]  # (32, 127)
    arrays = step_arrays(clip, built.tokens, decoded, 100.0)
    planned = ReferenceLibrary.from_parts([clip.name], [arrays], built.tokenizer_id, built.vocab_size, 100.0)
    for name in ("qpos", "key_local", "tokens", "window", "phase", "decoded_joints", "decoded_root"):
        np.testing.assert_allclose(getattr(planned, name), getattr(built, name), atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="do not match"):
        step_arrays(clip, built.tokens, decoded[:31], 100.0)


def test_resample_tail_ends_on_the_last_state() -> None:
    """Joint angles linear in time: the tail at 30 fps holds the values at t_end - k/30 exactly."""
    t = np.arange(250) / 100.0
    qpos = np.tile(robot.load_model().key("home").qpos, (250, 1))
    qpos[:, 7] = 0.1 + 0.3 * t
    tail = resample_tail(qpos, 100.0, 30.0, 32)
    expected = 0.1 + 0.3 * (t[-1] - np.arange(31, -1, -1) / 30.0)
    np.testing.assert_allclose(tail[:, 7], expected, atol=1e-12)
    with pytest.raises(ValueError, match="fewer"):
        resample_tail(qpos[:50], 100.0, 30.0, 32)


def test_fall_test() -> None:
    home = robot.load_model().key("home").qpos.copy()
    assert not fallen(home)
    low = home.copy()
    low[2] = 0.4
    tilted = home.copy()
    tilted[3:7] = mat_to_quat(np.array([[1, 0, 0], [0, np.cos(1.2), -np.sin(1.2)], [0, np.sin(1.2), np.cos(1.2)]]))
    turned = home.copy()
    turned[3:7] = mat_to_quat(rot_z(np.array(2.0)))  # a heading is not a fall
    assert fallen(low) and fallen(tilted) and not fallen(turned)


def test_executor_follows_plans_without_a_reset(tokenizer: MotionTokenizer, lowlevel_dir: Path) -> None:
    """The second window goes on from the robot's state after the first, steps its new reference from step 0,
    and the context of the next plan ends on the robot's current state."""
    ex = TokenExecutor(tokenizer, lowlevel_dir)
    clip = MotionClip("plan", synthetic_qpos(32, seed=1), 30.0)
    features = np.zeros((32, 127))
    plans = [
        Plan(np.full(64, i, np.int64), features + i, clip.qpos, np.zeros((32, 3)), np.zeros((32, 3))) for i in (3, 7)
    ]
    states, _ = ex.execute(plans[0])
    before = ex.sim.qpos[0].copy()
    ex.sim.follow(ex.reference(plans[1]))
    np.testing.assert_array_equal(ex.sim.qpos[0], before)  # following is not a reset
    assert ex.sim.idx[0] == 0 and (ex.sim.observe()[0, :64] == 7).all()  # the new plan's tokens
    _, qpos, com = ex.recent()
    np.testing.assert_allclose(qpos[-1], states[-1], atol=1e-12)
    assert qpos.shape == (32, 26) and com.shape == (32, 3)
    ex.close()


def test_physics_run_reports_its_metrics(highlevel_dir: Path, lowlevel_dir: Path, capsys) -> None:  # noqa: F811
    code, out, err = _run(capsys, "--text", "walk", "--seconds", "2", "--highlevel", str(highlevel_dir),
                          "--lowlevel", str(lowlevel_dir), "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == "physics" and isinstance(result["fell"], bool)
    assert 0 < result["seconds_simulated"] <= 2.0 and result["replans"] >= 1
    if not result["fell"]:
        assert result["seconds_simulated"] == 2.0 and result["replans"] == 2
    assert np.isfinite(result["com_goal_error"]) and result["realtime_factor"] > 0


def test_physics_refuses_a_policy_of_another_tokenizer(
    highlevel_dir: Path,  # noqa: F811
    lowlevel_dir: Path,
    tmp_path: Path,
    capsys,
) -> None:
    cfg = json.loads((lowlevel_dir / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((lowlevel_dir / "model.safetensors").read_bytes())
    (other / "config.json").write_text(json.dumps({**cfg, "tokenizer_id": "0123456789abcdef"}))
    code, _, err = _run(capsys, "--text", "walk", "--seconds", "1", "--highlevel", str(highlevel_dir),
                        "--lowlevel", str(other))  # fmt: skip
    assert code == 2 and "trained on the tokens of tokenizer" in err, err


def test_shipped_lowlevel_policy_loads_with_the_shipped_tokenizer(tokenizer: MotionTokenizer) -> None:
    """The shipped policy's tokenizer fingerprint is the shipped tokenizer's, and it acts on a plan's reference."""
    shipped = Path(__file__).resolve().parent.parent / "assets" / "checkpoints" / "lowlevel_h1"
    ex = TokenExecutor(tokenizer, shipped)
    clip = MotionClip("plan", synthetic_qpos(32, seed=2), 30.0)
    plan = Plan(np.arange(64, dtype=np.int64), np.zeros((32, 127)), clip.qpos, np.zeros((32, 3)), np.zeros((32, 3)))
    states, _ = ex.execute(plan)
    assert len(states) >= 1 and np.isfinite(states).all()
    assert not (ex.sim.prev_action == 0).all()  # the policy acted
    ex.close()


def test_act_is_step_without_scoring(walk: ReferenceLibrary) -> None:
    """The inference step moves the robot, the reference and the previous action exactly as the training step."""
    sims = [TrackingSim(walk, 2, TrackingConfig(num_threads=1), seed=0) for _ in range(2)]
    rng = np.random.default_rng(0)
    for sim in sims:
        sim.reset(starts=np.array([3, 40]))
    for _ in range(5):
        action = rng.uniform(-1, 1, (2, robot.NU))
        sims[0].step(action)
        sims[1].act(action)
    for name in ("qpos", "qvel", "idx", "ep_steps", "prev_action"):
        np.testing.assert_array_equal(getattr(sims[0], name), getattr(sims[1], name), err_msg=name)
    np.testing.assert_array_equal(sims[0].observe(), sims[1].observe())


def test_a_fall_ends_the_window_unless_restarting(tokenizer: MotionTokenizer, lowlevel_dir: Path) -> None:
    """A plan that starts with the pelvis at 0.3 m has fallen at once: the window stops after one step, or (the
    benchmark's mode) runs all its steps from the plan's start again and again."""
    low = synthetic_qpos(32, seed=1)
    low[:, 2] = 0.3
    plan = Plan(np.full(64, 5, np.int64), np.zeros((32, 127)), low, np.zeros((32, 3)), np.zeros((32, 3)))
    stop, restart = TokenExecutor(tokenizer, lowlevel_dir), TokenExecutor(tokenizer, lowlevel_dir)
    states, fell = stop.execute(plan)
    assert fell and len(states) == 1
    states, fell = restart.execute(plan, restart_on_fall=True)
    assert fell and len(states) == restart.reference(plan).num_steps
    stop.close()
    restart.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
