"""The H1 tracking environment: reference tables, reward terms, observations, vectorisation, stability, checkers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.gym_env import H1TrackingEnv
from envs.observations import NUM_TOKENS, ObsLayout
from envs.reference import ReferenceLibrary, load_reference, local_key_points, theme_of, tokenizer_fingerprint
from envs.rewards import RewardConfig, reward_terms, tracking_errors
from envs.tracking import TrackingConfig, TrackingSim, build_model
from envs.vec_env import H1TrackingVecEnv
from motiontok import MotionTokenizer, robot
from motiontok import features as feat
from motiontok.errors import MotionDataError
from motiontok.motion import MotionClip
from tests.conftest import synthetic_qpos, write_csv

pytestmark = pytest.mark.usefixtures("reference_cache")


@pytest.fixture(scope="module")
def tokenizer() -> MotionTokenizer:
    return MotionTokenizer.load()


def standing_clip(frames: int = 96) -> MotionClip:
    home = robot.load_model().key("home").qpos.copy()
    return MotionClip("stand1_subject0", np.tile(home, (frames, 1)), 30.0, "stand1_subject0")


@pytest.fixture(scope="module")
def ref(tokenizer: MotionTokenizer) -> ReferenceLibrary:
    """A synthetic walking clip (3 windows) and a standing one."""
    walk = MotionClip("walk9_subject0", synthetic_qpos(100, seed=3), 30.0, "walk9_subject0")
    return ReferenceLibrary.build([walk, standing_clip()], tokenizer)


def test_reference_windows_and_phase_match_the_tokenizer(ref: ReferenceLibrary, tokenizer: MotionTokenizer) -> None:
    walk = MotionClip("w", synthetic_qpos(100, seed=3), 30.0)
    windows = feat.clip_features(MotionClip("w", walk.qpos[:96], 30.0)).reshape(3, 32, -1)
    expected = tokenizer.encode(torch.from_numpy(windows).float()).numpy()
    n = ref.clip_len[0]
    assert n == int(95 / 30 * 100) + 1  # 96 frames kept (3 whole windows), resampled to 100 Hz
    for t in (0, 1, 106, 107, 213, n - 1):  # window boundaries at 32 / 30 s = 106.7 steps
        frame = t * 0.3
        w = min(int(frame // 32), 2)
        np.testing.assert_array_equal(ref.tokens[ref.window[t]], expected[w])
        np.testing.assert_array_equal(ref.tokens[ref.next_window[t]], expected[min(w + 1, 2)])
        assert ref.phase[t] == pytest.approx(frame / 32 - w)
    decoded = tokenizer.decode(torch.from_numpy(expected)).double().numpy().reshape(96, -1)
    t = 10  # step 10 = frame 3 exactly
    np.testing.assert_allclose(ref.decoded_joints[t], decoded[3, feat.FEATURE_SLICES["joint_pos"]], atol=1e-6)
    # second clip's windows index its own rows of the token table
    assert ref.window[ref.clip_start[1]] == 3
    for step in range(ref.num_steps):  # each step's clip bounds, by brute force over the clips
        bounds = zip(ref.clip_start, ref.clip_len, strict=True)
        first, last = next((a, a + n - 1) for a, n in bounds if a <= step < a + n)
        assert (ref.clip_first[step], ref.clip_last[step]) == (first, last)


def test_reference_errors(tokenizer: MotionTokenizer, tmp_path) -> None:
    with pytest.raises(MotionDataError, match="at least 32"):
        ReferenceLibrary.build([MotionClip("short", synthetic_qpos(20), 30.0)], tokenizer)
    write_csv(tmp_path / "walk1_subject9.csv", synthetic_qpos(40))
    write_csv(tmp_path / "tiny1_subject9.csv", synthetic_qpos(10))
    with pytest.raises(MotionDataError, match="unknown clips"):
        load_reference(tmp_path, tokenizer, clips=["nope"])
    with pytest.raises(MotionDataError, match="tiny1_subject9: 10 frames"):
        load_reference(tmp_path, tokenizer)
    assert load_reference(tmp_path, tokenizer, clips=["walk1_subject9"]).names == ("walk1_subject9",)
    assert theme_of("fallAndGetUp2_subject3") == "fallAndGetUp" and theme_of("walk1_subject1") == "walk"


def test_each_reward_term_is_largest_on_the_reference(ref: ReferenceLibrary) -> None:
    sim = TrackingSim(ref, 4, TrackingConfig(num_threads=1), seed=0)
    sim.reset(starts=np.array([5, 50, 150, ref.clip_start[1] + 10]))
    on_ref = sim.ref_state()
    cfg = RewardConfig()
    terms = reward_terms(tracking_errors(on_ref, on_ref), np.zeros(4), cfg)
    for name, value in terms.items():
        np.testing.assert_allclose(value, 0.0 if name == "action_rate" else cfg.weights[name], err_msg=name)
    rng = np.random.default_rng(0)
    for _ in range(20):  # any perturbation of the robot lowers every term it touches, never raises one
        off = {k: v + rng.normal(0, 0.05, v.shape) for k, v in on_ref.items()}
        off["qpos"][:, 3:7] /= np.linalg.norm(off["qpos"][:, 3:7], axis=-1, keepdims=True)
        off["key_local"] = local_key_points(off["qpos"], off["key_pos"])
        perturbed = reward_terms(tracking_errors(off, on_ref), rng.uniform(0, 1, 4), cfg)
        for name, value in perturbed.items():
            assert np.all(value < terms[name] - 1e-9) or (name == "action_rate" and np.all(value < 0)), name


def test_observations_shapes_and_blocks(ref: ReferenceLibrary) -> None:
    for next_tokens in (False, True):
        env = H1TrackingVecEnv(ref, 3, TrackingConfig(next_tokens=next_tokens, num_threads=1))
        obs = env.reset()
        layout = ObsLayout.make(next_tokens)
        assert obs.shape == (3, layout.size) and obs.dtype == np.float32
        assert env.observation_space.contains(obs[0]) and env.action_space.shape == (robot.NU,)
        idx = env.sim.idx
        np.testing.assert_array_equal(obs[:, slice(*layout.tokens)], ref.tokens[ref.window[idx]])
        if next_tokens:
            np.testing.assert_array_equal(obs[:, slice(*layout.next_tokens)], ref.tokens[ref.next_window[idx]])
        proprio = obs[:, slice(*layout.proprio)]
        np.testing.assert_allclose(proprio[:, 0], ref.phase[idx], atol=1e-6)
        np.testing.assert_allclose(proprio[:, 1:20], ref.qpos[idx, 7:], atol=1e-6)  # reset onto the reference
        privileged = obs[:, slice(*layout.privileged)]
        np.testing.assert_allclose(privileged[:, :39], 0.0, atol=1e-5)  # no key-point error at reset
        np.testing.assert_allclose(proprio[:, 39:42], privileged[:, 88:91], atol=1e-6)  # gravity = reference's
        assert np.allclose(np.linalg.norm(proprio[:, 39:42], axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(proprio[:, 64:83], ref.decoded_joints[idx], atol=1e-6)
        env.close()


def test_actor_only_observation_is_the_actors_part_of_the_full_one(ref: ReferenceLibrary) -> None:
    """Inference reads the actor's columns only; they must not differ from what the policy saw in training."""
    sim = TrackingSim(ref, 3, TrackingConfig(num_threads=1), seed=1)
    sim.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        sim.step(rng.uniform(-1, 1, (3, robot.NU)))
    full, lean = sim.observe(), sim.observe(actor_only=True)
    actor = slice(0, sim.layout.privileged[0])
    np.testing.assert_array_equal(lean[:, actor], full[:, actor])
    np.testing.assert_array_equal(lean[:, slice(*sim.layout.privileged)], 0.0)
    assert np.abs(full[:, slice(*sim.layout.privileged)]).max() > 0  # the full one does carry the reference


def test_vectorised_env_equals_single_envs_step_for_step(ref: ReferenceLibrary) -> None:
    starts = np.array([3, 120, ref.clip_start[1] + 5])
    vec = H1TrackingVecEnv(ref, 3, TrackingConfig(num_threads=2), seed=0)
    vec.reset()
    vec.sim.reset(starts=starts)
    singles = [H1TrackingEnv(ref, TrackingConfig(num_threads=1)) for _ in starts]
    for env, s in zip(singles, starts, strict=True):
        env.reset(options={"start": int(s)})
    rng = np.random.default_rng(1)
    running = [True] * 3  # compare each first episode to its end (the vectorised env then resets at once)
    for _ in range(40):
        action = rng.uniform(-0.2, 0.2, (3, robot.NU))
        obs, reward, done, infos = vec.step(action)
        for i, env in enumerate(singles):
            if not running[i]:
                continue
            o, r, terminated, truncated, _ = env.step(action[i])
            assert done[i] == (terminated or truncated)
            np.testing.assert_array_equal(infos[i]["terminal_observation"] if done[i] else obs[i], o)
            assert reward[i] == pytest.approx(r, abs=1e-6)
            running[i] = not done[i]
    assert sum(running) >= 1  # at least one long comparison
    vec.close()


@pytest.mark.parametrize("mode", ["pd_offset", "torque"])
def test_random_actions_never_give_nan(ref: ReferenceLibrary, mode: str) -> None:
    env = H1TrackingVecEnv(ref, 8, TrackingConfig(action_mode=mode, num_threads=2), seed=2)
    env.reset()
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(300):
        obs, reward, done, infos = env.step(rng.uniform(-1, 1, (8, robot.NU)))
        assert np.isfinite(obs).all() and np.isfinite(reward).all()
        episodes += int(done.sum())
        for i in np.flatnonzero(done):
            assert np.isfinite(infos[i]["terminal_observation"]).all()
    assert episodes > 0  # random torques make it fall: resets were exercised
    env.close()


def test_an_unstable_simulation_ends_the_episode_cleanly(ref: ReferenceLibrary) -> None:
    env = H1TrackingVecEnv(ref, 2, TrackingConfig(num_threads=1), seed=0)
    env.reset()
    env.sim.datas[1].qvel[:] = 1e12  # blows up within the next step
    obs, reward, done, infos = env.step(np.zeros((2, robot.NU)))
    assert done[1] and infos[1]["unstable"] and not infos[1]["TimeLimit.truncated"]
    assert np.isfinite(obs).all() and np.isfinite(infos[1]["terminal_observation"]).all() and reward[1] == 0.0
    assert not done[0]
    obs, reward, done, _ = env.step(np.zeros((2, robot.NU)))  # the reset environment runs on
    assert np.isfinite(obs).all() and not done[1]
    env.close()


def test_time_limit_and_clip_end_truncate(ref: ReferenceLibrary) -> None:
    sim = TrackingSim(ref, 1, TrackingConfig(episode_seconds=0.05, num_threads=1))
    sim.reset(starts=np.array([ref.clip_start[1]]))
    hold = lambda: np.zeros((1, robot.NU))  # noqa: E731  (standing clip, PD on the standing pose)
    for _ in range(4):
        assert not sim.step(hold())[3][0]
    _, _, terminated, truncated = sim.step(hold())
    assert truncated[0] and not terminated[0]
    sim = TrackingSim(ref, 1, TrackingConfig(num_threads=1))
    last = ref.clip_start[1] + ref.clip_len[1] - 1
    sim.reset(starts=np.array([last - 2]))
    assert [bool(sim.step(hold())[3][0]) for _ in range(2)] == [False, True]


def test_pd_actuators_follow_targets_with_group_gains(ref: ReferenceLibrary) -> None:
    pd, torque = build_model(TrackingConfig()), build_model(TrackingConfig(action_mode="torque"))
    knee = robot.JOINT_NAMES.index("left_knee")
    assert pd.actuator_gainprm[knee, 0] == 300.0 and pd.actuator_biasprm[knee, 2] == -6.0
    np.testing.assert_allclose(pd.actuator_forcerange[knee], torque.actuator_ctrlrange[knee])
    assert pd.opt.timestep == 0.002 and TrackingConfig().substeps == 5


def test_action_scale_per_joint_group_sets_each_joints_target(ref: ReferenceLibrary) -> None:
    """A dict of scales gives every joint its group's offset per unit action; a dict missing a group is refused."""
    scales = {"hip": 0.1, "knee": 0.2, "ankle": 1.0, "torso": 0.3, "arm": 0.4}
    sim = TrackingSim(ref, 2, TrackingConfig(action_mode="pd", action_scale=scales, num_threads=1))
    action = np.linspace(-1.0, 1.0, 2 * robot.NU).reshape(2, robot.NU)
    expected = [scales[g] for g in ("hip", "hip", "hip", "knee", "ankle") * 2 + ("torso",) + ("arm",) * 8]
    assert [robot.JOINT_NAMES[i] for i in (4, 9, 10)] == ["left_ankle", "right_ankle", "torso"]
    np.testing.assert_allclose(sim._targets(action) - sim.home, action * np.array(expected))
    one = TrackingSim(ref, 2, TrackingConfig(action_mode="pd", action_scale=0.5, num_threads=1))
    np.testing.assert_allclose(one._targets(action) - one.home, 0.5 * action)
    with pytest.raises(ValueError, match="per joint group"):
        TrackingConfig(action_scale={"ankle": 1.0}).check()
    sim.close()
    one.close()


def test_gymnasium_and_sb3_checkers(ref: ReferenceLibrary) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = gym.make("motiontok/H1Tracking-v0", ref=ref, cfg=TrackingConfig(num_threads=1))
    gym_check(env.unwrapped, skip_render_check=True)
    sb3_check(H1TrackingEnv(ref, TrackingConfig(num_threads=1)), warn=False)


def test_tokenizer_fingerprint_changes_with_weights(tokenizer: MotionTokenizer) -> None:
    other = MotionTokenizer.load()
    assert tokenizer_fingerprint(other) == tokenizer_fingerprint(tokenizer)
    with torch.no_grad():
        next(other.model.parameters()).view(-1)[0] += 1e-3
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)


def test_real_clip_reference(real_data_dir, tokenizer: MotionTokenizer) -> None:
    ref = load_reference(real_data_dir, tokenizer, clips=["walk1_subject1"])
    assert ref.tokens.shape[1] == NUM_TOKENS and ref.tokens.max() < tokenizer.vocab_size
    # the reference's own key points are consistent with its qpos
    np.testing.assert_allclose(ref.key_local, local_key_points(ref.qpos, ref.key_pos))
    assert ref.clip_len[0] > 100 * 60  # a long clip at 100 Hz
