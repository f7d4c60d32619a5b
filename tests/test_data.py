"""Datasets: Fashion-MNIST idx files, image folders and .npz, all to [-1, 1] with one transform."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from edgekd.data import load_dataset
from edgekd.data.fashion_mnist import read_idx
from edgekd.errors import MissingResourceError
from edgekd.recipe import DataConfig
from edgekd_testing import FMNIST, needs_fmnist


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_padding(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    x = load_dataset(DataConfig(path=str(tmp_path), resolution=32))
    assert x.shape == (5, 1, 32, 32)
    assert float(x[:, :, :2].max()) == -1.0 and float(x[:, :, :, 30:].max()) == -1.0  # padded with background
    assert np.allclose(((x[:, 0, 2:30, 2:30] + 1) * 127.5).round().numpy(), images)


def test_truncated_idx_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(MissingResourceError, match="truncated"):
        read_idx(path)


def test_image_folder_and_npz(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    x = load_dataset(DataConfig(kind="folder", path=str(tmp_path / "imgs"), channels=3, resolution=16))
    assert x.shape == (3, 3, 16, 16) and abs(float(x[2].mean()) - (120 / 127.5 - 1)) < 1e-2
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 16, 16), dtype=np.uint8))
    x = load_dataset(DataConfig(kind="npz", path=str(tmp_path / "d.npz"), resolution=16))
    assert x.shape == (4, 1, 16, 16) and float(x.max()) == -1.0
    with pytest.raises(MissingResourceError, match="has no array 'pixels'"):
        load_dataset(DataConfig(kind="npz", path=str(tmp_path / "d.npz"), npz_key="pixels"))
    with pytest.raises(MissingResourceError, match="no PNG/JPEG images"):
        load_dataset(DataConfig(kind="folder", path=str(tmp_path / "d.npz.missing")))


@needs_fmnist
def test_real_fashion_mnist() -> None:
    x = load_dataset(DataConfig(path=str(FMNIST), split="test", limit=100))
    assert x.shape == (100, 1, 32, 32) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
