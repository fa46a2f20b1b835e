"""Evaluation of low-level policies: start spreading, fall and error counting, clipped actions, the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from control.lowlevel import PPOConfig, make_ppo, save_policy
from control.lowlevel_eval import decoded_ceiling, run_episodes, spread_starts, summarize
from envs.reference import ReferenceLibrary, step_arrays
from envs.rewards import TerminationConfig
from envs.tracking import TrackingConfig
from envs.vec_env import H1TrackingVecEnv
from motiontok import robot
from motiontok.features import clip_features
from motiontok.motion import MotionClip
from tests.conftest import synthetic_qpos
from tests.lowlevel.conftest import SMALL

pytestmark = pytest.mark.usefixtures("reference_cache")


def test_spread_starts_cover_each_clip(walk: ReferenceLibrary) -> None:
    starts, clips = spread_starts(walk, 5, seconds=1.0)
    n = walk.clip_len[0]
    np.testing.assert_array_equal(starts, np.linspace(0, n - 1 - 100, 5).round())
    assert (clips == 0).all()
    starts, _ = spread_starts(walk, 3, seconds=100.0)  # clip shorter than the horizon: everything starts at 0
    assert (starts == 0).all()


def _exactly_decoded(frames: tuple[int, ...]) -> ReferenceLibrary:
    """Clips whose "decoded" features are their true features: a perfect tokenizer."""
    clips = [MotionClip(f"walk{i}_subject0", synthetic_qpos(n, seed=i), 30.0) for i, n in enumerate(frames)]
    parts = [step_arrays(c, np.zeros((c.num_frames // 32, 64), np.int64), clip_features(c), 100.0) for c in clips]
    return ReferenceLibrary.from_parts([c.name for c in clips], parts, "exact", 1024, 100.0)


def test_decoded_ceiling_finds_the_first_step_the_decoded_pose_breaks_the_rule() -> None:
    ref = _exactly_decoded((64, 96))
    starts = np.array([0, 50, 150, ref.clip_start[1] + 10])
    first = decoded_ceiling(ref, starts, 100, TerminationConfig())
    assert not first["fell"].any()  # the true pose never breaks the rule
    ends = [100, 100, ref.clip_len[0] - 1 - 150, 100]  # the horizon, or the clip's last step
    np.testing.assert_array_equal(first["steps"], ends)
    k = 120  # from step 120 of clip 0 on, the decoded pelvis is 0.3 m too high (the rule allows 0.25)
    ref.decoded_root[k : ref.clip_len[0], 0] += 0.3
    tilted = decoded_ceiling(ref, starts, 100, TerminationConfig())
    raised = set(range(k, ref.clip_len[0]))
    expect = []  # brute force: the first step after the start inside the raised span, else the end as before
    for s, e in zip(starts, ends, strict=True):
        hit = [j for j in range(s + 1, s + e + 1) if j in raised]
        expect.append((True, hit[0] - s) if hit else (False, e))
    np.testing.assert_array_equal(tilted["fell"], [f for f, _ in expect])
    np.testing.assert_array_equal(tilted["steps"], [n for _, n in expect])
    loose = decoded_ceiling(ref, starts, 100, TerminationConfig(root_height=0.35, end_effector_height=0.35))
    assert not loose["fell"].any()  # the raised pelvis lifts the heels too: both rules must allow 0.3 m


def test_evaluation_counts_falls_and_errors(stand: ReferenceLibrary, walk: ReferenceLibrary) -> None:
    env = H1TrackingVecEnv(walk, 4, TrackingConfig(num_threads=1))
    model = make_ppo(env, env.sim.layout, walk.vocab_size, SMALL, PPOConfig(n_steps=8, batch_size=32), seed=0)
    cfg = TrackingConfig(action_mode="torque", episode_seconds=1.0, num_threads=1)  # torques of an untrained policy
    starts, clips = spread_starts(walk, 4, 1.0)
    result = run_episodes(model.policy, walk, cfg, starts, record=0)
    assert result["fell"].all() and (result["steps"] < 100).all()  # it falls before 1 s
    assert len(result["qpos_robot"]) == result["steps"][0] and result["qpos_ref"].shape == result["qpos_robot"].shape
    summary = summarize(result, clips, walk, 100.0)
    assert summary["success_rate"] == 0.0 and summary["per_theme"]["walk"]["episodes"] == 4
    assert summary["mpjpe_mm"] > 0 and summary["mean_episode_s"] == pytest.approx(
        result["steps"].mean() / 100, abs=1e-3
    )
    cfg = TrackingConfig(action_mode="pd", episode_seconds=0.5, num_threads=1)
    held = run_episodes(_zero_policy(), stand, cfg, np.array([0, 50]))  # PD on the standing pose holds 0.5 s
    assert (
        not held["fell"].any() and (held["steps"] == 50).all() and held["key_err"].max() < 0.06
    )  # sags ~36 mm under PD
    assert (held["clipped"] == 0.0).all()
    env.close()


def test_evaluation_counts_clipped_actions(stand: ReferenceLibrary) -> None:
    """The share of mean-action components beyond [-1, 1] (which the environment clips) is counted per step."""

    class Pushy:  # 5 of 19 components beyond the clip, 2 exactly at it (not clipped), the rest inside
        def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
            a = torch.full((len(obs), robot.NU), 0.1)
            a[:, :5], a[:, 5:7] = 2.0, -1.0
            return a

    cfg = TrackingConfig(action_mode="pd", episode_seconds=0.2, num_threads=1)
    result = run_episodes(Pushy(), stand, cfg, np.array([0, 10]))
    np.testing.assert_allclose(result["clipped"], 5 / robot.NU)
    summary = summarize(result, np.zeros(2, np.int64), stand, 100.0)
    assert summary["clipped_action_share"] == pytest.approx(5 / robot.NU, abs=1e-4)


def _zero_policy():
    class Zero:
        def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(obs), robot.NU)

    return Zero()


def test_eval_script_errors(tmp_path, real_data_dir) -> None:
    cmd = [sys.executable, "scripts/eval_lowlevel.py", "--checkpoint", str(tmp_path), "--data", str(real_data_dir)]
    out = subprocess.run([*cmd, "--clips", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown clips" in out.stderr
    out = subprocess.run([*cmd, "--clips", "walk1_subject1"], capture_output=True, text=True)
    assert out.returncode == 2 and "missing model.safetensors" in out.stderr


def test_eval_judges_falls_by_the_standard_rule(walk: ReferenceLibrary, real_data_dir, tmp_path) -> None:
    """A policy trained with a loose termination rule is still judged by the standard one: an untrained policy
    falls on a walking clip within 3 s, which the recorded (never-ending) rule would not call a fall."""
    env = H1TrackingVecEnv(walk, 2, TrackingConfig(num_threads=1))
    model = make_ppo(env, env.sim.layout, walk.vocab_size, SMALL, PPOConfig(n_steps=8, batch_size=16), seed=0)
    never = {"termination": {"end_effector_height": 100.0, "root_height": 100.0, "tilt": 10.0}}
    path = save_policy(tmp_path / "loose", model, env, {"policy": vars(SMALL), "env": never}, with_state=False)
    env.close()
    cmd = [sys.executable, "scripts/eval_lowlevel.py", "--checkpoint", str(path), "--data", str(real_data_dir),
           "--clips", "walk1_subject1", "--episodes-per-clip", "2", "--seconds", "3", "--threads", "1",
           "--json"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["success_rate"] == 0.0 and result["mean_episode_s"] < 3.0
