"""Fashion-MNIST read straight from its idx(.gz) files (where Debian's dataset-fashion-mnist puts them)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from edgekd.errors import MissingResourceError

_PREFIX = {"train": "train", "test": "t10k"}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def idx_files(folder: Path, split: str) -> tuple[Path, Path]:
    """The image and label files of ``split``; prefers the .gz files, accepts unpacked ones."""
    prefix = _PREFIX[split]
    out = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        gz = folder / f"{prefix}-{kind}.gz"
        plain = folder / f"{prefix}-{kind}"
        out.append(plain if plain.is_file() and not gz.is_file() else gz)
    return out[0], out[1]


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file (magic, dims, big-endian sizes, then uint8 data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise MissingResourceError(
            f"Fashion-MNIST file {path} not found: install Debian's dataset-fashion-mnist "
            "or set data.path to the folder holding the idx .gz files"
        ) from None
    except (OSError, EOFError) as exc:
        raise MissingResourceError(f"{path} is not a readable idx file ({exc})") from None
    if len(data) < 4:
        raise MissingResourceError(f"{path} is not an idx file (too short)")
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise MissingResourceError(f"{path} is not a uint8 idx file (bad magic number)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise MissingResourceError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {array.size}")
    return array.reshape(dims)


def load_fashion_mnist(folder: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, 28, 28], labels uint8 [N])."""
    images, labels = idx_files(Path(folder), split)
    return read_idx(images), read_idx(labels)
