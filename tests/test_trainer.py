"""Training: the loss decreases, resume after a kill reproduces the uninterrupted run, torchrun with 2 processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from motiontok import MotionTokenizer
from motiontok.checkpoint import CheckpointError, load_checkpoint, strip_prefix
from motiontok.daps import BetaSchedule
from motiontok.data import write_dataset
from motiontok.estimators import DapsConfig, DapsEstimator
from motiontok.models import DiscreteVAE
from motiontok.motion import MotionClip
from motiontok.nets import TrajectoryNetConfig
from motiontok.trainer import TrainConfig, lr_factor, train
from tests.conftest import synthetic_qpos

ROOT = Path(__file__).resolve().parent.parent
TINY = TrajectoryNetConfig(block_size=16, vocab_size=16, embed_dim=16, num_heads=2, num_layers=1)
VAL = ["val_subject9"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    clips = [MotionClip(f"train{i}_subject1", synthetic_qpos(70, seed=i), 30.0, f"train{i}_subject1") for i in range(3)]
    clips.append(MotionClip(VAL[0], synthetic_qpos(64, seed=9), 30.0, VAL[0]))
    return write_dataset(clips, tmp_path_factory.mktemp("data") / "synthetic.h5")


def _run(dataset, out, steps, **kw):
    torch.manual_seed(0)
    model = DiscreteVAE(TINY)
    est = DapsEstimator(DapsConfig(num_samples=4, beta=BetaSchedule("cosine", 2.0, 0.01, 8)))
    cfg = TrainConfig(
        steps=8,
        batch_size=4,
        warmup_steps=2,
        eval_every=0,
        ckpt_every=2,
        progress=False,
        keep_checkpoints=10,
        **kw,
    )
    cfg.steps = steps if steps else cfg.steps
    return train(dataset, model, est, cfg, out, VAL), model


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
        train(dataset, other, DapsEstimator(DapsConfig(num_samples=4)), cfg, tmp_path / "third", VAL)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        _run(dataset, tmp_path / "fourth", 1, init_from=str(tmp_path / "missing"))


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
    train(dataset, model, est, cfg, tmp_path / "improve", VAL)
    after = evaluate_tokenizer(model, norm, windows, 30.0, robot_metrics=False)
    assert after["log_p"] > before["log_p"] + 150, (before["log_p"], after["log_p"])
    assert after["l2"] < before["l2"] - 2.0, (before["l2"], after["l2"])


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr_final_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(100, cfg) == pytest.approx(0.1)
    assert lr_factor(55, cfg) == pytest.approx(0.55)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(dataset, tmp_path):
    """DistributedDataParallel on 2 CPU processes keeps the replicas identical and writes one checkpoint."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "scripts/train_tokenizer.py"),
        "preset=smoke",
        f"data.path={dataset}",
        f"data.val_files=[{VAL[0]}]",
        f"out_dir={out}",
        "train.num_threads=1",
        "train.device=cpu",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((out / "final" / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["step"] == 6
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    assert metrics["windows"] == 2
