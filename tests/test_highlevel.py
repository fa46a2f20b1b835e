"""The high-level policy: context encoding, guided and top-k sampling, the COM frame, distillation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from control.highlevel import Context, DistillationObjective, HighLevelConfig, HighLevelPolicy
from control.highlevel_data import PAST, com_context
from motiontok.nets import sample_categorical

TINY = HighLevelConfig(text_dim=8, embed_dim=16, num_heads=2,
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
    """guidance w: each position's code follows uncond + w (cond - uncond), computed here by teacher forcing on
    the conditional and the unconditional memories along the sampled codes (greedy, so the comparison is exact)."""
    torch.manual_seed(1)
    head = HighLevelPolicy(TINY).eval().head
    with torch.no_grad():  # large random weights so that the memory decides the codes
        for p in head.parameters():
            p.normal_(std=0.5)
    g = torch.Generator().manual_seed(2)
    cond, uncond = (3 * torch.randn(4, TINY.memory_length, TINY.embed_dim, generator=g) for _ in range(2))
    w = 3.0
    tokens = head.sample(torch.cat((cond, uncond)), greedy=True, guidance=w)  # (4, T)
    lc, lu = head.logits(cond, tokens), head.logits(uncond, tokens)
    torch.testing.assert_close((lu + w * (lc - lu)).argmax(-1), tokens)
    assert not torch.equal(lc.argmax(-1), tokens) and not torch.equal(lu.argmax(-1), tokens)  # the mix matters
    policy = HighLevelPolicy(TINY).eval()  # the policy pairs each context with its text-free twin
    ctx = _ctx(3, tokens=False)
    both = torch.cat((policy.memory(ctx), policy.memory(ctx, torch.ones(3, dtype=torch.bool))))
    torch.testing.assert_close(policy.sample(ctx, 0.0, guidance=w), policy.head.sample(both, greedy=True, guidance=w))


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


def _data(dataset, tokenizer, stride=4, standing_context=0.0):
    from control.highlevel_data import HighLevelData, TextBank
    from tests.conftest import SYNTHETIC_VAL

    g = torch.Generator().manual_seed(0)
    bank = TextBank(
        [torch.randn(3, 8, generator=g) for _ in range(2)], [torch.randn(2, 8, generator=g) for _ in range(2)], 0.5
    )
    label = lambda w, fps: int(w[:, 7].mean() > 0)  # noqa: E731  (a label computed from the window)
    return HighLevelData(dataset, tokenizer, bank, ["train", "val"], label, [SYNTHETIC_VAL], stride, progress=False,
                         standing_context=standing_context)  # fmt: skip


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
    val = data.val_set.features[data.val.starts[:, None] + np.arange(32)]  # the true windows as "predictions"
    errors = data.motion_errors(val.astype(np.float64), np.arange(len(val)))
    assert errors["mpjpe_mm"] < 1e-6 and errors["com_goal_error_m"] < 1e-6, errors  # float32 data: ~1e-7 m
    shifted = data.motion_errors(np.roll(val, 1, axis=1), np.arange(len(val)))  # a frame late: errors appear
    assert shifted["com_goal_error_m"] > 1e-4
    again = _data(synthetic_dataset, tok)  # the codes come back from the cache, identical
    np.testing.assert_array_equal(again.train.tokens, ex.tokens)
    assert list((tmp_path / "cache" / "highlevel").glob("codes_*.npy"))


def test_standing_context_replaces_the_past_only(synthetic_dataset, tmp_path, monkeypatch):
    """``standing_context``: the chosen examples see run_policy.py's standing start as their past (pose and past
    COM), and keep their own text, future COM path and target codes."""
    from control.runner import standing_features
    from motiontok.features import qpos_from_features
    from motiontok.motion import forward_kinematics

    monkeypatch.setenv("MOTIONTOK_CACHE", str(tmp_path / "cache"))
    tok = _tiny_tokenizer(synthetic_dataset)
    batches = {}
    for share in (0.0, 1.0, 0.5):
        data = _data(synthetic_dataset, tok, standing_context=share)
        data.setup(0, torch.device("cpu"))
        batches[share] = data.sample(64)
    plain, standing, half = batches[0.0], batches[1.0], batches[0.5]
    features = standing_features(30.0)  # (P, F): what the planner's first context is
    qpos = qpos_from_features(features, 30.0)
    com = com_context(forward_kinematics(qpos).com, qpos[-1])  # (P, 3)
    torch.testing.assert_close(
        standing["pose"], tok.normalizer.normalize(torch.from_numpy(features).float()).expand(64, -1, -1)
    )
    torch.testing.assert_close(standing["com"][:, :PAST], torch.from_numpy(com).float().expand(64, -1, -1))
    for key in ("text", "tokens"):
        torch.testing.assert_close(standing[key], plain[key], rtol=0, atol=0)
    torch.testing.assert_close(standing["com"][:, PAST:], plain["com"][:, PAST:], rtol=0, atol=0)
    swapped = (half["pose"] == standing["pose"]).flatten(1).all(1)  # (B,)
    assert 0 < int(swapped.sum()) < 64  # a share of the batch, not all or none
    torch.testing.assert_close(half["pose"][~swapped], plain["pose"][~swapped], rtol=0, atol=0)


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


def test_a_planned_window_continues_the_root_where_the_last_one_ended() -> None:
    """Window B's features, computed on the whole clip, continue from the clip's frame 31 exactly: the runner
    steps its first frame on by B's own first-frame velocities (no standstill, no jump between windows)."""
    from control.runner import _continue_root
    from motiontok import features as feat
    from motiontok.motion import MotionClip
    from tests.conftest import synthetic_qpos

    qpos = synthetic_qpos(64, seed=3)
    f = feat.clip_features(MotionClip("c", qpos, 30.0))
    q = _continue_root(qpos[31], f[32:], 30.0)
    np.testing.assert_allclose(q[:, :3], qpos[32:, :3], atol=1e-9)
    np.testing.assert_allclose(np.abs(np.einsum("ti,ti->t", q[:, 3:7], qpos[32:, 3:7])), 1.0, atol=1e-9)
    np.testing.assert_allclose(q[:, 7:], qpos[32:, 7:], atol=1e-12)


def test_window_lengths_other_than_the_pipelines_are_refused() -> None:
    with pytest.raises(ValueError, match="must be 32"):
        HighLevelConfig(context_frames=16)
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        sample_categorical(torch.zeros(2, 5), top_k=-1)
    with pytest.raises(ValueError, match="one sequence per condition"):
        HighLevelPolicy(TINY).head.sample(
            torch.zeros(2, TINY.memory_length, TINY.embed_dim), guidance=2.0, num_samples=2
        )
