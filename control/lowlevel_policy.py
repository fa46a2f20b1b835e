"""The token-conditioned low-level policy (paper appendix I) as a stable-baselines3 actor-critic.

Actor: token indices -> embedding -> two 1D convolutions over the 64 token positions (kernel = stride = 4,
:class:`PatchConv1d`) -> linear ->
concatenated with proprioception -> MLP (ELU) -> 19 action means. The paper's sizes (MLP [2048, 1024, 512]) are
the ``paper`` preset; the CPU default is smaller. Critic: an MLP over proprioception and the privileged
reference state (``envs.observations``); the actor never reads that block. The tokenizer is not part of the
policy: observations carry token indices, computed by the environment with the frozen tokenizer. With
``normalize=True`` the actor's proprioception and the critic's inputs pass through running statistics
(:class:`ObsNorm`, saved with the weights); token indices are never normalised.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from envs.tracking import ACTION_CLIP

Layout = dict[str, Any]  # ObsLayout.as_dict(): block name -> (start, stop) or None


def _cols(obs: Tensor, span: tuple[int, int]) -> Tensor:
    return obs[:, span[0] : span[1]]


class PatchConv1d(nn.Module):
    """1D convolution whose stride equals its kernel, on channels-last input: (B, L, C_in) -> (B, L / k, C_out).

    The same map as ``nn.Conv1d(C_in, C_out, k, stride=k)`` (tested against it), computed as one linear layer
    over the non-overlapping windows: about 3x faster than PyTorch's CPU convolution in forward + backward
    (measured at batch 2048, one thread), which dominates PPO updates on CPU otherwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.linear = nn.Linear(kernel * in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        b, length, c = x.shape
        if length % self.kernel:
            raise ValueError(f"sequence length {length} is not a multiple of the kernel {self.kernel}")
        return self.linear(x.reshape(b, length // self.kernel, self.kernel * c))  # (B, L/k, C_out)


class ObsNorm(nn.Module):
    """Running mean and variance of observation columns (Chan et al.'s parallel update), applied as
    ``(x - mean) / std`` clipped to +-10. Its statistics are buffers: saved and restored with the weights. They
    change only through :meth:`update`, which the trainer calls once per rollout after the update that used them
    (so a rollout and the update on it see the same normalisation; evaluation and inference never change them)."""

    def __init__(self, dim: int, clip: float = 10.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge a batch (B, dim) into the statistics."""
        x = x.to(torch.float64)
        n, mean, var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.fill_(float(total))

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + 1e-8)
        return z.clamp(-self.clip, self.clip)


class TokenFeatures(BaseFeaturesExtractor):
    """Actor features: embedded, convolved tokens (+ the next window's) and proprioception."""

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        layout: Layout,
        vocab_size: int = 1024,
        embed_dim: int = 32,
        conv_channels: int = 64,
        token_features: int = 256,
        normalize: bool = False,
    ):
        proprio = layout["proprio"][1] - layout["proprio"][0]
        super().__init__(observation_space, token_features + proprio)
        self.layout, self.vocab_size = layout, vocab_size
        self.norm = ObsNorm(proprio) if normalize else None  # running statistics of the proprioception
        blocks = 2 if layout.get("next_tokens") else 1
        num_tokens = layout["tokens"][1] - layout["tokens"][0]
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.conv = nn.Sequential(
            PatchConv1d(blocks * embed_dim, conv_channels, 4),
            nn.ELU(),
            PatchConv1d(conv_channels, conv_channels, 4),
            nn.ELU(),
        )
        self.proj = nn.Sequential(nn.Linear(conv_channels * (num_tokens // 16), token_features), nn.ELU())

    def token_ids(self, obs: Tensor) -> Tensor:
        """(B, blocks * 64) long token indices from the observation; out-of-range values are an error."""
        spans = [self.layout["tokens"]] + ([self.layout["next_tokens"]] if self.layout.get("next_tokens") else [])
        raw = torch.cat([_cols(obs, tuple(s)) for s in spans], dim=1)
        ids = raw.round().long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"token indices must lie in [0, {self.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]"
            )
        return ids

    def token_code(self, obs: Tensor) -> Tensor:
        """(B, token_features): the tokens' part of the features (constant while the tokens are)."""
        ids = self.token_ids(obs)  # (B, blocks * 64)
        b, n = ids.shape[0], self.layout["tokens"][1] - self.layout["tokens"][0]
        emb = self.embed(ids).view(b, -1, n, self.embed.embedding_dim)  # (B, blocks, 64, E)
        emb = emb.permute(0, 2, 1, 3).reshape(b, n, -1)  # (B, 64, blocks * E): both windows' token at a position
        return self.proj(self.conv(emb).flatten(1))  # (B, 4 * C) -> (B, token_features)

    def forward(self, obs: Tensor, token_code: Tensor | None = None) -> Tensor:
        """(B, features); ``token_code`` (B, token_features) of :meth:`token_code` for these tokens skips them."""
        tokens = self.token_code(obs) if token_code is None else token_code
        x = self.inputs(obs)
        return torch.cat([tokens, x if self.norm is None else self.norm(x)], dim=1)

    def inputs(self, obs: Tensor) -> Tensor:
        """(B, proprio) the raw proprioception block (what :attr:`norm` keeps statistics of)."""
        return _cols(obs, tuple(self.layout["proprio"]))


class CriticFeatures(BaseFeaturesExtractor):
    """Critic features: proprioception and the privileged reference state, projected to ``features_dim``."""

    def __init__(self, observation_space: gym.spaces.Box, layout: Layout, features_dim: int, normalize: bool = False):
        super().__init__(observation_space, features_dim)
        self.layout = layout
        width = (layout["proprio"][1] - layout["proprio"][0]) + (layout["privileged"][1] - layout["privileged"][0])
        self.norm = ObsNorm(width) if normalize else None
        self.net = nn.Sequential(nn.Linear(width, features_dim), nn.ELU())

    def inputs(self, obs: Tensor) -> Tensor:
        """(B, proprio + privileged) the critic's raw inputs (what :attr:`norm` keeps statistics of)."""
        return torch.cat([_cols(obs, tuple(self.layout["proprio"])), _cols(obs, tuple(self.layout["privileged"]))], 1)

    def forward(self, obs: Tensor) -> Tensor:
        x = self.inputs(obs)
        return self.net(x if self.norm is None else self.norm(x))


def bounds_penalty(mean: Tensor, bound: float = ACTION_CLIP) -> Tensor:
    """Mean over the rows (B, A) of sum_j relu(|mean_j| - bound)^2: how far the Gaussian's means lie beyond the
    action clip. Beyond the clip a mean no longer changes what the robot does, so PPO's noisy gradient lets it
    drift (and its samples are clipped too: no exploration left on that joint); this loss pulls it back."""
    return torch.relu(mean.abs() - bound).square().sum(-1).mean()


class TokenActorCriticPolicy(ActorCriticPolicy):
    """SB3 actor-critic with :class:`TokenFeatures` for the actor and :class:`CriticFeatures` for the critic.
    Pass ``features_extractor_kwargs=dict(layout=..., vocab_size=...)``.

    ``bounds_coef`` > 0 adds ``bounds_coef * bounds_penalty(mean)`` to PPO's loss (set by
    :func:`control.lowlevel.make_ppo`). SB3's ``PPO.train`` has no place for another loss term, so the term's
    gradient is added where the loss's gradient reaches the action means, by a hook on them: the same update as the
    summed loss (tested against autograd)."""

    bounds_coef: float = 0.0
    last_bounds_penalty: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["features_extractor_class"] = TokenFeatures
        kwargs["share_features_extractor"] = False
        kwargs.setdefault("activation_fn", nn.ELU)
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        layout, normalize = self.features_extractor_kwargs["layout"], self.features_extractor_kwargs.get("normalize")
        self.vf_features_extractor = CriticFeatures(self.observation_space, layout, self.features_dim, bool(normalize))
        super()._build(lr_schedule)

    def _get_action_dist_from_latent(self, latent_pi: Tensor) -> Any:
        dist = super()._get_action_dist_from_latent(latent_pi)
        if self.bounds_coef > 0.0 and torch.is_grad_enabled():
            mean = dist.distribution.mean  # (B, A): the tensor log_prob reads
            m = mean.detach()
            self.last_bounds_penalty = float(bounds_penalty(m))
            excess = torch.relu(m.abs() - ACTION_CLIP)  # (B, A)
            extra = self.bounds_coef * 2.0 * excess * m.sign() / len(m)  # d(coef * penalty) / d mean
            mean.register_hook(lambda grad: grad + extra)
        return dist

    @torch.no_grad()
    def update_normalizers(self, obs: Tensor) -> None:
        """Merge observations (B, obs) into the actor's and the critic's running statistics (if they keep any)."""
        for extractor in (self.pi_features_extractor, self.vf_features_extractor):
            if extractor.norm is not None:
                extractor.norm.update(extractor.inputs(obs))

    @torch.no_grad()
    def mean_action(self, obs: Tensor, token_code: Tensor | None = None) -> Tensor:
        """(B, 19) the deterministic action (the Gaussian's mean, unclipped) of observations (B, obs): the actor path
        of :meth:`get_distribution` without building the distribution (the 100 Hz inference loop). ``token_code``:
        ``pi_features_extractor.token_code(obs)`` computed once while the tokens stay the same (a whole window)."""
        features = self.pi_features_extractor(obs.float(), token_code)  # Box observations need no other preprocessing
        return self.action_net(self.mlp_extractor.forward_actor(features))
