"""The training loop of every estimator on every dataset: one process, or several under ``torchrun`` with
DistributedDataParallel. The dataset comes as a data module (``motiontok.datamodules``: batches, statistics,
evaluation and export callbacks), the loss from the estimator, the likelihood from the model.

Checkpoints (``motiontok.run_state``: ``out_dir/checkpoints/step_XXXXXXX/``, pointer file ``latest``) hold the
weights, the data's statistics and the estimator state in safetensors, the config in JSON, and the optimizer,
step and every rank's RNG states; a run started again with the same ``out_dir`` resumes from ``latest`` and draws
exactly the batches and samples it would have drawn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from motiontok.datamodules import DataModule
from motiontok.estimators import Estimator
from motiontok.models import DiscreteVAE
from motiontok.optim import clip_gradients, lr_factor, make_optimizer
from motiontok.run_state import check_replicas, init_from, resume, rng_states, save_state


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


PROGRESS_KEYS = ("charts/log_p", "charts/ess", "charts/eta", "charts/beta", "charts/token_accuracy")
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


EvaluateFn = Callable[[DiscreteVAE, float, "int | None"], dict[str, float]]
"""``evaluate(model, beta, limit)``: validation metrics on the first ``limit`` examples (all when None)."""
ExportFn = Callable[..., None]
"""``export(model, path, **records)``: write the finished model for its users."""


def train(
    model: DiscreteVAE,
    estimator: Estimator,
    data: DataModule,
    cfg: TrainConfig,
    out_dir: str | Path,
    records: dict[str, Any] | None = None,
    evaluate: EvaluateFn | None = None,
    export: ExportFn | None = None,
) -> dict[str, float]:
    """Train ``model`` with ``estimator`` on batches of ``data``; returns the final validation metrics (empty
    without validation data). ``evaluate`` and ``export`` default to the data module's own; ``records`` (e.g. the
    resolved config) are stored in every checkpoint and in the export."""
    return Trainer(model, estimator, data, cfg, out_dir, records, evaluate, export).run()


class Trainer:
    """One training run in named steps: :meth:`setup` (devices, processes, optimizer), :meth:`restore` (resume or
    a second stage), :meth:`step`, :meth:`evaluate`, :meth:`checkpoint`, :meth:`finalize` (final evaluation and
    export); :meth:`run` strings them together."""

    def __init__(
        self,
        model: DiscreteVAE,
        estimator: Estimator,
        data: DataModule,
        cfg: TrainConfig,
        out_dir: str | Path,
        records: dict[str, Any] | None = None,
        evaluate: EvaluateFn | None = None,
        export: ExportFn | None = None,
    ) -> None:
        check_train_config(cfg)
        self.model, self.estimator, self.data, self.cfg = model, estimator, data, cfg
        self.out_dir = Path(out_dir)
        self.ckpt_root = self.out_dir / "checkpoints"
        self._evaluate = evaluate or data.evaluate
        self._export = export or data.export
        self.records = dict(records or {})
        self.step_count, self.elapsed = 0, 0.0
        self.metrics: dict[str, Tensor] = {}
        self.loss = torch.zeros(())

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Processes and devices, the data stream, the optimizer; TensorBoard and the progress bar on rank 0."""
        cfg = self.cfg
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank, self.world = 0, 1
        self.device = resolve_device(cfg.device)
        if self.distributed:
            self.rank, self.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self._restore_globals = (torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        self.main = self.rank == 0
        self.data.setup(cfg.seed + 1000 * self.rank, self.device)
        torch.manual_seed(cfg.seed + 1000 * self.rank)
        self.model.to(self.device)
        self.estimator.to(self.device)
        self.objective = Objective(self.model, self.estimator)
        self.optimizer = make_optimizer(self.objective, cfg)
        self.restore()
        if self.distributed:
            for p in self.objective.parameters():  # identical start on every rank (rank 0's weights)
                dist.broadcast(p.data, src=0)
        self.runner = nn.parallel.DistributedDataParallel(self.objective) if self.distributed else self.objective
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tb"))
            if cfg.progress:
                from tqdm import tqdm

                self.bar = tqdm(total=cfg.steps, initial=self.step_count, desc="train", unit="step", dynamic_ncols=True)
        self.records |= {"train": dataclasses.asdict(cfg), "world_size": self.world}
        self.records["machine"] = machine_info(self.device)
        self.t_start = time.monotonic()

    def restore(self) -> None:
        """Resume from ``out_dir/checkpoints/latest`` if there is one; else, with ``init_from``, load its weights."""
        resuming = (self.ckpt_root / "latest").is_file()
        if self.cfg.init_from:
            self.records["init_from"] = init_from(Path(self.cfg.init_from), self.objective, load=not resuming)
        if resuming:
            latest = self.ckpt_root / (self.ckpt_root / "latest").read_text().strip()
            self.step_count, self.elapsed = resume(
                latest, self.objective, self.optimizer, self.data, self.rank, self.device
            )

    # ------------------------------------------------------------------ the loop
    def step(self) -> None:
        """One batch: the schedules' learning rates, then ``estimator.updates_per_batch`` optimizer steps on it."""
        cfg, step = self.cfg, self.step_count
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * (1.0 if g.get("fixed") else lr_factor(step, cfg))
        x = self.data.sample(cfg.batch_size)  # model-ready batch on the device
        for _ in range(self.estimator.updates_per_batch):  # 1, or several epochs over one batch (PPO baseline)
            loss, self.metrics = self.runner(x, step)
            self.loss = loss.detach()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients(self.model, cfg)
            if grad_norm is not None:
                self.metrics["charts/grad_norm"] = grad_norm.detach()
            self.optimizer.step()
        self.step_count += 1

    def evaluate(self, limit: int | None) -> dict[str, float]:
        """The evaluation callback at the current step's beta (rank 0 only)."""
        return self._evaluate(self.model, self.estimator.beta(self.step_count), limit)

    def check_finite(self, last_ckpt: int) -> None:
        """Stop with a clear error once the loss is NaN or infinite (reading it syncs the device, so the loop calls
        this at logging and checkpoint steps only): diverged weights are never checkpointed."""
        finite = torch.isfinite(self.loss).float()
        if self.distributed:  # every rank stops together (a NaN on one rank reaches all through the gradients)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite):
            raise FloatingPointError(
                f"training diverged: the loss is {float(self.loss)} at step {self.step_count}; the last checkpoint "
                f"(step {last_ckpt}) is kept. Lower train.lr or tighten train.grad_clip, and run again to resume"
            )

    def checkpoint(self) -> None:
        """Save a resumable checkpoint (a collective call under DDP: every rank's streams, the replica check)."""
        rng = rng_states(self.data.generator, self.distributed, self.world)
        check_replicas(self.objective, self.distributed, self.world)
        if self.main:
            seconds = self.elapsed + time.monotonic() - self.t_start
            keep = self.cfg.keep_checkpoints
            save_state(self.ckpt_root, self.step_count, self.objective, self.optimizer, rng, self.data, self.records,
                       keep, seconds)  # fmt: skip
        if self.distributed:
            dist.barrier()

    def should_stop(self, stop: _Stop) -> bool:
        """A signal or ``max_minutes``; under DDP every rank agrees to stop at the same step."""
        out_of_time = self.cfg.max_minutes > 0 and (time.monotonic() - self.t_start) > 60 * self.cfg.max_minutes
        if not self.distributed:
            return stop.requested or out_of_time
        flag = torch.tensor([float(stop.requested or out_of_time)], device=self.device)
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def finalize(self) -> dict[str, float]:
        """After the last step: full evaluation and export to ``out_dir/final`` (rank 0); every rank waits for it."""
        if self.bar is not None:
            self.bar.close()
        final: dict[str, float] = {}
        if self.main and self.step_count >= self.cfg.steps:
            final = self.evaluate(None)
            for k, v in final.items():
                self.writer.add_scalar(f"val_final/{k}", v, self.step_count)
            seconds = round(self.elapsed + time.monotonic() - self.t_start, 1)
            self._export(self.model, self.out_dir / "final", **self.records, step=self.step_count,
                         train_seconds=seconds, val_metrics=final)  # fmt: skip
        if self.distributed:
            dist.barrier()
        return final

    def close(self, completed: bool) -> None:
        """Release the progress bar, the TensorBoard writer and the process group, and put back torch's thread
        count and TF32 setting, also after an error. After a ``completed`` run the ranks tear the process group
        down together (a last barrier), and the DDP wrapper, which holds the group, is dropped first so that the
        group is freed inside ``destroy_process_group`` while every peer is still connected, not later."""
        if self._restore_globals is not None:
            torch.set_num_threads(self._restore_globals[0])
            torch.backends.cuda.matmul.allow_tf32 = self._restore_globals[1]
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if dist.is_available() and dist.is_initialized():
            if completed:  # not after an error: a peer that already left would leave this barrier waiting
                dist.barrier()
            self.runner = None
            gc.collect()
            dist.destroy_process_group()

    def run(self) -> dict[str, float]:
        """setup, then steps with periodic logging, evaluation and checkpoints until ``steps``, a signal or
        ``max_minutes`` (a checkpoint is always written before leaving), then finalize; :meth:`close` whatever
        happens."""
        self.writer = self.bar = self._restore_globals = self.runner = None
        try:
            self.setup()
            self.loop()
            final = self.finalize()
        except BaseException:
            self.close(completed=False)
            raise
        self.close(completed=True)
        return final

    def loop(self) -> None:
        """The steps, with logging, periodic evaluation and checkpoints."""
        cfg = self.cfg
        last_ckpt = self.step_count
        with _Stop() as stop:
            while self.step_count < cfg.steps:
                self.step()
                step = self.step_count
                if step % cfg.log_every == 0:  # reading metrics syncs the device: only every log_every
                    self.check_finite(last_ckpt)
                    if self.main:
                        _log(self.writer, self.bar, self.metrics, self.optimizer, step)
                if self.bar is not None:
                    self.bar.update(1)
                if self.main and cfg.eval_every and step % cfg.eval_every == 0:
                    for k, v in self.evaluate(cfg.eval_windows).items():
                        self.writer.add_scalar(f"val/{k}", v, step)
                stopping = self.should_stop(stop)
                if step % cfg.ckpt_every == 0 or step == cfg.steps or stopping:
                    self.check_finite(last_ckpt)
                    self.checkpoint()
                    last_ckpt = step
                if stopping:
                    break
            if last_ckpt != self.step_count:
                self.check_finite(last_ckpt)
                self.checkpoint()


def _log(writer: Any, bar: Any, metrics: dict[str, Tensor], optimizer: torch.optim.Optimizer, step: int) -> None:
    """Scalars to TensorBoard, the ``PROGRESS_KEYS`` to the progress bar."""
    values = {k: float(v) for k, v in metrics.items()}
    for k, v in values.items():
        writer.add_scalar(k, v, step)
    writer.add_scalar("charts/lr", optimizer.param_groups[0]["lr"], step)
    if bar is not None:
        shown = {k.split("/")[-1]: f"{values[k]:.4g}" for k in PROGRESS_KEYS if k in values}
        bar.set_postfix(shown, refresh=False)
