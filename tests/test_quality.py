"""Image-quality metrics: FID with the shipped Fashion-MNIST classifier, PSNR, max error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekd.errors import MissingResourceError
from edgekd.paths import DEFAULT_FASHION_MNIST, resolve_builtin
from edgekd.profile.classifier import (
    BUILTIN_CLASSIFIER,
    FashionClassifier,
    FeatureNet,
    load_classifier,
    save_classifier,
)
from edgekd.profile.quality import class_histogram, classifier_accuracy, fid, max_abs_error, psnr

FMNIST = DEFAULT_FASHION_MNIST
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not found at {FMNIST} (install Debian's dataset-fashion-mnist)",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 1000 test images in [-1, 1] (edgekd's convention) and their labels."""
    if not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not found at {FMNIST} (install Debian's dataset-fashion-mnist)")
    from edgekd.data import load_dataset
    from edgekd.data.fashion_mnist import load_fashion_mnist
    from edgekd.recipe import DataConfig

    images = load_dataset(DataConfig(kind="fashion_mnist", path=str(FMNIST), split="test", limit=1000))
    _, labels = load_fashion_mnist(FMNIST, "test")
    return images, torch.from_numpy(labels[:1000].astype(np.int64))


@pytest.fixture(scope="module")
def feature_net() -> FeatureNet:
    return FeatureNet.from_path(BUILTIN_CLASSIFIER)


# ------------------------------------------------------------------------------------------ the classifier


def test_shipped_classifier_is_small_and_documented():
    folder = resolve_builtin(BUILTIN_CLASSIFIER)
    assert (folder / "model.safetensors").stat().st_size < 2 * 1024 * 1024
    config = json.loads((folder / "config.json").read_text())
    for key in ("architecture", "test_accuracy", "epochs", "seed", "torch_version", "date"):
        assert key in config, key
    assert config["test_accuracy"] >= 0.85


@needs_fmnist
def test_shipped_classifier_accuracy(test_images, feature_net):
    images, labels = test_images
    accuracy = classifier_accuracy(feature_net, images, labels)
    assert accuracy >= 0.85, accuracy
    hist = class_histogram(feature_net, images)
    assert hist.shape == (10,) and math.isclose(float(hist.sum()), 1.0, abs_tol=1e-9)
    assert float(hist.min()) > 0.05  # the test split is balanced; every class is predicted


def test_missing_classifier_folder_names_path_and_fix(tmp_path: Path):
    missing = tmp_path / "no-such-classifier"
    with pytest.raises(MissingResourceError) as info:
        load_classifier(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "python benchmarks/train_fid_classifier.py" in message
    with pytest.raises(MissingResourceError):
        FeatureNet.from_path("builtin:fid/does-not-exist")


def test_save_load_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = FashionClassifier(channels=(4, 8, 8), embedding_dim=16).eval()
    save_classifier(model, tmp_path / "clf", {"test_accuracy": 0.1})
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_classifier(tmp_path / "clf")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    assert torch.equal(model(x), loaded(x))
    assert torch.equal(model.features(x), loaded.features(x))


def test_feature_net_shapes_and_eval_mode():
    net = FeatureNet(FashionClassifier(channels=(4, 8, 8), embedding_dim=16))
    net.train()  # torchmetrics or a parent module may do this; BatchNorm must stay frozen
    assert not net.classifier.training
    assert net.num_features == 16
    for images in (torch.zeros(2, 1, 32, 32), torch.zeros(2, 3, 32, 32), torch.zeros(2, 1, 28, 28),
                   torch.zeros(2, 3, 64, 64)):
        out = net(images)
        assert out.shape == (2, 16) and out.dtype == torch.float32


# ----------------------------------------------------------------------------------------------- FID


class _RecordingFeatureNet(FeatureNet):
    """The real feature net, remembering what torchmetrics hands it."""

    def __init__(self, classifier: FashionClassifier) -> None:
        super().__init__(classifier)
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images.detach().clone())
        return super().forward(images)


@needs_fmnist
def test_fid_orders_real_blurred_noise(test_images, feature_net):
    images, _ = test_images
    first, second = images[:500], images[500:1000]
    noise = torch.randn(500, 1, 32, 32, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    blurred = F.avg_pool2d(second, 5, stride=1, padding=2, count_include_pad=False)

    real_vs_real = fid(first, second, feature_net)
    real_vs_blur = fid(first, blurred, feature_net)
    real_vs_noise = fid(first, noise, feature_net)
    assert 0.0 <= real_vs_real < 15.0, real_vs_real  # observed ~4
    assert real_vs_blur > 10 * real_vs_real, (real_vs_real, real_vs_blur)
    assert real_vs_noise > 50 * real_vs_real, (real_vs_real, real_vs_noise)
    assert real_vs_noise > real_vs_blur
    assert fid(first, first, feature_net) == pytest.approx(0.0, abs=1e-2)
    # batching does not change the statistics
    assert fid(first, second, feature_net, batch_size=77) == pytest.approx(real_vs_real, rel=1e-3, abs=1e-3)


@needs_fmnist
def test_fid_passes_images_to_the_network_unchanged(test_images, feature_net):
    images, _ = test_images
    recorder = _RecordingFeatureNet(feature_net.classifier)
    fid(images[:40], images[40:80], recorder, batch_size=40)
    assert len(recorder.seen) == 2
    assert recorder.seen[0].dtype == torch.float32
    assert torch.equal(recorder.seen[0], images[:40])  # no *255 / uint8 round trip: exact [-1, 1] values
    assert float(recorder.seen[0].min()) == -1.0


def test_fid_rejects_bad_inputs():
    net = FeatureNet(FashionClassifier(channels=(4, 8, 8), embedding_dim=16))
    ok = torch.zeros(4, 1, 32, 32)
    with pytest.raises(ValueError, match="at least 2"):
        fid(ok, torch.zeros(1, 1, 32, 32), net)
    with pytest.raises(ValueError, match="at least 2"):
        fid(torch.zeros(1, 1, 32, 32), ok, net)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        fid(ok, torch.full((4, 1, 32, 32), 255.0), net)
    with pytest.raises(ValueError, match="N, C, H, W"):
        fid(ok, torch.zeros(4, 32, 32), net)


# ------------------------------------------------------------------------------------- PSNR, max error


def test_psnr_identical_is_inf():
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert psnr(x, x.clone()) == math.inf
    assert max_abs_error(x, x.clone()) == 0.0


def test_psnr_of_known_noise_matches_formula():
    generator = torch.Generator().manual_seed(1)
    reference = torch.rand(4, 1, 32, 32, generator=generator) * 2 - 1
    noise = torch.randn(4, 1, 32, 32, generator=generator) * 0.05
    test = reference + noise
    expected = 10 * np.log10(2.0**2 / np.mean(noise.double().numpy() ** 2))
    assert psnr(reference, test) == pytest.approx(expected, abs=1e-4)
    # a constant offset d gives exactly 10·log10(range² / d²)
    assert psnr(reference, reference + 0.1) == pytest.approx(10 * math.log10(4.0 / 0.01), abs=1e-4)
    assert psnr(reference, reference + 0.1, data_range=1.0) == pytest.approx(20.0, abs=1e-4)
    assert max_abs_error(reference, test) == pytest.approx(float(noise.abs().max()), abs=1e-6)


def test_psnr_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        psnr(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError):
        max_abs_error(torch.zeros(3), torch.zeros(4))
