"""stable-baselines3 ``VecEnv`` over :class:`envs.tracking.TrackingSim`: N environments in one process.

Finished environments reset at once, as SB3 expects: the returned observation is the new episode's first, the
last one is in ``infos[i]["terminal_observation"]``; ``infos[i]["TimeLimit.truncated"]`` marks truncations (time
limit or end of the clip) so that PPO bootstraps them. An ended episode's info has its ``episode`` summary
(return ``r``, length ``l``, and ``fell``) like SB3's Monitor. The reward terms of the last step are in
``last_terms`` ({name: (N,)}: one dict per step, not one per environment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from envs.observations import ObsLayout
from envs.reference import ReferenceLibrary
from envs.tracking import ACTION_CLIP, TrackingConfig, TrackingSim
from motiontok import robot


def spaces(layout: ObsLayout) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """Observation and action spaces of the tracking task."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (layout.size,), np.float32)
    act_space = gym.spaces.Box(-ACTION_CLIP, ACTION_CLIP, (robot.NU,), np.float32)
    return obs_space, act_space


class H1TrackingVecEnv(VecEnv):
    """N tracking environments stepped together (see the module docstring)."""

    render_mode = None

    def __init__(self, ref: ReferenceLibrary, num_envs: int, cfg: TrackingConfig | None = None, seed: int = 0):
        self.sim = TrackingSim(ref, num_envs, cfg, seed)
        super().__init__(num_envs, *spaces(self.sim.layout))
        self._actions = np.zeros((num_envs, robot.NU))
        self.episode_return = np.zeros(num_envs)
        self.episode_len = np.zeros(num_envs, np.int64)
        self.last_terms: dict[str, np.ndarray] = {}  # reward terms of the last step, (N,) each

    def reset(self) -> np.ndarray:
        self.sim.reset()
        self.episode_return[:] = 0.0
        self.episode_len[:] = 0
        return self.sim.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        reward, terms, terminated, truncated = self.sim.step(self._actions)
        self.last_terms = terms
        obs = self.sim.observe()
        done = terminated | truncated
        self.episode_return += reward
        self.episode_len += 1
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        ended = np.flatnonzero(done)
        for i in ended:
            infos[i]["terminal_observation"] = obs[i].copy()  # obs[i] is overwritten by the reset below
            infos[i]["TimeLimit.truncated"] = bool(truncated[i])
            infos[i]["episode"] = {
                "r": float(self.episode_return[i]),
                "l": int(self.episode_len[i]),
                "fell": bool(terminated[i]),
            }
            infos[i]["unstable"] = bool(self.sim.unstable[i])
        if len(ended):
            self.sim.reset(ended)
            obs[ended] = self.sim.observe()[ended]
            self.episode_return[ended] = 0.0
            self.episode_len[ended] = 0
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.sim.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self.sim.rng = np.random.default_rng(seed)
        return [seed] * self.num_envs

    # ------------------------------------------------------------------ VecEnv plumbing (one process)
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs
