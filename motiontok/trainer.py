"""Tokenizer training loop: one process, or several under ``torchrun`` with DistributedDataParallel.

Checkpoints (``out_dir/checkpoints/step_XXXXXXX/``, pointer file ``latest``) hold the weights, normalizer and
estimator state in safetensors, the config in JSON, and the optimizer, step and RNG states; a run started again
with the same ``out_dir`` resumes from ``latest`` and draws exactly the batches and samples it would have drawn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from motiontok.checkpoint import load_checkpoint, save_checkpoint, strip_prefix, write_text_atomic
from motiontok.data import WindowSampler, fixed_windows, split_train_val
from motiontok.errors import CheckpointError
from motiontok.estimators import Estimator
from motiontok.evaluation import evaluate_tokenizer
from motiontok.models import DiscreteVAE
from motiontok.normalizer import RunningNormalizer
from motiontok.tokenizer import MotionTokenizer, tokenizer_config


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of a training run."""

    steps: int = 4000
    """Optimizer steps in the whole run (the LR and beta schedules span them)."""
    batch_size: int = 16
    """Windows per step and per process."""
    lr: float = 3e-4
    """Peak AdamW learning rate (paper: 3e-4)."""
    lr_final_ratio: float = 0.1
    """Cosine decay ends at lr * lr_final_ratio."""
    warmup_steps: int = 100
    """Linear LR warm-up."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices (not on biases, norms, embeddings' positions or log-eta)."""
    recognition_lr_scale: float = 1.0
    """Learning rate of the recognition model (encoder + posterior) relative to ``lr``. Below 1 the decoder learns
    what the codes mean before the encoder sharpens onto codes that merely fit the average window."""
    eta_lr: float = 1e-2
    """Adam learning rate of log(eta) (the trust-region multiplier adapts faster than the networks)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    seed: int = 0
    """Seeds parameters, batch sampling and latent sampling."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ..."""
    num_threads: int = 0
    """torch CPU threads per process (0 = torch's default)."""
    log_every: int = 10
    """Steps between TensorBoard scalars."""
    eval_every: int = 500
    """Steps between validation evaluations (0 disables)."""
    eval_windows: int = 256
    """Validation windows used by periodic evaluations (the final one uses all)."""
    ckpt_every: int = 200
    """Steps between checkpoints."""
    keep_checkpoints: int = 2
    """Training checkpoints kept on disk (older ones are deleted)."""
    max_minutes: float = 0.0
    """Stop (with a checkpoint) after this much wall time in this invocation; 0 = no limit. Resume later."""
    progress: bool = True
    """Show a progress bar (rank 0)."""
    init_from: str = ""
    """Start from the weights of another run (its out_dir, or one checkpoint directory under its checkpoints/) with
    a fresh optimizer and schedules: a second stage of training (change ``seed`` for a new data order). Once this
    run has a checkpoint of its own it resumes from that; the source's record (command, steps, time) is kept under
    ``init_from`` in this run's config, so the source must stay readable until the run ends."""


PROGRESS_KEYS = ("charts/log_p", "charts/ess", "charts/eta", "charts/beta")
"""Metrics shown on the progress bar when the estimator reports them."""


class Objective(nn.Module):
    """Model + estimator in one module, so DDP sees a single forward and synchronises every gradient."""

    def __init__(self, model: DiscreteVAE, estimator: Estimator) -> None:
        super().__init__()
        self.model = model
        self.estimator = estimator

    def forward(self, x: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.estimator(self.model, x, step)
        return out.loss, out.metrics


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where a checkpoint was trained (recorded next to it)."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from 1 to ``lr_final_ratio`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr_final_ratio + (1 - cfg.lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(objective: Objective, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = []
    for recognition in (True, False):
        lr = cfg.lr * (cfg.recognition_lr_scale if recognition else 1.0)
        decay, no_decay = [], []
        for name, p in objective.model.named_parameters():
            if name.startswith("decoder.") != recognition:
                (decay if p.ndim >= 2 and "pos_emb" not in name else no_decay).append(p)
        groups += [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": lr, "base_lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr, "base_lr": lr},
        ]
    est = list(objective.estimator.parameters())
    if est:
        groups.append({"params": est, "weight_decay": 0.0, "lr": cfg.eta_lr, "base_lr": cfg.eta_lr, "fixed": True})
    return torch.optim.AdamW(groups, betas=(0.9, 0.99))


class _Stop:
    """Turns SIGTERM/SIGINT into a flag so the loop can checkpoint before exiting."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread
                signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True


def train(
    data_path: str | Path,
    model: DiscreteVAE,
    estimator: Estimator,
    cfg: TrainConfig,
    out_dir: str | Path,
    val_files: Sequence[str],
    records: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train ``model`` with ``estimator`` on the windows of ``data_path``; returns the final validation metrics
    (empty without validation files). ``records`` (e.g. the resolved config) is stored in every checkpoint."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = 0, 1
    device = resolve_device(cfg.device)
    if distributed:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    main = rank == 0
    out_dir = Path(out_dir)
    ckpt_root = out_dir / "checkpoints"

    train_set, val_set = split_train_val(data_path, val_files)
    normalizer = RunningNormalizer(train_set.features.shape[1])
    normalizer.update(torch.from_numpy(train_set.features))
    sampler = WindowSampler(train_set, model.cfg.length, seed=cfg.seed + 1000 * rank)
    val_windows = fixed_windows(val_set, model.cfg.length) if val_set is not None else None

    torch.manual_seed(cfg.seed + 1000 * rank)
    model.to(device)
    estimator.to(device)
    normalizer.to(device)
    objective = Objective(model, estimator)
    optimizer = make_optimizer(objective, cfg)
    step, elapsed = 0, 0.0
    resuming = (ckpt_root / "latest").is_file()
    init_record = _init_from(Path(cfg.init_from), objective, load=not resuming) if cfg.init_from else None
    if resuming:
        step, elapsed = _resume(
            ckpt_root / (ckpt_root / "latest").read_text().strip(),
            objective,
            optimizer,
            sampler,
            normalizer,
            rank,
            device,
        )
    if distributed:
        for p in objective.parameters():  # identical start on every rank (rank 0's weights)
            dist.broadcast(p.data, src=0)
    runner = nn.parallel.DistributedDataParallel(objective) if distributed else objective

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"))
    bar = None
    if main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    records = dict(records or {}, train=dataclasses.asdict(cfg), world_size=world, machine=machine_info(device))
    if init_record is not None:
        records["init_from"] = init_record
    stop = _Stop()
    t_start = time.monotonic()

    def checkpoint() -> None:
        if main:
            seconds = elapsed + time.monotonic() - t_start
            _save(
                ckpt_root,
                step,
                objective,
                optimizer,
                sampler,
                normalizer,
                train_set.fps,
                records,
                cfg,
                seconds,
            )
        if distributed:
            dist.barrier()

    metrics: dict[str, Tensor] = {}
    last_ckpt = step
    while step < cfg.steps:
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * (1.0 if g.get("fixed") else lr_factor(step, cfg))
        x = normalizer.normalize(sampler.sample(cfg.batch_size).to(device))  # (B, L, F)
        loss, metrics = runner(x, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            metrics["charts/grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).detach()
        optimizer.step()
        step += 1
        if main and step % cfg.log_every == 0:  # reading metrics syncs the device: only every log_every steps
            values = {k: float(v) for k, v in metrics.items()}
            for k, v in values.items():
                writer.add_scalar(k, v, step)
            writer.add_scalar("charts/lr", optimizer.param_groups[0]["lr"], step)
            if bar is not None:
                shown = {k.split("/")[-1]: f"{values[k]:.4g}" for k in PROGRESS_KEYS if k in values}
                bar.set_postfix(shown, refresh=False)
        if bar is not None:
            bar.update(1)
        if main and val_windows is not None and cfg.eval_every and step % cfg.eval_every == 0:
            res = evaluate_tokenizer(
                model,
                normalizer,
                val_windows[: cfg.eval_windows],
                train_set.fps,
                estimator.beta(step),
                robot_metrics=False,
            )
            for k, v in res.items():
                writer.add_scalar(f"val/{k}", v, step)
        out_of_time = cfg.max_minutes > 0 and (time.monotonic() - t_start) > 60 * cfg.max_minutes
        if distributed:  # every rank must agree to stop at the same step
            flag = torch.tensor([float(stop.requested or out_of_time)], device=device)
            dist.all_reduce(flag)
            out_of_time = bool(flag.item() > 0)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or stop.requested or out_of_time:
            checkpoint()
            last_ckpt = step
        if stop.requested or out_of_time:
            break
    if last_ckpt != step:
        checkpoint()
    if bar is not None:
        bar.close()
    final: dict[str, float] = {}
    if main and step >= cfg.steps:
        tok = MotionTokenizer(model, normalizer, train_set.fps)
        if val_windows is not None:
            final = evaluate_tokenizer(model, normalizer, val_windows, train_set.fps, estimator.beta(step))
            for k, v in final.items():
                writer.add_scalar(f"val_final/{k}", v, step)
        seconds = round(elapsed + time.monotonic() - t_start, 1)
        tok.save(out_dir / "final", **records, step=step, train_seconds=seconds, val_metrics=final)
    if writer is not None:
        writer.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return final


def _save(
    root: Path,
    step: int,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    sampler: WindowSampler,
    normalizer: RunningNormalizer,
    fps: float,
    records: dict[str, Any],
    cfg: TrainConfig,
    seconds: float,
) -> None:
    tensors = dict(objective.state_dict())  # model.* and estimator.*
    tensors |= {f"normalizer.{k}": v for k, v in normalizer.state_dict().items()}
    state = {
        "step": step,
        "elapsed_s": seconds,
        "optimizer": optimizer.state_dict(),
        "sampler_rng": sampler.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    name = f"step_{step:07d}"
    config = tokenizer_config(objective.model, fps, **records, step=step, train_seconds=round(seconds, 1))
    save_checkpoint(root / name, tensors, config, state)
    write_text_atomic(root / "latest", name + "\n")
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (cfg.keep_checkpoints - 1))]:
        shutil.rmtree(p, ignore_errors=True)


def _load_objective(objective: Objective, tensors: dict[str, Tensor]) -> None:
    """The model and estimator weights of a checkpoint's tensors (``model.*``, ``estimator.*``, as saved)."""
    objective.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("normalizer.")})


def _init_from(path: Path, objective: Objective, load: bool) -> dict[str, Any]:
    """``train.init_from``: the checkpoint ``path`` names (a run's out_dir -> its latest checkpoint), its weights
    loaded into ``objective`` when ``load``; returns its record (command, steps, time, machine, its own source)."""
    if (path / "checkpoints" / "latest").is_file():
        path = path / "checkpoints" / (path / "checkpoints" / "latest").read_text().strip()
    tensors, config, _ = load_checkpoint(path, map_location="cpu")
    if load:
        try:
            _load_objective(objective, tensors)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: cannot start this run from its weights ({err})") from None
    keys = ("command", "step", "train_seconds", "machine", "init_from")
    return {"path": str(path)} | {k: config[k] for k in keys if k in config}


def _resume(
    path: Path,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    sampler: WindowSampler,
    normalizer: RunningNormalizer,
    rank: int,
    device: torch.device,
) -> tuple[int, float]:
    """Restore a run from ``path``; returns (step, seconds trained so far)."""
    tensors, _, state = load_checkpoint(path, map_location="cpu", trainer_state=True)
    try:
        _load_objective(objective, tensors)
        normalizer.load_state_dict(strip_prefix(tensors, "normalizer."))
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot resume this run from it ({err})") from None
    if rank == 0:
        sampler.generator.set_state(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    else:  # other ranks re-derive their streams from the step so runs stay reproducible
        sampler.generator.manual_seed(int(state["step"]) * 7919 + rank)
        torch.manual_seed(int(state["step"]) * 7919 + rank)
    objective.to(device)
    return int(state["step"]), float(state.get("elapsed_s", 0.0))
