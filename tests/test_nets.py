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

CFG = TrajectoryNetConfig(
    feature_dim=5,
    length=4,
    block_size=8,
    vocab_size=11,
    embed_dim=16,
    num_heads=2,
    num_layers=2,
    init="gpt",
    pos_emb="learned",
)
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


@pytest.mark.parametrize("memory_skip", [False, True])
def test_static_shape_sampling_matches_the_cache(memory_skip):
    """``static=True`` (every step attends over the whole zeroed buffer with a causal row mask: the loop a CUDA
    graph captures) draws the same codes as the growing cache, greedy and sampled, several samples per input;
    and its buffers are really full-length (a mask row that let the future in would change the codes)."""
    cfg = dataclasses.replace(CFG, memory_skip=memory_skip)
    enc, ar, _, _ = make(cfg)
    memory = enc(data(cfg)[0])
    assert torch.equal(ar.sample(memory, greedy=True, static=True), ar.sample(memory, greedy=True))
    a = ar.sample(memory, generator=torch.Generator().manual_seed(3), num_samples=4, static=True)
    b = ar.sample(memory, generator=torch.Generator().manual_seed(3), num_samples=4)
    assert torch.equal(a, b) and a.shape == (B * 4, cfg.block_size)
    cache = ar.decoder.new_cache(memory, cfg.block_size, static=True)
    assert cache.layers[0].self_attn.kv.shape[3] == cfg.block_size and not cache.layers[0].self_attn.kv.any()
    assert torch.equal(cache.causal, torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool).tril())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_graph_sampler_draws_from_the_posterior():  # pragma: no cover - exercised on GPU machines
    from motiontok.nets.graphs import CudaGraphSampler

    enc, ar, _, _ = make()
    enc, ar = enc.cuda(), ar.cuda()
    memory = enc(data()[0].cuda())
    sampler = CudaGraphSampler(ar, num_samples=2)
    a, b = sampler(memory), sampler(memory)
    assert a.shape == (B * 2, CFG.block_size) and not torch.equal(a, b)  # fresh noise on each replay
    with torch.no_grad():
        ar.head.bias.add_(torch.nn.functional.one_hot(torch.tensor(3), CFG.vocab_size).cuda() * 1e4)
    assert torch.equal(sampler(memory), torch.full_like(a, 3))  # in-place weight updates reach the graph


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
    """Constant variance by default (0.25, not a parameter); a one-hot soft input equals the token input;
    gaussian_log_prob equals torch.distributions.Normal summed over (L, F)."""
    _, _, _, dec = make()
    x, z = data()
    assert torch.equal(dec(z)[1], torch.full((CFG.feature_dim,), 0.25))
    assert not any("var" in name for name, _ in dec.named_parameters())
    mean_tok, _ = dec(z)
    mean_soft, _ = dec(F.one_hot(z, CFG.vocab_size).float())
    torch.testing.assert_close(mean_soft, mean_tok, rtol=0, atol=1e-6)
    var = torch.rand(CFG.feature_dim) + 0.05
    expected = torch.distributions.Normal(mean_tok, var.sqrt()).log_prob(x).sum((1, 2))
    torch.testing.assert_close(gaussian_log_prob(x, mean_tok, var), expected, rtol=1e-5, atol=1e-4)


def test_learned_variance_has_a_gradient_everywhere_and_follows_the_error():
    """The learned variance stays in [0.01, 1] whatever its parameter, starts at variance_value, passes a gradient
    at both ends of its range (v1's clamp passed none at its upper bound, where it started), and a feature whose
    error shrinks ends with a smaller variance than one whose error stays large."""
    cfg = dataclasses.replace(CFG, variance="learned", variance_value=0.5)
    dec = TrajectoryDecoder(cfg)
    torch.testing.assert_close(dec.var, torch.full((cfg.feature_dim,), 0.5))
    for value in (-10.0, 10.0):  # deep in both tails (var within 5e-5 of its bounds)
        with torch.no_grad():
            dec.var_logit.fill_(value)
        assert torch.all((dec.var >= 0.01) & (dec.var <= 1.0))
        dec.var_logit.grad = None
        gaussian_log_prob(torch.full((1, cfg.length, cfg.feature_dim), 0.3), torch.zeros(1, 1, 1), dec.var).backward()
        assert torch.all(dec.var_logit.grad != 0)
    dec = TrajectoryDecoder(cfg)
    opt = torch.optim.Adam([dec.var_logit], lr=0.05)
    err = torch.ones(cfg.feature_dim)
    err[0] = 0.1  # feature 0 is reconstructed 10x better
    for _ in range(200):
        x = err * torch.randn(64, cfg.length, cfg.feature_dim)  # (64, L, F) residuals of that size
        opt.zero_grad()
        (-gaussian_log_prob(x, torch.zeros_like(x), dec.var).mean()).backward()
        opt.step()
    assert dec.var[0] < 0.05 and dec.var[1:].min() > 0.7  # MLE: var = error^2, within the range


def test_reference_initialisation_and_fixed_positions():
    """``init=xavier``: embeddings N(0, 1), matrices xavier-uniform (each of q, k, v on its own C x C block),
    tiny biases; sinusoidal positions are fixed buffers (not parameters, not saved) equal to sin/cos tables."""
    cfg = dataclasses.replace(CFG, init="xavier", pos_emb="sinusoidal", embed_dim=32)
    torch.manual_seed(0)
    ar = ARPosterior(cfg)
    assert 0.8 < ar.tok_emb.weight.std().item() < 1.2
    C = cfg.embed_dim
    bound = (6 / (C + C)) ** 0.5  # xavier-uniform bound of a C x C matrix
    qkv = ar.decoder.blocks[0].self_attn.qkv.weight  # (3C, C)
    assert qkv.abs().max().item() <= bound and qkv.abs().max().item() > 0.9 * bound
    fc = ar.decoder.blocks[0].mlp.fc.weight  # (4C, C): one matrix, smaller bound
    assert fc.abs().max().item() <= (6 / (5 * C)) ** 0.5
    assert ar.head.bias.abs().max().item() < 1e-5
    assert "pos_emb" not in dict(ar.named_parameters()) and "pos_emb" not in ar.state_dict()
    pos = torch.arange(cfg.block_size, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(C // 2, dtype=torch.float64) / (C // 2 - 1))
    torch.testing.assert_close(
        ar.pos_emb.double(), torch.cat([(pos * freq).sin(), (pos * freq).cos()], 1), atol=1e-6, rtol=0
    )
    learned = ARPosterior(dataclasses.replace(cfg, pos_emb="learned", init="gpt"))
    assert "pos_emb" in dict(learned.named_parameters()) and learned.tok_emb.weight.std().item() < 0.05
    with pytest.raises(ValueError, match="init must be one of"):
        dataclasses.replace(cfg, init="kaiming")
    with pytest.raises(ValueError, match="variance_value"):
        dataclasses.replace(cfg, variance_value=2.0)


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
    with torch.no_grad():  # silence cross-attention: memory can then reach the logits only through the skip
        for block in ar.decoder.blocks:
            block.cross_attn.proj.weight.zero_()
            block.cross_attn.proj.bias.zero_()
    bumped = memory.clone()
    bumped[:, 0] += torch.randn(memory.shape[-1])  # change only the encoding of position 0 (not by a constant: LN)
    delta = (ar.logits(bumped, z) - ar.logits(memory, z)).abs().amax(dim=(0, 2))  # (T,)
    if memory_skip:  # position 0 reacts, and through causal self-attention only the positions after it
        assert delta[0] > 1e-3
    else:
        assert delta.max() == 0
