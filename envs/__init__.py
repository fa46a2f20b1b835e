"""Gymnasium environments over MuJoCo (H1 motion tracking at 100 Hz), rewards as named terms.

``gymnasium.make("motiontok/H1Tracking-v0", ref=..., cfg=...)`` gives one environment
(:class:`envs.gym_env.H1TrackingEnv`); :class:`envs.vec_env.H1TrackingVecEnv` runs N of them in one process for
stable-baselines3. ``motiontok`` never imports this package.
"""

import gymnasium as gym

ENV_ID = "motiontok/H1Tracking-v0"

if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="envs.gym_env:H1TrackingEnv")
