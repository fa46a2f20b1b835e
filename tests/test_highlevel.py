"""The high-level policy: context encoding, guided and top-k sampling, the COM frame, distillation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from control.highlevel import Context, DistillationObjective, HighLevelConfig, HighLevelPolicy
from control.highlevel_data import PAST, com_context
from motiontok.nets import sample_categorical

TINY = HighLevelConfig(context_frames=4, com_past=32, com_future=32, text_dim=8, embed_dim=16, num_heads=2,
                       encoder_layers=1, decoder_layers=1, block_size=6, vocab_size=11)  # fmt: skip


def _ctx(b: int, seed: int = 0, tokens: bool = True) -> Context:
    g = torch.Generator().manual_seed(seed)
    ctx = Context(
        text=torch.randn(b, TINY.text_dim, generator=g),
        pose=torch.randn(b, TINY.context_frames, 127, generator=g),
        com=torch.randn(b, 64, 3, generator=g),
    )
    if tokens:
        ctx["tokens"] = torch.randint(TINY.vocab_size, (b, TINY.block_size), generator=g)
    return ctx


def test_com_context_is_the_heading_frame_relative_to_the_current_ground_point() -> None:
    rng = np.random.default_rng(0)
    com = rng.normal(size=(2, 64, 3))
    yaw = np.array([0.3, -2.0])
    qpos = np.zeros((2, 26))
    qpos[:, 3] = np.cos(yaw / 2)  # a rotation about z by yaw: heading = yaw
    qpos[:, 6] = np.sin(yaw / 2)
    out = com_context(com, qpos)
    for b in range(2):  # brute force: rotate each point by -yaw about the current COM's ground point
        c, s = math.cos(-yaw[b]), math.sin(-yaw[b])
        for k in range(64):
            d = com[b, k] - np.array([com[b, PAST - 1, 0], com[b, PAST - 1, 1], 0.0])
            expected = [c * d[0] - s * d[1], s * d[0] + c * d[1], com[b, k, 2]]
            np.testing.assert_allclose(out[b, k], expected, atol=1e-12)


def test_teacher_forced_logits_match_step_by_step_decoding() -> None:
    """The logits the policy trains on are the ones it samples from: greedy decoding reproduces the argmax
    of the teacher-forced logits along its own output."""
    torch.manual_seed(0)
    model = HighLevelPolicy(TINY).eval()
    ctx = _ctx(3, tokens=False)
    tokens = model.sample(ctx, temperature=0.0)
    ctx["tokens"] = tokens
    torch.testing.assert_close(model.logits(ctx).argmax(-1), tokens)


def test_guided_sampling_draws_from_the_mixed_logits() -> None:
    """guidance w: each position's code follows uncond + w (cond - uncond), computed here by teacher forcing with
    and without the text along the sampled codes (greedy, so the comparison is exact)."""
    torch.manual_seed(1)
    model = HighLevelPolicy(TINY).eval()
    with torch.no_grad():
        model.null_text.normal_()  # make the text-free context differ
    ctx = _ctx(4, tokens=False)
    w = 3.0
    tokens = model.sample(ctx, temperature=0.0, guidance=w)
    ctx["tokens"] = tokens
    cond = model.logits(ctx)
    uncond = model.logits(ctx, torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close((uncond + w * (cond - uncond)).argmax(-1), tokens)
    assert not torch.equal(cond.argmax(-1), tokens) or not torch.equal(uncond.argmax(-1), tokens)


def test_top_k_samples_only_among_the_k_largest() -> None:
    logits = torch.randn(2000, 11, generator=torch.Generator().manual_seed(0))
    draws = sample_categorical(logits, top_k=3, generator=torch.Generator().manual_seed(1))
    top3 = logits.topk(3, -1).indices
    assert (top3 == draws[:, None]).any(-1).all()
    assert len(set((draws[:, None] == top3).float().argmax(-1).tolist())) == 3  # all three ranks occur


def test_distillation_fits_codes_that_depend_on_the_context() -> None:
    """Targets that are a function of the text: the cross-entropy falls far below chance (log 11 = 2.4)."""
    torch.manual_seed(0)
    model = HighLevelPolicy(TINY)
    objective = DistillationObjective()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    table = torch.randint(TINY.vocab_size, (4, TINY.block_size), generator=g)  # 4 "themes" -> fixed codes
    texts = torch.randn(4, TINY.text_dim, generator=g)
    for step in range(150):
        ctx = _ctx(16, seed=step)
        which = torch.randint(4, (16,), generator=g)
        ctx["text"], ctx["tokens"] = texts[which], table[which]
        out = objective(model, ctx, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.metrics["losses/token_nll"] < 0.8, out.metrics
    assert out.metrics["charts/token_accuracy"] > 0.8


def test_bad_guidance_memory_is_refused() -> None:
    model = HighLevelPolicy(TINY)
    with pytest.raises(ValueError, match="2B memory rows"):
        model.head.sample(torch.randn(3, TINY.memory_length, TINY.embed_dim), guidance=2.0)


# ----------------------------------------------------------------------------------------------------------- data


def _tiny_tokenizer(dataset):
    from motiontok.data import MotionDataset
    from motiontok.models import DiscreteVAE
    from motiontok.nets import TrajectoryNetConfig
    from motiontok.normalizer import RunningNormalizer
    from motiontok.tokenizer import MotionTokenizer

    torch.manual_seed(0)
    model = DiscreteVAE(TrajectoryNetConfig(block_size=16, vocab_size=16, embed_dim=16, num_heads=2, num_layers=1))
    norm = RunningNormalizer(127)
    norm.update(torch.from_numpy(MotionDataset.load(dataset).features))
    return MotionTokenizer(model, norm, 30.0)


def _data(dataset, tokenizer, stride=4):
    from control.highlevel_data import HighLevelData, TextBank
    from tests.conftest import SYNTHETIC_VAL

    g = torch.Generator().manual_seed(0)
    bank = TextBank(
        [torch.randn(3, 8, generator=g) for _ in range(2)], [torch.randn(2, 8, generator=g) for _ in range(2)], 0.5
    )
    label = lambda w, fps: int(w[:, 7].mean() > 0)  # noqa: E731  (a label computed from the window)
    return HighLevelData(dataset, tokenizer, bank, ["train", "val"], label, [SYNTHETIC_VAL], stride, progress=False)


def test_examples_pair_the_past_32_frames_with_the_codes_of_the_next_32(synthetic_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MOTIONTOK_CACHE", str(tmp_path / "cache"))
    tok = _tiny_tokenizer(synthetic_dataset)
    data = _data(synthetic_dataset, tok)
    ds, ex = data.train_set, data.train
    assert len(ex.starts) == 3 * len(range(32, 70 - 32 + 1, 4))  # 3 clips of 70 frames
    for k in (0, len(ex.starts) - 1):
        t = ex.starts[k]
        clip = np.searchsorted(ds.split_points, t, side="right") - 1
        assert ds.split_points[clip] <= t - PAST and t + 32 <= ds.split_points[clip + 1]  # inside one clip
        expected = tok.encode(torch.from_numpy(ds.features[t : t + 32][None])).numpy()[0]
        np.testing.assert_array_equal(ex.tokens[k], expected)
    data.setup(0, torch.device("cpu"))
    ctx = data.context(ds, ex, np.array([0]), torch.zeros(1, 8))
    raw = tok.normalizer.denormalize(ctx["pose"][0]).numpy()
    np.testing.assert_allclose(raw, ds.features[ex.starts[0] - 32 : ex.starts[0]], atol=1e-4)
    again = _data(synthetic_dataset, tok)  # the codes come back from the cache, identical
    np.testing.assert_array_equal(again.train.tokens, ex.tokens)
    assert list((tmp_path / "cache" / "highlevel").glob("codes_*.npy"))


def test_policy_trains_exports_and_refuses_a_foreign_tokenizer(synthetic_dataset, tmp_path, monkeypatch):
    """Through the project's trainer: the token NLL falls, the export loads with its tokenizer, and another
    tokenizer's codes are refused with a clear error."""
    from control.highlevel import load_highlevel
    from motiontok.errors import CheckpointError
    from motiontok.trainer import TrainConfig, train

    monkeypatch.setenv("MOTIONTOK_CACHE", str(tmp_path / "cache"))
    tok = _tiny_tokenizer(synthetic_dataset)
    data = _data(synthetic_dataset, tok, stride=2)
    cfg = HighLevelConfig(context_frames=32, text_dim=8, embed_dim=16, num_heads=2, encoder_layers=1,
                          decoder_layers=1, block_size=16, vocab_size=16)  # fmt: skip
    torch.manual_seed(0)
    model = HighLevelPolicy(cfg)
    data.setup(0, torch.device("cpu"))
    before = data.evaluate(model, 0.0, None)
    run = TrainConfig(steps=80, batch_size=16, lr=3e-3, progress=False, eval_every=0, ckpt_every=40, num_threads=1)
    after = train(model, DistillationObjective(), data, run, tmp_path / "run")
    assert after["token_nll"] < before["token_nll"] - 0.3, (before, after)
    assert {"mpjpe_mm", "joint_rmse_deg", "com_goal_error_m"} <= set(after)
    loaded, config = load_highlevel(tmp_path / "run" / "final", tok)
    assert config["themes"] == ["train", "val"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    other = _tiny_tokenizer(synthetic_dataset)
    with torch.no_grad():
        other.model.decoder.out.bias.add_(1.0)
    with pytest.raises(CheckpointError, match="trained on tokenizer"):
        load_highlevel(tmp_path / "run" / "final", other)
