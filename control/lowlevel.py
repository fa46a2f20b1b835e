"""Low-level policy checkpoints: build PPO for the tracking task, save and load it, refuse a foreign tokenizer.

A checkpoint is a directory written atomically by :func:`motiontok.checkpoint.save_checkpoint`:
``model.safetensors`` (policy weights), ``config.json`` (task, policy and PPO configs, the tokenizer's
fingerprint, environment steps, the run's record) and, for training checkpoints, ``trainer_state.pt``
(optimizer, RNG streams, the environments' physics state: a resumed run continues exactly). Nothing is
unpickled on load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from control.lowlevel_policy import TokenActorCriticPolicy
from envs.observations import ObsLayout
from envs.rewards import RewardConfig, TerminationConfig
from envs.tracking import TrackingConfig
from envs.vec_env import H1TrackingVecEnv, spaces
from motiontok.checkpoint import load_checkpoint, save_checkpoint
from motiontok.errors import CheckpointError

FORMAT = "motiontok-lowlevel"
FORMAT_VERSION = 1


@dataclass
class PolicyConfig:
    """Sizes of :class:`control.lowlevel_policy.TokenActorCriticPolicy` (paper preset: net_arch [2048, 1024, 512])."""

    embed_dim: int = 16
    conv_channels: int = 32
    token_features: int = 128
    net_arch: list[int] = field(default_factory=lambda: [256, 256, 128])
    log_std_init: float = 0.0
    normalize_obs: bool = False  # running mean/std of the actor's proprioception and the critic's inputs
    use_sde: bool = False
    """Generalized state-dependent exploration (SB3's gSDE): the action noise is the last actor layer times a noise
    matrix drawn every ``PPOConfig.sde_sample_freq`` steps, so it is smooth in time instead of white at 100 Hz;
    ``log_std_init`` is then the log std of that matrix's entries."""


@dataclass
class PPOConfig:
    """stable-baselines3 PPO hyperparameters (rollout = n_steps x num_envs environment steps)."""

    n_steps: int = 32
    batch_size: int = 512
    n_epochs: int = 3
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 1.0
    target_kl: float | None = None
    sde_sample_freq: int = -1  # with PolicyConfig.use_sde: a new noise matrix every n steps (-1: once per rollout)
    adaptive_kl: float | None = 0.01
    """Keep each update's KL divergence near this by adapting the learning rate (rsl_rl's rule: /1.5 above twice
    the target, x1.5 below half of it, within [1e-5, 1e-2]); None = constant ``learning_rate``."""
    bounds_coef: float = 0.0
    """Weight of the loss on action means beyond the [-1, 1] clip
    (:func:`control.lowlevel_policy.bounds_penalty`; 0 = off; not with gSDE)."""


class KLAdaptiveLR:
    """A learning-rate "schedule" that :class:`TrackingPPO` adapts after every update from its measured KL."""

    def __init__(self, lr: float, target_kl: float, low: float = 1e-5, high: float = 1e-2):
        self.lr, self.target_kl, self.low, self.high = lr, target_kl, low, high

    def __call__(self, progress_remaining: float) -> float:
        return self.lr

    def update(self, kl: float) -> None:
        if kl > 2.0 * self.target_kl:
            self.lr = max(self.low, self.lr / 1.5)
        elif kl < 0.5 * self.target_kl:
            self.lr = min(self.high, self.lr * 1.5)


class TrackingPPO(PPO):
    """stable-baselines3 PPO whose learning rate follows :class:`KLAdaptiveLR` when ``lr_schedule`` is one (the
    measured mean approximate KL of each update sets the next update's rate), and whose observation
    normalizers (``PolicyConfig.normalize_obs``) take in each rollout after the update on it."""

    def train(self) -> None:
        super().train()
        if isinstance(self.lr_schedule, KLAdaptiveLR):
            self.lr_schedule.update(float(self.logger.name_to_value["train/approx_kl"]))
        if self.policy.bounds_coef > 0.0:
            self.logger.record("train/bounds_penalty", self.policy.last_bounds_penalty)  # its last minibatch
        obs = self.rollout_buffer.observations  # (n_steps, N, obs): the rollout just trained on
        self.policy.update_normalizers(torch.as_tensor(obs.reshape(-1, obs.shape[-1]), device=self.device))


def tracking_config(d: dict[str, Any]) -> TrackingConfig:
    """TrackingConfig from a plain dict (a config file or a checkpoint's config.json)."""
    d = dict(d)
    reward = RewardConfig(**d.pop("reward", {}))
    termination = TerminationConfig(**d.pop("termination", {}))
    return TrackingConfig(**d, reward=reward, termination=termination)


def make_ppo(
    env: VecEnv,
    layout: ObsLayout,
    vocab_size: int,
    policy: PolicyConfig,
    ppo: PPOConfig,
    seed: int,
    device: str = "cpu",
    tensorboard_log: str | None = None,
) -> PPO:
    """PPO with the token policy on ``env``."""
    kwargs = dataclasses.asdict(ppo)
    adaptive = kwargs.pop("adaptive_kl")
    bounds_coef = kwargs.pop("bounds_coef")
    if bounds_coef < 0.0 or (bounds_coef > 0.0 and policy.use_sde):
        raise ValueError(f"ppo.bounds_coef must be >= 0 and needs Gaussian (not gSDE) actions, got {bounds_coef}")
    model = TrackingPPO(
        TokenActorCriticPolicy,
        env,
        policy_kwargs=policy_kwargs(layout, vocab_size, policy),
        use_sde=policy.use_sde,
        seed=seed,
        device=device,
        verbose=0,
        tensorboard_log=tensorboard_log,
        **kwargs,
    )
    if adaptive is not None:
        model.lr_schedule = KLAdaptiveLR(ppo.learning_rate, adaptive)
    model.policy.bounds_coef = bounds_coef
    return model


def policy_kwargs(layout: ObsLayout, vocab_size: int, policy: PolicyConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`TokenActorCriticPolicy` for a task layout and sizes (``use_sde`` apart: SB3's
    PPO passes that one itself)."""
    return {
        "features_extractor_kwargs": {
            "layout": layout.as_dict(),
            "vocab_size": vocab_size,
            "embed_dim": policy.embed_dim,
            "conv_channels": policy.conv_channels,
            "token_features": policy.token_features,
            "normalize": policy.normalize_obs,
        },
        "net_arch": {"pi": list(policy.net_arch), "vf": list(policy.net_arch)},
        "log_std_init": policy.log_std_init,
    }


def save_policy(
    path: str | Path, model: PPO, env: H1TrackingVecEnv, config: dict[str, Any], with_state: bool = True
) -> Path:
    """Write a checkpoint directory (``with_state``: also what exact resumption needs)."""
    tensors = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}  # aliases (pi extractor) split
    cfg = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer_id": env.sim.ref.tokenizer_id,
        "layout": env.sim.layout.as_dict(),
        "vocab_size": env.sim.ref.vocab_size,
        "num_timesteps": int(model.num_timesteps),
        **config,
    }
    state = None
    if with_state:
        sim_state = env.sim.get_state()
        state = {
            "optimizer": model.policy.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_rng_state(),  # SB3 draws PPO minibatches from numpy's global RNG
            "env": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sim_state.items()},
            "episode_return": torch.from_numpy(env.episode_return.copy()),
            "episode_len": torch.from_numpy(env.episode_len.copy()),
            "last_episode_starts": torch.from_numpy(np.asarray(model._last_episode_starts, bool).copy()),
            "n_updates": int(model._n_updates),
            "lr": float(model.lr_schedule(1.0)),
        }
    return save_checkpoint(path, tensors, cfg, state)


def _numpy_rng_state() -> dict[str, Any]:
    kind, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (SB3 uses the legacy global RNG)
    assert kind == "MT19937"
    return {"key": torch.from_numpy(key.astype(np.int64)), "rest": [int(pos), int(has_gauss), float(gauss)]}


def read_policy_config(
    path: str | Path, trainer_state: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any] | None]:
    """Weights, config and (with ``trainer_state``) the trainer state of a low-level checkpoint; a clear error
    for anything else."""
    tensors, config, state = load_checkpoint(path, trainer_state=trainer_state)
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a low-level policy checkpoint (format={config.get('format')!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {config.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    return tensors, config, state


def check_tokenizer(config: dict[str, Any], tokenizer_id: str, path: str | Path) -> None:
    """Token meanings differ between tokenizers: refuse a policy trained on another one."""
    if config.get("tokenizer_id") != tokenizer_id:
        raise CheckpointError(
            f"{path}: this policy was trained on the tokens of tokenizer {config.get('tokenizer_id')}, but the "
            f"reference motions were tokenized by {tokenizer_id}; use the tokenizer it was trained with or retrain"
        )


def restore(
    model: PPO,
    env: H1TrackingVecEnv,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    state: dict[str, Any] | None,
) -> None:
    """Load weights (and, with ``state``, optimizer, RNG and environment state) into ``model`` and ``env``."""
    model.policy.load_state_dict(tensors)
    model.num_timesteps = int(config["num_timesteps"])
    if state is None:
        return
    model.policy.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(("MT19937", state["numpy_rng"]["key"].numpy(), *state["numpy_rng"]["rest"]))  # noqa: NPY002
    env.sim.set_state({k: v.numpy() for k, v in state["env"].items()})
    env.episode_return[:] = state["episode_return"].numpy()
    env.episode_len[:] = state["episode_len"].numpy()
    model._last_obs = env.sim.observe()
    model._last_episode_starts = state["last_episode_starts"].numpy()
    model._n_updates = int(state["n_updates"])
    if isinstance(model.lr_schedule, KLAdaptiveLR):
        model.lr_schedule.lr = float(state["lr"])


def load_actor(path: str | Path, tokenizer_id: str, device: str = "cpu") -> tuple[TokenActorCriticPolicy, dict]:
    """The policy of a checkpoint for inference (checks the tokenizer); returns (policy, config)."""
    tensors, config, _ = read_policy_config(path)
    check_tokenizer(config, tokenizer_id, path)
    layout = ObsLayout(**{k: tuple(v) if v else None for k, v in config["layout"].items()})
    sizes = PolicyConfig(**config["policy"])
    policy = TokenActorCriticPolicy(
        *spaces(layout), lambda _: 0.0, use_sde=sizes.use_sde, **policy_kwargs(layout, int(config["vocab_size"]), sizes)
    ).to(device)
    try:
        policy.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not match the recorded config ({err})") from None
    policy.set_training_mode(False)
    return policy, config
