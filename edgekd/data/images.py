"""Image folders (PNG/JPEG) and .npz arrays as uint8 [N, H, W, C] arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.errors import MissingResourceError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_image_folder(folder: Path, channels: int, resolution: int, limit: int | None = None) -> np.ndarray:
    """Read every image under ``folder`` (recursively), converted to ``channels`` and resized to fit."""
    from PIL import Image

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingResourceError(f"no PNG/JPEG images found under {folder}")
    files = files[:limit] if limit else files
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(files), resolution, resolution, channels), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                img = _center_square(img).resize((resolution, resolution), Image.Resampling.BICUBIC)
                out[i] = np.asarray(img).reshape(resolution, resolution, channels)
        except OSError as exc:
            raise MissingResourceError(f"cannot read image {path} ({exc})") from None
    return out


def _center_square(img):  # type: ignore[no-untyped-def]
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def load_npz(path: Path, key: str) -> np.ndarray:
    """Read uint8 images [N, H, W] or [N, H, W, C] (or [N, C, H, W]) from an .npz file."""
    try:
        with np.load(path) as data:
            if key not in data:
                raise MissingResourceError(f"{path} has no array '{key}' (it has: {', '.join(data.files)}); set data.npz_key")
            array = data[key]
    except (OSError, ValueError) as exc:
        raise MissingResourceError(f"cannot read {path} as .npz ({exc})") from None
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise MissingResourceError(f"{path}:{key} must be [N,H,W] or [N,H,W,C], got shape {array.shape}")
    if array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    return as_uint8(array, f"{path}:{key}")


def as_uint8(array: np.ndarray, what: str) -> np.ndarray:
    """uint8 as it is; other arrays only when their values say unambiguously what they are, else one clear error.

    Accepted: integers in 0..255, floats in [0, 1] (scaled by 255) and whole-number floats in 0..255. Clipping
    anything else (e.g. [-1, 1] or 0..65535) would train on garbage without a word."""
    if array.dtype == np.uint8:
        return array
    fix = "save uint8 images (0..255), or floats in [0, 1]"
    if array.size == 0:
        raise MissingResourceError(f"{what} is empty")
    if array.dtype.kind not in "iuf":
        raise MissingResourceError(f"{what} has dtype {array.dtype}, not image values; {fix}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise MissingResourceError(f"{what} holds {bad} NaN or infinite value(s); {fix}")
    lo, hi = float(array.min()), float(array.max())
    if array.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return np.round(array * 255.0).astype(np.uint8)
    if lo >= 0 and hi <= 255 and (array.dtype.kind in "iu" or bool(np.all(array == np.round(array)))):
        return array.astype(np.uint8)
    raise MissingResourceError(f"{what} has {array.dtype} values in [{lo:g}, {hi:g}], which is neither uint8 0..255 "
                               f"nor floats in [0, 1]; {fix}")
