"""Gumbel-Softmax baselines (paper section 2, "Approximate Discrete Reparameterization"): straight-through
Gumbel-Softmax (Jang et al. 2016) and its Rao-Blackwellized version GR-MCK (Paulus et al. 2020).

A relaxed code is ``y = onehot(z) + soft - sg(soft)``: the forward pass sees the hard one-hot code
``z = argmax(logits + g)`` (g Gumbel noise), the backward pass the gradient of ``soft = softmax((logits + g) / tau)``.
GR-MCK replaces ``soft`` by its average over K noises drawn from the Gumbel distribution *conditioned* on the same
argmax z (:func:`conditional_gumbels`), a lower-variance gradient with the same forward value. With an
autoregressive posterior the T positions are drawn one after the other and position t reads the relaxed codes of
positions < t, so the gradient flows back through the whole sampling sequence (back-propagation through T
decoding steps: the cost the paper names for these methods; one cached step per position here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from motiontok.nets.posterior import ARPosterior, NAPosterior, Posterior


def gumbel_noise(shape: torch.Size | tuple[int, ...], like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise -log(-log u) of ``shape`` on ``like``'s device and dtype."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def conditional_gumbels(logits: Tensor, index: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
    """``num`` draws of the perturbed logits ``v = logits + g`` given ``argmax v = index`` (top-down sampling):
    ``v_k = logsumexp(logits) - log E_k`` for the chosen k and ``v_i = -log(E_i exp(-logits_i) + exp(-v_k))``
    otherwise, with E ~ Exp(1), computed as ``-logaddexp(log E_i - logits_i, -v_k)`` (the plain form overflows,
    and its gradient turns to NaN, once a logit is below about -88 in float32). logits (..., V), index (...) ->
    (num, ..., V)."""
    u = torch.rand((num, *logits.shape), generator=generator, device=logits.device, dtype=logits.dtype)
    log_e = torch.log(-torch.log(u.clamp_(min=torch.finfo(u.dtype).tiny)))  # log E, E ~ Exp(1)
    log_e_k = log_e.gather(-1, index.expand(num, *index.shape).unsqueeze(-1))  # (num, ..., 1)
    v_k = torch.logsumexp(logits, -1, keepdim=True) - log_e_k  # (num, ..., 1)
    v = -torch.logaddexp(log_e - logits, -v_k)  # (num, ..., V)
    return v.scatter(-1, index.expand(num, *index.shape).unsqueeze(-1), v_k)


def relax(
    logits: Tensor, tau: float, rao_blackwell: int = 0, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """One straight-through draw per row: logits (..., V) -> (relaxed one-hot codes (..., V), tokens (...)).
    ``rao_blackwell`` = K > 0 gives GR-MCK's averaged soft code."""
    perturbed = logits + gumbel_noise(logits.shape, logits, generator)
    tokens = perturbed.argmax(-1)  # (...)
    if rao_blackwell > 0:
        v = conditional_gumbels(logits, tokens, rao_blackwell, generator)  # (K, ..., V), differentiable in logits
        soft = torch.softmax(v / tau, -1).mean(0)
    else:
        soft = torch.softmax(perturbed / tau, -1)
    hard = torch.nn.functional.one_hot(tokens, logits.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach(), tokens


def relaxed_sample(
    posterior: Posterior, memory: Tensor, tau: float, rao_blackwell: int = 0, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Relaxed codes (B, T, V), tokens (B, T) and the logits they were drawn from (B, T, V), with gradients."""
    if isinstance(posterior, NAPosterior):
        logits = posterior.logits(memory)  # (B, T, V)
        codes, tokens = relax(logits, tau, rao_blackwell, generator)
        return codes, tokens, logits
    if not isinstance(posterior, ARPosterior):
        raise TypeError(f"no relaxed sampling for {type(posterior).__name__}")
    codes, tokens = [], []

    def draw(logits: Tensor) -> Tensor:  # (B, V) -> the relaxed code that later positions read
        code, tok = relax(logits, tau, rao_blackwell, generator)
        codes.append(code)
        tokens.append(tok)
        return code

    logits = posterior.decode_relaxed(memory, draw)  # (B, T, V)
    return torch.stack(codes, 1), torch.stack(tokens, 1), logits
