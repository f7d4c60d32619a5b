"""GDD's discriminators: a plain conv discriminator, and a projected one on frozen classifier features.

Both map images [N, C, H, W] in (about) [-1, 1] to a list of logit tensors [N, k] (one per head; k patch logits per
sample), so the losses are written once: the sum over heads of the mean non-saturating loss, as in GDD's code.

Neither uses batch normalisation in its trainable part: the R1 penalty is a per-sample gradient of D, which batch
statistics would couple across the batch (StyleGAN2, whose R1 recipe GDD follows, has no BN in D either).

ProjectedDiscriminator (projected-GAN style, the paper's choice): a frozen pretrained feature network and small
trainable heads on its features at several scales. The paper uses ImageNet networks (VGG16-BN / EfficientNet-lite0
/ DeiT), which cannot be fetched offline and do not fit 1-channel 32x32 images; edgekd's own Fashion-MNIST
classifier (``builtin:fid/fmnist-classifier``, the FID feature network) serves instead: the outputs of its three
conv blocks (16x16, 8x8, 4x4) and its 128-d embedding. Projected GAN's fixed random channel/scale mixing layers
(CCM/CSM) are left out: with 16-64 channels there is little to mix. Gradients flow THROUGH the frozen features to
the generator; only the heads' weights ever change (the feature network stays in eval mode and requires no grad).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from edgekd.profile.classifier import FashionClassifier, load_classifier, to_classifier_input


def _down_size(size: int) -> int:
    """Spatial size after Conv2d(k=4, stride=2, padding=1)."""
    return (size + 2 - 4) // 2 + 1


class ConvDiscriminator(nn.Module):
    """Conv3x3 + LeakyReLU(0.2), then (Conv3x3, Conv4x4 stride 2) pairs down to 4x4 or less, then a 2-layer MLP.

    Channels start at ``width`` and double at every downsampling, capped at 8 * width.
    """

    def __init__(self, image_channels: int, image_size: int, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(image_channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        ch, size = width, image_size
        while size > 4:
            out = min(2 * ch, 8 * width)
            layers += [nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch, size = out, _down_size(size)
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ch * size * size, ch), nn.LeakyReLU(0.2), nn.Linear(ch, 1))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def forward(self, images: Tensor) -> list[Tensor]:
        return [self.head(self.body(images))]


class FrozenClassifierFeatures(nn.Module):
    """The conv blocks and embedding of a FashionClassifier, frozen: images -> [block outputs..., embedding].

    Stays in eval mode whatever a parent asks (BatchNorm must keep its running statistics), and its parameters
    never require grad; the input's gradient still flows through it.
    """

    def __init__(self, classifier: FashionClassifier):
        super().__init__()
        self.blocks = nn.ModuleList(list(classifier.body))
        self.embed = classifier.embed
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenClassifierFeatures":
        super().train(False)
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        x = to_classifier_input(images)
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        feats.append(self.embed(x))
        return feats


def _map_head(channels: int, size: int, width: int) -> nn.Sequential:
    """Conv3x3 + LeakyReLU, stride-2 Conv4x4s down to 4x4 or less, then a 1x1 conv to patch logits."""
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
    while size > 4:
        layers += [nn.Conv2d(width, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        size = _down_size(size)
    layers += [nn.Conv2d(width, 1, 1), nn.Flatten()]
    return nn.Sequential(*layers)


class ProjectedDiscriminator(nn.Module):
    """Frozen classifier features at every scale, one trainable head per scale (see the module docstring)."""

    def __init__(self, classifier: FashionClassifier, image_channels: int, image_size: int, width: int = 64):
        super().__init__()
        self.features = FrozenClassifierFeatures(classifier)
        with torch.no_grad():
            shapes = [tuple(f.shape[1:]) for f in self.features(torch.zeros(1, image_channels, image_size, image_size))]
        heads: list[nn.Module] = []
        for shape in shapes:
            if len(shape) == 3:
                heads.append(_map_head(shape[0], shape[1], width))
            else:
                heads.append(nn.Sequential(nn.Linear(shape[0], width), nn.LeakyReLU(0.2), nn.Linear(width, 1)))
        self.heads = nn.ModuleList(heads)
        self.feature_shapes = shapes

    @classmethod
    def from_path(cls, path: str | Path, image_channels: int, image_size: int, width: int = 64) -> "ProjectedDiscriminator":
        """Load the frozen feature network from a saved classifier folder (``builtin:...`` accepted)."""
        return cls(load_classifier(path), image_channels, image_size, width)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def forward(self, images: Tensor) -> list[Tensor]:
        return [head(f) for head, f in zip(self.heads, self.features(images))]


def build_discriminator(kind: str, image_shape: tuple[int, int, int], width: int,
                        feature_net: str | Path | None = None) -> nn.Module:
    """``conv`` or ``projected`` (the latter loads ``feature_net``) for images of ``image_shape`` (C, H, W)."""
    c, h, _ = image_shape
    if kind == "conv":
        return ConvDiscriminator(c, h, width)
    if kind == "projected":
        return ProjectedDiscriminator.from_path(feature_net or "builtin:fid/fmnist-classifier", c, h, width)
    raise ValueError(f"unknown discriminator kind {kind!r} (conv or projected)")
