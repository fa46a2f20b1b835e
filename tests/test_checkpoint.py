"""Atomic writes: files and checkpoint directories appear whole or not at all, with the usual permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from motiontok.checkpoint import atomic_path, load_checkpoint, save_checkpoint


def test_atomic_path_replaces_whole_files_with_umask_permissions(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        target = tmp_path / "sub" / "a.txt"
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            assert not target.exists()  # nothing under the final name until the block succeeds
        assert target.read_text() == "new"
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not tempfile's private 0600
        with pytest.raises(RuntimeError), atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
        assert target.read_text() == "new" and [p.name for p in target.parent.iterdir()] == ["a.txt"]
        ckpt = save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(2)}, {"format": "x"})
        assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755  # not mkdtemp's private 0700
        assert {stat.S_IMODE(f.stat().st_mode) for f in ckpt.iterdir()} == {0o644}  # safetensors writes 0600
        torch.testing.assert_close(load_checkpoint(ckpt)[0]["w"], torch.ones(2))
    finally:
        os.umask(old_umask)
