"""Physics mode of ``run_policy.py``: the low-level policy executes each planned window in MuJoCo at 100 Hz, and
the next window is planned from the robot's own recent motion.

Each plan (:class:`control.runner.Plan`) becomes a one-clip :class:`envs.reference.ReferenceLibrary`: the planned
tokens are the goal the policy observes, their decoded motion the base of its PD targets, exactly as in training.
One :class:`envs.tracking.TrackingSim` (one environment) starts on the first plan's first frame (a reference state,
as training starts its episodes) and then follows plan after plan without a reset. The robot has fallen when its
pelvis drops below :data:`FALL_HEIGHT` or tilts beyond :data:`FALL_TILT`, or when the simulation goes unstable;
the run stops there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from control.highlevel_data import PAST
from control.lowlevel import load_actor, tracking_config
from control.runner import Plan, Planner, goal_error, standing_features
from envs.reference import ReferenceLibrary, step_arrays, tokenizer_fingerprint
from envs.rewards import up_axis
from envs.tracking import TrackingSim
from motiontok import features as feat
from motiontok.motion import MotionClip, forward_kinematics
from motiontok.tokenizer import MotionTokenizer

FALL_HEIGHT = 0.5
"""m: a pelvis below this height has fallen (the H1 stands at about 1.0 m)."""
FALL_TILT = 1.0
"""rad: a pelvis whose up axis leans further than this from the vertical has fallen."""


def fallen(qpos: np.ndarray) -> bool:
    """Whether a robot state qpos (26,) has fallen (pelvis too low or too tilted)."""
    return bool(qpos[2] < FALL_HEIGHT or np.arccos(np.clip(up_axis(qpos[3:7])[2], -1.0, 1.0)) > FALL_TILT)


def resample_tail(qpos: np.ndarray, fps_in: float, fps_out: float, frames: int) -> np.ndarray:
    """The last ``frames`` frames at ``fps_out`` of a motion qpos (S, 26) at ``fps_in``, the last one being the
    motion's last state (resampled backwards in time)."""
    need = int(np.ceil((frames - 1) * fps_in / fps_out)) + 2
    if len(qpos) < need:
        raise ValueError(f"{len(qpos)} states at {fps_in} Hz hold fewer than {frames} frames at {fps_out} Hz")
    clip = MotionClip("tail", qpos[-need:][::-1].copy(), fps_in).resample(fps_out)
    return clip.qpos[:frames][::-1].copy()


@dataclass
class PhysicsRollout:
    """What a physics run produced: qpos (S, 26) at the control rate from the first plan's start, the planned
    tokens and per window the COM goal error (m) of the robot's own COM; ``fell`` stops the run."""

    qpos: np.ndarray
    fps: float
    tokens: list[np.ndarray] = field(default_factory=list)
    goal_errors: list[float] = field(default_factory=list)
    fell: bool = False


class TokenExecutor:
    """The shipped (or given) low-level policy driving one simulated H1 from planned windows."""

    def __init__(self, tokenizer: MotionTokenizer, lowlevel: str | Path):
        self.tokenizer = tokenizer
        self.tokenizer_id = tokenizer_fingerprint(tokenizer)
        self.policy, config = load_actor(lowlevel, self.tokenizer_id)  # refuses another tokenizer's policy
        self.cfg = tracking_config({**config.get("env", {}), "num_threads": 1})
        self.fps = self.cfg.control_hz
        features = standing_features(tokenizer.fps, 2 * PAST)  # (2P, 127)
        standing = feat.qpos_from_features(features, tokenizer.fps)  # (2P, 26)
        self.history = [MotionClip("standing", standing, tokenizer.fps).resample(self.fps).qpos]  # (S, 26) blocks
        # Built here, not in the first execute(): compiling the scene is set-up, like loading the checkpoints. Its
        # reference until the first plan is the standing start (placeholder tokens, never observed).
        window = tokenizer.window
        none = np.zeros((window, 3))
        placeholder = Plan(np.zeros(tokenizer.num_tokens, np.int64), features[:window], standing[:window], none, none)
        self.sim = TrackingSim(self.reference(placeholder), 1, self.cfg)
        self.started = False

    def reference(self, plan) -> ReferenceLibrary:
        """The plan as a one-clip reference at the control rate."""
        clip = MotionClip("plan", plan.qpos, self.tokenizer.fps)
        arrays = step_arrays(clip, plan.tokens[None].astype(np.int64), plan.features, self.fps)
        return ReferenceLibrary.from_parts(["plan"], [arrays], self.tokenizer_id, self.tokenizer.vocab_size, self.fps)

    def recent(self, frames: int = PAST) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The robot's last ``frames`` frames at the tokenizer's rate: features (F, 127), qpos (F, 26), COM (F, 3)."""
        qpos = resample_tail(np.concatenate(self.history), self.fps, self.tokenizer.fps, frames + 2)
        features = feat.clip_features(MotionClip("robot", qpos, self.tokenizer.fps))
        return features[2:], qpos[2:], forward_kinematics(qpos[2:]).com

    @torch.inference_mode()  # the 100 Hz loop: no autograd bookkeeping at all
    def execute(self, plan, restart_on_fall: bool = False) -> tuple[np.ndarray, bool]:
        """Run one planned window; returns the robot's qpos (S, 26) over it and whether it fell. A fall ends the
        window, or with ``restart_on_fall`` (benchmarks) puts the robot back on the plan's first frame."""
        ref = self.reference(plan)
        self.sim.follow(ref)
        if not self.started:  # the first plan's first frame: a reference state, as training starts its episodes
            self.sim.reset(starts=np.zeros(1, np.int64))
            self.started = True
        states, fell = [], False
        code = None  # the plan's tokens, embedded once: they are the same at every step of the window
        for _ in range(ref.num_steps):
            obs = torch.as_tensor(self.sim.observe(actor_only=True))
            if code is None:
                code = self.policy.pi_features_extractor.token_code(obs)
            self.sim.act(self.policy.mean_action(obs, code).numpy())
            states.append(self.sim.qpos[0].copy())
            if fallen(states[-1]) or self.sim.unstable[0]:
                fell = True
                if not restart_on_fall:
                    break
                self.sim.reset(starts=np.zeros(1, np.int64))
        self.history.append(np.array(states))
        return self.history[-1], fell

    def close(self) -> None:
        self.sim.close()


def run_physics(
    planner: Planner, executor: TokenExecutor, windows: int, progress: Callable[[int], None] | None = None
) -> PhysicsRollout:
    """Plan and execute ``windows`` windows, each planned from the robot's own last frames; stops at a fall."""
    out = PhysicsRollout(np.zeros((0, 26)), executor.fps)
    fps_ratio = planner.tokenizer.fps / executor.fps
    features, qpos, com = executor.recent()
    for _ in range(windows):
        plan = planner.plan(features, qpos, com)
        states, out.fell = executor.execute(plan)
        out.qpos = np.concatenate((out.qpos, states))
        out.tokens.append(plan.tokens)
        n = max(2, min(len(plan.com), round(len(states) * fps_ratio)))  # frames of the window the robot lived
        past_com, last_qpos = com, qpos[-1]
        features, qpos, com = executor.recent()  # the next plan's context; its tail is the window just lived
        out.goal_errors.append(goal_error(past_com, last_qpos, com[-n:], plan.goal_path[:n]))
        if progress is not None:
            progress(1)
        if out.fell:
            break
    return out
