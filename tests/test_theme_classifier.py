"""The theme judge (control.theme_classifier): leave-one-file-out accuracy, the ceiling of text faithfulness."""

from __future__ import annotations

import numpy as np
import pytest

from control import theme_classifier
from control.theme_classifier import ThemeClassifier, leave_one_file_out

L, F = 4, 3  # tiny windows: 4 frames x 3 features


def _windows(signs: list[int], file_id: int) -> np.ndarray:
    """(len(signs), L, F) constant in time: feature 0 is +3 (looks like theme 0) or -3 (theme 1), feature 1 the
    file's id (or 0), feature 2 zero."""
    w = np.zeros((len(signs), L, F))
    w[:, :, 0] = 3.0 * np.asarray(signs, float)[:, None]
    w[:, :, 1] = file_id
    return w.astype(np.float32)


def _files(with_id: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four pure files (a0, b0 of theme 0; a1, b1 of theme 1, six windows each) and c0, a theme-0 file whose last
    two windows look like theme 1; with ``with_id`` feature 1 names the file (0-4), else it is 0."""
    spec = {"a0": (0, [1] * 6), "b0": (0, [1] * 6), "a1": (1, [-1] * 6), "b1": (1, [-1] * 6),
            "c0": (0, [1, 1, 1, 1, -1, -1])}  # fmt: skip
    windows = np.concatenate([_windows(signs, i if with_id else 0) for i, (_, signs) in enumerate(spec.values())])
    themes = np.concatenate([[theme] * len(signs) for theme, signs in spec.values()])
    files = np.concatenate([[name] * len(signs) for name, (_, signs) in spec.items()])
    return windows, themes, files


def test_per_window_and_per_motion_shares_match_a_hand_count() -> None:
    """Theme 0: 16 of 18 windows look like it; motions of 3 windows: a0 and b0 two hits each, c0's first motion
    (0, 0, 0) a hit and its second (0, 1, 1) a miss: 5 of 6. Theme 1: everything."""
    windows, themes, files = _files()
    acc = leave_one_file_out(windows, themes, files, ["t0", "t1"], motion_windows=3)
    assert acc["per_window"] == {"t0": pytest.approx(16 / 18), "t1": 1.0}
    assert acc["per_motion"] == {"t0": pytest.approx(5 / 6), "t1": 1.0}


def test_each_file_is_judged_by_a_classifier_that_never_saw_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leakage check: every fit sees all files but one (feature 1 carries the file's id), and each file is left out
    exactly once."""
    windows, themes, files = _files(with_id=True)
    fitted_on: list[set[int]] = []
    original = ThemeClassifier.fit

    def spy(self: ThemeClassifier, w: np.ndarray, y: np.ndarray, **kw) -> float:
        fitted_on.append(set(np.unique(w[:, 0, 1]).astype(int).tolist()))
        return original(self, w, y, **kw)

    monkeypatch.setattr(theme_classifier.ThemeClassifier, "fit", spy)
    leave_one_file_out(windows, themes, files, ["t0", "t1"], motion_windows=3)
    all_ids = set(range(5))
    assert sorted(next(iter(all_ids - seen)) for seen in fitted_on) == [0, 1, 2, 3, 4]
    assert all(len(seen) == 4 for seen in fitted_on)


def test_bad_input_is_refused() -> None:
    windows, themes, files = _files()
    with pytest.raises(ValueError, match="differ in length"):
        leave_one_file_out(windows[:-1], themes, files, ["t0", "t1"])
    mixed = themes.copy()
    mixed[0] = 1  # a file with windows of two themes
    with pytest.raises(ValueError, match="several themes"):
        leave_one_file_out(windows, mixed, files, ["t0", "t1"])
    one_theme = files == "a0"
    with pytest.raises(ValueError, match="fewer than two themes"):
        leave_one_file_out(windows[~one_theme][:12], themes[~one_theme][:12], files[~one_theme][:12], ["t0", "t1"])
