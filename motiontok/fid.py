"""Frechet Inception Distance (FID) between two sets of images, via Gaussian fits of Inception-v3 features.

FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) (Heusel et al., 2017), the definition used by
pytorch-fid. :func:`frechet_distance` and :func:`activation_statistics` need only numpy/scipy.
:func:`inception_features` needs the optional ``pytorch_fid`` and ``torchvision`` packages and a local
copy of the FID Inception weights; nothing is downloaded at run time.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import scipy.linalg
import torch

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}"


class InceptionUnavailableError(ImportError):
    """The optional packages needed to compute Inception features are not installed."""


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrtm(a: np.ndarray) -> np.ndarray | None:
    """Principal square root of ``a``, or None when scipy fails or returns non-finite values."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            root = scipy.linalg.sqrtm(a)
    except (np.linalg.LinAlgError, ValueError):
        return None
    return root if np.isfinite(root).all() else None


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = np.atleast_1d(np.asarray(mu, dtype=np.float64)), np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{name}: mean {mu.shape} and covariance {sigma.shape} do not match (want (D,), (D, D))")
    return mu, sigma


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2): means (D,), covariances (D, D).

    When ``sigma1 @ sigma2`` has no finite square root (e.g. singular), ``eps * I`` is added to both
    covariances and the root retried. A complex root whose diagonal has a non-negligible imaginary part
    raises ValueError; a negligible one is dropped.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "first Gaussian")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "second Gaussian")
    if mu1.shape != mu2.shape:
        raise ValueError(f"dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    covmean = _sqrtm(sigma1 @ sigma2)
    if covmean is None:
        offset = eps * np.eye(mu1.shape[0])
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if covmean is None:
            raise ValueError(f"sqrtm(sigma1 @ sigma2) is not finite even with an offset of {eps} on the diagonal")
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        scale = max(1.0, np.abs(np.diagonal(covmean).real).max())
        if imag > 1e-3 * scale:
            raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary component of {imag:.3g} on its diagonal")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _load_inception(weights_path: Path, device: str) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (2048-d pool features), its weights read from ``weights_path``."""
    try:
        import torchvision  # noqa: F401
        from pytorch_fid import inception
    except ImportError as err:
        raise InceptionUnavailableError(
            "inception_features needs the optional packages 'pytorch-fid' and 'torchvision' "
            f"(pip install pytorch-fid torchvision); import failed: {err}. Nothing is downloaded at run time: "
            f"fetch the weights file yourself ({FID_WEIGHTS_URL}) and pass its local path."
        ) from err
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: FID Inception weights not found (expected {FID_WEIGHTS_NAME})")

    def local_weights(*_args: object, **_kwargs: object) -> dict[str, torch.Tensor]:
        return torch.load(weights_path, map_location="cpu", weights_only=True)

    # pytorch-fid fetches its weights from a URL; serve the local file instead, so nothing is downloaded.
    with mock.patch.object(inception, "load_state_dict_from_url", local_weights):
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return model.eval().to(device)


@torch.no_grad()
def inception_features(
    images: torch.Tensor, weights_path: str | Path, batch_size: int = 50, device: str = "cpu"
) -> np.ndarray:
    """Inception-v3 pool features (N, 2048) of images (N, 3, H, W): uint8 0..255 or float in [0, 1].

    Uses pytorch-fid's FID Inception network (inputs resized to 299x299 inside) with the weights file
    ``weights_path`` (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    model = _load_inception(Path(weights_path), device)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()  # (N, 3, H, W) in [0, 1]
    feats = [model(x[i : i + batch_size].to(device))[0].flatten(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(feats).numpy().astype(np.float64)  # (N, 2048)
