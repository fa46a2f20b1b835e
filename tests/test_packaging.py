"""motiontok as an installed library: the wheel built from this checkout carries the shipped assets (H1 model,
tokenizer checkpoint), and a regular install of it loads both from any working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Not part of the build: tool state, outputs and the folders that are no package (the wheel is built from a copy, so
# the checkout gets no build/ or *.egg-info and no stale build/lib leaks into the wheel).
NOT_COPIED = {".git", ".venv", "build", "dist", "runs", "outputs", "data", "tests", "bench", "scripts", "configs"}

# Runs in the installed copy, outside the checkout; prints what it found as JSON.
PROBE = """
import json, sys
from pathlib import Path

import motiontok
from motiontok import robot, tokenizer

facts = {
    "motiontok": motiontok.__file__,
    "asset_dir": str(robot.ASSET_DIR),
    "checkpoint": str(tokenizer.DEFAULT_CHECKPOINT),
    "repo_on_path": any(Path(p or ".").resolve() == Path(sys.argv[1]) for p in sys.path),
}
print(json.dumps(facts), flush=True)
print(json.dumps({"nq": robot.load_model().nq}), flush=True)
print(json.dumps({"vocab_size": tokenizer.MotionTokenizer.load().vocab_size}), flush=True)
"""


def _pip(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_wheel_ships_assets_and_loads_them_from_anywhere(tmp_path):
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    src = tmp_path / "src"
    src.mkdir()
    for entry in REPO.iterdir():
        if entry.name in NOT_COPIED or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, src / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(entry, src / entry.name)

    # Build offline with the setuptools of this environment (a dependency of torch and tensorboard).
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(src), cwd=src)
    (wheel,) = (tmp_path / "dist").glob("motiontok-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = [p.relative_to(REPO / "assets").as_posix() for p in (REPO / "assets").rglob("[!.]*") if p.is_file()]
    missing = sorted(a for a in assets if f"motiontok/assets/{a}" not in names)
    assert not missing, f"assets/ files missing from the wheel: {missing[:10]}"
    # The package list in pyproject.toml is explicit (motiontok.assets cannot be found): every module of the listed
    # top-level packages must be in the wheel, so a new subpackage cannot be forgotten there.
    tops = {p.split(".")[0] for p in setuptools_cfg["packages"]}
    modules = [p.relative_to(REPO).as_posix() for top in sorted(tops) for p in (REPO / top).rglob("*.py")]
    missing = sorted(m for m in modules if m not in names)
    assert not missing, f"modules missing from the wheel (add their package to [tool.setuptools] packages): {missing}"

    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--no-compile", "--target", str(site), str(wheel), cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO)], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the installed motiontok does not import:\n{proc.stderr}"
    facts = lines[0]
    site = site.resolve()
    assert not facts["repo_on_path"], "the checkout is on sys.path; the test would not see the installed copy"
    assert Path(facts["motiontok"]).resolve().is_relative_to(site), f"imported {facts['motiontok']}, not the wheel"
    asset_dir, checkpoint = Path(facts["asset_dir"]).resolve(), Path(facts["checkpoint"]).resolve()
    assert asset_dir.is_relative_to(site), asset_dir
    assert (asset_dir / "h1.xml").is_file()
    assert checkpoint.is_relative_to(site), checkpoint
    assert (checkpoint / "config.json").is_file()

    assert proc.returncode == 0, f"loading from the installed copy failed:\n{proc.stderr}"
    assert lines[1]["nq"] == 26  # 7 (free root) + 19 hinges
    config = json.loads((checkpoint / "config.json").read_text())
    assert lines[2]["vocab_size"] == config["net"]["vocab_size"]
