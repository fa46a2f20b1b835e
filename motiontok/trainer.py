"""Tokenizer training loop: one process, or several under ``torchrun`` with DistributedDataParallel.

Checkpoints (``motiontok.run_state``: ``out_dir/checkpoints/step_XXXXXXX/``, pointer file ``latest``) hold the
weights, normalizer and estimator state in safetensors, the config in JSON, and the optimizer, step and every
rank's RNG states; a run started again with the same ``out_dir`` resumes from ``latest`` and draws exactly the
batches and samples it would have drawn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from motiontok.data import WindowSampler, fixed_windows, split_train_val
from motiontok.estimators import Estimator
from motiontok.evaluation import evaluate_tokenizer
from motiontok.models import DiscreteVAE
from motiontok.normalizer import RunningNormalizer
from motiontok.run_state import check_replicas, init_from, resume, rng_states, save_state
from motiontok.tokenizer import MotionTokenizer


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of a training run."""

    steps: int = 4000
    """Optimizer steps in the whole run (the LR and beta schedules span them)."""
    batch_size: int = 16
    """Windows per step and per process."""
    lr: float = 3e-4
    """Peak AdamW learning rate (paper: 3e-4)."""
    lr_schedule: str = "constant"
    """``constant`` after the warm-up (the authors' code) or ``cosine`` decay to ``lr * lr_final_ratio``."""
    lr_final_ratio: float = 0.1
    """Cosine decay ends at lr * lr_final_ratio."""
    warmup_steps: int = 0
    """Linear LR warm-up."""
    weight_decay: float = 1e-4
    """AdamW weight decay on matrices (not on biases, norms, embeddings' positions or log-eta)."""
    adam_beta2: float = 0.999
    """AdamW's second-moment decay (the authors' code: 0.999; motiontok v1: 0.99)."""
    recognition_lr_scale: float = 1.0
    """Learning rate of the recognition model (encoder + posterior) relative to ``lr``. Below 1 the decoder learns
    what the codes mean before the encoder sharpens onto codes that merely fit the average window."""
    eta_lr: float = 1e-3
    """Adam learning rate of log(eta), its own parameter group at a constant rate (the authors' code: 1e-3)."""
    grad_clip_mode: str = "adaptive"
    """``adaptive``: unit-wise adaptive clipping of the networks' gradients (each row's gradient norm at most
    ``grad_clip`` times its weight norm; the authors' code), ``global``: one global-norm clip at ``grad_clip``
    over encoder and decoder together (v1), ``none``."""
    grad_clip: float = 1.0
    """The clipping threshold of ``grad_clip_mode`` (0 disables clipping)."""
    seed: int = 0
    """Seeds the initial weights (scripts/train_tokenizer.py seeds before building the networks), batch sampling
    and latent sampling."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ..."""
    tf32: bool = False
    """On CUDA, allow TF32 matmuls (an H100 ran the teacher-forced step in 35 ms instead of 46; whether the codes
    stay the same is not yet checked, hence off)."""
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
    """Start from the weights of another run (its out_dir, one checkpoint directory under its checkpoints/, or a
    tokenizer directory such as its final/ or the shipped assets/checkpoints/tokenizer_h1) with a fresh optimizer
    and schedules: a second stage of training (change ``seed`` for a new data order). Once this run has a
    checkpoint of its own it resumes from that; the source's record (command, steps, time) is kept under
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


LR_SCHEDULES = ("constant", "cosine")
CLIP_MODES = ("adaptive", "global", "none")


def check_train_config(cfg: TrainConfig) -> None:
    """Raise ValueError on a setting the loop cannot use (before any data is loaded)."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {cfg.lr_schedule!r}")
    if cfg.grad_clip_mode not in CLIP_MODES:
        raise ValueError(f"train.grad_clip_mode must be one of {CLIP_MODES}, got {cfg.grad_clip_mode!r}")
    if cfg.steps < 0 or cfg.batch_size < 1 or cfg.ckpt_every < 1 or cfg.keep_checkpoints < 1:
        raise ValueError("train.steps must be >= 0, and batch_size, ckpt_every and keep_checkpoints >= 1")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant, or cosine decay from 1 to ``lr_final_ratio`` at ``cfg.steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr_final_ratio + (1 - cfg.lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


ESTIMATOR_ROLES = ("recognition", "generative", "eta")


def make_optimizer(objective: Objective, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over: recognition networks (lr x ``recognition_lr_scale``) and generative networks, each split into
    decayed matrices and undecayed vectors/positions, with the estimator's declared ``recognition`` /
    ``generative`` parameters joining their side; then the estimator's ``eta`` group at ``eta_lr``, constant."""
    declared = objective.estimator.param_groups()
    unknown = set(declared) - set(ESTIMATOR_ROLES)
    listed = [p for ps in declared.values() for p in ps]
    own = list(objective.estimator.parameters())
    if unknown or len(listed) != len(own) or {id(p) for p in listed} != {id(p) for p in own}:
        raise ValueError(
            f"{type(objective.estimator).__name__}.param_groups() must list each of its parameters once under "
            f"{ESTIMATOR_ROLES} (unknown roles: {sorted(unknown)})"
        )
    groups = []
    for recognition in (True, False):
        lr = cfg.lr * (cfg.recognition_lr_scale if recognition else 1.0)
        named = [(n, p) for n, p in objective.model.named_parameters() if n.startswith("decoder.") != recognition]
        named += [
            (f"estimator.{i}", p)
            for i, p in enumerate(declared.get("recognition" if recognition else "generative", []))
        ]
        decay = [p for n, p in named if p.ndim >= 2 and "pos_emb" not in n]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and "pos_emb" not in n)]
        groups += [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": lr, "base_lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": lr, "base_lr": lr},
        ]
    if declared.get("eta"):
        groups.append(
            {"params": declared["eta"], "weight_decay": 0.0, "lr": cfg.eta_lr, "base_lr": cfg.eta_lr, "fixed": True}
        )
    return torch.optim.AdamW(groups, betas=(0.9, cfg.adam_beta2))


def adaptive_clip_(params: Sequence[nn.Parameter], clipping: float, eps: float = 1e-3) -> Tensor:
    """Unit-wise adaptive gradient clipping (Brock et al. 2021, NFNets), in place.

    A unit is one row of a parameter (its slice along dim 0: an output unit of a Linear or a convolution, one code
    of an embedding), or the whole parameter for vectors and scalars. A unit's gradient g is rescaled to norm
    ``clipping * max(||w||, eps)`` when it is longer than that, w being the unit's weights. Returns the global
    norm of the gradients before clipping (0-dim tensor)."""
    total = torch.zeros(())
    for p in params:
        if p.grad is None:
            continue
        dims = tuple(range(1, p.ndim)) if p.ndim > 1 else tuple(range(p.ndim))
        g_norm = p.grad.norm(dim=dims, keepdim=True)  # (rows, 1, ...) or ()
        max_norm = clipping * p.detach().norm(dim=dims, keepdim=True).clamp(min=eps)
        p.grad.mul_((max_norm / g_norm.clamp(min=1e-6)).clamp(max=1.0))
        total = total.to(g_norm.device) + g_norm.square().sum()
    return total.sqrt()


def clip_gradients(model: nn.Module, cfg: TrainConfig) -> Tensor | None:
    """Apply ``cfg.grad_clip_mode`` to the model's gradients; the global gradient norm before clipping, if any."""
    if cfg.grad_clip <= 0 or cfg.grad_clip_mode == "none":
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.grad_clip_mode == "adaptive":
        return adaptive_clip_(params, cfg.grad_clip)
    return nn.utils.clip_grad_norm_(params, cfg.grad_clip)


class _Stop:
    """Turns SIGTERM/SIGINT into a flag so the loop can checkpoint before exiting; a context manager that puts
    the previous handlers back on exit (whether the loop ends, breaks or raises)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread: no handler, no flag
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

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
    check_train_config(cfg)
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
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
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
    init_record = init_from(Path(cfg.init_from), objective, load=not resuming) if cfg.init_from else None
    if resuming:
        latest = ckpt_root / (ckpt_root / "latest").read_text().strip()
        step, elapsed = resume(latest, objective, optimizer, sampler, normalizer, rank, device)
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
    t_start = time.monotonic()

    def checkpoint() -> None:
        rng = rng_states(sampler, distributed, world)  # every rank's streams (a collective call)
        check_replicas(objective, distributed, world)
        if main:
            seconds = elapsed + time.monotonic() - t_start
            fps, keep = train_set.fps, cfg.keep_checkpoints
            save_state(ckpt_root, step, objective, optimizer, rng, normalizer, fps, records, keep, seconds)
        if distributed:
            dist.barrier()

    def evaluate(windows: Tensor, robot_metrics: bool) -> dict[str, float]:
        beta = estimator.beta(step)
        return evaluate_tokenizer(model, normalizer, windows, train_set.fps, beta, robot_metrics=robot_metrics)

    metrics: dict[str, Tensor] = {}
    last_ckpt = step
    with _Stop() as stop:
        while step < cfg.steps:
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * (1.0 if g.get("fixed") else lr_factor(step, cfg))
            x = normalizer.normalize(sampler.sample(cfg.batch_size).to(device))  # (B, L, F)
            for _ in range(estimator.updates_per_batch):  # 1, or several epochs over one batch (PPO baseline)
                loss, metrics = runner(x, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = clip_gradients(model, cfg)
                if grad_norm is not None:
                    metrics["charts/grad_norm"] = grad_norm.detach()
                optimizer.step()
            step += 1
            if main and step % cfg.log_every == 0:  # reading metrics syncs the device: only every log_every steps
                _log(writer, bar, metrics, optimizer, step)
            if bar is not None:
                bar.update(1)
            if main and val_windows is not None and cfg.eval_every and step % cfg.eval_every == 0:
                for k, v in evaluate(val_windows[: cfg.eval_windows], robot_metrics=False).items():
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
            final = evaluate(val_windows, robot_metrics=True)
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


def _log(writer: Any, bar: Any, metrics: dict[str, Tensor], optimizer: torch.optim.Optimizer, step: int) -> None:
    """Scalars to TensorBoard, the ``PROGRESS_KEYS`` to the progress bar."""
    values = {k: float(v) for k, v in metrics.items()}
    for k, v in values.items():
        writer.add_scalar(k, v, step)
    writer.add_scalar("charts/lr", optimizer.param_groups[0]["lr"], step)
    if bar is not None:
        shown = {k.split("/")[-1]: f"{values[k]:.4g}" for k in PROGRESS_KEYS if k in values}
        bar.set_postfix(shown, refresh=False)
