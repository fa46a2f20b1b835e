"""Checkpoint files: weights in safetensors, config as JSON, trainer state (optimizer, RNG) via torch.save, read
back with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, never arbitrary
pickled objects (a checkpoint from elsewhere cannot run code when it is resumed).

A checkpoint is a directory. It is written into a temporary sibling and renamed into place, so a crash never
leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from motiontok.errors import CheckpointError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINER_STATE = "trainer_state.pt"


def save_checkpoint(
    path: str | Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``path/`` = weights + config (+ trainer state) atomically; replaces an existing checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    os.chmod(tmp, _umask_mode(0o777))  # mkdtemp's 0700 would make a shipped or shared checkpoint private
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
        for f in tmp.iterdir():
            os.chmod(f, _umask_mode(0o666))  # safetensors writes its file private (0600)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", trainer_state: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any] | None]:
    """Read a checkpoint directory -> (tensors, config, trainer state or None)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    for name in (WEIGHTS, CONFIG):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: missing {name}; not a motiontok checkpoint")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path / CONFIG}: corrupt JSON ({err})") from None
    try:
        tensors = load_file(str(path / WEIGHTS), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path / WEIGHTS}: corrupt weights file ({err})") from None
    state = None
    if trainer_state:
        if not (path / TRAINER_STATE).is_file():
            raise CheckpointError(f"{path}: missing {TRAINER_STATE}; cannot resume training from it")
        try:
            state = torch.load(path / TRAINER_STATE, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            msg = f"{path / TRAINER_STATE}: holds objects other than tensors, numbers and containers; refused ({err})"
            raise CheckpointError(msg) from None
        except (OSError, RuntimeError, EOFError) as err:
            raise CheckpointError(f"{path / TRAINER_STATE}: corrupt trainer state ({err})") from None
    return tensors, config, state


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix`` (e.g. ``"model."``), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _umask_mode(mode: int) -> int:
    """``mode`` as ``open``/``mkdir`` would give it under the process umask (tempfile's 0600/0700 are private)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path beside ``path`` for the caller to write; on success it
    gets the usual permissions and replaces ``path`` in one rename, on an error it is deleted and ``path`` is left
    as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace a small text file atomically (used for the ``latest`` pointer)."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
