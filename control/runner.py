"""Generating motion with the high-level policy, window after window: each window's 64 tokens come from the text,
the motion so far (its last 32 frames) and a centre-of-mass goal, are decoded by the tokenizer and appended; the
next window is planned from the motion just produced (``run_policy.py`` plays the result back by IK, or hands the
tokens to the low-level policy in physics).

The COM goal of a window: the COM moves at ``speed`` (m/s, horizontally) along the current heading while the
heading turns at ``turn_rate`` (rad/s), from the COM's current ground point; its height stays the current one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from control.highlevel import Context, HighLevelPolicy
from control.highlevel_data import FUTURE, PAST, com_context
from motiontok import features as feat
from motiontok.motion import MotionClip, forward_kinematics
from motiontok.robot import load_model
from motiontok.rotations import heading_of_mat, quat_to_mat
from motiontok.tokenizer import MotionTokenizer

MAX_SPEED = 6.0
"""m/s: above what the data holds (LAFAN sprints peak near 5 m/s); a larger COM goal is refused."""
MAX_TURN_RATE = 3.0
"""rad/s."""


@dataclass(frozen=True)
class Goal:
    """The COM goal: horizontal speed (m/s) along the heading, which turns at ``turn_rate`` (rad/s, left > 0)."""

    speed: float = 0.0
    turn_rate: float = 0.0

    def __post_init__(self) -> None:
        for name, value, limit in (("speed", self.speed, MAX_SPEED), ("turn_rate", self.turn_rate, MAX_TURN_RATE)):
            if not np.isfinite(value) or abs(value) > limit:
                raise ValueError(f"COM goal {name} must be a finite number within +-{limit}, got {value}")
        if self.speed < 0:
            raise ValueError(f"COM goal speed must be >= 0 (turn around with turn_rate), got {self.speed}")

    def path(self, fps: float, height: float, n: int = FUTURE) -> np.ndarray:
        """The next ``n`` COM positions (n, 3) in the current heading frame, from the current ground point."""
        k = np.arange(1, n + 1)
        yaw = self.turn_rate * k / fps  # (n,)
        xy = np.cumsum(np.stack((np.cos(yaw), np.sin(yaw)), 1) * self.speed / fps, axis=0)  # (n, 2)
        return np.concatenate((xy, np.full((n, 1), height)), axis=1)


def standing_features(fps: float, frames: int = PAST) -> np.ndarray:
    """(frames, 127) features of the H1 standing still in its ``home`` keyframe: the context of the first plan."""
    model = load_model(scene=True)
    qpos = np.tile(model.key("home").qpos, (frames, 1))
    return feat.clip_features(MotionClip("standing", qpos, fps))


@dataclass
class Rollout:
    """What a generation produced: features (N, 127) and qpos (N, 26) at the tokenizer's rate, tokens (W, T),
    the COM (N, 3, world) and per window the COM goal error (m) and the window's start frame."""

    features: np.ndarray
    qpos: np.ndarray
    com: np.ndarray
    tokens: list[np.ndarray] = field(default_factory=list)
    goal_errors: list[float] = field(default_factory=list)


def _continue_root(last_qpos: np.ndarray, window: np.ndarray, fps: float) -> np.ndarray:
    """qpos (L, 26) of a decoded window (L, 127) whose first frame steps on from ``last_qpos`` (26,) by the
    window's own first-frame velocities (no standstill between windows)."""
    yaw0 = heading_of_mat(quat_to_mat(last_qpos[3:7])) + window[0, feat.FEATURE_SLICES["root_yaw_rate"]][0] / fps
    c, s = np.cos(yaw0), np.sin(yaw0)
    v = window[0, feat.FEATURE_SLICES["root_lin_vel"]]
    xy = last_qpos[:2] + np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]]) / fps
    return feat.qpos_from_features(window, fps, (float(xy[0]), float(xy[1])), float(yaw0))


def generate(
    tokenizer: MotionTokenizer,
    policy: HighLevelPolicy,
    text: torch.Tensor,
    goal: Goal,
    windows: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    guidance: float = 1.0,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Rollout:
    """Plan ``windows`` windows from a standing start for the text embedding ``text`` (D,) and the COM goal."""
    fps = tokenizer.fps
    start = standing_features(fps)
    qpos = feat.qpos_from_features(start, fps)
    out = Rollout(start, qpos, forward_kinematics(qpos).com)
    device = next(policy.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    for _ in range(windows):
        past = out.com[-PAST:]
        com = np.concatenate((com_context(past, out.qpos[-1]), goal.path(fps, out.com[-1, 2])))  # (64, 3)
        pose = tokenizer.normalizer.normalize(torch.from_numpy(out.features[-PAST:]).float().to(tokenizer.device))
        ctx = Context(
            text=text[None].float().to(device),
            pose=pose[None].to(device),
            com=torch.from_numpy(com).float()[None].to(device),
        )
        tokens = policy.sample(ctx, temperature, top_k, guidance, generator).cpu()  # (1, T)
        window = tokenizer.decode(tokens)[0].double().cpu().numpy()  # (L, 127) raw
        q = _continue_root(out.qpos[-1], window, fps)
        com = forward_kinematics(q).com
        realised = com_context(np.concatenate((past, com)), out.qpos[-1])[PAST:]
        out.goal_errors.append(float(np.linalg.norm(realised - goal.path(fps, out.com[-1, 2]), axis=1).mean()))
        out.features = np.concatenate((out.features, window))
        out.qpos, out.com = np.concatenate((out.qpos, q)), np.concatenate((out.com, com))
        out.tokens.append(tokens[0].numpy())
        if progress is not None:
            progress(1)
    return out
