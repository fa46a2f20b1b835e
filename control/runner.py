"""Generating motion with the high-level policy, window after window: each window's 64 tokens come from the text,
the motion so far (its last 32 frames) and a centre-of-mass goal, are decoded by the tokenizer and appended; the
next window is planned from the motion just produced (``run_policy.py`` plays the result back by IK, or hands the
tokens to the low-level policy in physics).

The COM goal of a window: the COM moves at ``speed`` (m/s, horizontally) along the current heading while the
heading turns at ``turn_rate`` (rad/s), from the COM's current ground point; its height stays the current one or,
with ``height``, goes there within the window (a smooth step), so that crouching or getting down can be asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from control.highlevel import DEFAULT_GUIDANCE, Context, HighLevelPolicy
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
HEIGHT_RANGE = (0.1, 1.3)
"""m: COM heights a goal may ask for (the data's COM: 0.99 m standing, 0.6 crouching, 0.3 on the ground)."""


@dataclass(frozen=True)
class Goal:
    """The COM goal: horizontal speed (m/s) along the heading, which turns at ``turn_rate`` (rad/s, left > 0), and
    optionally a COM ``height`` (m) to reach (None: keep the current one)."""

    speed: float = 0.0
    turn_rate: float = 0.0
    height: float | None = None

    def __post_init__(self) -> None:
        for name, value, limit in (("speed", self.speed, MAX_SPEED), ("turn_rate", self.turn_rate, MAX_TURN_RATE)):
            if not np.isfinite(value) or abs(value) > limit:
                raise ValueError(f"COM goal {name} must be a finite number within +-{limit}, got {value}")
        if self.speed < 0:
            raise ValueError(f"COM goal speed must be >= 0 (turn around with turn_rate), got {self.speed}")
        lo, hi = HEIGHT_RANGE
        if self.height is not None and not (np.isfinite(self.height) and lo <= self.height <= hi):
            raise ValueError(f"COM goal height must be a number of metres in [{lo}, {hi}], got {self.height}")

    def path(self, fps: float, height: float, n: int = FUTURE) -> np.ndarray:
        """The next ``n`` COM positions (n, 3) in the current heading frame, from the current ground point and the
        current COM ``height``, which moves to the goal's height (if any) along a smooth step over the n frames."""
        k = np.arange(1, n + 1)
        yaw = self.turn_rate * k / fps  # (n,)
        xy = np.cumsum(np.stack((np.cos(yaw), np.sin(yaw)), 1) * self.speed / fps, axis=0)  # (n, 2)
        u = k / n  # (n,) in (0, 1]
        target = height if self.height is None else self.height
        z = height + (target - height) * u * u * (3.0 - 2.0 * u)  # (n,) smooth step, reaching the target at n
        return np.concatenate((xy, z[:, None]), axis=1)


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


@dataclass
class Plan:
    """One planned window: tokens (T,), decoded features (L, 127), its qpos (L, 26) stepping on from the motion
    so far, its COM (L, 3, world) and the COM goal path (L, 3, heading frame of the window's start)."""

    tokens: np.ndarray
    features: np.ndarray
    qpos: np.ndarray
    com: np.ndarray
    goal_path: np.ndarray


class Planner:
    """The high-level policy with its text, COM goal and sampling settings: :meth:`plan` turns the last
    ``PAST`` frames of a motion into the next window."""

    def __init__(
        self,
        tokenizer: MotionTokenizer,
        policy: HighLevelPolicy,
        text: torch.Tensor,
        goal: Goal,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        guidance: float = DEFAULT_GUIDANCE,
        seed: int = 0,
    ):
        self.tokenizer, self.policy, self.goal = tokenizer, policy, goal
        self.device = next(policy.parameters()).device
        self.text = text[None].float().to(self.device)  # (1, D)
        self.sampling = {"temperature": temperature, "top_k": top_k, "guidance": guidance}
        self.generator = torch.Generator(self.device).manual_seed(seed)

    @torch.inference_mode()  # its tensors end as numpy arrays; ~10% faster than no_grad per token (bench)
    def plan(self, features: np.ndarray, qpos: np.ndarray, com: np.ndarray) -> Plan:
        """The next window after a motion given by its last PAST frames: features (P, 127), qpos (P, 26) and
        COM (P, 3, world), at the tokenizer's rate."""
        tok, fps = self.tokenizer, self.tokenizer.fps
        goal_path = self.goal.path(fps, com[-1, 2])
        ctx = Context(
            text=self.text,
            pose=tok.normalizer.normalize(torch.from_numpy(features[-PAST:]).float().to(tok.device))[None],
            com=torch.from_numpy(np.concatenate((com_context(com[-PAST:], qpos[-1]), goal_path))).float()[None],
        )
        ctx = Context({k: v.to(self.device) for k, v in ctx.items()})
        tokens = self.policy.sample(ctx, generator=self.generator, **self.sampling).cpu()  # (1, T)
        window = tok.decode(tokens)[0].double().cpu().numpy()  # (L, 127) raw
        q = _continue_root(qpos[-1], window, fps)
        return Plan(tokens[0].numpy(), window, q, forward_kinematics(q).com, goal_path)


def goal_error(past_com: np.ndarray, last_qpos: np.ndarray, com: np.ndarray, goal_path: np.ndarray) -> float:
    """Mean distance (m) between the COM (L, 3, world) of a window that followed ``past_com`` (P, 3) and the
    window's goal path (L, 3, in the heading frame of ``last_qpos`` (26,), the motion's state before it)."""
    realised = com_context(np.concatenate((past_com[-PAST:], com)), last_qpos)[PAST:]
    return float(np.linalg.norm(realised - goal_path, axis=1).mean())


def generate(planner: Planner, windows: int, progress: Callable[[int], None] | None = None) -> Rollout:
    """Plan ``windows`` windows from a standing start, each from the planned motion so far (kinematic mode)."""
    fps = planner.tokenizer.fps
    start = standing_features(fps)
    qpos = feat.qpos_from_features(start, fps)
    out = Rollout(start, qpos, forward_kinematics(qpos).com)
    for _ in range(windows):
        plan = planner.plan(out.features, out.qpos, out.com)
        out.goal_errors.append(goal_error(out.com, out.qpos[-1], plan.com, plan.goal_path))
        out.features = np.concatenate((out.features, plan.features))
        out.qpos, out.com = np.concatenate((out.qpos, plan.qpos)), np.concatenate((out.com, plan.com))
        out.tokens.append(plan.tokens)
        if progress is not None:
            progress(1)
    return out
