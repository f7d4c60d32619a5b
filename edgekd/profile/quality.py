"""Image-quality numbers of the profiler: FID for distributions, PSNR / max error for paired outputs.

FID answers "do the student's samples look like the data?" (with edgekd's shipped Fashion-MNIST classifier
as feature network, since Inception weights cannot be fetched offline); PSNR and the max absolute error
answer "does this export/quantised model reproduce the PyTorch one?" on the same inputs.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from edgekd.metrics import max_abs_error, psnr  # noqa: F401  (moved to edgekd/metrics; importable here as before)
from edgekd.profile.classifier import FashionClassifier, FeatureNet, evaluate_accuracy, to_classifier_input

# Generated samples may overshoot [-1, 1] a little (they are clamped when saved); anything far beyond is a
# scale mistake such as passing [0, 255] pixels, which would silently give a meaningless FID.
_RANGE_SLACK = 1.0


def _check_images(name: str, images: Tensor) -> None:
    """Reject what would make FID silently wrong: too few images, wrong rank, wrong value scale."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name}: expected images [N, C, H, W], got shape {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"{name}: FID needs at least 2 images (a covariance), got {images.shape[0]}")
    if not images.is_floating_point():
        raise ValueError(f"{name}: expected float images in [-1, 1], got dtype {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: images contain NaN or inf")
    if lo < -1.0 - _RANGE_SLACK or hi > 1.0 + _RANGE_SLACK:
        raise ValueError(f"{name}: images must be in [-1, 1], found values in [{lo:.3g}, {hi:.3g}]")


@torch.no_grad()
def fid(real: Tensor, fake: Tensor, feature_net: FeatureNet, batch_size: int = 256) -> float:
    """Fréchet distance between the feature statistics of ``real`` and ``fake`` (both [N, C, H, W] in [-1, 1]).

    Uses torchmetrics' ``FrechetInceptionDistance`` with ``feature=feature_net`` and ``normalize=True``. For a
    custom feature module torchmetrics passes the float images through untouched (its ``* 255 -> uint8``
    conversion applies only to its own Inception), so the network sees exactly these [-1, 1] values; they are
    clamped to [-1, 1] first, as they would be when saved as images.
    """
    _check_images("real", real)
    _check_images("fake", fake)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    metric = FrechetInceptionDistance(feature=feature_net, normalize=True, reset_real_features=True)
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, images.shape[0], batch_size):
            metric.update(images[start : start + batch_size].float().clamp(-1.0, 1.0), real=is_real)
    value = float(metric.compute())
    # Eigenvalue round-off can leave a tiny negative number for identical sets.
    return max(value, 0.0)


class _Precomputed(nn.Module):
    """Identity "feature network": lets torchmetrics' FID/KID take features computed once (the real set's
    features are shared by every generator of a profile instead of being recomputed per metric and row)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


@torch.no_grad()
def features(images: Tensor, feature_net: nn.Module, batch_size: int = 256) -> Tensor:
    """Feature vectors [N, D] (float64) of images [N, C, H, W] in [-1, 1] (clamped, as when saved)."""
    _check_images("images", images)
    out = [feature_net(images[i : i + batch_size].float().clamp(-1.0, 1.0)).double()
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


def fid_from_features(real: Tensor, fake: Tensor) -> float:
    """FID (torchmetrics' Fréchet distance) between two feature sets [N, D]."""
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), normalize=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return max(float(metric.compute()), 0.0)


def kid_subset_size(n_real: int, n_fake: int, wanted: int = 1000) -> int:
    """torchmetrics' KID subset size: its default 1000, or the smaller set's size when fewer images exist."""
    return max(2, min(wanted, n_real, n_fake))


def kid_from_features(real: Tensor, fake: Tensor, subsets: int = 50, subset_size: int | None = None,
                      seed: int = 0) -> tuple[float, float]:
    """KID (torchmetrics' unbiased polynomial-kernel MMD^2): (mean, std) over random subsets.

    KID is unbiased for small sample counts, where FID is biased upwards, so it is the fairer number for the
    few hundred images a CPU profile generates. The subsets are drawn with a fixed seed: reruns agree.
    """
    size = subset_size or kid_subset_size(len(real), len(fake))
    with warnings.catch_warnings():  # "will save all extracted features": a few hundred vectors here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size,
                                         normalize=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def kid(real: Tensor, fake: Tensor, feature_net: nn.Module, subsets: int = 50, subset_size: int | None = None,
        batch_size: int = 256) -> tuple[float, float]:
    """KID (mean, std) between image sets [N, C, H, W] in [-1, 1], next to ``fid`` with the same feature network."""
    _check_images("real", real)
    _check_images("fake", fake)
    return kid_from_features(features(real, feature_net, batch_size), features(fake, feature_net, batch_size),
                             subsets, subset_size)


def _as_classifier(model: FashionClassifier | FeatureNet) -> FashionClassifier:
    return model.classifier if isinstance(model, FeatureNet) else model


@torch.no_grad()
def classifier_accuracy(
    model: FashionClassifier | FeatureNet, images: Tensor, labels: Tensor, batch_size: int = 500
) -> float:
    """Top-1 accuracy on labelled images in [-1, 1]: checks that a shipped feature network still works."""
    classifier = _as_classifier(model)
    device = next(classifier.parameters()).device
    x = to_classifier_input(images).to(device)
    return evaluate_accuracy(classifier, x, labels.to(device).long(), batch_size=batch_size)


@torch.no_grad()
def class_histogram(model: FashionClassifier | FeatureNet, images: Tensor, batch_size: int = 500) -> Tensor:
    """Fraction of ``images`` predicted as each class [num_classes]: a quick look at mode coverage/collapse."""
    classifier = _as_classifier(model)
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    counts = torch.zeros(classifier.num_classes, dtype=torch.float64)
    for start in range(0, images.shape[0], batch_size):
        x = to_classifier_input(images[start : start + batch_size]).to(device)
        pred = classifier(x).argmax(dim=1).cpu()
        counts += torch.bincount(pred, minlength=classifier.num_classes).double()
    classifier.train(was_training)
    return counts / max(1, images.shape[0])


__all__ = ["class_histogram", "classifier_accuracy", "features", "fid", "fid_from_features", "kid", "kid_from_features",
           "max_abs_error", "psnr"]
