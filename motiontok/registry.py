"""Estimators by name: the ``estimator.name`` of a training config -> (estimator class, its config dataclass)."""

from motiontok.baselines import (
    PPOConfig,
    PPOEstimator,
    QuantizedConfig,
    QuantizedEstimator,
    RelaxedConfig,
    RelaxedEstimator,
    VAEConfig,
    VAEEstimator,
)
from motiontok.estimators import DapsConfig, DapsEstimator

ESTIMATORS: dict[str, tuple[type, type]] = {
    "daps": (DapsEstimator, DapsConfig),
    "vqvae": (QuantizedEstimator, QuantizedConfig),
    "fsq": (QuantizedEstimator, QuantizedConfig),
    "gumbel": (RelaxedEstimator, RelaxedConfig),
    "grmck": (RelaxedEstimator, RelaxedConfig),
    "vae": (VAEEstimator, VAEConfig),
    "ppo": (PPOEstimator, PPOConfig),
}
