"""Low-level training runs: chunks and exact resume, history, warm starts, export, and the scripts that run them."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from control.lowlevel import PolicyConfig, PPOConfig, load_actor, save_policy
from control.lowlevel_train import RunConfig, train_lowlevel
from envs.reference import ReferenceLibrary
from envs.tracking import TrackingConfig
from envs.vec_env import H1TrackingVecEnv
from motiontok import MotionTokenizer
from motiontok.errors import CheckpointError
from tests.lowlevel.conftest import ROOT, SMALL

pytestmark = pytest.mark.usefixtures("reference_cache")


COMMAND = "scripts/train_lowlevel.py out_dir=runs/tiny run.num_envs=4"


def _run(ref: ReferenceLibrary, out, total: int, ckpt_every: int = 10**9, init_from: str = "", policy=SMALL,
         max_minutes: float = 0.0, init_std: float = 0.0) -> dict:  # fmt: skip
    task = TrackingConfig(num_threads=1)
    env = H1TrackingVecEnv(ref, 4, task, seed=0)
    run = RunConfig(total_steps=total, num_envs=4, progress=False, ckpt_every=ckpt_every, torch_threads=1,
                    init_from=init_from, max_minutes=max_minutes, init_std=init_std)  # fmt: skip
    ppo = PPOConfig(n_steps=16, batch_size=32, n_epochs=2)
    record = {"policy": vars(policy), "env": dataclasses.asdict(task), "ppo": vars(ppo), "run": vars(run),
              "clips": list(ref.names), "command": COMMAND, "machine": "test-host x86_64"}  # fmt: skip
    try:
        return train_lowlevel(env, out, run, policy, ppo, record)
    finally:
        env.close()


@pytest.fixture(scope="module")
def resumed_run(walk: ReferenceLibrary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained in two chunks: to 64 environment steps, then resumed to 192."""
    out = tmp_path_factory.mktemp("resumed") / "run"
    first = _run(walk, out, 64)
    assert first["num_timesteps"] == 64 and first["finished"]
    assert _run(walk, out, 192)["num_timesteps"] == 192
    return out


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def test_resumed_training_equals_uninterrupted(walk: ReferenceLibrary, resumed_run: Path, tmp_path) -> None:
    whole = _run(walk, tmp_path / "a", 192)
    assert whole["num_timesteps"] == 192
    a = load_file(str(tmp_path / "a" / "final" / "model.safetensors"))
    b = load_file(str(resumed_run / "final" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_a_stopped_run_reports_the_steps_of_its_checkpoint(walk: ReferenceLibrary, tmp_path) -> None:
    """A time limit stops at a rollout boundary after saving; SB3 has taken one more step by then, which the
    checkpoint does not hold, so the summary must not count it."""
    summary = _run(walk, tmp_path / "run", 64, max_minutes=1e-9)
    assert not summary["finished"]
    assert summary["num_timesteps"] == _config(tmp_path / "run" / "checkpoints" / "latest")["num_timesteps"] == 0


def test_a_resumed_run_records_one_history_entry_per_chunk(resumed_run: Path) -> None:
    history = _config(resumed_run / "checkpoints" / "latest")["history"]
    assert [(h["steps_from"], h["steps_to"]) for h in history] == [(0, 64), (64, 192)]  # contiguous
    final = _config(resumed_run / "final")["history"]  # written after latest: the same record, a later wall time
    assert [{**h, "wall_s": 0} for h in final] == [{**h, "wall_s": 0} for h in history]
    assert final[-1]["wall_s"] >= history[-1]["wall_s"]
    for h in history:
        assert h["command"] == COMMAND and h["wall_s"] >= 0
        assert h["machine"] == {"description": "test-host x86_64", "cpu_count": os.cpu_count(), "torch_threads": 1,
                                "physics_threads": 1, "device": "cpu"}  # fmt: skip
        assert datetime.fromisoformat(h["started"]).utcoffset() == timedelta(0)
    assert history[0]["started"] <= history[1]["started"]


def test_history_of_an_older_checkpoint_starts_at_its_steps_and_every_save_updates_it(
    walk: ReferenceLibrary, resumed_run: Path, tmp_path, monkeypatch
) -> None:
    """A checkpoint without ``history`` (written before it was recorded) resumes; each periodic save brings the
    current chunk's entry up to date."""
    import control.lowlevel_train

    latest = tmp_path / "run" / "checkpoints" / "latest"
    shutil.copytree(resumed_run / "checkpoints" / "latest", latest)
    config = _config(latest)
    del config["history"]
    (latest / "config.json").write_text(json.dumps(config))
    saved = []

    def recording_save(path, model, env, config, with_state=True):
        saved.append((Path(path).name, [(h["steps_from"], h["steps_to"]) for h in config["history"]]))
        return save_policy(path, model, env, config, with_state)

    monkeypatch.setattr(control.lowlevel_train, "save_policy", recording_save)
    assert _run(walk, tmp_path / "run", 320, ckpt_every=64)["num_timesteps"] == 320
    assert saved == [("latest", [(192, 256)]), ("latest", [(192, 320)]), ("final", [(192, 320)])]


def test_a_new_run_starts_from_a_shipped_policy_and_carries_its_history_on(
    walk: ReferenceLibrary, resumed_run: Path, tmp_path
) -> None:
    """``run.init_from``: weights, steps and history of a checkpoint without trainer state (an exported policy)."""
    shipped = tmp_path / "shipped"
    shutil.copytree(resumed_run / "final", shipped)
    assert not (shipped / "trainer_state.pt").exists()
    assert _run(walk, tmp_path / "same", 192, init_from=str(shipped))["num_timesteps"] == 192  # nothing to train
    a = load_file(str(shipped / "model.safetensors"))
    b = load_file(str(tmp_path / "same" / "final" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)  # the weights it starts from, exactly
    assert _run(walk, tmp_path / "more", 256, init_from=str(shipped))["num_timesteps"] == 256
    history = _config(tmp_path / "more" / "final")["history"]
    assert [(h["steps_from"], h["steps_to"]) for h in history] == [(0, 64), (64, 192), (192, 256)]
    _run(walk, tmp_path / "calmer", 192, init_from=str(shipped), init_std=0.3)  # nothing to train: the start itself
    c = load_file(str(tmp_path / "calmer" / "final" / "model.safetensors"))
    assert a["log_std"].exp().min() > 0.5 and torch.allclose(c["log_std"].exp(), torch.full_like(a["log_std"], 0.3))
    for k in set(a) - {"log_std"}:
        torch.testing.assert_close(a[k], c[k], rtol=0, atol=0, msg=k)  # only the noise is reset
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="init_std"):
            _run(walk, tmp_path / "bad", 256, init_from=str(shipped), init_std=bad)
    with pytest.raises(ValueError, match="init_std"):  # nothing to reset without a source policy
        _run(walk, tmp_path / "bad", 256, init_std=0.3)
    wider = PolicyConfig(embed_dim=8, conv_channels=8, token_features=16, net_arch=[48])
    with pytest.raises(CheckpointError, match="net_arch differ"):
        _run(walk, tmp_path / "wider", 256, init_from=str(shipped), policy=wider)
    normalized = dataclasses.replace(SMALL, normalize_obs=True)  # the source policy has no running statistics
    with pytest.raises(CheckpointError, match="normalize_obs differ"):
        _run(walk, tmp_path / "normalized", 256, init_from=str(shipped), policy=normalized)


def _export_main():
    spec = importlib.util.spec_from_file_location("export_lowlevel", ROOT / "scripts" / "export_lowlevel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


EVAL = {"success_rate": 0.75, "mean_episode_s": 3.25, "mpjpe_mm": 85.5, "mpjpe_decoded_mm": 90.25, "episodes": 10,
        "per_theme": {"walk": {"success_rate": 0.875, "mean_episode_s": 4.5, "mpjpe_mm": 80.5,
                               "mpjpe_decoded_mm": 88.0, "episodes": 8},
                      "run": {"success_rate": 0.25, "mean_episode_s": 1.5, "mpjpe_mm": 107.5,
                              "mpjpe_decoded_mm": 99.0, "episodes": 2}},
        "clips": ["walk2_subject4", "run2_subject1"], "num_timesteps": 192}  # fmt: skip


def test_export_ships_the_latest_checkpoint_without_trainer_state(
    walk: ReferenceLibrary, resumed_run: Path, tmp_path, capsys
) -> None:
    run, out = tmp_path / "run", tmp_path / "shipped"
    shutil.copytree(resumed_run / "checkpoints", run / "checkpoints")  # stopped before total_steps: no final/
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    main = _export_main()
    code = main(["--run", str(run), "--out", str(out), "--eval-json", str(tmp_path / "eval.json")])
    assert code == 0, capsys.readouterr().err
    assert "checkpoints/latest ->" in capsys.readouterr().out
    assert (run / "checkpoints" / "latest" / "trainer_state.pt").exists() and not (out / "trainer_state.pt").exists()
    _, config = load_actor(out, walk.tokenizer_id)
    assert config["num_timesteps"] == 192
    readme = (out / "README.md").read_text()
    assert f"`python {COMMAND}`" in readme and walk.tokenizer_id in readme
    assert "| `success_rate` | 0.75 |" in readme and "| `mpjpe_decoded_mm` | 90.25 |" in readme
    assert "| walk | 0.875 | 4.5 | 80.5 | 88 | 8 |" in readme and "| run | 0.25 | 1.5 | 107.5 | 99 | 2 |" in readme
    assert "| 1 | " in readme and " | 0 | 64 | " in readme and " | 64 | 192 | " in readme  # the chunk table
    assert "action mode `pd_offset`" in readme and "walk9_subject0" in readme
    assert "normalize_obs False, use_sde False" in readme  # settings that change what the weights mean
    shutil.copytree(resumed_run / "final", run / "final")  # a finished run ships final/, replacing the copy
    assert main(["--run", str(run), "--out", str(out), "--eval-json", str(tmp_path / "eval.json")]) == 0
    assert "final ->" in capsys.readouterr().out and load_actor(out, walk.tokenizer_id)[1]["num_timesteps"] == 192


def test_export_refuses_a_foreign_tokenizer_and_bad_inputs(resumed_run: Path, tmp_path, capsys) -> None:
    main = _export_main()
    out = tmp_path / "shipped"
    out.mkdir()
    (out / "keep.txt").write_text("the shipped policy")
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    other = MotionTokenizer.load()
    with torch.no_grad():
        other.model.decoder.out.bias.add_(0.5)
    other.save(tmp_path / "other_tok")

    def refused(run: Path, eval_json: Path, *extra: str) -> str:
        code = main(["--run", str(run), "--out", str(out), "--eval-json", str(eval_json), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        return err

    assert "trained on the tokens of tokenizer" in refused(
        resumed_run, tmp_path / "eval.json", "--tokenizer", str(tmp_path / "other_tok")
    )
    (tmp_path / "bad.json").write_text("success_rate: 0.5")
    assert "not JSON" in refused(resumed_run, tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"success_rate": 0.5}))
    assert "per_theme" in refused(resumed_run, tmp_path / "partial.json")
    assert "no such run directory" in refused(tmp_path / "missing", tmp_path / "eval.json")
    (tmp_path / "empty_run").mkdir()
    assert "no final/ or checkpoints/latest/" in refused(tmp_path / "empty_run", tmp_path / "eval.json")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export-")] == []
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # nothing replaced


def test_train_script_reads_its_motions_from_source(tmp_path) -> None:
    """``source=PATH`` (not ``data``, a config group of the tokenizer's) names the motions; a bad one is one line."""
    import subprocess
    import sys

    cmd = [sys.executable, "scripts/train_lowlevel.py", f"out_dir={tmp_path / 'run'}"]
    out = subprocess.run([*cmd, f"source={tmp_path / 'nope'}"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == f"error: {tmp_path / 'nope'}: no such file or directory"
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MOTIONTOK_DATA": ""})
    assert out.returncode == 2 and "source=PATH" in out.stderr


def test_adaptive_assist_state_is_saved_and_resumed(stand: ReferenceLibrary, tmp_path) -> None:
    """The support scale and the smoothed fall share go into every checkpoint and a resumed run starts from them."""
    env = H1TrackingVecEnv(stand, 4, TrackingConfig(num_threads=1), seed=0)
    kw = dict(num_envs=4, progress=False, torch_threads=1, assist_start=1.0, assist_mode="adaptive")
    ppo = PPOConfig(n_steps=16, batch_size=32, n_epochs=1)
    train_lowlevel(env, tmp_path / "run", RunConfig(total_steps=128, **kw), SMALL, ppo, {})
    saved = _config(tmp_path / "run" / "checkpoints" / "latest")["assist_state"]
    assert saved == {"scale": env.sim.assist, "fell_ema": pytest.approx(saved["fell_ema"])}
    env.sim.assist = 123.0  # a resumed run must not keep what the environment holds
    train_lowlevel(env, tmp_path / "run", RunConfig(total_steps=128, **kw), SMALL, ppo, {})  # nothing left to do
    assert env.sim.assist == saved["scale"]
    with pytest.raises(ValueError, match="assist_mode"):
        train_lowlevel(
            env, tmp_path / "other", RunConfig(total_steps=64, **{**kw, "assist_mode": "cosine"}), SMALL, ppo, {}
        )
    env.close()


def test_device_script_trains_a_chunk_on_top_of_init_and_packs_it(tmp_path) -> None:
    """scripts/device_lowlevel.sh (one `run` call on the lent machine): a chunk warm-started from INIT with another
    number of robots, packed into $OUT so that the checkpoint carries INIT's steps and history on; a bad INIT is
    one clear line before anything is spent."""
    import subprocess
    import tarfile

    from tests.conftest import synthetic_qpos, write_csv

    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "walk9_subject0.csv", synthetic_qpos(100, seed=3))
    shipped = ROOT / "assets" / "checkpoints" / "lowlevel_h1"
    env = {**os.environ, "MINUTES": "0.02", "NUM_ENVS": "4", "N_STEPS": "8", "BATCH": "32", "THREADS": "1"}
    env |= {"OUT": str(tmp_path / "out"), "MOTIONTOK_DATA": str(data)}
    script = ["bash", str(ROOT / "scripts" / "device_lowlevel.sh")]
    bad = subprocess.run(script, capture_output=True, text=True, env={**env, "INIT": str(tmp_path / "nope")})
    assert bad.returncode == 2 and "is not a policy checkpoint" in bad.stderr
    done = subprocess.run(script, capture_output=True, text=True, env={**env, "INIT": str(shipped)})
    assert done.returncode == 0, done.stderr
    parts = sorted((tmp_path / "out").glob("ll.tgz.*"))
    (tmp_path / "packed.tgz").write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tmp_path / "packed.tgz") as tar:
        tar.extractall(tmp_path / "back", filter="data")
    config = _config(tmp_path / "back" / "checkpoints" / "latest")
    start = _config(shipped)
    assert config["num_timesteps"] > start["num_timesteps"] and config["run"]["num_envs"] == 4
    chunk = config["history"][-1]
    assert chunk["steps_from"] == start["num_timesteps"] and chunk["steps_to"] == config["num_timesteps"]
    assert config["history"][:-1] == start.get("history", [])
    load_actor(tmp_path / "back" / "checkpoints" / "latest", config["tokenizer_id"])
