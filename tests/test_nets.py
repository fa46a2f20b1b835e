"""Tiny-shape tests of the trajectory networks (motiontok.nets)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from motiontok.nets import (
    ARPosterior,
    NAPosterior,
    TrajectoryDecoder,
    TrajectoryEncoder,
    TrajectoryNetConfig,
    TransformerDecoder,
    gaussian_log_prob,
)

CFG = TrajectoryNetConfig(feature_dim=5, length=4, block_size=8, vocab_size=11, embed_dim=16, num_heads=2, num_layers=2)
B = 3


def make(cfg: TrajectoryNetConfig = CFG, seed: int = 0):
    torch.manual_seed(seed)
    enc, ar, na, dec = TrajectoryEncoder(cfg), ARPosterior(cfg), NAPosterior(cfg), TrajectoryDecoder(cfg)
    # sharper, less uniform distributions than the N(0, 0.02) init, so that tests discriminate
    with torch.no_grad():
        for p in [*ar.parameters(), *na.parameters()]:
            p.mul_(10.0) if p.dim() > 1 else p.add_(0.1 * torch.randn_like(p))
    return enc.eval(), ar.eval(), na.eval(), dec.eval()


def data(cfg: TrajectoryNetConfig = CFG, batch: int = B, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.length, cfg.feature_dim, generator=g)
    z = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), generator=g)
    return x, z


@pytest.mark.parametrize("block_size", [8, 4, 2])
def test_shapes(block_size):
    """Every net maps the documented shapes for block_size = 2L (paper), L and L/2."""
    cfg = dataclasses.replace(CFG, block_size=block_size)
    enc, ar, na, dec = make(cfg)
    x, z = data(cfg)
    T, V = cfg.block_size, cfg.vocab_size
    memory = enc(x)
    assert memory.shape == (B, T, cfg.embed_dim)
    for post in (ar, na):
        assert post.logits(memory, z).shape == (B, T, V)
        assert post.log_prob(memory, z).shape == (B,)
        assert post.entropy(memory, z).shape == (B,)
        s = post.sample(memory)
        assert s.shape == (B, T) and s.dtype == torch.long
        assert s.min() >= 0 and s.max() < V
    mean, var = dec(z)
    assert mean.shape == (B, cfg.length, cfg.feature_dim) and var.shape == (cfg.feature_dim,)
    assert dec.forward_embeddings(torch.randn(B, T, cfg.embed_dim))[0].shape == mean.shape
    assert gaussian_log_prob(x, mean, var).shape == (B,)


def test_cache_sampling_matches_no_cache():
    """KV-cache sampling gives the same tokens as full-prefix recomputation: greedy, and stochastic with
    equal generator seeds (also at temperature != 1)."""
    enc, ar, _, _ = make()
    memory = enc(data()[0])
    greedy = ar.sample(memory, greedy=True, use_cache=True)
    assert torch.equal(greedy, ar.sample(memory, greedy=True, use_cache=False))
    for temperature in (1.0, 2.0):
        a = ar.sample(memory, temperature=temperature, generator=torch.Generator().manual_seed(7))
        b = ar.sample(memory, temperature=temperature, generator=torch.Generator().manual_seed(7), use_cache=False)
        assert torch.equal(a, b)
    c = ar.sample(memory, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a, c)  # the seed matters (tiny chance of a false alarm is negligible here)


def test_ar_causality():
    """Teacher-forced logits at position t are unchanged when tokens at positions >= t change."""
    enc, ar, _, _ = make()
    x, z = data()
    memory = enc(x)
    logits = ar.logits(memory, z)
    for t in range(CFG.block_size):
        z2 = z.clone()
        z2[:, t:] = (z2[:, t:] + 1 + torch.arange(CFG.block_size - t)) % CFG.vocab_size
        logits2 = ar.logits(memory, z2)
        torch.testing.assert_close(logits2[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-6)
        if t + 1 < CFG.block_size:
            assert not torch.allclose(logits2[:, t + 1 :], logits[:, t + 1 :])


def test_log_prob_matches_incremental_steps():
    """log_prob (teacher forcing) equals the sum of log-softmax at the tokens from a manual loop over the
    incremental step API, one position at a time and as one multi-position chunk (cache consistency)."""
    enc, ar, _, _ = make()
    x, z = data()
    memory = enc(x)
    inputs = ar._shift_right(z)  # (B, T): [BOS, z_0, ..., z_{T-2}]
    emb = ar._skip(ar.tok_emb(inputs) + ar.pos_emb, memory, 0)  # (B, T, H) as the posterior builds them
    cache = ar.decoder.new_cache(memory, CFG.block_size)
    manual = torch.zeros(B)
    for t in range(CFG.block_size):
        h = ar.decoder.step(emb[:, t : t + 1], memory, cache)  # (B, 1, H)
        manual += F.log_softmax(ar.head(h[:, 0]), -1).gather(1, z[:, t : t + 1])[:, 0]
    assert cache.length == CFG.block_size
    torch.testing.assert_close(ar.log_prob(memory, z), manual, rtol=0, atol=1e-5)
    # the generic (module) path: 3 positions, then the rest as one chunk with an offset causal mask
    cache = ar.decoder.new_cache(memory, CFG.block_size)
    h = torch.cat([ar.decoder.step(emb[:, :3], memory, cache), ar.decoder.step(emb[:, 3:], memory, cache)], 1)
    torch.testing.assert_close(ar.head(h), ar.logits(memory, z), rtol=0, atol=1e-5)


def test_entropy_matches_definition():
    """entropy = -sum_t sum_v p log p of the teacher-forced per-position distributions."""
    enc, ar, na, _ = make()
    x, z = data()
    memory = enc(x)
    for post in (ar, na):
        p = post.logits(memory, z).softmax(-1)
        expected = -(p * p.log()).sum((1, 2))
        torch.testing.assert_close(post.entropy(memory, z), expected, rtol=1e-5, atol=1e-5)


def test_na_posterior_independent_and_sample_frequencies():
    """NAPosterior logits ignore the tokens; sample frequencies match softmax(logits)."""
    enc, _, na, _ = make()
    x, z = data(batch=1)
    memory = enc(x)
    logits = na.logits(memory, z)
    torch.testing.assert_close(na.logits(memory, torch.zeros_like(z)), logits, rtol=0, atol=0)
    n = 4000
    samples = na.sample(memory.expand(n, -1, -1), generator=torch.Generator().manual_seed(0))  # (n, T)
    freq = F.one_hot(samples, CFG.vocab_size).float().mean(0)  # (T, V)
    probs = logits[0].softmax(-1)  # (T, V)
    assert (freq - probs).abs().max() < 0.035  # ~4.5 sigma at p = 0.5, n = 4000
    assert torch.equal(na.sample(memory, greedy=True), logits.argmax(-1))


def test_decoder_variance_soft_tokens_and_gaussian():
    """Variance clipped to [0.01, 1] (starts at 1); a one-hot soft input equals the token input;
    gaussian_log_prob equals torch.distributions.Normal summed over (L, F)."""
    _, _, _, dec = make()
    x, z = data()
    assert torch.equal(dec.var, torch.ones(CFG.feature_dim))
    with torch.no_grad():
        dec.log_var.copy_(torch.linspace(-10.0, 10.0, CFG.feature_dim))
    var = dec(z)[1]
    assert var.min().item() == pytest.approx(0.01) and var.max().item() == pytest.approx(1.0)
    assert torch.all((var >= 0.01) & (var <= 1.0))
    mean_tok, _ = dec(z)
    mean_soft, _ = dec(F.one_hot(z, CFG.vocab_size).float())
    torch.testing.assert_close(mean_soft, mean_tok, rtol=0, atol=1e-6)
    var = torch.rand(CFG.feature_dim) + 0.05
    expected = torch.distributions.Normal(mean_tok, var.sqrt()).log_prob(x).sum((1, 2))
    torch.testing.assert_close(gaussian_log_prob(x, mean_tok, var), expected, rtol=1e-5, atol=1e-4)


def test_gradients_reach_all_nets():
    """A DAPS-like loss gives non-zero gradients to encoder, AR posterior and decoder parameters."""
    enc, ar, na, dec = make()
    for m in (enc, ar, na, dec):
        m.train()
    x, _ = data()
    memory = enc(x)
    z = ar.sample(memory)
    mean, var = dec(z)
    loss = -(ar.log_prob(memory, z) + na.log_prob(memory, z) + gaussian_log_prob(x, mean, var)).mean()
    loss.backward()
    for name, m in (("encoder", enc), ("ar", ar), ("na", na), ("decoder", dec)):
        grads = [p.grad for p in m.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name
    assert dec.log_var.grad.abs().sum() > 0  # the variance learns from its initial value 1 (clip edge)


def test_dropout_and_cache_sampling_in_train_mode():
    """With dropout > 0 in train mode sampling still runs (generic step path) and stays in range."""
    cfg = dataclasses.replace(CFG, dropout=0.1)
    enc, ar, _, _ = make(cfg)
    ar.train()
    z = ar.sample(enc(data(cfg)[0]))
    assert z.shape == (B, cfg.block_size) and z.max() < cfg.vocab_size


@pytest.mark.parametrize(
    "changes",
    [
        {"block_size": 12},
        {"block_size": 3, "length": 5},
        {"embed_dim": 15},
        {"num_heads": 0},
        {"dropout": 1.0},
        {"vocab_size": 0},
    ],
)
def test_config_validation(changes):
    """Bad configurations raise ValueError."""
    with pytest.raises(ValueError):
        dataclasses.replace(CFG, **changes)


def test_decoder_module_on_its_own():
    """TransformerDecoder teacher forcing equals one-position steps (standalone, without the posterior)."""
    torch.manual_seed(0)
    decoder = TransformerDecoder(16, 2, 2).eval()
    x, memory = torch.randn(2, 6, 16), torch.randn(2, 5, 16)
    cache = decoder.new_cache(memory, 6)
    steps = torch.cat([decoder.step(x[:, t : t + 1], memory, cache) for t in range(6)], 1)
    torch.testing.assert_close(steps, decoder(x, memory), rtol=0, atol=1e-5)


def test_grouped_cross_attention_equals_copied_memory():
    """K samples per input share one memory row: the grouped path equals copying the memory K times."""
    torch.manual_seed(0)
    cfg = TrajectoryNetConfig(feature_dim=5, length=4, block_size=8, vocab_size=11, embed_dim=16, num_heads=2)
    post = ARPosterior(cfg).eval()
    memory = torch.randn(3, 8, 16)
    K = 4
    gen = torch.Generator().manual_seed(5)
    tokens = post.sample(memory, num_samples=K, generator=gen)  # (12, 8), cached, grouped
    assert tokens.shape == (12, 8)
    ref = post.sample(memory, num_samples=K, generator=torch.Generator().manual_seed(5), use_cache=False)
    torch.testing.assert_close(tokens, ref)  # the slow reference copies the memory
    copied = memory.repeat_interleave(K, dim=0)
    torch.testing.assert_close(post.log_prob(memory, tokens), post.log_prob(copied, tokens), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(post.entropy(memory, tokens), post.entropy(copied, tokens), atol=1e-4, rtol=1e-5)
    na = NAPosterior(cfg)
    torch.testing.assert_close(na.log_prob(memory, tokens), na.log_prob(copied, tokens))
    assert na.sample(memory, num_samples=K).shape == (12, 8)


@pytest.mark.parametrize("memory_skip", [False, True])
def test_memory_skip_paths_agree_and_matter(memory_skip):
    """With and without the aligned memory skip, cached sampling equals the no-cache reference; the skip makes
    position t's logits depend on memory[t] directly."""
    cfg = dataclasses.replace(CFG, memory_skip=memory_skip)
    enc, ar, _, _ = make(cfg)
    x, z = data(cfg)
    memory = enc(x)
    a = ar.sample(memory, generator=torch.Generator().manual_seed(2))
    b = ar.sample(memory, generator=torch.Generator().manual_seed(2), use_cache=False)
    torch.testing.assert_close(a, b)
    bumped = memory.clone()
    bumped[:, 0] += 1.0  # change only the encoding of position 0
    delta = (ar.logits(bumped, z) - ar.logits(memory, z))[:, 0].abs().max()
    ref = TrajectoryNetConfig(**{**dataclasses.asdict(cfg), "memory_skip": not memory_skip})
    _, ar_other, _, _ = make(ref)
    delta_other = (ar_other.logits(bumped, z) - ar_other.logits(memory, z))[:, 0].abs().max()
    # same weights (same seed), only the skip differs: the skip version reacts more to its own position
    assert (delta > delta_other) == memory_skip
