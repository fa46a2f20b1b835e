"""Training data of the high-level policy: (text, last 32 frames, COM past and future) -> the tokenizer's codes of
the next window, as a data module of the project's trainer (``motiontok.trainer.train``).

Examples are every ``stride``-th frame t of every clip with 32 frames before it and 32 after: the context is frames
[t - 32, t), the target window [t, t + 32), encoded once by the frozen tokenizer (greedy codes, cached on disk per
tokenizer and dataset). The text of an example is drawn at sampling time among the paraphrases of its file's theme
or, with probability ``label_text``, of its target window's activity label (``control.labels.window_label``), so that
both "dance" and "stand still" have training windows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from control.highlevel import DEFAULT_GUIDANCE, HIGHLEVEL_FORMAT, Context, HighLevelPolicy, config_dict
from control.labels import LABELS
from control.text import TextEncoder, cached_embeddings, load_descriptions
from control.theme_classifier import ThemeClassifier
from motiontok.checkpoint import atomic_path, save_checkpoint
from motiontok.data import MotionDataset, split_train_val
from motiontok.evaluation import robot_space_errors
from motiontok.rotations import heading_of_mat, quat_to_mat, rot_z
from motiontok.tokenizer import MotionTokenizer

PAST = FUTURE = 32


def com_context(com: np.ndarray, qpos_now: np.ndarray) -> np.ndarray:
    """COM positions (..., K, 3), world, K >= PAST -> (..., K, 3) in the heading frame of ``qpos_now`` (..., 26):
    x/y relative to the COM's current ground point (``com[..., PAST - 1, :]``), z unchanged (height above ground)."""
    heading_t = np.swapaxes(rot_z(heading_of_mat(quat_to_mat(qpos_now[..., 3:7]))), -1, -2)  # (..., 3, 3)
    origin = com[..., PAST - 1 : PAST, :] * np.array([1.0, 1.0, 0.0])  # (..., 1, 3)
    return np.einsum("...ij,...kj->...ki", heading_t, com - origin)


@dataclass
class Examples:
    """Example windows of one split: flat dataset rows where the target window starts, and its codes."""

    starts: np.ndarray  # (N,) int64, row t of the first target frame
    tokens: np.ndarray  # (N, T) int64
    themes: np.ndarray  # (N,) int64 index into the theme list
    labels: np.ndarray  # (N,) int64 index into the label list


class TextBank:
    """Embeddings of every paraphrase, grouped by theme and by activity label, sampled per example."""

    def __init__(self, theme_embeddings: list[Tensor], label_embeddings: list[Tensor], label_text: float) -> None:
        """``*_embeddings[i]``: (n_i, D) embeddings of the paraphrases of theme / label i."""
        self.themes, self.labels, self.label_text = theme_embeddings, label_embeddings, label_text

    def sample(self, themes: np.ndarray, labels: np.ndarray, generator: torch.Generator) -> Tensor:
        """One paraphrase embedding per example: (B, D)."""
        use_label = torch.rand(len(themes), generator=generator) < self.label_text
        pick = torch.rand(len(themes), generator=generator)
        out = []
        for i in range(len(themes)):
            bank = self.labels[labels[i]] if use_label[i] else self.themes[themes[i]]
            out.append(bank[int(pick[i] * len(bank))])
        return torch.stack(out)

    def theme_mean(self, themes: np.ndarray) -> Tensor:
        """The mean paraphrase embedding of each example's theme, rescaled to unit norm like every encoded text
        (a deterministic evaluation text): (B, D)."""
        means = torch.nn.functional.normalize(torch.stack([e.mean(0) for e in self.themes]), dim=-1)  # unit norm
        return means[torch.as_tensor(themes)]


def text_bank(encoder: TextEncoder, label_text: float) -> tuple[TextBank, list[str]]:
    """Embeddings of every theme's and every activity label's paraphrases (``assets/descriptions.json``, cached);
    the theme names."""
    desc = load_descriptions()
    themes = [cached_embeddings(encoder, desc.texts(t)) for t in desc.themes]
    labels = [cached_embeddings(encoder, desc.label_paraphrases(label)) for label in LABELS]
    return TextBank(themes, labels, label_text), list(desc.themes)


class HighLevelData:
    """The trainer's data module for distillation (see the module docstring)."""

    def __init__(
        self,
        dataset: str | Path,
        tokenizer: MotionTokenizer,
        text: TextBank,
        theme_names: list[str],
        label_fn: Any,
        val_files: list[str],
        stride: int = 4,
        progress: bool = True,
        train: bool = True,
        standing_context: float = 0.0,
    ) -> None:
        """``label_fn(window (L, 127), fps) -> label index``; ``theme_names``: the theme list the example theme
        indices refer to (a file's theme: the letters of its name before the take number). ``train=False`` builds
        the validation examples only (evaluation). ``standing_context``: the share of training examples whose past
        (pose and COM) is replaced by the robot standing still, as at the start of ``run_policy.py``: LAFAN holds
        one standing-to-activity transition per file, too few to learn to leave the standing start as the text
        says."""
        self.tokenizer, self.text, self.theme_names = tokenizer, text, theme_names
        self.standing_context = standing_context
        self.standing: tuple[Tensor, Tensor] | None = None  # standing pose and past COM, made by setup()
        self.train_set, self.val_set = split_train_val(dataset, val_files)
        self.fps = self.train_set.fps
        self.train = self._examples(self.train_set, stride, label_fn, progress) if train else None
        self.val = self._examples(self.val_set, PAST, label_fn, progress) if self.val_set is not None else None
        self.generator = torch.Generator()
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ building examples
    def _examples(self, ds: MotionDataset, stride: int, label_fn: Any, progress: bool) -> Examples:
        starts = ds.window_starts(PAST + FUTURE, stride) + PAST  # (N,): 32 frames before t, 32 from t on
        clip_of_row = np.searchsorted(ds.split_points, starts, side="right") - 1
        from envs.reference import theme_of

        themes = np.array([self.theme_names.index(theme_of(ds.clip_files[c])) for c in clip_of_row], np.int64)
        windows = ds.features[starts[:, None] + np.arange(FUTURE)]  # (N, L, F)
        labels = np.array([label_fn(w, ds.fps) for w in windows], np.int64)
        tokens = self._codes(ds, starts, windows, progress)
        return Examples(starts, tokens, themes, labels)

    def _codes(self, ds: MotionDataset, starts: np.ndarray, windows: np.ndarray, progress: bool) -> np.ndarray:
        """The tokenizer's greedy codes of the windows, cached per (tokenizer, dataset file, rows)."""
        from envs.reference import cache_dir, tokenizer_fingerprint

        h = hashlib.sha256(tokenizer_fingerprint(self.tokenizer).encode())
        h.update(str(ds.path.resolve()).encode() + str(ds.path.stat().st_mtime_ns).encode() + starts.tobytes())
        path = cache_dir().parent / "highlevel" / f"codes_{h.hexdigest()[:20]}.npy"
        if path.is_file():
            try:
                codes = np.load(path)
                if codes.shape == (len(starts), self.tokenizer.num_tokens):
                    return codes
            except (OSError, ValueError):
                pass  # unreadable: recompute
        batches = range(0, len(windows), 256)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="encoding target windows", unit="batch")
        codes = np.concatenate(
            [self.tokenizer.encode(torch.from_numpy(windows[i : i + 256])).numpy() for i in batches]
        ).astype(np.int64)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, codes)
        return codes

    # ------------------------------------------------------------------ the trainer's interface
    def setup(self, seed: int, device: torch.device) -> None:
        self.generator.manual_seed(seed)
        self.device = device
        self.standing = self._standing_past() if self.standing_context > 0 else None

    def _standing_past(self) -> tuple[Tensor, Tensor]:
        """The context of a robot standing still: normalized pose (P, F) and past COM (P, 3) as :meth:`context`."""
        from control.runner import standing_features  # (runner imports this module)
        from motiontok.features import qpos_from_features
        from motiontok.motion import forward_kinematics

        features = standing_features(self.fps, PAST)  # (P, F) raw
        qpos = qpos_from_features(features, self.fps)  # (P, 26)
        com = com_context(forward_kinematics(qpos).com, qpos[-1])  # (P, 3): the ground point at the origin
        pose = self.tokenizer.normalizer.normalize(torch.from_numpy(features).float())
        return pose.to(self.device), torch.from_numpy(com).float().to(self.device)

    def context(self, ds: MotionDataset, ex: Examples, idx: np.ndarray, text: Tensor) -> Context:
        """The model inputs of examples ``idx`` with the given text embeddings (B, D), on the device."""
        t = ex.starts[idx]  # (B,)
        pose = ds.features[t[:, None] + np.arange(-PAST, 0)]  # (B, P, F) raw
        com = com_context(ds.com[t[:, None] + np.arange(-PAST, FUTURE)].astype(np.float64), ds.qpos[t - 1])
        return Context(
            text=text.float().to(self.device),
            pose=self.tokenizer.normalizer.normalize(torch.from_numpy(pose).float()).to(self.device),
            com=torch.from_numpy(com).float().to(self.device),
            tokens=torch.from_numpy(ex.tokens[idx]).to(self.device),
        )

    def sample(self, batch_size: int) -> Context:
        idx = torch.randint(len(self.train.starts), (batch_size,), generator=self.generator).numpy()
        text = self.text.sample(self.train.themes[idx], self.train.labels[idx], self.generator)
        ctx = self.context(self.train_set, self.train, idx, text)
        if self.standing is not None:
            swap = (torch.rand(batch_size, generator=self.generator) < self.standing_context).to(self.device)  # (B,)
            ctx["pose"][swap] = self.standing[0]
            ctx["com"][swap, :PAST] = self.standing[1]  # the future COM path stays the example's own
        return ctx

    def state_tensors(self) -> dict[str, Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        pass

    def checkpoint_config(self, model: HighLevelPolicy, **extra: Any) -> dict[str, Any]:
        from envs.reference import tokenizer_fingerprint

        return {
            "format": HIGHLEVEL_FORMAT,
            "format_version": 1,
            "net": config_dict(model.cfg),
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
            "themes": self.theme_names,
            "fps": self.fps,
            **extra,
        }

    @torch.no_grad()
    def evaluate(
        self, model: HighLevelPolicy, beta: float, limit: int | None, guidance: float = DEFAULT_GUIDANCE
    ) -> dict[str, float]:
        """Teacher-forced token NLL and accuracy on the validation windows (text: the mean paraphrase of the
        file's theme); with ``limit`` None also the decoded motion of codes sampled with ``guidance`` against the
        true future: ``mpjpe_mm``, ``joint_rmse_deg``, and ``com_goal_error_m``."""
        if self.val is None or len(self.val.starts) == 0:
            return {}
        was_training = model.training
        model.eval()
        n = len(self.val.starts) if limit is None else min(limit, len(self.val.starts))
        sums, preds = {"token_nll": 0.0, "token_accuracy": 0.0}, []
        for i in range(0, n, 256):
            idx = np.arange(i, min(i + 256, n))
            ctx = self.context(self.val_set, self.val, idx, self.text.theme_mean(self.val.themes[idx]))
            logits = model.logits(ctx)  # (b, T, V)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ctx["tokens"], reduction="none")
            sums["token_nll"] += nll.mean(1).sum().item()
            sums["token_accuracy"] += (logits.argmax(-1) == ctx["tokens"]).float().mean(1).sum().item()
            if limit is None:
                gen = torch.Generator(self.device).manual_seed(i)
                preds.append(model.sample(ctx, guidance=guidance, generator=gen).cpu())
        out = {k: v / n for k, v in sums.items()}
        if limit is None:
            out |= self.motion_errors(self.tokenizer.decode(torch.cat(preds)).double().numpy(), np.arange(n))
        model.train(was_training)
        return out

    def motion_errors(self, pred: np.ndarray, idx: np.ndarray) -> dict[str, float]:
        """Robot-space error of predicted windows (N, L, F) raw against the true next windows of validation
        examples ``idx``, and the COM goal error: the mean distance (m) between the predicted and the true COM
        paths, both from the COM's ground point at the window's first frame, in that frame's heading."""
        from motiontok.features import qpos_from_features
        from motiontok.motion import forward_kinematics

        ds, t = self.val_set, self.val.starts[idx]
        true = ds.features[t[:, None] + np.arange(FUTURE)].astype(np.float64)
        out = robot_space_errors(pred, true, self.fps)
        errs = []
        for k, w in enumerate(pred):  # the decoded window's COM path against the true one, both from frame t
            com_pred = forward_kinematics(qpos_from_features(w, self.fps)).com  # frame t at the origin, facing +x
            com_pred -= np.array([*com_pred[0, :2], 0.0])  # from the COM's ground point at frame t
            rows = t[k] + np.arange(1 - PAST, FUTURE)  # frame t at index PAST - 1, com_context's origin
            com_true = com_context(ds.com[rows].astype(np.float64), ds.qpos[t[k]])[PAST - 1 : PAST - 1 + FUTURE]
            errs.append(np.linalg.norm(com_pred - com_true, axis=-1).mean())
        out["com_goal_error_m"] = float(np.mean(errs))
        return out

    def theme_classifier(self) -> tuple[ThemeClassifier, dict[str, float]]:
        """The text-faithfulness judge, fitted on the training target windows' themes; its accuracy per theme
        on the validation windows (what it can tell apart on true motion)."""
        clf = ThemeClassifier(self.theme_names)
        clf.fit(self._windows(self.train_set, self.train), self.train.themes)
        accuracy = {}
        if self.val is not None:
            pred = clf(self._windows(self.val_set, self.val)).argmax(-1).numpy()
            for k in np.unique(self.val.themes):
                accuracy[self.theme_names[k]] = float((pred[self.val.themes == k] == k).mean())
        return clf, accuracy

    def theme_speeds(self) -> dict[str, float]:
        """Median horizontal COM speed (m/s) of each theme's training windows: the default COM goal of a text."""
        ds, ex = self.train_set, self.train
        step = ds.com[ex.starts + FUTURE - 1, :2] - ds.com[ex.starts, :2]  # (N, 2) over one window
        speed = np.linalg.norm(step, axis=1) * self.fps / (FUTURE - 1)
        return {name: float(np.median(speed[ex.themes == k])) for k, name in enumerate(self.theme_names)
                if (ex.themes == k).any()}  # fmt: skip

    @staticmethod
    def _windows(ds: MotionDataset, ex: Examples) -> np.ndarray:
        return ds.features[ex.starts[:, None] + np.arange(FUTURE)]  # (N, L, F) raw target windows

    def export(self, model: HighLevelPolicy, path: Path, **records: Any) -> None:
        """The policy, with the theme classifier (``classifier.*``) and the themes' typical COM speeds."""
        clf, accuracy = self.theme_classifier()
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors |= {f"classifier.{k}": v for k, v in clf.state_dict().items()}
        extra = {"theme_speeds": self.theme_speeds(), "classifier_val_accuracy": accuracy}
        save_checkpoint(path, tensors, self.checkpoint_config(model, **records, **extra))
