"""Sample grids as PNG: rows of images, optionally labelled, so teacher and student sit side by side."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor, crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """[-1,1] float [N,C,H,W] -> uint8 [N,H,W,C], optionally cropped to (top, left, h, w)."""
    x = images.detach().float().cpu().clamp(-1, 1)
    if crop is not None:
        top, left, h, w = crop
        x = x[..., top : top + h, left : left + w]
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, ncol: int | None = None, pad: int = 2, scale: int = 2,
               crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    arr = to_uint8(images, crop)
    n, h, w, c = arr.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = arr[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def labelled_rows(rows: dict[str, torch.Tensor], path: Path, ncol: int = 8, scale: int = 3,
                  crop: tuple[int, int, int, int] | None = None) -> Path:
    """One labelled block per entry (e.g. teacher / student on the same noise), stacked vertically, as PNG."""
    from PIL import Image, ImageDraw

    blocks = []
    for label, images in rows.items():
        grid = image_grid(images[:ncol * max(1, len(images) // ncol)], ncol=ncol, scale=scale, crop=crop)
        if grid.shape[-1] == 1:
            grid = np.repeat(grid, 3, axis=-1)
        header = Image.new("RGB", (grid.shape[1], 16), "white")
        ImageDraw.Draw(header).text((4, 2), label, fill="black")
        blocks.append(np.concatenate([np.asarray(header), grid], axis=0))
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(np.concatenate(blocks, axis=0)).save(tmp)
    tmp.replace(path)
    return path
