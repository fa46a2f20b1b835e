"""scripts/run_policy.py: the kinematic main job end to end on a small high-level policy, and its clear refusals."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from control.highlevel import HIGHLEVEL_FORMAT, HighLevelConfig, HighLevelPolicy, config_dict
from control.labels import LABELS
from control.runner import Goal
from control.theme_classifier import ThemeClassifier
from envs.reference import tokenizer_fingerprint
from motiontok import MotionTokenizer
from motiontok.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import run_policy  # noqa: E402

THEMES = ["dance", "walk"]


@pytest.fixture(scope="module")
def highlevel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained, small high-level policy recorded as trained on the shipped tokenizer."""
    tok = MotionTokenizer.load()
    torch.manual_seed(0)
    cfg = HighLevelConfig(embed_dim=32, num_heads=2, encoder_layers=1, decoder_layers=1,
                          block_size=tok.num_tokens, vocab_size=tok.vocab_size)  # fmt: skip
    tensors = {f"model.{k}": v for k, v in HighLevelPolicy(cfg).state_dict().items()}
    tensors |= {f"classifier.{k}": v for k, v in ThemeClassifier(THEMES).state_dict().items()}
    config = {"format": HIGHLEVEL_FORMAT, "format_version": 1, "net": config_dict(cfg), "themes": THEMES,
              "tokenizer_fingerprint": tokenizer_fingerprint(tok), "theme_speeds": {"dance": 0.4}}  # fmt: skip
    return save_checkpoint(tmp_path_factory.mktemp("hl") / "highlevel", tensors, config)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = run_policy.main(["--no-progress", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_kinematic_run_reports_its_metrics(highlevel_dir: Path, capsys) -> None:
    code, out, err = _run(capsys, "--text", "dance", "--kinematic", "--seconds", "2.5", "--highlevel",
                          str(highlevel_dir), "--json", "--speed", "0.8", "--turn-rate", "0.2")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["theme_matched"] == "dance" and result["theme_recognised"] in THEMES
    assert result["seconds_simulated"] == 2.5
    assert result["replans"] == math.ceil(2.5 * 30 / 32) == 3
    assert result["com_goal"] == {"speed": 0.8, "turn_rate": 0.2, "height": None}
    for key in ("mean_com_speed", "com_goal_error", "realtime_factor"):
        assert np.isfinite(result[key]) and result[key] >= 0
    assert isinstance(result["fell"], bool) and sum(result["theme_votes"].values()) == 2  # whole windows in 2.5 s


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", "bake a chocolate cake", "--kinematic"], "closest"),
        (["--text", "dance", "--kinematic", "--speed", "nan"], "finite"),
        (["--text", "dance", "--kinematic", "--speed", "40"], "within"),
        (["--text", "dance", "--kinematic", "--height", "2.5"], "height"),
        (["--text", "dance", "--kinematic", "--height", "nan"], "height"),
        (["--text", "dance", "--lowlevel", "/nonexistent"], "--kinematic"),
    ],
)
def test_bad_input_is_refused_with_one_clear_line(highlevel_dir: Path, capsys, args: list[str], message: str) -> None:
    code, _, err = _run(capsys, *args, "--highlevel", str(highlevel_dir), "--seconds", "1")
    assert code == 2 and err.startswith("error:") and message in err, err


def test_missing_or_foreign_checkpoints_are_refused(highlevel_dir: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "--text", "dance", "--kinematic", "--highlevel", str(tmp_path / "none"))
    assert code == 2 and "no such checkpoint" in err
    tok = MotionTokenizer.load()
    with torch.no_grad():
        tok.model.decoder.out.bias.add_(0.5)  # another tokenizer
    tok.save(tmp_path / "other_tok")
    code, _, err = _run(capsys, "--text", "dance", "--kinematic", "--highlevel", str(highlevel_dir),
                        "--tokenizer", str(tmp_path / "other_tok"))  # fmt: skip
    assert code == 2 and "trained on tokenizer" in err


def test_eval_highlevel_refuses_a_missing_judge(highlevel_dir: Path, tmp_path: Path, capsys) -> None:
    import eval_highlevel

    code = eval_highlevel.main(["--checkpoint", str(highlevel_dir), "--judge", str(tmp_path / "none"),
                                "--data", str(tmp_path)])  # fmt: skip
    assert code == 2 and "no such checkpoint" in capsys.readouterr().err


def test_eval_highlevel_judge_cv_needs_two_themes(highlevel_dir: Path, real_data_dir, tmp_path: Path, capsys) -> None:
    """Leave-one-file-out over walk files only: no other theme to fit on, one clear error (exit 2)."""
    import shutil

    import eval_highlevel

    for stem in ("walk1_subject1", "walk2_subject4"):
        shutil.copy(real_data_dir / f"{stem}.csv", tmp_path / f"{stem}.csv")
    code = eval_highlevel.main(["--checkpoint", str(highlevel_dir), "--data", str(tmp_path), "--dataset",
                                str(tmp_path / "walk.h5"), "--val-files", "walk2_subject4", "--judge-cv"])  # fmt: skip
    assert code == 2 and "fewer than two themes" in capsys.readouterr().err


def test_goal_path_turns_at_the_requested_rate() -> None:
    """The COM goal: constant speed along an arc; brute force by stepping the heading."""
    goal = Goal(1.5, 0.6)
    path = goal.path(30.0, height=0.9, n=32)
    x = y = yaw = 0.0
    for k in range(32):
        yaw += 0.6 / 30
        x, y = x + 1.5 / 30 * math.cos(yaw), y + 1.5 / 30 * math.sin(yaw)
        np.testing.assert_allclose(path[k], [x, y, 0.9], atol=1e-12)
    speeds = np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1) * 30
    np.testing.assert_allclose(speeds, 1.5)


def test_goal_height_moves_smoothly_to_the_asked_height() -> None:
    """With ``height`` the COM path goes from the current height to the goal's within the window, never beyond,
    without a jump at either end; without it the height stays (the horizontal path is the same either way)."""
    low, keep = Goal(0.5, 0.0, 0.6).path(30.0, height=1.0), Goal(0.5).path(30.0, height=1.0)
    np.testing.assert_array_equal(low[:, :2], keep[:, :2])
    np.testing.assert_array_equal(keep[:, 2], 1.0)
    z = low[:, 2]
    assert z[-1] == pytest.approx(0.6) and np.all(np.diff(z) < 0) and z.min() >= 0.6 - 1e-12
    assert 1.0 - z[0] < 0.01 and z[-2] - 0.6 < 0.01  # a smooth step: slow at both ends
    with pytest.raises(ValueError, match="height"):
        Goal(0.0, 0.0, 0.0)


def test_eval_highlevel_reports_chance_level_for_an_untrained_policy(
    highlevel_dir: Path, real_data_dir, tmp_path: Path, capsys
) -> None:
    """An untrained policy: the token NLL is near log V (a per-token mean, not a sum), accuracy near 1/V, the
    faithfulness figures shares of windows whose mean is the mean of the themes'; the judge's leave-one-file-out
    accuracy on true motion. ``--judge``: another policy's classifier, one that calls every window "walk" (the
    policy's own calls this one "dance")."""
    import eval_highlevel

    from motiontok.checkpoint import load_checkpoint

    tensors, config, _ = load_checkpoint(highlevel_dir)
    tensors["classifier.linear.bias"] = torch.tensor([-100.0, 100.0])  # THEMES: dance, walk
    judge = save_checkpoint(tmp_path / "judge", tensors, config)
    code = eval_highlevel.main(["--checkpoint", str(highlevel_dir), "--data", str(real_data_dir), "--json",
                                "--dataset", str(tmp_path / "lafan.h5"), "--judge", str(judge),
                                "--texts-per-theme", "1", "--windows", "1", "--judge-cv"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)
    assert abs(result["token_nll"] - math.log(1024)) < 1.0 and result["token_accuracy"] < 0.02
    assert result["text_faithfulness_per_theme"] == {"dance": 0.0, "walk": 1.0} and result["judge"] == str(judge)
    assert result["text_faithfulness"] == pytest.approx(0.5, abs=1e-4)
    per_label = result["label_faithfulness_per_label"]
    assert set(per_label) == set(LABELS) and all(v in (0.0, 1.0) for v in per_label.values())
    assert result["label_faithfulness"] == pytest.approx(sum(per_label.values()) / len(LABELS), abs=1e-4)
    assert result["mpjpe_mm"] > 0 and result["com_goal_error_m"] > 0
    cv = result["judge_cv"]  # dance against walk on true windows of held-out files: far above chance unless mislabelled
    assert set(cv["per_window"]) == set(THEMES) and cv["mean_per_window"] > 0.7
    assert cv["mean_per_window"] == pytest.approx(sum(cv["per_window"].values()) / 2, abs=1e-3)


def test_export_highlevel_ships_a_loadable_copy_with_its_record(highlevel_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil

    import export_highlevel

    shutil.copytree(highlevel_dir, tmp_path / "run" / "final")
    metrics = {"token_nll": 2.25, "token_accuracy": 0.5, "text_faithfulness": 0.75,
               "text_faithfulness_per_theme": {"dance": 0.5, "walk": 1.0},
               "classifier_val_accuracy": {"dance": 0.6}, "label_faithfulness_per_label": {"walk": 0.75}}  # fmt: skip
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    out = tmp_path / "shipped"
    code = export_highlevel.main(["--run", str(tmp_path / "run"), "--out", str(out), "--eval-json",
                                  str(tmp_path / "eval.json")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    readme = (out / "README.md").read_text()
    assert (
        "| `token_nll` | 2.25 |" in readme and "| walk | 1.00 | nan |" in readme and "| dance | 0.50 | 0.60 |" in readme
    )
    assert "| label | generated |\n| --- | --- |\n| walk | 0.75 |" in readme
    metrics["judge_cv"] = {"per_window": {"dance": 0.33, "walk": 0.5}}  # the judge on files it was not fitted on
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    assert export_highlevel.main(["--run", str(tmp_path / "run"), "--out", str(out), "--eval-json",
                                  str(tmp_path / "eval.json")]) == 0  # fmt: skip
    assert "| dance | 0.50 | 0.60 | 0.33 |" in (out / "README.md").read_text()
    from control.highlevel import load_highlevel

    load_highlevel(out, MotionTokenizer.load())
    other = MotionTokenizer.load()
    with torch.no_grad():
        other.model.decoder.out.bias.add_(0.5)
    other.save(tmp_path / "other_tok")
    code = export_highlevel.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--eval-json",
                                  str(tmp_path / "eval.json"), "--tokenizer", str(tmp_path / "other_tok")])  # fmt: skip
    assert code == 2 and "trained on tokenizer" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_shipped_highlevel_plans_valid_tokens_for_the_shipped_tokenizer() -> None:
    """The shipped policy loads with the shipped tokenizer (fingerprints match) and plans 64 in-range codes whose
    decoded window continues from the standing start (its first frame within a step of it)."""
    from control.highlevel import load_highlevel
    from control.runner import Planner, standing_features
    from control.text import TextEncoder
    from motiontok import features as feat
    from motiontok.motion import forward_kinematics

    tok = MotionTokenizer.load()
    policy, config = load_highlevel(None, tok)
    planner = Planner(tok, policy, TextEncoder().encode(["dance"])[0], Goal(0.4), seed=0)
    start = standing_features(tok.fps)
    qpos = feat.qpos_from_features(start, tok.fps)
    plan = planner.plan(start, qpos, forward_kinematics(qpos).com)
    assert plan.tokens.shape == (64,) and plan.tokens.min() >= 0 and plan.tokens.max() < tok.vocab_size
    assert plan.features.shape == (32, 127) and np.isfinite(plan.features).all()
    assert np.linalg.norm(plan.qpos[0, :2] - qpos[-1, :2]) < 0.2  # m: steps on from where the robot stands
    assert set(config["themes"]) >= {"dance", "walk", "run"}
