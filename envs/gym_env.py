"""One tracking environment as a gymnasium ``Env`` (``gymnasium.make("motiontok/H1Tracking-v0", ...)``), for
``check_env``, viewers and other RL stacks. It is :class:`envs.tracking.TrackingSim` with N = 1: the same code as
the vectorised environment, step for step."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from envs.reference import ReferenceLibrary, load_reference
from envs.tracking import TrackingConfig, TrackingSim
from envs.vec_env import spaces


class H1TrackingEnv(gym.Env):
    """Track a reference clip with the H1 at 100 Hz, goal = tokens of the reference's window (module docstring
    of :mod:`envs.tracking`). ``ref`` defaults to every clip of ``$MOTIONTOK_DATA`` tokenized by the shipped
    tokenizer. ``render_mode="rgb_array"`` renders the robot offscreen."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        ref: ReferenceLibrary | None = None,
        cfg: TrackingConfig | None = None,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
    ):
        self.sim = TrackingSim(ref if ref is not None else load_reference(), 1, cfg, seed=0)
        self.observation_space, self.action_space = spaces(self.sim.layout)
        self.render_mode = render_mode
        self._size = (height, width)
        self._renderer: mujoco.Renderer | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """``options={"start": step}`` starts at a given reference step (default: a random one)."""
        super().reset(seed=seed)
        if seed is not None:
            self.sim.rng = np.random.default_rng(seed)
        start = None if not options or "start" not in options else np.array([options["start"]])
        self.sim.reset(np.array([0]), start)
        return self.sim.observe()[0], {"ref_step": int(self.sim.idx[0])}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward, terms, terminated, truncated = self.sim.step(np.asarray(action, np.float64)[None])
        info = {"reward_terms": {k: float(v[0]) for k, v in terms.items()}, "unstable": bool(self.sim.unstable[0])}
        return self.sim.observe()[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.sim.model, *self._size)
        cam = mujoco.MjvCamera()
        cam.lookat[:] = self.sim.qpos[0, :3]
        cam.distance, cam.azimuth, cam.elevation = 3.0, 150.0, -15.0
        self._renderer.update_scene(self.sim.datas[0], cam)
        return self._renderer.render()

    def close(self) -> None:
        self.sim.close()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
