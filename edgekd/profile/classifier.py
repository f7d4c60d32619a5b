"""A small Fashion-MNIST classifier that edgekd trains, ships and uses as FID's feature network.

Inception weights cannot be downloaded offline, and Inception features of 28x28 greyscale clothes are a poor
fit anyway; a classifier trained on the very data the students imitate gives features that separate its
classes, so FID computed on them tracks what a viewer of Fashion-MNIST samples would judge. Weights are
stored as safetensors plus a JSON config (no pickles), and ``benchmarks/train_fid_classifier.py`` rebuilds them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from edgekd.errors import MissingResourceError
from edgekd.paths import DEFAULT_FASHION_MNIST, resolve_builtin

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
BUILTIN_CLASSIFIER = "builtin:fid/fmnist-classifier"
TRAIN_SCRIPT = "python benchmarks/train_fid_classifier.py"
INPUT_RESOLUTION = 32
PAD_VALUE = -1.0


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU, then 2x2 max-pool: halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FashionClassifier(nn.Module):
    """CNN for [N, 1, 32, 32] images in [-1, 1]: three conv blocks, a dense embedding, then 10 logits.

    The channel widths are small on purpose: training must finish in a few minutes on one CPU thread, and
    the features only need to separate the ten classes and their styles, not win a benchmark.
    """

    def __init__(
        self,
        channels: tuple[int, ...] | list[int] = (16, 32, 64),
        embedding_dim: int = 128,
        num_classes: int = 10,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.embedding_dim = int(embedding_dim)
        self.num_classes = int(num_classes)
        self.dropout_p = float(dropout)
        blocks, cin = [], 1
        for cout in self.channels:
            blocks.append(_conv_block(cin, cout))
            cin = cout
        self.body = nn.Sequential(*blocks)
        side = INPUT_RESOLUTION // 2 ** len(self.channels)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, self.embedding_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(self.dropout_p)
        self.head = nn.Linear(self.embedding_dim, self.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate embedding [N, embedding_dim]: what the linear head (and FID) see."""
        return self.embed(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits [N, num_classes]."""
        return self.head(self.dropout(self.features(x)))

    def architecture(self) -> dict[str, Any]:
        """Everything needed to rebuild this module before loading its weights."""
        return {
            "name": type(self).__name__,
            "channels": list(self.channels),
            "embedding_dim": self.embedding_dim,
            "num_classes": self.num_classes,
            "dropout": self.dropout_p,
            "input_shape": [1, INPUT_RESOLUTION, INPUT_RESOLUTION],
            "input_range": [-1.0, 1.0],
            "pad_value": PAD_VALUE,
        }


def save_classifier(model: FashionClassifier, folder: str | Path, info: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``folder`` (created); returns the folder.

    ``info`` (accuracy, epochs, seed, ...) is stored beside the architecture so a shipped classifier says
    how it was made. Atomic replacement of an existing folder is the caller's job (write elsewhere, rename).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "architecture": model.architecture()["name"]})
    config = {"architecture": model.architecture(), **info}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    return folder


def load_classifier(path: str | Path = BUILTIN_CLASSIFIER) -> FashionClassifier:
    """Rebuild a saved classifier (``builtin:...`` accepted) in eval mode; a missing folder says how to make one."""
    folder = resolve_builtin(path)
    weights, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if not weights.is_file() or not config_path.is_file():
        missing = folder if not folder.is_dir() else (weights if not weights.is_file() else config_path)
        raise MissingResourceError(
            f"FID classifier not found: {missing} does not exist; create it with `{TRAIN_SCRIPT}` "
            f"(or point profile.feature_net at a folder holding {WEIGHTS_FILE} and {CONFIG_FILE})"
        )
    try:
        config = json.loads(config_path.read_text())
        arch = dict(config["architecture"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MissingResourceError(f"{config_path} is not a valid classifier config ({exc}); rebuild with `{TRAIN_SCRIPT}`") from None
    if arch.get("name") != FashionClassifier.__name__:
        raise MissingResourceError(f"{config_path} describes a {arch.get('name')!r}, not a {FashionClassifier.__name__}")
    model = FashionClassifier(
        channels=arch["channels"],
        embedding_dim=arch["embedding_dim"],
        num_classes=arch["num_classes"],
        dropout=arch.get("dropout", 0.0),
    )
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (RuntimeError, OSError) as exc:
        raise MissingResourceError(f"{weights} does not match {config_path} ({exc}); rebuild with `{TRAIN_SCRIPT}`") from None
    model.requires_grad_(False)
    return model.eval()


def to_classifier_input(images: Tensor) -> Tensor:
    """Bring images to the classifier's [N, 1, 32, 32] float in [-1, 1].

    uint8 images ([0, 255]) are rescaled; RGB becomes grey with Rec. 601 weights (they sum to 1, so [-1, 1]
    stays [-1, 1]); smaller images are centre-padded with -1 (how Fashion-MNIST's 28x28 is placed in 32x32,
    so a resize would shift the statistics); larger ones are resized with antialiasing.
    """
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
    channels = x.shape[1]
    if channels == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(dim=1, keepdim=True)
    elif channels != 1:
        raise ValueError(f"expected 1 or 3 channels, got {channels}")
    h, w = x.shape[-2:]
    r = INPUT_RESOLUTION
    if h > r or w > r:
        x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
    elif h < r or w < r:
        top, left = (r - h) // 2, (r - w) // 2
        x = F.pad(x, (left, r - w - left, top, r - h - top), value=PAD_VALUE)
    return x


class FeatureNet(nn.Module):
    """FID feature extractor for torchmetrics: images in [-1, 1] -> the classifier's embedding.

    ``num_features`` tells torchmetrics the embedding size so it does not probe the net with a random
    [0, 1] dummy image. The wrapped classifier is frozen and stays in eval mode even if a parent module
    calls ``train()`` (BatchNorm must use its running statistics, or FID would depend on the batch).
    """

    def __init__(self, classifier: FashionClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features: int = int(classifier.embedding_dim)

    @classmethod
    def from_path(cls, path: str | Path = BUILTIN_CLASSIFIER) -> "FeatureNet":
        """Load the classifier at ``path`` (``builtin:...`` accepted) and wrap it."""
        return cls(load_classifier(path))

    def train(self, mode: bool = True) -> "FeatureNet":
        """Ignore ``mode``: a feature network must never switch BatchNorm to batch statistics."""
        super().train(False)
        return self

    @property
    def device(self) -> torch.device:
        """Where the classifier's weights live (inputs are moved there)."""
        return next(self.classifier.parameters()).device

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Features [N, num_features] as float32 (torchmetrics accumulates them in float64)."""
        x = to_classifier_input(images.to(self.device))
        return self.classifier.features(x).float()


# --------------------------------------------------------------------------------------------- training


def _load_split(data_dir: str | Path, split: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """Images [N, 1, 32, 32] in [-1, 1] (edgekd's data convention) and int64 labels [N]."""
    from edgekd.data import load_dataset
    from edgekd.data.fashion_mnist import load_fashion_mnist
    from edgekd.recipe import DataConfig

    cfg = DataConfig(kind="fashion_mnist", path=str(data_dir), split=split, resolution=INPUT_RESOLUTION,
                     pad_value=PAD_VALUE, limit=limit)
    images = load_dataset(cfg)
    _, labels = load_fashion_mnist(Path(data_dir), split)
    labels = torch.from_numpy(labels[: images.shape[0]].astype("int64"))
    return images, labels


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (logits) on images in [-1, 1]; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, images.shape[0])


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Light augmentation: random horizontal flips and shifts of up to 2 pixels.

    Shifts use ``roll``: the 2-pixel -1 border of a padded 28x28 image means the wrap-around only moves
    background, so no interpolation or extra padding is needed.
    """
    n = x.shape[0]
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def train_classifier(
    data_dir: str | Path = DEFAULT_FASHION_MNIST,
    epochs: int = 3,
    seed: int = 0,
    batch_size: int = 128,
    *,
    lr: float = 3e-3,
    limit: int | None = None,
    threads: int | None = 1,
    on_epoch: Callable[[int, float, float], None] | None = None,
    progress: bool = True,
) -> tuple[FashionClassifier, float]:
    """Train a ``FashionClassifier`` on the train split; returns (model in eval mode, test-split accuracy).

    Adam with a one-cycle schedule reaches ~90% in three epochs, which on one CPU thread takes about three
    minutes. ``on_epoch(epoch, mean_loss, test_accuracy)`` is called after each epoch (for a report table).
    """
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        train_x, train_y = _load_split(data_dir, "train", limit)
        test_x, test_y = _load_split(data_dir, "test")
        model = FashionClassifier()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = math.ceil(train_x.shape[0] / batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.2
        )
        accuracy = 0.0
        bar = tqdm(total=epochs * steps_per_epoch, desc="fid classifier", unit="batch", disable=not progress)
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(train_x.shape[0], generator=generator)
            loss_sum, seen = 0.0, 0
            for start in range(0, train_x.shape[0], batch_size):
                idx = order[start : start + batch_size]
                x, y = _augment(train_x[idx], generator), train_y[idx]
                loss = F.cross_entropy(model(x), y, label_smoothing=0.05)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach()) * idx.numel()
                seen += idx.numel()
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.3f}")
            accuracy = evaluate_accuracy(model, test_x, test_y)
            bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.3f}", test_acc=f"{accuracy:.4f}")
            if on_epoch is not None:
                on_epoch(epoch, loss_sum / seen, accuracy)
        bar.close()
        model.eval().requires_grad_(False)
        return model, accuracy
    finally:
        torch.set_num_threads(previous_threads)


def file_size_bytes(folder: str | Path) -> int:
    """Total size of a saved classifier folder (the shipped asset must stay small)."""
    folder = resolve_builtin(folder)
    return sum(os.path.getsize(p) for p in Path(folder).iterdir() if p.is_file())


__all__ = [
    "BUILTIN_CLASSIFIER",
    "FashionClassifier",
    "FeatureNet",
    "evaluate_accuracy",
    "file_size_bytes",
    "load_classifier",
    "save_classifier",
    "to_classifier_input",
    "train_classifier",
]
