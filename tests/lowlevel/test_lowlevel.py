"""The low-level policy: its layers, checkpoints (tokenizer identity), observation statistics, exploration, the
default config, the support curriculum and that PPO learns (training runs: test_lowlevel_runs.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from control.lowlevel import KLAdaptiveLR, PolicyConfig, PPOConfig, load_actor, make_ppo, save_policy
from control.lowlevel_policy import ObsNorm, PatchConv1d, bounds_penalty
from control.lowlevel_train import RunConfig, train_lowlevel
from envs.reference import ReferenceLibrary
from envs.tracking import TrackingConfig, TrackingSim
from envs.vec_env import H1TrackingVecEnv
from motiontok import MotionTokenizer, robot
from motiontok.errors import CheckpointError
from tests.lowlevel.conftest import ROOT, SMALL

pytestmark = pytest.mark.usefixtures("reference_cache")


def test_patch_conv_is_a_strided_convolution() -> None:
    torch.manual_seed(0)
    patch, conv = PatchConv1d(3, 5, 4), nn.Conv1d(3, 5, 4, stride=4)
    with torch.no_grad():  # Conv1d weight (out, in, k); the patch layer flattens windows as (k, in)
        conv.weight.copy_(patch.linear.weight.view(5, 4, 3).permute(0, 2, 1))
        conv.bias.copy_(patch.linear.bias)
    x = torch.randn(2, 16, 3)  # (B, L, C)
    torch.testing.assert_close(patch(x), conv(x.transpose(1, 2)).transpose(1, 2))
    with pytest.raises(ValueError, match="multiple"):
        patch(torch.randn(2, 15, 3))


def test_actor_ignores_privileged_state_and_rejects_bad_tokens(walk: ReferenceLibrary) -> None:
    env = H1TrackingVecEnv(walk, 4, TrackingConfig(num_threads=1))
    model = make_ppo(env, env.sim.layout, walk.vocab_size, SMALL, PPOConfig(n_steps=8, batch_size=32), seed=0)
    obs = torch.as_tensor(env.reset())
    changed = obs.clone()
    changed[:, slice(*env.sim.layout.privileged)] += 1.0
    policy = model.policy
    with torch.no_grad():
        torch.testing.assert_close(policy.get_distribution(obs).mode(), policy.get_distribution(changed).mode())
        assert not torch.allclose(policy.predict_values(obs), policy.predict_values(changed))
        tokens = obs.clone()
        tokens[0, 5] += 1.0  # another token changes the action
        assert not torch.allclose(policy.get_distribution(tokens).mode()[0], policy.get_distribution(obs).mode()[0])
        bad = obs.clone()
        bad[0, 0] = walk.vocab_size
        with pytest.raises(ValueError, match="token indices"):
            policy.get_distribution(bad)
    env.close()


def test_checkpoint_round_trip_and_tokenizer_check(walk: ReferenceLibrary, tmp_path) -> None:
    env = H1TrackingVecEnv(walk, 4, TrackingConfig(num_threads=1))
    model = make_ppo(env, env.sim.layout, walk.vocab_size, SMALL, PPOConfig(n_steps=8, batch_size=32), seed=0)
    model.learn(32)
    path = save_policy(tmp_path / "ckpt", model, env, {"policy": vars(SMALL), "env": {}}, with_state=False)
    actor, config = load_actor(path, walk.tokenizer_id)
    obs = torch.as_tensor(env.reset())
    with torch.no_grad():
        torch.testing.assert_close(actor.get_distribution(obs).mode(), model.policy.get_distribution(obs).mode())
        torch.testing.assert_close(actor.mean_action(obs), actor.get_distribution(obs).mode())  # the fast path
        code = actor.pi_features_extractor.token_code(obs)  # the tokens embedded once per window
        torch.testing.assert_close(actor.mean_action(obs, code), actor.mean_action(obs), rtol=0, atol=0)
    assert config["tokenizer_id"] == walk.tokenizer_id and config["num_timesteps"] == 32
    with pytest.raises(CheckpointError, match="trained on the tokens of tokenizer"):
        load_actor(path, "0123456789abcdef")
    with pytest.raises(CheckpointError, match="not a low-level policy"):
        load_actor(MotionTokenizer.load().save(tmp_path / "tok"), walk.tokenizer_id)
    env.close()


def test_sde_noise_is_a_function_of_the_state_until_redrawn_and_round_trips(walk: ReferenceLibrary, tmp_path) -> None:
    """With ``use_sde`` the exploration noise of an observation stays the same until the noise matrix is drawn
    again (white noise would differ at every call); the checkpoint loads with the matrix-shaped log std, and a run
    with other exploration is refused as a warm start."""
    from control.lowlevel_train import _shape_of

    sde = dataclasses.replace(SMALL, use_sde=True, log_std_init=-1.0)
    env = H1TrackingVecEnv(walk, 4, TrackingConfig(num_threads=1))
    model = make_ppo(env, env.sim.layout, walk.vocab_size, sde, PPOConfig(n_steps=8, batch_size=32), seed=0)
    assert model.use_sde and model.policy.log_std.shape == (SMALL.net_arch[-1], robot.NU)
    model.learn(32)
    obs = torch.as_tensor(env.reset())
    with torch.no_grad():
        mean = model.policy.mean_action(obs)
        noise = model.policy.get_distribution(obs).sample() - mean
        torch.testing.assert_close(model.policy.get_distribution(obs).sample() - mean, noise)
        assert float(noise.abs().mean()) > 1e-3
        model.policy.reset_noise(len(obs))
        assert not torch.allclose(model.policy.get_distribution(obs).sample() - mean, noise)
    path = save_policy(tmp_path / "ckpt", model, env, {"policy": vars(sde), "env": {}}, with_state=False)
    actor, _ = load_actor(path, walk.tokenizer_id)
    torch.testing.assert_close(actor.mean_action(obs), mean)
    differ = {k for k, v in _shape_of({"policy": vars(sde)}).items() if v != _shape_of({"policy": vars(SMALL)})[k]}
    assert differ == {"use_sde"}  # what the weights mean; log_std_init only starts them
    env.close()


def test_obs_norm_merges_batches_into_the_statistics_of_their_union() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(m, s, (n, 3)) for m, s, n in ((0.0, 1.0, 5), (4.0, 0.1, 17), (-2.0, 3.0, 1))]
    norm = ObsNorm(3)
    for b in batches:
        norm.update(torch.as_tensor(b))
    union = np.concatenate(batches)
    np.testing.assert_allclose(norm.mean.numpy(), union.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), union.var(0), rtol=1e-12)
    assert float(norm.count) == len(union)
    x = torch.tensor([[0.0, 1.0, 1e6]])
    expected = np.clip((x.numpy() - union.mean(0)) / np.sqrt(union.var(0) + 1e-8), -10, 10)
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-5)


def test_normalized_policy_takes_in_each_rollout_after_its_update_and_round_trips(
    walk: ReferenceLibrary, tmp_path
) -> None:
    """With ``normalize_obs`` the actor's proprioception and the critic's inputs get running statistics: after
    one rollout (and the update on it) they hold exactly that rollout's; a checkpoint restores them."""
    policy = dataclasses.replace(SMALL, normalize_obs=True)
    env = H1TrackingVecEnv(walk, 4, TrackingConfig(num_threads=1))
    model = make_ppo(env, env.sim.layout, walk.vocab_size, policy, PPOConfig(n_steps=8, batch_size=32), seed=0)
    pi, vf = model.policy.pi_features_extractor, model.policy.vf_features_extractor
    assert float(pi.norm.count) == 0 and float(vf.norm.count) == 0
    model.learn(32)
    obs = torch.as_tensor(model.rollout_buffer.observations.reshape(32, -1))
    p0, p1 = env.sim.layout.proprio
    assert float(pi.norm.count) == 32 and float(vf.norm.count) == 32
    torch.testing.assert_close(pi.norm.mean, obs[:, p0:p1].double().mean(0))
    torch.testing.assert_close(vf.norm.mean, vf.inputs(obs).double().mean(0))
    path = save_policy(tmp_path / "ckpt", model, env, {"policy": vars(policy), "env": {}}, with_state=False)
    actor, _ = load_actor(path, walk.tokenizer_id)
    torch.testing.assert_close(actor.pi_features_extractor.norm.var, pi.norm.var)
    torch.testing.assert_close(actor.mean_action(obs), model.policy.mean_action(obs))
    plain = make_ppo(env, env.sim.layout, walk.vocab_size, SMALL, PPOConfig(n_steps=8, batch_size=32), seed=0)
    assert not any("norm" in k for k in plain.policy.state_dict())  # older checkpoints keep loading
    env.close()


def test_bounds_loss_enters_the_update_as_a_summed_loss_term(walk: ReferenceLibrary) -> None:
    """With ``ppo.bounds_coef`` the gradient of any loss through ``evaluate_actions`` (SB3's PPO path) equals the
    gradient of that loss plus coef * bounds_penalty(mean) (autograd on the explicit sum); means inside the clip
    add nothing; the penalty itself matches a brute-force loop."""
    env = H1TrackingVecEnv(walk, 4, TrackingConfig(num_threads=1))
    coef = 0.3
    model = make_ppo(env, env.sim.layout, walk.vocab_size, SMALL, PPOConfig(bounds_coef=coef), seed=0)
    policy = model.policy
    with torch.no_grad():  # push the means beyond the clip on some joints: a large bias
        policy.action_net.bias.copy_(torch.linspace(-3.0, 3.0, robot.NUM_JOINTS))
    obs = torch.as_tensor(env.reset())  # (4, obs)
    actions = torch.randn(4, robot.NUM_JOINTS, generator=torch.Generator().manual_seed(0))

    def grads(hooked: bool) -> list[torch.Tensor]:
        policy.bounds_coef = coef if hooked else 0.0
        policy.zero_grad()
        _, log_prob, _ = policy.evaluate_actions(obs, actions)
        loss = -log_prob.mean()
        if not hooked:
            loss = loss + coef * bounds_penalty(policy.get_distribution(obs).distribution.mean)
        loss.backward()
        return [p.grad.clone() for p in policy.parameters() if p.grad is not None]

    for hooked, explicit in zip(grads(True), grads(False), strict=True):
        torch.testing.assert_close(hooked, explicit)
    mean = torch.tensor([[0.5, -1.5, 2.0], [-0.2, 1.0, -3.0]])
    brute = sum(max(abs(v) - 1.0, 0.0) ** 2 for row in mean.tolist() for v in row) / 2
    assert float(bounds_penalty(mean)) == pytest.approx(brute)  # 0.25 + 1 + 4, over 2 rows
    assert float(bounds_penalty(mean.clamp(-1, 1))) == 0.0
    with pytest.raises(ValueError, match="bounds_coef"):
        make_ppo(env, env.sim.layout, walk.vocab_size, dataclasses.replace(SMALL, use_sde=True),
                 PPOConfig(bounds_coef=coef), seed=0)  # fmt: skip
    env.close()


def test_ppo_learns_to_stand(stand: ReferenceLibrary) -> None:
    """An easy case: hold the standing pose with PD targets under strong action noise (std 1 x 1 rad); PPO must raise
    the return of its own stochastic policy within 20k steps. Measured with seeds 0/1/2 (this config): +17.9, +17.4,
    +27.3 (at 10k steps or with half the noise the gain was within the noise of one seed)."""
    task = TrackingConfig(action_mode="pd", action_scale=1.0, num_threads=1, episode_seconds=2.0)
    env = H1TrackingVecEnv(stand, 16, task, seed=0)
    model = make_ppo(
        env,
        env.sim.layout,
        stand.vocab_size,
        PolicyConfig(net_arch=[64, 64], log_std_init=0.0),
        PPOConfig(n_steps=32, batch_size=256, n_epochs=10, learning_rate=3e-3, adaptive_kl=None),
        seed=0,
    )

    def mean_return() -> float:
        obs, total, alive = env.reset(), np.zeros(16), np.ones(16, bool)
        for _ in range(200):
            obs, reward, done, _ = env.step(model.predict(obs, deterministic=False)[0])
            total += reward * alive
            alive &= ~done
        return float(total.mean())

    before = mean_return()
    model.learn(20_480)
    after = mean_return()
    assert after > before + 8.0, (before, after)
    env.close()


def test_kl_adaptive_learning_rate() -> None:
    lr = KLAdaptiveLR(1e-3, target_kl=0.01, low=1e-4, high=2e-3)
    lr.update(0.05)  # too large a step: slower
    assert lr(1.0) == pytest.approx(1e-3 / 1.5)
    lr.update(0.01)  # on target: unchanged
    assert lr(0.5) == pytest.approx(1e-3 / 1.5)
    for _ in range(10):
        lr.update(0.001)  # too small: faster, up to the bound
    assert lr(0.0) == 2e-3
    for _ in range(30):
        lr.update(1.0)
    assert lr(0.0) == 1e-4


def test_default_config_builds_a_valid_task_policy_and_ppo() -> None:
    """configs/train_lowlevel.yaml's sections are what the script passes on: a misspelt key or joint group fails
    here instead of minutes into a run; the ankles get the whole motor per unit action (docs/lowlevel.md)."""
    from omegaconf import OmegaConf

    from control.lowlevel import tracking_config
    from envs.tracking import action_scales, build_model

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "train_lowlevel.yaml"), resolve=False)
    task = tracking_config(cfg["env"])
    task.check()
    PolicyConfig(**cfg["policy"]), PPOConfig(**cfg["ppo"]), RunConfig(**cfg["run"])
    model = build_model(task)
    scales = action_scales(model, task.action_scale)
    ankles = [i for i in range(model.nu) if "ankle" in model.actuator(i).name]
    assert len(ankles) == 2 and np.all(scales[ankles] * model.actuator_gainprm[ankles, 0] == 40.0)


def test_assist_schedule_fades_linearly_to_none() -> None:
    run = RunConfig(assist_start=2.0, assist_steps=1000)
    for t in (0, 250, 999, 1000, 5000):
        assert run.assist(t) == pytest.approx(max(0.0, 2.0 * (1 - t / 1000)))
    assert RunConfig().assist(0) == 0.0 and RunConfig(assist_start=1.0).assist(0) == 0.0  # off without a length


def test_pelvis_support_holds_the_robot_and_training_applies_it(stand: ReferenceLibrary, tmp_path) -> None:
    """PD on the standing pose alone falls within 3 s; with the virtual support it stands; the support force is
    zero on the reference and the training callback sets the curriculum's scale."""
    lengths = []
    for assist in (0.0, 2.0):
        sim = TrackingSim(stand, 1, TrackingConfig(num_threads=1), seed=0)
        sim.reset(starts=np.zeros(1, np.int64))
        sim.assist = assist
        steps = 0
        while steps < 300:
            _, _, term, _ = sim.step(np.zeros((1, robot.NU)))
            steps += 1
            if term[0]:
                break
        lengths.append(steps)
        if assist:
            sim.support_target = (sim.qpos.copy(), sim.qvel.copy())
            sim._support(0, sim.datas[0])  # on its own target: no force
            np.testing.assert_allclose(sim.datas[0].xfrc_applied[1], 0.0, atol=1e-9)
        sim.close()
    assert lengths[0] < 300 and lengths[1] == 300, lengths
    env = H1TrackingVecEnv(stand, 4, TrackingConfig(num_threads=1), seed=0)
    run = RunConfig(total_steps=128, num_envs=4, progress=False, torch_threads=1, assist_start=1.0, assist_steps=10**6)
    train_lowlevel(env, tmp_path / "run", run, SMALL, PPOConfig(n_steps=16, batch_size=32, n_epochs=1), {})
    assert env.sim.assist == pytest.approx(1.0 - 64 / 10**6, abs=1e-9)  # set at the 2nd rollout (64 steps done)
    env.close()


def test_adaptive_assist_fades_only_while_the_robot_stays_up() -> None:
    from control.lowlevel_train import ASSIST_RATE, adaptive_assist

    run = RunConfig(assist_start=2.0, assist_mode="adaptive", assist_fell_target=0.5)
    assert adaptive_assist(run, 1.0, 0.3) == pytest.approx(ASSIST_RATE)  # few falls: less help
    assert adaptive_assist(run, 1.0, 0.6) == 1.0  # in the band: unchanged
    assert adaptive_assist(run, 1.0, 0.9) == pytest.approx(1.0 / ASSIST_RATE)  # many falls: more help
    assert adaptive_assist(run, 1.99, 0.9) == 2.0  # never above the start
    assert adaptive_assist(run, 0.0201, 0.0) == 0.0 and adaptive_assist(run, 0.0, 1.0) == 0.0  # off for good
    scale = 2.0
    for _ in range(200):
        scale = adaptive_assist(run, scale, 0.0)
    assert scale == 0.0  # 2 * 0.97^k falls below 1% of the start within 200 rollouts (k = 174)
