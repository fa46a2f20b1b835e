"""The README's Python examples run as written (with the shipped tokenizer and the real data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert python_blocks(), "README lost its Python examples"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, real_data_dir, monkeypatch):
    monkeypatch.setenv("MOTIONTOK_DATA", str(real_data_dir))
    namespace: dict = {}
    exec(compile(python_blocks()[index], f"README.md example {index}", "exec"), namespace)
    if "goal" in namespace:  # the RL-loop example: tokens are in range, decode has the window's shape
        goal, preview = namespace["goal"], namespace["preview"]
        assert goal.shape == (1, 64) and int(goal.min()) >= 0 and int(goal.max()) < 1024
        assert preview.shape == (1, 32, 127)
