"""The compiled greedy decoder used by MotionTokenizer.encode for a few windows on CPU equals the torch path."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from torch import nn

from motiontok.nets import ARPosterior, TrajectoryEncoder, TrajectoryNetConfig
from motiontok.nets.greedy_cpu import GreedyDecoderCPU, _jit
from motiontok.tokenizer import GREEDY_CPU_MAX_BATCH
from tests.test_tokenizer_api import make_tokenizer


def make(memory_skip: bool, num_layers: int, seed: int = 0) -> tuple[ARPosterior, torch.Tensor]:
    """A posterior with every LayerNorm gain/bias and the head perturbed (the folds must carry them), + memory."""
    torch.manual_seed(seed)
    cfg = TrajectoryNetConfig(
        block_size=16, vocab_size=40, embed_dim=32, num_heads=4, num_layers=num_layers, memory_skip=memory_skip
    )
    posterior = ARPosterior(cfg).eval()
    for m in posterior.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    nn.init.normal_(posterior.head.weight, std=0.5)
    with torch.no_grad():
        memory = TrajectoryEncoder(cfg)(torch.randn(3, cfg.length, cfg.feature_dim))  # (3, T, C)
    return posterior, memory


@pytest.mark.parametrize(("memory_skip", "num_layers"), [(True, 2), (False, 1)])
def test_logits_and_tokens_equal_the_torch_path(memory_skip, num_layers):
    posterior, memory = make(memory_skip, num_layers)
    fast = GreedyDecoderCPU(posterior)
    tokens = posterior.sample(memory, greedy=True)  # (3, T) torch reference
    np.testing.assert_array_equal(fast(memory), tokens.numpy())
    # teacher-forced on other sequences too: every position's logits, not only the argmax
    forced = torch.randint(0, 40, tokens.shape)
    logits = fast.teacher_forced_logits(memory, forced)
    with torch.no_grad():
        reference = posterior.logits(memory, forced)  # (3, T, V)
    np.testing.assert_allclose(logits, reference.numpy(), rtol=0, atol=2e-5 * float(reference.abs().max()))


def test_rejects_memory_of_the_wrong_length():
    posterior, memory = make(True, 1)
    with pytest.raises(ValueError, match="positions"):
        GreedyDecoderCPU(posterior)(memory[:, :5])


def test_tokenizer_uses_it_for_small_batches_and_follows_weight_changes():
    tok = make_tokenizer()
    x = torch.randn(GREEDY_CPU_MAX_BATCH + 2, 32, 127) * tok.normalizer.std.float() + tok.normalizer.mean.float()

    def torch_path(windows: torch.Tensor) -> torch.Tensor:
        return tok.model.encode(tok.normalizer.normalize(windows))

    torch.testing.assert_close(tok.encode(x[:2]), torch_path(x[:2]), rtol=0, atol=0)
    assert tok._greedy_cpu is not None  # the compiled decoder ran
    torch.testing.assert_close(tok.encode(x), torch_path(x), rtol=0, atol=0)  # the torch path (batch above the limit)
    before = tok.encode(x[:1])
    with torch.no_grad():  # an in-place update, as an optimizer makes: the decoder's copy must be rebuilt
        tok.model.posterior.head.bias[before[0, 0]] -= 100.0
    after = tok.encode(x[:1])
    assert after[0, 0] != before[0, 0]
    torch.testing.assert_close(after, torch_path(x[:1]), rtol=0, atol=0)


def test_is_a_snapshot_of_the_weights_it_was_built_from():
    posterior, memory = make(True, 2)
    forced = torch.randint(0, 40, (3, 16))
    fast = GreedyDecoderCPU(posterior)
    before = fast.teacher_forced_logits(memory, forced)
    with torch.no_grad():
        for p in posterior.parameters():
            p.mul_(1.5)  # in place, as an optimizer step would
        moved = posterior.logits(memory, forced).numpy()
    np.testing.assert_array_equal(fast.teacher_forced_logits(memory, forced), before)  # the snapshot did not move ...
    assert not np.allclose(moved, before, atol=1e-2)  # ... while the posterior did
    rebuilt = GreedyDecoderCPU(posterior).teacher_forced_logits(memory, forced)
    np.testing.assert_allclose(rebuilt, moved, rtol=0, atol=2e-5 * float(np.abs(moved).max()))


def test_compiles_without_a_cache_where_numba_finds_no_writable_place(monkeypatch):
    from numba.core import caching

    def double(a):
        return 2 * a

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])  # as on a read-only install with no home
    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(double)
    assert _jit(double)(np.arange(3.0)).tolist() == [0.0, 2.0, 4.0]
