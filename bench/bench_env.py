"""Speed of the tracking environment and of PPO on it; prints one JSON object.

    python bench/bench_env.py --data $MOTIONTOK_DATA [--num-envs 64] [--threads 2] [--seconds 10]

* ``bare_mj_step_per_s``: ``mj_step`` calls per second of the same physics (same model, same thread pool split,
  a standing robot driven by its PD actuators), i.e. the physics alone;
* ``env_steps_per_s``: control steps per second of ``H1TrackingVecEnv`` (the default task of
  ``configs/train_lowlevel.yaml``) with random actions (5 physics steps each, plus references, observations,
  rewards, resets); ``env_overhead_vs_physics`` = time outside the physics / time in the physics (the thread pool's
  ``mj_step`` loops, timed inside the environment), over the same steps;
* ``ppo_steps_per_s``: environment steps per second of stable-baselines3 PPO end to end (rollouts + updates)
  with the default config (``configs/train_lowlevel.yaml``).
Ratios are measured in one run; machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import mujoco
import numpy as np
import torch
from omegaconf import OmegaConf

from control.lowlevel import PolicyConfig, PPOConfig, make_ppo, tracking_config
from envs.reference import load_reference
from envs.vec_env import H1TrackingVecEnv

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "train_lowlevel.yaml")


def bare_physics(env: H1TrackingVecEnv, seconds: float) -> float:
    """mj_step/s over the env's MjData with its thread split, no Python work besides the calls."""
    sim = env.sim
    sim.ctrl[:] = sim.ref.decoded_joints[sim.idx]

    def chunk(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            sim.datas[i].ctrl[:] = sim.ctrl[i]
            for _ in range(sim.cfg.substeps):
                mujoco.mj_step(sim.model, sim.datas[i])

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sim._run(chunk)
        n += sim.num_envs * sim.cfg.substeps
        if n % (50 * sim.num_envs * sim.cfg.substeps) == 0:
            sim.reset()  # keep the robots near standing, as in training
    return n / (time.perf_counter() - t0)


def env_speed(env: H1TrackingVecEnv, seconds: float) -> tuple[float, float]:
    """(control steps/s, overhead): overhead = time outside the physics / physics time, same steps."""
    rng = np.random.default_rng(0)
    env.reset()
    env.sim.physics_seconds = 0.0
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(rng.uniform(-0.3, 0.3, (env.num_envs, 19)))
        n += env.num_envs
    total = time.perf_counter() - t0
    return n / total, (total - env.sim.physics_seconds) / env.sim.physics_seconds


def ppo_speed(env: H1TrackingVecEnv, seconds: float) -> float:
    cfg = OmegaConf.load(CONFIG)
    policy = PolicyConfig(**OmegaConf.to_container(cfg.policy))
    ppo = PPOConfig(**OmegaConf.to_container(cfg.ppo))
    model = make_ppo(env, env.sim.layout, env.sim.ref.vocab_size, policy, ppo, seed=0)
    rollout = ppo.n_steps * env.num_envs
    model.learn(rollout)  # warm-up
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        model.learn(rollout, reset_num_timesteps=False)
        steps += rollout
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("MOTIONTOK_DATA"), help="LAFAN1-H1 CSV folder")
    ap.add_argument("--clips", nargs="+", default=["walk1_subject1", "run1_subject2"])
    ap.add_argument("--num-envs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="physics threads (0 = all CPUs)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--skip-ppo", action="store_true")
    args = ap.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    ref = load_reference(args.data, clips=args.clips)
    task = OmegaConf.to_container(OmegaConf.load(CONFIG).env, resolve=True)  # the default task
    env = H1TrackingVecEnv(ref, args.num_envs, tracking_config({**task, "num_threads": args.threads}))
    env.reset()
    bare = bare_physics(env, args.seconds)
    env_sps, overhead = env_speed(env, args.seconds)
    out = {
        "num_envs": args.num_envs,
        "physics_threads": env.sim.num_threads,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "bare_mj_step_per_s": round(bare),
        "bare_control_steps_per_s": round(bare / env.sim.cfg.substeps),
        "env_steps_per_s": round(env_sps),
        "env_overhead_vs_physics": round(overhead, 3),
    }
    if not args.skip_ppo:
        out["ppo_steps_per_s"] = round(ppo_speed(env, args.seconds))
    env.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
