"""Validation metrics of a discrete VAE (paper table 1) on any data, and of a motion tokenizer on raw feature
windows (plus robot-space errors)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from motiontok import daps
from motiontok import features as feat
from motiontok.models import DiscreteVAE
from motiontok.motion import forward_kinematics
from motiontok.nets import gaussian_log_prob
from motiontok.nets.quantizers import GaussianBottleneck
from motiontok.normalizer import RunningNormalizer

REFERENCE_VAR = 0.25
"""The variance under which ``log_p_fixed_var`` is reported (the authors' constant LAFAN variance)."""


@torch.no_grad()
def evaluate_model(
    model: DiscreteVAE,
    batches: Iterable[Tensor],
    beta: float = 1.0,
    seed: int = 0,
    fixed_var: float | None = None,
    keep_recon: bool = False,
) -> tuple[dict[str, float], list[Tensor]]:
    """Table-1 metrics of ``model`` over model-ready batches (motion (b, L, F) standardized, images (b, C, S, S)),
    and, with ``keep_recon``, the greedy reconstructions (the likelihood's mean, model units) batch by batch on the
    CPU (else an empty list: a full ImageNet validation set would not fit on a GPU):

    * ``log_p``: mean log p(x|z) with z ~ q(z|x) (one sample per example) under the model's likelihood;
      ``log_p_greedy`` and ``l2`` (Euclidean norm of x - E[x|z] per example) with the greedy code, ``l2_sample``
      with the sampled one; with ``fixed_var``, ``log_p_fixed_var``: the greedy code's Gaussian log p under that
      variance for every element (a function of ``l2`` alone, so models with other or learned variances compare);
    * ``kl``: KL(q || uniform prior) = log q(z|x) + T log V, estimated with the sample; ``elbo`` = log_p - kl,
      ``beta_elbo`` = log_p - beta * kl;
    * ``entropy``: the encoder's per-example entropy (teacher-forced along the sample, summed over positions);
    * ``code_usage``: distinct greedy codes / V, and ``perplexity`` of their histogram.

    Samples come from a generator seeded with ``seed`` on the model's device: evaluating never draws from (or
    moves) the global torch RNG that training samples with, and the same model always gives the same figures.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    V = model.num_codes
    generator = torch.Generator(device).manual_seed(seed)
    keys = ("log_p", "log_p_greedy", "l2", "l2_sample", "kl", "entropy") + (("log_p_fixed_var",) if fixed_var else ())
    sums = dict.fromkeys(keys, 0.0)
    counts = torch.zeros(V, dtype=torch.long)
    recon, n = [], 0
    for x in batches:
        x = x.to(device, torch.float32)
        z_greedy, z, kl, entropy = _codes(model, model.memory(x), generator)  # (b, T), (b, T), (b,), (b,)
        params_g, params_s = model.decode(z_greedy), model.decode(z)
        mean_g, mean_s = model.mean_of(params_g), model.mean_of(params_s)
        sums["log_p"] += model.log_likelihood(x, params_s).sum().item()
        sums["log_p_greedy"] += model.log_likelihood(x, params_g).sum().item()
        if fixed_var:
            var = torch.full_like(mean_g, fixed_var)
            sums["log_p_fixed_var"] += gaussian_log_prob(x, mean_g, var).sum().item()
        sums["l2"] += (x - mean_g).flatten(1).norm(dim=1).sum().item()
        sums["l2_sample"] += (x - mean_s).flatten(1).norm(dim=1).sum().item()
        sums["kl"] += kl.sum().item()
        sums["entropy"] += entropy.sum().item()
        if not z_greedy.is_floating_point():  # discrete codes (the Gaussian VAE has none)
            counts += torch.bincount(z_greedy.flatten().cpu(), minlength=V)
        if keep_recon:
            recon.append(mean_g.cpu())
        n += len(x)
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["elbo"] = out["log_p"] - out["kl"]
    out["beta_elbo"] = out["log_p"] - beta * out["kl"]
    out["beta"] = beta
    p = counts.double() / counts.sum().clamp(min=1)
    out["code_usage"] = (counts > 0).sum().item() / V
    out["perplexity"] = math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())
    out["windows"] = n
    model.train(was_training)
    return out, recon


def evaluate_tokenizer(
    model: DiscreteVAE,
    normalizer: RunningNormalizer,
    windows: Tensor,
    fps: float,
    beta: float = 1.0,
    batch_size: int = 256,
    robot_metrics: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`evaluate_model` over raw motion windows (W, L, F) (standardized here), with ``log_p_fixed_var``
    under ``REFERENCE_VAR`` and, with ``robot_metrics``, the robot-space errors of the reconstruction:
    ``mpjpe_mm`` (key points of the robot posed by the decoded and by the true features, both anchored at the
    origin) and ``joint_rmse_deg``."""
    device = next(model.parameters()).device
    batches = (
        normalizer.normalize(windows[i : i + batch_size].to(device, torch.float32))
        for i in range(0, len(windows), batch_size)
    )  # (b, L, F)
    out, recon = evaluate_model(model, batches, beta, seed, fixed_var=REFERENCE_VAR, keep_recon=robot_metrics)
    if robot_metrics:
        pred = torch.cat([normalizer.denormalize(r.double()) for r in recon]).numpy()
        out |= robot_space_errors(pred, windows.double().cpu().numpy(), fps)
    return out


def _codes(model: DiscreteVAE, memory: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Greedy code, sampled code, KL to the prior (one-sample estimate for a categorical posterior) and the
    posterior's entropy, per window. A quantizer's code is a point mass: both codes are its output, KL to the
    uniform prior = T log V, entropy 0. The Gaussian VAE: its mean and a sample, KL to N(0, I) in closed form,
    the Gaussian's differential entropy."""
    T, V = model.cfg.block_size, model.num_codes
    if isinstance(model.quantizer, GaussianBottleneck):
        mean, log_var = model.quantizer.stats(memory)
        _, z, kl = model.quantizer(memory, generator=generator)
        entropy = 0.5 * (log_var + math.log(2 * math.pi) + 1.0).flatten(1).sum(-1)
        return mean, z, kl, entropy
    if model.quantizer is not None:
        z = model.quantizer(memory).tokens
        zero = memory.new_zeros(len(memory))
        return z, z, daps.kl_to_uniform(zero[:, None], T, V), zero
    z_greedy = model.posterior.sample(memory, greedy=True)
    z = model.posterior.sample(memory, generator=generator)
    kl = daps.kl_to_uniform(model.posterior.log_prob(memory, z)[:, None], T, V)
    return z_greedy, z, kl, model.posterior.entropy(memory, z)


def robot_space_errors(pred: np.ndarray, true: np.ndarray, fps: float) -> dict[str, float]:
    """Key-point MPJPE (mm) and joint RMSE (deg) between feature windows (W, L, 127) mapped to the robot."""
    pred_q = np.concatenate([feat.qpos_from_features(w, fps) for w in pred])  # (W*L, 26)
    true_q = np.concatenate([feat.qpos_from_features(w, fps) for w in true])
    err = forward_kinematics(pred_q).key_pos - forward_kinematics(true_q).key_pos  # (W*L, 13, 3)
    joint_err = pred_q[:, 7:] - true_q[:, 7:]
    return {
        "mpjpe_mm": float(np.linalg.norm(err, axis=-1).mean() * 1000.0),
        "joint_rmse_deg": float(np.degrees(np.sqrt((joint_err**2).mean()))),
    }
