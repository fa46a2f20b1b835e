"""Vision networks (paper appendix F): patch layout, shapes, the clipped learned variance, Bernoulli likelihood."""

from __future__ import annotations

import pytest
import torch

from motiontok.nets import gaussian_log_prob
from motiontok.nets.images import (
    ImageNetConfig,
    MLPDecoder,
    PatchEncoder,
    ResNetDecoder,
    bernoulli_log_prob,
    patchify,
)

CIFAR = ImageNetConfig()  # F.2: 32x32, 64 patches, 64 codes of 512
IMAGENET_TINY = ImageNetConfig(image_size=64, num_patches=256, block_size=256, vocab_size=64, embed_dim=32)
MNIST = ImageNetConfig(image_size=28, channels=1, num_patches=49, block_size=8, vocab_size=256, embed_dim=32)


def test_patchify_matches_a_loop() -> None:
    images = torch.randn(2, 3, 8, 8)
    patches = patchify(images, 4)  # (2, 4, 48)
    for r in range(2):
        for c in range(2):
            expected = images[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].reshape(2, -1)
            torch.testing.assert_close(patches[:, 2 * r + c], expected)


@pytest.mark.parametrize("cfg", [CIFAR, IMAGENET_TINY], ids=["cifar", "imagenet-tiny"])
def test_encoder_and_resnet_decoder_shapes(cfg: ImageNetConfig) -> None:
    torch.manual_seed(0)
    images = torch.randn(2, cfg.channels, cfg.image_size, cfg.image_size)
    memory = PatchEncoder(cfg)(images)
    assert memory.shape == (2, cfg.num_patches, cfg.embed_dim)
    decoder = ResNetDecoder(cfg)
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.block_size))
    mean, var = decoder(tokens)
    assert mean.shape == var.shape == images.shape
    assert float(var.detach().min()) >= 0.01 and float(var.detach().max()) <= 1.0
    probs = torch.nn.functional.one_hot(tokens, cfg.vocab_size).float()  # one-hot probabilities = the tokens
    decoder.eval()
    torch.testing.assert_close(decoder(probs)[0], decoder(tokens)[0])
    logp = gaussian_log_prob(images, mean, var)
    assert logp.shape == (2,) and torch.isfinite(logp).all()


def test_learned_variance_has_a_gradient_at_its_bounds() -> None:
    decoder = ResNetDecoder(CIFAR)
    last = decoder.net[-1]
    with torch.no_grad():  # push the variance logits far into both tails
        last.bias[CIFAR.channels :] = torch.tensor([10.0, -10.0, 0.0])
    _, var = decoder(torch.zeros(1, CIFAR.block_size, dtype=torch.long))
    var.sum().backward()
    assert last.bias.grad[CIFAR.channels :].abs().min() > 0  # never a flat clamp


def test_mnist_mlp_decoder_and_bernoulli() -> None:
    logits, var = MLPDecoder(MNIST)(torch.randint(0, 256, (3, 8)))
    assert logits.shape == (3, 1, 28, 28) and var is None
    x = torch.randint(0, 2, (3, 1, 28, 28)).float()
    expected = (
        (x * torch.log(torch.sigmoid(logits)) + (1 - x) * torch.log(1 - torch.sigmoid(logits))).flatten(1).sum(-1)
    )
    torch.testing.assert_close(bernoulli_log_prob(x, logits), expected, atol=1e-3, rtol=1e-5)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="do not tile"):
        ImageNetConfig(num_patches=60).patch_size  # noqa: B018
    with pytest.raises(ValueError, match="expected images"):
        PatchEncoder(CIFAR)(torch.randn(1, 3, 28, 28))
