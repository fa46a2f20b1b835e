"""Training: the loss decreases, resume after a kill reproduces the uninterrupted run, torchrun with 2 processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from motiontok import MotionTokenizer
from motiontok.checkpoint import CheckpointError, load_checkpoint, strip_prefix
from motiontok.daps import BetaSchedule
from motiontok.datamodules import MotionData
from motiontok.estimators import DapsConfig, DapsEstimator
from motiontok.models import DiscreteVAE
from motiontok.nets import TrajectoryNetConfig
from motiontok.optim import adaptive_clip_, lr_factor
from motiontok.trainer import TrainConfig, train
from tests.conftest import SYNTHETIC_VAL

ROOT = Path(__file__).resolve().parent.parent
TINY = TrajectoryNetConfig(block_size=16, vocab_size=16, embed_dim=16, num_heads=2, num_layers=1)
VAL = [SYNTHETIC_VAL]


@pytest.fixture(scope="module")
def dataset(synthetic_dataset):
    return synthetic_dataset


def _run(dataset, out, steps, **kw):
    torch.manual_seed(0)
    model = DiscreteVAE(TINY)
    est = DapsEstimator(DapsConfig(num_samples=4, beta=BetaSchedule("cosine", 2.0, 0.01, 8)))
    settings = dict(steps=8, batch_size=4, warmup_steps=2, eval_every=0, ckpt_every=2, progress=False)
    cfg = TrainConfig(**(settings | dict(keep_checkpoints=10) | kw))
    cfg.steps = steps if steps else cfg.steps
    return train(model, est, MotionData(dataset, VAL, model.cfg.length), cfg, out), model


def _weights(path):
    return load_checkpoint(path)[0]


def test_resume_after_kill_reproduces_the_uninterrupted_run(dataset, tmp_path):
    _run(dataset, tmp_path / "full", 8)
    # "Kill" after step 4: keep only the checkpoints up to 4, then start the same run again.
    shutil.copytree(
        tmp_path / "full" / "checkpoints" / "step_0000004", tmp_path / "cut" / "checkpoints" / "step_0000004"
    )
    (tmp_path / "cut" / "checkpoints" / "latest").write_text("step_0000004\n")
    _run(dataset, tmp_path / "cut", 8)
    for step in ("step_0000006", "step_0000008"):
        a = _weights(tmp_path / "full" / "checkpoints" / step)
        b = _weights(tmp_path / "cut" / "checkpoints" / step)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{step} {k}")


def test_init_from_starts_a_second_stage_from_another_runs_weights(dataset, tmp_path):
    _run(dataset, tmp_path / "first", 8)
    first = strip_prefix(_weights(tmp_path / "first" / "checkpoints" / "step_0000008"), "model.")
    _, model = _run(dataset, tmp_path / "second", 1, lr=0.0, init_from=str(tmp_path / "first"))  # lr 0: no move
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, first[k], rtol=0, atol=0, msg=k)
    state = torch.load(tmp_path / "second" / "checkpoints" / "step_0000001" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 1  # its own schedule, from step 0
    record = json.loads((tmp_path / "second" / "final" / "config.json").read_text())["init_from"]
    assert record["path"].endswith("step_0000008") and record["step"] == 8 and record["train_seconds"] > 0
    (tmp_path / "eval.json").write_text(json.dumps({"l2": 1.5, "windows": 2}))
    export = [sys.executable, str(ROOT / "scripts/export_tokenizer.py"), "--run", str(tmp_path / "second")]
    export += ["--out", str(tmp_path / "shipped"), "--eval-json", str(tmp_path / "eval.json")]
    subprocess.run(export, check=True, capture_output=True)
    readme = (tmp_path / "shipped" / "README.md").read_text()  # the shipped record names both stages
    assert f"started from the weights of `{record['path']}`: 8 steps" in readme
    assert "training time, all stages" in readme and "| `l2` | 1.5 |" in readme
    with pytest.raises(CheckpointError, match="cannot start this run"):  # another architecture
        other = DiscreteVAE(TrajectoryNetConfig(block_size=16, vocab_size=8, embed_dim=16, num_heads=2, num_layers=1))
        cfg = TrainConfig(steps=1, batch_size=4, progress=False, eval_every=0, init_from=str(tmp_path / "first"))
        train(other, DapsEstimator(DapsConfig(num_samples=4)), MotionData(dataset, VAL, 32), cfg, tmp_path / "third")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        _run(dataset, tmp_path / "fourth", 1, init_from=str(tmp_path / "missing"))
    final = strip_prefix(_weights(tmp_path / "first" / "final"), "model.")  # a tokenizer dir: no estimator state
    _, model = _run(dataset, tmp_path / "fifth", 1, lr=0.0, init_from=str(tmp_path / "first" / "final"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0, msg=k)


def test_final_tokenizer_and_records(dataset, tmp_path):
    final, _ = _run(dataset, tmp_path / "run", 8)
    for key in ("log_p", "l2", "mpjpe_mm", "elbo", "beta_elbo", "code_usage", "perplexity", "windows"):
        assert key in final
    assert final["windows"] == 2 and 0 < final["code_usage"] <= 1
    assert final["elbo"] == pytest.approx(final["log_p"] - final["kl"])
    assert final["beta_elbo"] == pytest.approx(final["log_p"] - final["beta"] * final["kl"])
    assert final["beta"] == pytest.approx(0.01)  # the end of the annealed schedule
    tok = MotionTokenizer.load(tmp_path / "run" / "final")
    cfg = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert cfg["step"] == 8 and cfg["train"]["batch_size"] == 4 and "val_metrics" in cfg
    assert cfg["train_seconds"] > 0 and cfg["machine"]["device"] == "cpu" and cfg["machine"]["cpu_count"] >= 1
    assert tok.num_tokens == 16
    # The shipped pointer names the newest checkpoint and older ones were pruned to keep_checkpoints.
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_0000008"


def test_training_improves_reconstruction(dataset, tmp_path):
    """200 DAPS steps on synthetic motion raise log p(x|z) and lower L2 on the training windows.

    Standardized data leaves nothing to gain without information in z (mean 0, variance 1 is the best blind
    guess), so the gain measures that codes carry information about x; a peaked initial posterior
    (``posterior_init_std=0.5``) makes that happen within seconds."""
    from motiontok.data import fixed_windows, split_train_val
    from motiontok.evaluation import evaluate_tokenizer
    from motiontok.normalizer import RunningNormalizer

    torch.manual_seed(0)
    model = DiscreteVAE(TINY, posterior_init_std=0.5)
    est = DapsEstimator(DapsConfig(num_samples=4, beta=BetaSchedule("cosine", 1.0, 0.01, 200)))
    cfg = TrainConfig(steps=200, batch_size=8, lr=3e-3, warmup_steps=5, eval_every=0, ckpt_every=200, progress=False)
    tr, _ = split_train_val(dataset, VAL)
    norm = RunningNormalizer(127)
    norm.update(torch.from_numpy(tr.features))
    windows = fixed_windows(tr, 32, 8)
    before = evaluate_tokenizer(model, norm, windows, 30.0, robot_metrics=False)
    train(model, est, MotionData(dataset, VAL, model.cfg.length), cfg, tmp_path / "improve")
    after = evaluate_tokenizer(model, norm, windows, 30.0, robot_metrics=False)
    assert after["log_p"] > before["log_p"] + 150, (before["log_p"], after["log_p"])
    assert after["l2"] < before["l2"] - 2.0, (before["l2"], after["l2"])


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr_final_ratio=0.1, lr_schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(100, cfg) == pytest.approx(0.1)
    assert lr_factor(55, cfg) == pytest.approx(0.55)
    const = TrainConfig(steps=100, warmup_steps=10, lr_schedule="constant")
    assert lr_factor(4, const) == pytest.approx(0.5) and {lr_factor(s, const) for s in (10, 55, 100, 500)} == {1.0}


def test_evaluation_does_not_change_training(dataset, tmp_path):
    """Periodic validation draws from its own generator: the trained weights are the same with and without it."""
    _run(dataset, tmp_path / "quiet", 6)
    _run(dataset, tmp_path / "evals", 6, eval_every=2, eval_windows=2)
    a = _weights(tmp_path / "quiet" / "checkpoints" / "step_0000006")
    b = _weights(tmp_path / "evals" / "checkpoints" / "step_0000006")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_signal_handlers_are_restored(dataset, tmp_path):
    def mine(signum, frame):
        pass

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _run(dataset, tmp_path / "run", 2)
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_trainer_state_is_loaded_without_unpickling_objects(dataset, tmp_path):
    """Resuming reads the trainer state with weights_only: a state holding an arbitrary object is refused."""
    _run(dataset, tmp_path / "run", 2)
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000002"
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)  # what train() writes loads this way
    assert state["step"] == 2 and len(state["rng"]) == 1
    torch.save(dict(state, extra=SimpleNamespace(x=1)), ckpt / "trainer_state.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(ckpt, trainer_state=True)


def test_adaptive_clipping_against_a_loop():
    """Each row's gradient is capped at clipping * max(row weight norm, eps); vectors and scalars as one unit."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((5, 3), (4, 2, 3), (6,), ())]
    params[0].data[1] = 0.0  # a zero row: capped at clipping * eps
    grads = [torch.randn(p.shape, generator=g) * 3 for p in params]
    for p, gr in zip(params, grads, strict=True):
        p.grad = gr.clone()
    total = adaptive_clip_(params, 0.5, eps=1e-3)
    assert total.item() == pytest.approx(torch.cat([gr.flatten() for gr in grads]).norm().item(), rel=1e-6)
    for p, gr in zip(params, grads, strict=True):
        rows = [(p.data, gr)] if p.ndim <= 1 else list(zip(p.data, gr, strict=True))
        got = [p.grad] if p.ndim <= 1 else list(p.grad)
        for (w, g0), g1 in zip(rows, got, strict=True):
            limit = 0.5 * max(w.norm().item(), 1e-3)
            expected = g0 if g0.norm() <= limit else g0 * limit / g0.norm()
            torch.testing.assert_close(g1, expected)
    assert any(not torch.equal(p.grad, gr) for p, gr in zip(params, grads, strict=True))  # something was clipped


def _script(dataset, out, *overrides, nproc=1):
    """scripts/train_tokenizer.py on the smoke preset, under torchrun with ``nproc`` processes when above 1."""
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += [str(ROOT / "scripts/train_tokenizer.py"), "preset=smoke", f"data.path={dataset}"]
    cmd += [f"data.val_files=[{VAL[0]}]", f"out_dir={out}", "train.num_threads=1", "train.device=cpu", *overrides]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.mark.slow
def test_train_seed_seeds_the_initial_weights(dataset, tmp_path):
    """train.seed decides the initial weights (one step at LR 0 leaves them as initialised)."""
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        res = _script(dataset, tmp_path / name, "train.steps=1", "train.lr=0", f"train.seed={seed}")
        assert res.returncode == 0, res.stderr[-3000:]
        runs[name] = strip_prefix(_weights(tmp_path / name / "final"), "model.")
    for k in runs["a"]:
        torch.testing.assert_close(runs["a"][k], runs["b"][k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


@pytest.mark.slow
def test_torchrun_two_processes_gloo(dataset, tmp_path):
    """DistributedDataParallel on 2 CPU processes: the replicas stay identical (train() checks their weights at
    every checkpoint and raises otherwise), one checkpoint is written, and a run resumed from the step-3
    checkpoint ends with exactly the weights of the uninterrupted run (every rank's streams are saved)."""
    full, cut = tmp_path / "ddp", tmp_path / "cut"
    res = _script(dataset, full, nproc=2)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((full / "final" / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["step"] == 6
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    assert metrics["windows"] == 2
    state = torch.load(full / "checkpoints" / "step_0000003" / "trainer_state.pt", weights_only=True)
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["sampler"], state["rng"][1]["sampler"])
    shutil.copytree(full / "checkpoints" / "step_0000003", cut / "checkpoints" / "step_0000003")
    (cut / "checkpoints" / "latest").write_text("step_0000003\n")
    res = _script(dataset, cut, nproc=2)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _weights(full / "checkpoints" / "step_0000006"), _weights(cut / "checkpoints" / "step_0000006")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_estimator_parameters_join_only_the_groups_they_declare():
    from motiontok.estimators import Estimator
    from motiontok.optim import make_optimizer
    from motiontok.trainer import Objective

    net = TrajectoryNetConfig(embed_dim=16, num_heads=2, num_layers=1, block_size=16, vocab_size=16)
    cfg = TrainConfig(lr=1e-3, recognition_lr_scale=0.5, eta_lr=1e-2, weight_decay=0.1)

    class WithCodebook(Estimator):
        def __init__(self, declare: bool):
            super().__init__()
            self.codebook = torch.nn.Parameter(torch.zeros(16, 16))
            self.declare = declare

        def param_groups(self):
            return {"generative": [self.codebook]} if self.declare else {}

    est = WithCodebook(True)
    opt = make_optimizer(Objective(DiscreteVAE(net), est), cfg)
    [group] = [g for g in opt.param_groups if any(p is est.codebook for p in g["params"])]
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.1 and not group.get("fixed")  # decoder side
    with pytest.raises(ValueError, match="param_groups"):
        make_optimizer(Objective(DiscreteVAE(net), WithCodebook(False)), cfg)
    daps = make_optimizer(Objective(DiscreteVAE(net), DapsEstimator(DapsConfig())), cfg)
    assert [g["lr"] for g in daps.param_groups] == [5e-4, 5e-4, 1e-3, 1e-3, 1e-2]  # unchanged layout for DAPS
    assert daps.param_groups[-1]["fixed"] and len(daps.param_groups[-1]["params"]) == 1


def test_a_diverged_run_stops_with_a_clear_error_and_keeps_its_last_good_checkpoint(dataset, tmp_path):
    """A loss that turns NaN at step 7: the run raises FloatingPointError naming the step, the newest checkpoint is
    step 6 (written before the NaN) and holds finite weights; no final/ export."""

    class Diverging(DapsEstimator):
        def forward(self, model, x, step):
            out = super().forward(model, x, step)
            return out._replace(loss=out.loss * (float("nan") if step >= 6 else 1.0))

    torch.manual_seed(0)
    model = DiscreteVAE(TINY)
    cfg = TrainConfig(steps=20, batch_size=4, eval_every=0, ckpt_every=3, log_every=2, progress=False)
    with pytest.raises(FloatingPointError, match="at step 8; the last checkpoint \\(step 6\\)"):
        train(model, Diverging(DapsConfig(num_samples=4)), MotionData(dataset, VAL, 32), cfg, tmp_path / "run")
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
    assert latest == "step_0000006" and not (tmp_path / "run" / "final").exists()
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "run" / "checkpoints" / latest).values())


def test_train_puts_back_the_thread_count_it_changed(dataset, tmp_path):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    _run(dataset, tmp_path / "threads", 1, num_threads=wanted)
    assert torch.get_num_threads() == before
