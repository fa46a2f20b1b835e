"""Frechet distance against closed forms and a brute-force formula; feature statistics; optional Inception."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.linalg
import torch

from motiontok import fid
from motiontok.fid import InceptionUnavailableError, activation_statistics, frechet_distance, inception_features


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def brute_force_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), the latter symmetric PSD: sum of sqrt of its eigenvalues."""
    r = psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross)


def test_identical_gaussians_give_zero() -> None:
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=5), random_spd(rng, 5)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8 * np.trace(s))


@pytest.mark.parametrize(("m1", "s1", "m2", "s2"), [(0.0, 1.0, 0.0, 2.0), (1.5, 0.3, -2.0, 4.0), (3.0, 2.0, 3.0, 2.0)])
def test_one_dimensional_closed_form(m1: float, s1: float, m2: float, s2: float) -> None:
    got = frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-9, abs=1e-12)


def test_diagonal_covariances_closed_form() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_random_spd_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mu1, mu2, s1, s2 = rng.normal(size=3), rng.normal(size=3), random_spd(rng, 3), random_spd(rng, 3)
    expected = brute_force_fid(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)  # symmetric


def test_singular_covariances() -> None:
    # sigma1 @ sigma2 == 0: each covariance lives on a different axis; closed form sum (sqrt a - sqrt b)^2.
    s1, s2, mu = np.diag([1.0, 0.0, 0.0]), np.diag([0.0, 4.0, 0.0]), np.zeros(3)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(1.0 + 4.0, abs=1e-3)


def test_offset_retry_when_sqrtm_is_not_finite(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def flaky_sqrtm(a: np.ndarray) -> np.ndarray:
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    a, b = np.array([1.0, 2.0]), np.array([3.0, 0.5])
    got = frechet_distance(np.zeros(2), np.diag(a), np.ones(2), np.diag(b), eps=1e-6)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], np.diag((a + 1e-6) * (b + 1e-6)))
    assert got == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + 2.0, rel=1e-5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="imaginary"):  # not a covariance: sqrt(-1) = i
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_activation_statistics() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4)) + 3.0
    mu, sigma = activation_statistics(feats)
    np.testing.assert_allclose(mu, feats.mean(0))
    centred = feats - feats.mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49)  # unbiased, as pytorch-fid
    mu1, sigma1 = activation_statistics(feats[:, :1])
    assert mu1.shape == (1,) and sigma1.shape == (1, 1)
    with pytest.raises(ValueError, match="N >= 2"):
        activation_statistics(feats[:1])
    with pytest.raises(ValueError, match="NaN"):
        activation_statistics(np.full((3, 2), np.nan))


def test_fid_of_samples_is_small_for_same_distribution_and_grows_with_shift() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))
    same = frechet_distance(*activation_statistics(a), *activation_statistics(b))
    shifted = frechet_distance(*activation_statistics(a), *activation_statistics(b + 1.0))
    assert 0 <= same < 0.02 and shifted == pytest.approx(3.0 + same, abs=0.05)


@pytest.mark.skipif(
    importlib.util.find_spec("pytorch_fid") is not None and importlib.util.find_spec("torchvision") is not None,
    reason="pytorch_fid is installed: the missing-package error cannot be exercised",
)
def test_inception_features_explains_missing_packages(tmp_path) -> None:
    with pytest.raises(InceptionUnavailableError, match="pytorch-fid") as info:
        inception_features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), tmp_path / fid.FID_WEIGHTS_NAME)
    assert isinstance(info.value, ImportError) and "downloaded" in str(info.value)
    with pytest.raises(ValueError, match="shape"):
        inception_features(torch.zeros(2, 32, 32), tmp_path / "w.pth")
