"""Training loop of the low-level policy: PPO over :class:`envs.vec_env.H1TrackingVecEnv`, with a progress bar,
TensorBoard (reward terms, episode length, falls, tracking error, steps/s), atomic periodic checkpoints at rollout
boundaries (where a resumed run continues exactly), SIGINT/SIGTERM and a wall-clock limit that stop at the next
boundary after saving.

Every checkpoint's config carries the run's ``history``: one entry per training invocation (chunk) that trained,
``{command, machine, started, steps_from, steps_to, wall_s}``, the current one brought up to date at each save.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from control.lowlevel import (
    PolicyConfig,
    PPOConfig,
    check_tokenizer,
    make_ppo,
    read_policy_config,
    restore,
    save_policy,
)
from envs.vec_env import H1TrackingVecEnv
from motiontok.errors import CheckpointError


@dataclass
class RunConfig:
    total_steps: int = 2_000_000
    num_envs: int = 64
    seed: int = 0
    torch_threads: int = 0  # 0 = torch's default
    ckpt_every: int = 100_000  # environment steps
    max_minutes: float = 0.0  # stop (after a checkpoint) past this wall-clock time; 0 = no limit
    progress: bool = True
    device: str = "cpu"
    assist_start: float = 0.0  # virtual pelvis support at step 0 (envs.tracking.SUPPORT_GAINS x this); 0 = none
    assist_steps: int = 0  # linear: environment steps over which the support fades to 0
    assist_mode: str = "linear"  # linear | adaptive (fades only while the policy keeps the robot up)
    assist_fell_target: float = 0.5  # adaptive: fade while the smoothed share of episodes that fall is below this
    init_from: str = ""  # a new run starts from this policy's weights, steps and history (e.g. the shipped policy)
    init_std: float = 0.0  # with init_from: reset the action noise std of every joint to this (action units); 0 = keep

    def assist(self, num_timesteps: int) -> float:
        """The linear schedule's scale at ``num_timesteps`` (evaluation and run_policy never use the support)."""
        if self.assist_start <= 0.0 or self.assist_steps <= 0:
            return 0.0
        return self.assist_start * max(0.0, 1.0 - num_timesteps / self.assist_steps)


ASSIST_RATE = 0.97
"""Adaptive support: the factor applied per rollout (down while falls are rare, up while they are frequent)."""


def adaptive_assist(run: RunConfig, scale: float, fell_ema: float) -> float:
    """The next rollout's support scale: x ``ASSIST_RATE`` while the smoothed fall share is below
    ``assist_fell_target``, / ``ASSIST_RATE`` (at most ``assist_start``) while it is 0.2 above, else unchanged; a
    scale below 1% of the start becomes 0 for good."""
    if scale <= 0.01 * run.assist_start:
        return 0.0
    if fell_ema < run.assist_fell_target:
        scale *= ASSIST_RATE
    elif fell_ema > run.assist_fell_target + 0.2:
        scale = min(run.assist_start, scale / ASSIST_RATE)
    return scale if scale > 0.01 * run.assist_start else 0.0


def machine_description() -> str:
    """Host name, architecture and processor of this machine (the ``machine`` of a run's record)."""
    return f"{platform.node()} {platform.machine()} {platform.processor()}".strip()


def _device_name(device: str) -> str:
    """What ran the PPO updates: ``cpu`` or the GPU's name."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def chunk_entry(config: dict[str, Any], env: H1TrackingVecEnv, steps_from: int) -> dict[str, Any]:
    """The history entry of this training invocation, before it has trained (its own steps and time are 0)."""
    machine = {
        "description": config.get("machine") or machine_description(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "physics_threads": env.sim.num_threads,
        "device": _device_name(str(config.get("run", {}).get("device", "cpu"))),
    }
    return {
        "command": config.get("command") or " ".join(sys.argv),
        "machine": machine,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "steps_from": steps_from,
        "steps_to": steps_from,
        "wall_s": 0.0,
    }


class TrainingCallback(BaseCallback):
    """Logging, checkpoints and graceful stops (see the module docstring). ``history`` lists the earlier chunks of
    the run; ``chunk`` is this invocation's entry (see :func:`chunk_entry`), updated at every save."""

    def __init__(
        self,
        env: H1TrackingVecEnv,
        out_dir: Path,
        run: RunConfig,
        config: dict[str, Any],
        history: list[dict[str, Any]],
        chunk: dict[str, Any],
        assist_state: dict[str, float] | None = None,
    ):
        super().__init__()
        self.env, self.out_dir, self.run, self.config = env, out_dir, run, config
        self.history, self.chunk = history, chunk
        assist = assist_state or {"scale": run.assist_start, "fell_ema": 1.0}
        env.sim.assist, self.fell_ema = float(assist["scale"]), float(assist["fell_ema"])
        if run.assist_mode not in ("linear", "adaptive"):
            raise ValueError(f"run.assist_mode must be linear or adaptive, got {run.assist_mode!r}")
        self.start = time.monotonic()
        self.last_ckpt = 0
        self.saved_steps = -1  # environment steps of the last checkpoint written
        self.stop_requested = False  # set by a signal or the time limit
        self.stopped = False  # a checkpoint was written for the stop: end learn() now
        self.bar = None
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.terms: dict[str, float] = {}
        self.steps = 0
        self.key_dist = 0.0
        self.ended = self.fell = 0
        self.reasons: dict[str, int] = {}
        self.ep_len_sum = 0
        self.t_rollout = time.monotonic()

    def _on_training_start(self) -> None:
        self.last_ckpt = self.num_timesteps
        if self.run.progress:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.run.total_steps,
                initial=self.num_timesteps,
                unit="step",
                desc="ppo",
                dynamic_ncols=True,
                smoothing=0.05,
            )

    def _on_rollout_start(self) -> None:
        over_time = self.run.max_minutes > 0 and time.monotonic() - self.start > 60 * self.run.max_minutes
        self.stop_requested |= over_time
        if self.num_timesteps - self.last_ckpt >= self.run.ckpt_every or self.stop_requested:
            self.save()
        self.stopped = self.stop_requested
        self._update_assist()
        self._reset_stats()

    def _update_assist(self) -> None:
        """Set the support for the coming rollout (linear schedule, or adaptive from the last rollout's falls)."""
        if self.run.assist_mode == "linear":
            self.env.sim.assist = self.run.assist(self.num_timesteps)
            return
        if self.ended:
            self.fell_ema = 0.8 * self.fell_ema + 0.2 * self.fell / self.ended
            self.env.sim.assist = adaptive_assist(self.run, self.env.sim.assist, self.fell_ema)

    def _on_step(self) -> bool:
        n = self.env.num_envs
        for k, v in self.env.last_terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + float(v.sum())
        self.key_dist += float(self.env.sim.last_errors.key_dist.sum())
        self.steps += n
        for k, v in self.env.sim.last_reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + int(v.sum())
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                self.ended += 1
                self.fell += ep["fell"]
                self.ep_len_sum += ep["l"]
        if self.bar is not None:
            self.bar.update(n)
        return not self.stopped

    def _on_rollout_end(self) -> None:
        log = self.logger.record
        for k, v in self.terms.items():
            log(f"reward/{k}", v / max(self.steps, 1))
        log("track/key_point_error_mm", 1000.0 * self.key_dist / max(self.steps, 1))
        if self.ended:
            log("episode/length_s", self.ep_len_sum / self.ended / self.env.sim.cfg.control_hz)
            log("episode/fell_rate", self.fell / self.ended)
            for k, v in self.reasons.items():  # share of ended episodes that each rule ended (rules may coincide)
                log(f"termination/{k}", v / self.ended)
        log("time/env_steps_per_s", self.steps / max(time.monotonic() - self.t_rollout, 1e-9))
        log("train/assist", self.env.sim.assist)
        if self.bar is not None and self.ended:
            self.bar.set_postfix(
                ep_s=f"{self.ep_len_sum / self.ended / 100:.2f}",
                fell=f"{self.fell / self.ended:.2f}",
                err_mm=f"{1000 * self.key_dist / max(self.steps, 1):.0f}",
            )

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def record(self, num_timesteps: int) -> dict[str, Any]:
        """The checkpoint config at ``num_timesteps``: the run's record and its history, this chunk's entry brought
        up to date (and left out while it has trained no step)."""
        self.chunk.update(steps_to=int(num_timesteps), wall_s=round(time.monotonic() - self.start, 1))
        trained = self.chunk["steps_to"] > self.chunk["steps_from"]
        assist = {"scale": self.env.sim.assist, "fell_ema": self.fell_ema}
        return {
            **self.config,
            "history": [*self.history, self.chunk] if trained else self.history,
            "assist_state": assist,
        }

    def save(self) -> None:
        config = self.record(self.model.num_timesteps)
        save_policy(self.out_dir / "checkpoints" / "latest", self.model, self.env, config)
        self.last_ckpt = self.saved_steps = self.num_timesteps


@contextlib.contextmanager
def _stop_on_signals(callback: TrainingCallback):
    """SIGINT/SIGTERM ask the callback to stop at the next rollout boundary; handlers restored on exit."""

    def handler(signum, frame):
        callback.stop_requested = True

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not in the main thread
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def train_lowlevel(
    env: H1TrackingVecEnv,
    out_dir: str | Path,
    run: RunConfig,
    policy: PolicyConfig,
    ppo: PPOConfig,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Train (or resume from ``out_dir/checkpoints/latest``) up to ``run.total_steps``; returns a summary and
    writes ``out_dir/final`` (weights and config, no trainer state)."""
    out_dir = Path(out_dir)
    if run.init_std < 0.0 or not math.isfinite(run.init_std) or (run.init_std > 0.0 and not run.init_from):
        raise ValueError(f"run.init_std must be a positive std with run.init_from (0 = keep), got {run.init_std}")
    if run.torch_threads > 0:
        torch.set_num_threads(run.torch_threads)
    model = make_ppo(
        env,
        env.sim.layout,
        env.sim.ref.vocab_size,
        policy,
        ppo,
        run.seed,
        run.device,
        tensorboard_log=str(out_dir / "tb"),
    )
    history, assist = _resume(model, env, out_dir / "checkpoints" / "latest")
    if model.num_timesteps == 0 and run.init_from:
        history = warm_start(model, env, Path(run.init_from), config, run.init_std)
    chunk = chunk_entry(config, env, model.num_timesteps)
    callback = TrainingCallback(env, out_dir, run, config, history, chunk, assist)
    t0 = time.monotonic()
    start_steps = model.num_timesteps
    remaining = run.total_steps - model.num_timesteps
    if remaining > 0:
        with _stop_on_signals(callback):
            model.learn(remaining, callback=callback, reset_num_timesteps=False, tb_log_name="ppo")
        if not callback.stopped:  # learn() ended at a rollout boundary; a stop was saved at its boundary
            callback.save()
    wall = time.monotonic() - t0
    # a stop was saved at a rollout boundary: SB3 took one more step before the callback could end learn()
    steps = callback.saved_steps if callback.stopped else model.num_timesteps
    summary = {
        "num_timesteps": int(steps),
        "wall_s": round(wall, 1),
        "steps_per_s": round((steps - start_steps) / max(wall, 1e-9), 1),
        "finished": model.num_timesteps >= run.total_steps,
    }
    if summary["finished"]:
        save_policy(out_dir / "final", model, env, callback.record(model.num_timesteps), with_state=False)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def warm_start(
    model: PPO, env: H1TrackingVecEnv, source: Path, config: dict[str, Any], init_std: float = 0.0
) -> list[dict[str, Any]]:
    """Start a new run from the weights of the policy checkpoint ``source`` (a ``final/`` or exported directory,
    no trainer state needed): a fresh optimizer and fresh episodes, the step count and chunk history carried on.
    The policy must match this run: same tokenizer, observation layout, action mode and scale, network sizes and
    observation normalisation. ``init_std`` > 0 resets the exploration noise (the std of every action, or of
    gSDE's noise matrix entries) to that value: the learned std shrinks only as fast as the KL-limited rate."""
    tensors, saved, _ = read_policy_config(source)
    check_tokenizer(saved, env.sim.ref.tokenizer_id, source)
    mine = _shape_of(config | {"layout": env.sim.layout.as_dict()})
    differ = sorted(k for k, v in _shape_of(saved).items() if v != mine[k])
    if differ:
        raise CheckpointError(f"{source}: cannot start from this policy, its {', '.join(differ)} differ from the run's")
    restore(model, env, tensors, saved, None)
    if init_std > 0.0:
        with torch.no_grad():
            model.policy.log_std.fill_(math.log(init_std))
    print(f"starting from the weights of {source} at {model.num_timesteps} environment steps")
    return list(saved.get("history", []))


def _shape_of(config: dict[str, Any]) -> dict[str, Any]:
    """What a policy's weights mean: observation layout, action mode and scale, network sizes (JSON-normalised)."""
    env, policy = config.get("env", {}), config.get("policy", {})
    return json.loads(
        json.dumps(
            {
                "layout": config.get("layout"),
                **{k: env.get(k) for k in ("action_mode", "action_scale", "next_tokens")},
                **{k: policy.get(k) for k in ("embed_dim", "conv_channels", "token_features", "net_arch")},
                "normalize_obs": bool(policy.get("normalize_obs", False)),  # absent in older checkpoints: off
                "use_sde": bool(policy.get("use_sde", False)),
            }
        )
    )


def _resume(model: PPO, env: H1TrackingVecEnv, latest: Path) -> tuple[list[dict[str, Any]], dict | None]:
    """Restore ``model`` and ``env`` from the checkpoint ``latest`` when there is one; returns its chunk history
    (empty for a new run or a checkpoint written before histories were recorded) and its support state (None)."""
    if not latest.exists():
        return [], None
    tensors, saved, state = read_policy_config(latest, trainer_state=True)
    if saved.get("tokenizer_id") != env.sim.ref.tokenizer_id:
        raise ValueError(f"{latest}: trained on another tokenizer's tokens; use a new out_dir")
    restore(model, env, tensors, saved, state)
    print(f"resuming from {latest} at {model.num_timesteps} environment steps")
    return list(saved.get("history", [])), saved.get("assist_state")
