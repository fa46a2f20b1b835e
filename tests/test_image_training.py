"""Image datasets through the one trainer: data modules, the model's likelihood, export and the PNG pictures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from motiontok.datamodules import ImageData, load_image_vae
from motiontok.estimators import DapsConfig, DapsEstimator
from motiontok.evaluation import evaluate_model
from motiontok.image_report import image_grid
from motiontok.models import DiscreteVAE
from motiontok.nets import ImageNetConfig, TrajectoryNetConfig
from motiontok.trainer import TrainConfig, train
from tests.test_image_data import save_png, write_cifar_batches, write_idx

ROOT = Path(__file__).resolve().parent.parent
TINY_MNIST = ImageNetConfig(image_size=28, channels=1, num_patches=16, block_size=4, vocab_size=16, embed_dim=16,
                            num_heads=2, num_layers=1, mlp_hidden=32)  # fmt: skip
TINY_CIFAR = ImageNetConfig(image_size=32, channels=3, num_patches=16, block_size=16, vocab_size=16, embed_dim=16,
                            num_heads=2, num_layers=1, hidden_dim=8, num_res_blocks=1)  # fmt: skip


def write_mnist(root: Path, n_train: int = 64, n_test: int = 16) -> Path:
    """IDX files of 4 digit-like patterns (bars at 4 places) with pixel noise, grey levels 0..255."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            k = i % 4
            images[i, 4 + 5 * k : 8 + 5 * k, 4:24] = 255
            flip = rng.random((28, 28)) < 0.02
            images[i][flip] = 255 - images[i][flip]
        write_idx(root / f"{split}-images-idx3-ubyte", images)
    return root


def test_model_likelihood_and_metrics_match_brute_force() -> None:
    """Bernoulli network: log_p is the Bernoulli log-likelihood of the decoded logits; evaluate_model's greedy
    log p and L2 (against the probabilities) equal a direct computation, image by image."""
    torch.manual_seed(0)
    model = DiscreteVAE(TINY_MNIST, "ar", network="vit_mlp").eval()
    x = (torch.rand(5, 1, 28, 28) > 0.5).float()
    z = model.encode(x)
    logits, _ = model.decoder(z)
    p = torch.sigmoid(logits)
    brute = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(-1)
    torch.testing.assert_close(model.log_p(x, z), brute, atol=1e-3, rtol=1e-5)
    metrics, recon = evaluate_model(model, [x[:3], x[3:]], keep_recon=True)
    torch.testing.assert_close(torch.cat(recon), p)
    assert metrics["log_p_greedy"] == pytest.approx(brute.mean().item(), rel=1e-5)
    assert metrics["l2"] == pytest.approx((x - p).flatten(1).norm(dim=1).mean().item(), rel=1e-5)
    assert metrics["windows"] == 5 and "log_p_fixed_var" not in metrics


def test_network_and_config_must_agree() -> None:
    with pytest.raises(TypeError, match="takes a ImageNetConfig"):
        DiscreteVAE(TrajectoryNetConfig(), network="vit_mlp")
    with pytest.raises(ValueError, match="unknown network"):
        DiscreteVAE(TINY_MNIST, network="unet")


def test_image_grid_places_each_group_side_by_side() -> None:
    images = torch.arange(6.0).view(3, 2, 1, 1, 1).expand(3, 2, 1, 4, 4) / 10  # group i, member j: (2i + j)/10
    grid = image_grid(images, columns=2, pad=1)
    assert grid.shape == (2 * 5 + 1, 4 * 5 + 1, 3)
    for i in range(3):
        for j in range(2):
            r, c = divmod(i, 2)
            top, left = 1 + 5 * r, 1 + 5 * (2 * c + j)
            assert (grid[top : top + 4, left : left + 4] == round(255 * (2 * i + j) / 10)).all()
    assert (grid[0] == 255).all()  # padding is white
    with pytest.raises(ValueError, match="image groups"):
        image_grid(torch.zeros(2, 1, 28, 28))


def test_mnist_learns_through_the_trainer_and_exports(tmp_path: Path) -> None:
    """DAPS on a tiny binarized MNIST: validation log p rises well above the untrained model's, the export loads
    back to the same reconstructions, and the PNGs have the grid's size."""
    data = ImageData("mnist", write_mnist(tmp_path / "mnist"))
    assert set(data.train.unique().tolist()) == {0.0, 1.0}  # binarized, not standardized (Bernoulli targets)
    torch.manual_seed(0)
    model = DiscreteVAE(TINY_MNIST, "ar", posterior_init_std=0.25, network="vit_mlp")
    data.setup(0, torch.device("cpu"))
    before = data.evaluate(model, 0.0, None)
    cfg = TrainConfig(steps=60, batch_size=16, lr=3e-3, progress=False, eval_every=0, ckpt_every=30, num_threads=1)
    after = train(model, DapsEstimator(DapsConfig(num_samples=4)), data, cfg, tmp_path / "run")
    assert after["log_p"] > before["log_p"] + 100, (before["log_p"], after["log_p"])  # 784 pixels: ~-543 at chance
    loaded, standardizer, config = load_image_vae(tmp_path / "run" / "final")
    assert standardizer is None and config["dataset"] == "mnist" and config["network"] == "vit_mlp"
    x = data.prepare(data.val)
    torch.testing.assert_close(loaded.reconstruct(loaded.encode(x)), model.eval().reconstruct(model.encode(x)))
    recon = Image.open(tmp_path / "run" / "final" / "reconstructions.png")
    assert recon.size == image_grid(torch.zeros(16, 2, 1, 28, 28)).shape[1::-1]  # 16 val images, input | recon
    assert (tmp_path / "run" / "final" / "prior_samples.png").is_file()


def _cifar_run(root: Path, out: Path, steps: int, stop_after: int | None = None) -> dict[str, torch.Tensor]:
    data = ImageData("cifar10", root)
    torch.manual_seed(0)
    model = DiscreteVAE(TINY_CIFAR, "ar", network="vit_resnet")
    cfg = TrainConfig(steps=steps, batch_size=4, progress=False, eval_every=0, ckpt_every=2, num_threads=1)
    if stop_after is not None:
        train(
            model,
            DapsEstimator(DapsConfig(num_samples=2)),
            data,
            TrainConfig(**{**cfg.__dict__, "steps": stop_after}),
            out,
        )
        torch.manual_seed(123)  # the resumed run must not depend on the global RNG at entry
        model = DiscreteVAE(TINY_CIFAR, "ar", network="vit_resnet")
    train(model, DapsEstimator(DapsConfig(num_samples=2)), data, cfg, out)
    return model.state_dict()


def test_cifar_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    """The trainer's resume is data-agnostic: a CIFAR-10 run stopped at step 2 and resumed to 4 ends with the
    weights of the uninterrupted run (batch stream, standardizer and RNG restored); the learned variance stays
    in [0.01, 1]; the standardizer travels with the export."""
    root = tmp_path / "cifar"
    write_cifar_batches(root / "cifar-10-batches-py", per_batch=8)
    whole = _cifar_run(root, tmp_path / "a", 4)
    resumed = _cifar_run(root, tmp_path / "b", 4, stop_after=2)
    for k, v in whole.items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0, msg=k)
    model, standardizer, _ = load_image_vae(tmp_path / "a" / "final")
    expected = ImageData("cifar10", root).standardizer
    torch.testing.assert_close(standardizer.mean, expected.mean)
    _, var = model.decode(torch.zeros(1, 16, dtype=torch.long))
    assert float(var.detach().min()) >= 0.01 and float(var.detach().max()) <= 1.0


def test_image_folder_batches_are_fresh_random_crops(tmp_path: Path) -> None:
    """ImageNet-style folder: batches are standardized random crops (new crops for the same image across
    batches), reproducible from the seed; two training steps run on them."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k in range(3):
            save_png(tmp_path / "inet" / split / f"c{k}" / "a.png", rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
    data = ImageData("imagenet", tmp_path / "inet", image_size=16)
    data.setup(5, torch.device("cpu"))
    batches = [data.sample(8) for _ in range(10)]
    assert batches[0].shape == (8, 3, 16, 16) and abs(float(torch.cat(batches).mean())) < 0.5
    assert len({x.numpy().tobytes() for x in torch.cat(batches)}) > 6  # 3 images, 10 crops each: new ones per batch
    data.setup(5, torch.device("cpu"))
    torch.testing.assert_close(data.sample(8), batches[0])
    cfg16 = ImageNetConfig(image_size=16, channels=3, num_patches=16, block_size=16, vocab_size=8, embed_dim=16,
                           num_heads=2, num_layers=1, hidden_dim=8, num_res_blocks=1)  # fmt: skip
    model = DiscreteVAE(cfg16, "ar", network="vit_resnet")
    cfg = TrainConfig(steps=2, batch_size=4, progress=False, eval_every=0, num_threads=1)
    final = train(model, DapsEstimator(DapsConfig(num_samples=2)), data, cfg, tmp_path / "run")
    assert final["windows"] == 3 and np.isfinite(final["log_p"])


@pytest.mark.slow
def test_train_script_mnist_config_picks_its_networks_and_fsq_levels(tmp_path: Path) -> None:
    """``data=mnist`` switches the networks to the MNIST ViT/MLP and FSQ to figure 11's MNIST levels."""
    root = write_mnist(tmp_path / "mnist")
    cmd = [sys.executable, "scripts/train_tokenizer.py", "data=mnist", f"data.root={root}", "estimator=fsq",
           f"out_dir={tmp_path / 'fsq'}", "train.steps=3", "train.eval_every=0", "train.progress=false",
           "train.num_threads=1", "tokenizer.net.embed_dim=16", "tokenizer.net.num_layers=1"]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    config = json.loads((tmp_path / "fsq" / "final" / "config.json").read_text())
    assert config["network"] == "vit_mlp" and config["quantizer"] == {"levels": [8, 6, 5]}
    assert config["net"]["block_size"] == 8 and config["net"]["vocab_size"] == 256
    assert "ess_target" in run.stderr  # the CPU preset's DAPS setting, reported as ignored by FSQ


def test_final_evaluation_reports_the_fid_of_the_reconstructions(tmp_path: Path, monkeypatch) -> None:
    """With Inception weights configured, the final evaluation adds the Frechet distance between the features of
    the validation images (as pixels in [0, 1]) and of their reconstructions; periodic evaluations skip it."""
    from motiontok import fid

    root = tmp_path / "cifar"
    write_cifar_batches(root / "cifar-10-batches-py", per_batch=8)
    seen = []

    def features(images: torch.Tensor, weights_path: Path, device: str) -> np.ndarray:  # stands in for Inception
        assert weights_path == tmp_path / "w.pth" and device == "cpu"
        seen.append(images)
        return images.flatten(1)[:, :4].double().numpy()

    monkeypatch.setattr(fid, "inception_features", features)
    data = ImageData("cifar10", root, fid_weights=tmp_path / "w.pth")
    data.setup(0, torch.device("cpu"))
    model = DiscreteVAE(TINY_CIFAR, "ar", network="vit_resnet")
    assert "fid" not in data.evaluate(model, 1.0, 4) and not seen
    metrics = data.evaluate(model, 1.0, None)
    fake, real = seen
    torch.testing.assert_close(real, data.val.float() / 255)  # standardize then back: the original pixels
    assert fake.min() >= 0 and fake.max() <= 1
    stats = [fid.activation_statistics(x.flatten(1)[:, :4].double().numpy()) for x in (real, fake)]
    assert metrics["fid"] == pytest.approx(fid.frechet_distance(*stats[0], *stats[1]))
    with pytest.raises(ValueError, match="RGB"):
        ImageData("mnist", write_mnist(tmp_path / "mnist"), fid_weights=tmp_path / "w.pth")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
def test_train_script_runs_the_appendix_f_configs_at_tiny_scale(tmp_path: Path, dataset: str) -> None:
    """``data=cifar10`` / ``data=imagenet`` pick the ViT + ResNet networks with a learned variance; the run trains
    on files in the original formats and exports the model with its standardizer."""
    rng = np.random.default_rng(0)
    if dataset == "cifar10":
        root = tmp_path / "cifar"
        write_cifar_batches(root / "cifar-10-batches-py", per_batch=4)
        size = ["data.image_size=32"]
    else:
        root = tmp_path / "inet"
        for split in ("train", "val"):
            for k in range(2):
                save_png(root / split / f"c{k}" / "a.png", rng.integers(0, 256, (40, 36, 3), dtype=np.uint8))
        size = ["data.image_size=32", "data.standardize_images=4", "tokenizer.net.image_size=32"]
    cmd = [sys.executable, "scripts/train_tokenizer.py", f"data={dataset}", f"data.root={root}", *size,
           f"out_dir={tmp_path / 'run'}", "train.steps=2", "train.batch_size=2", "train.eval_every=0",
           "train.progress=false", "train.num_threads=1", "tokenizer.net.embed_dim=16", "tokenizer.net.num_layers=1",
           "tokenizer.net.num_patches=16", "tokenizer.net.block_size=16", "tokenizer.net.vocab_size=32",
           "tokenizer.net.hidden_dim=8", "estimator.num_samples=2"]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    model, standardizer, config = load_image_vae(tmp_path / "run" / "final")
    assert config["network"] == "vit_resnet" and config["dataset"] == dataset and standardizer is not None
    assert model.likelihood == "gaussian" and (tmp_path / "run" / "final" / "prior_samples.png").is_file()
    assert np.isfinite(config["val_metrics"]["log_p"])
