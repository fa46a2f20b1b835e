"""Neural networks of the tokenizer: transformer blocks, the LAFAN trajectory models and the vision models, and
``NETWORKS``, the one table that maps a config's ``network`` name to its recognition encoder, generative decoder
and likelihood."""

from dataclasses import dataclass

from motiontok.nets.images import ImageNetConfig, MLPDecoder, PatchEncoder, ResNetDecoder, bernoulli_log_prob
from motiontok.nets.posterior import (
    ARPosterior,
    NAPosterior,
    Posterior,
    categorical_entropy,
    categorical_log_prob,
    sample_categorical,
)
from motiontok.nets.trajectory import (
    TrajectoryDecoder,
    TrajectoryEncoder,
    TrajectoryNetConfig,
    gaussian_log_prob,
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


@dataclass(frozen=True)
class Network:
    """One row of ``NETWORKS``: the config dataclass and the modules a ``DiscreteVAE`` builds from it."""

    config: type
    """Its config dataclass (``TrajectoryNetConfig`` or ``ImageNetConfig``); ``latent_config()`` gives the
    posterior heads' sizes."""
    encoder: type
    """Recognition encoder: input -> memory (B, T, H)."""
    decoder: type
    """Generative decoder: codes -> the likelihood's parameters."""
    likelihood: str
    """``gaussian`` (decoder returns mean, variance) or ``bernoulli`` (decoder returns logits, None)."""


NETWORKS: dict[str, Network] = {
    "trajectory": Network(TrajectoryNetConfig, TrajectoryEncoder, TrajectoryDecoder, "gaussian"),  # LAFAN (G.1)
    "vit_resnet": Network(ImageNetConfig, PatchEncoder, ResNetDecoder, "gaussian"),  # CIFAR-10, ImageNet (F)
    "vit_mlp": Network(ImageNetConfig, PatchEncoder, MLPDecoder, "bernoulli"),  # binarized MNIST
}
"""Networks by the name a training config gives (``tokenizer.network``)."""

__all__ = [
    "NETWORKS",
    "ARPosterior",
    "Attention",
    "DecoderBlock",
    "DecoderCache",
    "EncoderBlock",
    "ImageNetConfig",
    "KVCache",
    "LayerCache",
    "MLPDecoder",
    "NAPosterior",
    "Network",
    "PatchEncoder",
    "Posterior",
    "ResNetDecoder",
    "TrajectoryDecoder",
    "TrajectoryEncoder",
    "TrajectoryNetConfig",
    "TransformerDecoder",
    "TransformerEncoder",
    "bernoulli_log_prob",
    "categorical_entropy",
    "categorical_log_prob",
    "gaussian_log_prob",
    "sample_categorical",
]
