"""scripts/compare_estimators.py: runs every (estimator, seed) once, resumes, and tabulates mean +- SE."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from motiontok.data import write_dataset
from motiontok.motion import MotionClip
from tests.conftest import synthetic_qpos

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_compare_two_estimators_two_seeds_and_resume(tmp_path):
    clips = [MotionClip(f"train{i}_subject1", synthetic_qpos(70, seed=i), 30.0, f"train{i}_subject1") for i in range(2)]
    clips.append(MotionClip("val_subject9", synthetic_qpos(64, seed=9), 30.0, "val_subject9"))
    data = write_dataset(clips, tmp_path / "tiny.h5")
    cmd = [sys.executable, "scripts/compare_estimators.py", "--estimators", "daps", "vqvae", "--seeds", "0", "1",
           "--out", str(tmp_path / "cmp"), "--", "preset=smoke", f"data.path={data}", "data.val_files=[val_subject9]",
           "train.num_threads=1"]  # fmt: skip
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("[run]") == 4 and first.stdout.count("[done]") == 4
    with open(tmp_path / "cmp" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["estimator"] for r in rows] == ["daps", "vqvae"] and all(r["seeds"] == "2" for r in rows)
    assert float(rows[0]["bits"]) == 16 * 4  # smoke: 16 positions x log2(16)
    for r in rows:  # two seeds: a standard error exists
        assert float(r["l2_se"]) >= 0 and float(r["l2_mean"]) > 0
    assert (tmp_path / "cmp" / "val_log_p.png").stat().st_size > 1000
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("[skip]") == 4 and "[run]" not in again.stdout
