"""Datasets: every source becomes a float tensor [N, C, R, R] in [-1, 1] with one transform."""

from __future__ import annotations

import numpy as np
import torch

from edgekd.data.fashion_mnist import load_fashion_mnist
from edgekd.data.images import load_image_folder, load_npz
from edgekd.errors import MissingResourceError
from edgekd.paths import resolve_builtin
from edgekd.recipe import DataConfig


def load_uint8_images(cfg: DataConfig) -> np.ndarray:
    """Images as uint8 [N, H, W, C] before padding/scaling."""
    path = resolve_builtin(cfg.path)
    if cfg.kind == "fashion_mnist":
        images, _ = load_fashion_mnist(path, cfg.split)
        images = images[..., None]
    elif cfg.kind == "folder":
        images = load_image_folder(path, cfg.channels, cfg.resolution, cfg.limit)
    else:
        images = load_npz(path, cfg.npz_key)
    if cfg.limit:
        images = images[: cfg.limit]
    if images.shape[-1] != cfg.channels:
        if cfg.channels == 3 and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        elif cfg.channels == 1 and images.shape[-1] == 3:
            images = np.round(images @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
        else:
            raise MissingResourceError(f"images have {images.shape[-1]} channels; data.channels is {cfg.channels}")
    return images


def to_model_range(images: np.ndarray, cfg: DataConfig) -> torch.Tensor:
    """uint8 [N,H,W,C] -> float [N,C,R,R] in [-1,1]; smaller images are padded with ``pad_value``.

    Padding (not resizing) keeps Fashion-MNIST's 28x28 pixels exact inside a 32x32 canvas, the convention of
    the shared teacher; larger images are resized.
    """
    x = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    h, w = x.shape[-2:]
    r = cfg.resolution
    if h > r or w > r:
        x = torch.nn.functional.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
    elif h < r or w < r:
        top, left = (r - h) // 2, (r - w) // 2
        x = torch.nn.functional.pad(x, (left, r - w - left, top, r - h - top), value=cfg.pad_value)
    return x.clamp_(-1, 1).contiguous()


def load_dataset(cfg: DataConfig) -> torch.Tensor:
    """The whole dataset in memory as float [N, C, R, R] in [-1, 1] (small datasets: that is the point)."""
    images = load_uint8_images(cfg)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise MissingResourceError(f"data {cfg.path}: expected uint8 images [N, H, W, C] with N >= 1, got "
                                   f"{images.dtype} {list(images.shape)}")
    x = to_model_range(images, cfg)
    if not torch.isfinite(x).all():  # only a non-finite data.pad_value could do this; refused here, not as 'diverged'
        raise MissingResourceError(f"data {cfg.path}: the images hold NaN or infinite values after padding; "
                                   "check data.pad_value")
    return x


def load_labels(cfg: DataConfig) -> torch.Tensor:
    """The class ids [N] (int64) aligned with ``load_dataset(cfg)``: Fashion-MNIST's idx label file beside its
    images (same split, same ``limit``); the other kinds carry no labels."""
    if cfg.kind != "fashion_mnist":
        raise MissingResourceError(f"data {cfg.path}: data.kind {cfg.kind} has no class labels (fashion_mnist has)")
    _, labels = load_fashion_mnist(resolve_builtin(cfg.path), cfg.split)
    if cfg.limit:
        labels = labels[: cfg.limit]
    return torch.from_numpy(labels.astype(np.int64))


def crop_box(cfg: DataConfig, source_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the original image inside the padded canvas."""
    h, w = source_hw
    r = cfg.resolution
    if h >= r and w >= r:
        return 0, 0, r, r
    return (r - h) // 2, (r - w) // 2, h, w
