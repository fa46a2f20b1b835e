"""A training run's state on disk: checkpoints of weights, optimizer and every rank's random streams, written
atomically; resuming, a second stage from another run's weights, and the DDP replica check.

Layout: ``out_dir/checkpoints/step_XXXXXXX/`` (``motiontok.checkpoint``) and the pointer file ``latest``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from motiontok.checkpoint import load_checkpoint, save_checkpoint, write_text_atomic
from motiontok.errors import CheckpointError

if TYPE_CHECKING:
    from motiontok.datamodules import DataModule


def rng_states(generator: torch.Generator, distributed: bool, world: int) -> list[dict[str, Tensor | None]]:
    """The random streams of every rank (the data module's batch stream, torch CPU and CUDA), rank order;
    collective if distributed. Saved with a checkpoint so that a resumed run, on any number of ranks it had,
    draws what it would have drawn."""
    mine = {
        "sampler": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }
    if not distributed:
        return [mine]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    return gathered


def check_replicas(objective: nn.Module, distributed: bool, world: int) -> None:
    """Raise if the DDP replicas' weights differ (they must stay bit-identical: same start, averaged gradients)."""
    if not distributed:
        return
    fingerprint = torch.stack([p.detach().double().sum() for p in objective.parameters()]).cpu()  # (P,)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, fingerprint)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError("DistributedDataParallel replicas diverged: their weights differ")


def save_state(
    root: Path,
    step: int,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: list[dict[str, Tensor | None]],
    data: DataModule,
    records: dict[str, Any],
    keep: int,
    seconds: float,
) -> None:
    """Write checkpoint ``step_XXXXXXX`` (weights, the data module's statistics, config, trainer state), point
    ``latest`` at it, and delete all but the ``keep`` newest."""
    tensors = dict(objective.state_dict()) | data.state_tensors()  # model.*, estimator.*, the data's statistics
    state = {
        "step": step,
        "elapsed_s": seconds,
        "optimizer": optimizer.state_dict(),
        "rng": rng,  # one entry per rank
    }
    name = f"step_{step:07d}"
    config = data.checkpoint_config(objective.model, **records, step=step, train_seconds=round(seconds, 1))
    save_checkpoint(root / name, tensors, config, state)
    write_text_atomic(root / "latest", name + "\n")
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)


def load_objective(objective: nn.Module, tensors: dict[str, Tensor], estimator_optional: bool = False) -> None:
    """The model and estimator weights of a checkpoint's tensors (``model.*``, ``estimator.*``, as saved).
    ``estimator_optional``: a tokenizer directory (``final/``, a shipped tokenizer) has no estimator state; the
    estimator then keeps its initial values."""
    state = {k: v for k, v in tensors.items() if k.startswith(("model.", "estimator."))}
    missing, unexpected = objective.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (estimator_optional and k.startswith("estimator."))]
    if missing or unexpected:
        raise RuntimeError(f"missing keys {missing}, unexpected keys {unexpected}")


def init_from(path: Path, objective: nn.Module, load: bool) -> dict[str, Any]:
    """``train.init_from``: the checkpoint ``path`` names (a run's out_dir -> its latest checkpoint), its weights
    loaded into ``objective`` when ``load``; returns its record (command, steps, time, machine, its own source)."""
    if (path / "checkpoints" / "latest").is_file():
        path = path / "checkpoints" / (path / "checkpoints" / "latest").read_text().strip()
    tensors, config, _ = load_checkpoint(path, map_location="cpu")
    if load:
        try:
            load_objective(objective, tensors, estimator_optional=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: cannot start this run from its weights ({err})") from None
    keys = ("command", "step", "train_seconds", "machine", "init_from")
    return {"path": str(path)} | {k: config[k] for k in keys if k in config}


def resume(
    path: Path,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DataModule,
    rank: int,
    device: torch.device,
) -> tuple[int, float]:
    """Restore a run from ``path``; returns (step, seconds trained so far)."""
    tensors, _, state = load_checkpoint(path, map_location="cpu", trainer_state=True)
    try:
        load_objective(objective, tensors)
        data.load_state_tensors(tensors)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot resume this run from it ({err})") from None
    rng = state.get("rng", [])
    if rank < len(rng):  # this rank's own streams: the resumed run draws what the uninterrupted one would have
        data.generator.set_state(rng[rank]["sampler"])
        torch.set_rng_state(rng[rank]["torch"])
        if rng[rank]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng[rank]["cuda"])
    else:  # a rank the saved run did not have: streams derived from the step (reproducible, not identical)
        data.generator.manual_seed(int(state["step"]) * 7919 + rank)
        torch.manual_seed(int(state["step"]) * 7919 + rank)
    objective.to(device)
    return int(state["step"]), float(state.get("elapsed_s", 0.0))
