"""Neural networks of the tokenizer: transformer blocks and the LAFAN trajectory models."""

from motiontok.nets.trajectory import (
    ARPosterior,
    NAPosterior,
    Posterior,
    TrajectoryDecoder,
    TrajectoryEncoder,
    TrajectoryNetConfig,
    categorical_entropy,
    categorical_log_prob,
    gaussian_log_prob,
    sample_categorical,
)
from motiontok.nets.transformer import (
    Attention,
    DecoderBlock,
    DecoderCache,
    EncoderBlock,
    KVCache,
    LayerCache,
    TransformerDecoder,
    TransformerEncoder,
)

__all__ = [
    "ARPosterior",
    "Attention",
    "DecoderBlock",
    "DecoderCache",
    "EncoderBlock",
    "KVCache",
    "LayerCache",
    "NAPosterior",
    "Posterior",
    "TrajectoryDecoder",
    "TrajectoryEncoder",
    "TrajectoryNetConfig",
    "TransformerDecoder",
    "TransformerEncoder",
    "categorical_entropy",
    "categorical_log_prob",
    "gaussian_log_prob",
    "sample_categorical",
]
