"""Motion datasets: the prepared HDF5 file and the 32-frame training windows drawn from it.

HDF5 layout (written by :func:`write_dataset`, read by :class:`MotionDataset`):

==================  =================  =========================================================
name                shape / dtype      meaning
==================  =================  =========================================================
``features``        (N, 127) float32   per-frame features (``motiontok.features``) of all clips
``qpos``            (N, 26) float64    H1 qpos
``com``             (N, 3) float32     whole-body centre of mass, world frame
``key_pos``         (N, 13, 3) float32 key-point world positions
``split_points``    (C + 1,) int64     clip c is rows ``split_points[c]:split_points[c + 1]``
``clip_names``      (C,) str           clip names (the file stem for CSV clips)
``clip_files``      (C,) str           stem of the file each clip came from (the train/val split key)
attrs               fps, feature_dim, format_version, feature_names, feature_layout
==================  =================  =========================================================
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from motiontok import features as feat
from motiontok.checkpoint import atomic_path
from motiontok.errors import MotionDataError
from motiontok.motion import MotionClip, forward_kinematics, load_motions

FORMAT_VERSION = 1
WINDOW = 32
"""Frames per tokenizer window (paper G.1 ``trajectory.length``)."""
PAPER_VAL_FILES: tuple[str, ...] = ("dance2_subject2", "fight1_subject2", "run2_subject1", "walk2_subject4")
"""Validation files of the paper's reference code; every other file is training data."""


def write_dataset(clips: Sequence[MotionClip], out: str | Path, progress: bool = False) -> Path:
    """Compute features, kinematics and COM of ``clips`` and write them to ``out`` atomically (a temporary
    file in the same directory, renamed on success). All clips must share one frame rate."""
    if not clips:
        raise MotionDataError("no clips to write")
    fps = {c.fps for c in clips}
    if len(fps) != 1:
        raise MotionDataError(f"clips have different frame rates {sorted(fps)}; resample them first")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    iterator = clips
    if progress:
        from tqdm import tqdm

        iterator = tqdm(clips, desc="features", unit="clip")
    per_clip = []
    for clip in iterator:
        kin = forward_kinematics(clip.qpos)
        per_clip.append((clip, feat.features_from_qpos(clip.qpos, clip.fps, kin.key_pos), kin))
    lengths = [c.num_frames for c in clips]
    split = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("features", data=np.concatenate([f for _, f, _ in per_clip]).astype(np.float32))
        h5.create_dataset("qpos", data=np.concatenate([c.qpos for c in clips]))
        h5.create_dataset("com", data=np.concatenate([k.com for _, _, k in per_clip]).astype(np.float32))
        h5.create_dataset("key_pos", data=np.concatenate([k.key_pos for _, _, k in per_clip]).astype(np.float32))
        h5.create_dataset("split_points", data=split)
        h5.create_dataset("clip_names", data=[c.name for c in clips], dtype=h5py.string_dtype())
        h5.create_dataset("clip_files", data=[_file_of(c) for c in clips], dtype=h5py.string_dtype())
        h5.attrs["fps"] = float(next(iter(fps)))
        h5.attrs["feature_dim"] = feat.FEATURE_DIM
        h5.attrs["format_version"] = FORMAT_VERSION
        h5.attrs["feature_names"] = ",".join(feat.feature_names())
        h5.attrs["feature_layout"] = feat.FEATURE_LAYOUT
    return out


def ensure_dataset(path: str | Path, source: str | Path | None, fps: float = 30.0) -> Path:
    """The prepared HDF5 file ``path``, built from the CSV folder (or LocoMuJoCo ``.npz``) ``source`` the first
    time, and rebuilt from it when it holds features of an older layout."""
    path = Path(path)
    stale = path.is_file() and dataset_layout(path) != feat.FEATURE_LAYOUT
    if path.is_file() and not stale:
        return path
    if not source:
        raise MotionDataError(
            f"{path}: dataset {'of an older feature layout' if stale else 'not found'}. Prepare it with "
            "scripts/prepare_lafan.py, or set MOTIONTOK_DATA / data.source to a directory of LAFAN1-H1 CSV files"
        )
    print(f"{'rebuilding' if stale else 'preparing'} {path} from {source}", file=sys.stderr)
    return write_dataset(load_motions(source, fps=fps), path, progress=True)


def dataset_layout(path: str | Path) -> str:
    """The feature layout a prepared dataset was written with (``h1-relpose-127-v1`` for files before v2)."""
    with h5py.File(path, "r") as h5:
        return str(h5.attrs.get("feature_layout", "h1-relpose-127-v1"))


def _file_of(clip: MotionClip) -> str:
    return clip.source or clip.name


@dataclass
class MotionDataset:
    """A prepared HDF5 file held in memory (LAFAN1-H1 is ~110 MB of features), restricted to some clips."""

    path: Path
    fps: float
    features: np.ndarray  # (N, 127) float32, rows of the selected clips only
    qpos: np.ndarray  # (N, 26)
    com: np.ndarray  # (N, 3)
    key_pos: np.ndarray  # (N, 13, 3)
    split_points: np.ndarray  # (C + 1,)
    clip_names: list[str]
    clip_files: list[str]

    @classmethod
    def load(cls, path: str | Path, files: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> MotionDataset:
        """Load ``path``, keeping clips whose source file is in ``files`` (all if None) and not in ``exclude``."""
        path = Path(path)
        if not path.is_file():
            raise MotionDataError(f"{path}: no such dataset file (write one with scripts/prepare_lafan.py)")
        try:
            with h5py.File(path, "r") as h5:
                version = int(h5.attrs.get("format_version", -1))
                if version != FORMAT_VERSION:
                    raise MotionDataError(f"{path}: dataset format {version}, this version reads {FORMAT_VERSION}")
                layout = dataset_layout(path)
                if layout != feat.FEATURE_LAYOUT:
                    raise MotionDataError(
                        f"{path}: features of layout {layout!r}, this motiontok computes {feat.FEATURE_LAYOUT!r}; "
                        "rebuild it with scripts/prepare_lafan.py"
                    )
                split = h5["split_points"][:]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in h5["clip_names"][:]]
                srcs = [n.decode() if isinstance(n, bytes) else str(n) for n in h5["clip_files"][:]]
                excluded = set(exclude)
                keep = [i for i, f in enumerate(srcs) if (files is None or f in files) and f not in excluded]
                rows = np.concatenate([np.arange(split[i], split[i + 1]) for i in keep]) if keep else np.zeros(0, int)
                arrays = {k: h5[k][:][rows] for k in ("features", "qpos", "com", "key_pos")}
                fps = float(h5.attrs["fps"])
        except (OSError, KeyError) as err:
            raise MotionDataError(f"{path}: not a readable motiontok dataset ({err})") from None
        lengths = [int(split[i + 1] - split[i]) for i in keep]
        new_split = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(
            path,
            fps,
            split_points=new_split,
            clip_names=[names[i] for i in keep],
            clip_files=[srcs[i] for i in keep],
            **arrays,
        )

    @property
    def num_clips(self) -> int:
        return len(self.clip_names)

    def clip_slice(self, i: int) -> slice:
        return slice(int(self.split_points[i]), int(self.split_points[i + 1]))

    def window_starts(self, window: int = WINDOW, stride: int = 1) -> np.ndarray:
        """Row indices where a ``window``-frame window fits inside one clip (every ``stride`` frames)."""
        starts = [
            np.arange(self.split_points[i], self.split_points[i + 1] - window + 1, stride)
            for i in range(self.num_clips)
        ]
        out = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        return out.astype(np.int64)


def split_train_val(
    path: str | Path, val_files: Sequence[str] = PAPER_VAL_FILES
) -> tuple[MotionDataset, MotionDataset | None]:
    """Train/validation datasets split by source file. Validation files absent from the dataset are an error
    (pass ``val_files=()`` to train on everything without validation)."""
    train = MotionDataset.load(path, exclude=val_files)
    if not val_files:
        return train, None
    val = MotionDataset.load(path, files=val_files)
    missing = sorted(set(val_files) - set(val.clip_files))
    if missing:
        raise MotionDataError(f"{path}: validation files {missing} are not in the dataset; choose others")
    if train.num_clips == 0:
        raise MotionDataError(f"{path}: no training clips left after removing the validation files")
    return train, val


class WindowSampler:
    """Uniformly random ``window``-frame windows inside clips, as float tensors (B, window, 127) in raw units.

    Every valid window start of every clip is equally likely. The sampler's ``torch.Generator`` state is part
    of a training checkpoint, so a resumed run draws the same batches.
    """

    def __init__(self, dataset: MotionDataset, window: int = WINDOW, seed: int = 0) -> None:
        self.starts = torch.from_numpy(dataset.window_starts(window))
        if len(self.starts) == 0:
            raise MotionDataError(f"{dataset.path}: no clip is at least {window} frames long")
        self.features = torch.from_numpy(np.ascontiguousarray(dataset.features))  # (N, 127) float32
        self.offsets = torch.arange(window)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch_size: int) -> torch.Tensor:
        idx = torch.randint(len(self.starts), (batch_size,), generator=self.generator)
        rows = self.starts[idx, None] + self.offsets  # (B, window)
        return self.features[rows]  # (B, window, 127)


def fixed_windows(dataset: MotionDataset, window: int = WINDOW, stride: int = WINDOW) -> torch.Tensor:
    """All windows at a fixed stride (deterministic evaluation set): (W, window, 127) float32, raw units."""
    starts = torch.from_numpy(dataset.window_starts(window, stride))
    rows = starts[:, None] + torch.arange(window)
    return torch.from_numpy(np.ascontiguousarray(dataset.features))[rows]
