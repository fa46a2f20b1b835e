"""Optimisation pieces of the trainer: the learning-rate schedule, the AdamW parameter groups (networks by side,
the estimator's declared groups) and gradient clipping (unit-wise adaptive or global)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from motiontok.trainer import Objective, TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant, or cosine decay from 1 to ``lr_final_ratio`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr_final_ratio + (1 - cfg.lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


ESTIMATOR_ROLES = ("recognition", "generative", "eta")


def make_optimizer(objective: Objective, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over: recognition networks (lr x ``recognition_lr_scale``) and generative networks, each split into
    decayed matrices and undecayed vectors/positions, with the estimator's declared ``recognition`` /
    ``generative`` parameters joining their side; then the estimator's ``eta`` group at ``eta_lr``, constant."""
    declared = objective.estimator.param_groups()
    unknown = set(declared) - set(ESTIMATOR_ROLES)
    listed = [p for ps in declared.values() for p in ps]
    own = list(objective.estimator.parameters())
    if unknown or len(listed) != len(own) or {id(p) for p in listed} != {id(p) for p in own}:
        raise ValueError(
            f"{type(objective.estimator).__name__}.param_groups() must list each of its parameters once under "
            f"{ESTIMATOR_ROLES} (unknown roles: {sorted(unknown)})"
        )
    groups = []
    for recognition in (True, False):
        lr = cfg.lr * (cfg.recognition_lr_scale if recognition else 1.0)
        named = [(n, p) for n, p in objective.model.named_parameters() if n.startswith("decoder.") != recognition]
        named += [
            (f"estimator.{i}", p)
            for i, p in enumerate(declared.get("recognition" if recognition else "generative", []))
        ]
        decay = [p for n, p in named if p.ndim >= 2 and "pos_emb" not in n]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and "pos_emb" not in n)]
        groups += [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": lr, "base_lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr, "base_lr": lr},
        ]
    if declared.get("eta"):
        groups.append(
            {"params": declared["eta"], "weight_decay": 0.0, "lr": cfg.eta_lr, "base_lr": cfg.eta_lr, "fixed": True}
        )
    return torch.optim.AdamW(groups, betas=(0.9, cfg.adam_beta2))


def adaptive_clip_(params: Sequence[nn.Parameter], clipping: float, eps: float = 1e-3) -> Tensor:
    """Unit-wise adaptive gradient clipping (Brock et al. 2021, NFNets), in place.

    A unit is one row of a parameter (its slice along dim 0: an output unit of a Linear or a convolution, an input
    channel of a transposed convolution, one code of an embedding), or the whole parameter for vectors and
    scalars. A unit's gradient g is rescaled to norm ``clipping * max(||w||, eps)`` when it is longer than that, w
    being the unit's weights. Returns the global norm of the gradients before clipping (0-dim tensor)."""
    total = torch.zeros(())
    for p in params:
        if p.grad is None:
            continue
        dims = tuple(range(1, p.ndim)) if p.ndim > 1 else tuple(range(p.ndim))
        g_norm = torch.linalg.vector_norm(p.grad, dim=dims, keepdim=True)  # (rows, 1, ...) or (); any ndim
        max_norm = clipping * torch.linalg.vector_norm(p.detach(), dim=dims, keepdim=True).clamp(min=eps)
        p.grad.mul_((max_norm / g_norm.clamp(min=1e-6)).clamp(max=1.0))
        total = total.to(g_norm.device) + g_norm.square().sum()
    return total.sqrt()


def clip_gradients(model: nn.Module, cfg: TrainConfig) -> Tensor | None:
    """Apply ``cfg.grad_clip_mode`` to the model's gradients; the global gradient norm before clipping, if any."""
    if cfg.grad_clip <= 0 or cfg.grad_clip_mode == "none":
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.grad_clip_mode == "adaptive":
        return adaptive_clip_(params, cfg.grad_clip)
    return nn.utils.clip_grad_norm_(params, cfg.grad_clip)
