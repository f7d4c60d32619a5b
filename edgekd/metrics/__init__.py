"""Image metrics every layer shares (parity, profile, methods): below export and profile, importing only torch.

FID and its feature network stay in edgekd/profile/quality.py and classifier.py for now (docs/design.md, Layers).
"""

from __future__ import annotations

import math

from torch import Tensor


def psnr(reference: Tensor, test: Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels: 10·log10(range² / MSE); ``inf`` when identical.

    ``data_range`` is 2.0 because edgekd's images live in [-1, 1]. Computed in float64 so high-PSNR parity
    checks (40+ dB) are not limited by float32 round-off in the mean.
    """
    if reference.shape != test.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(reference.shape)} vs {tuple(test.shape)}")
    if reference.numel() == 0:
        raise ValueError("psnr: empty tensors")
    if data_range <= 0:
        raise ValueError(f"psnr: data_range must be > 0, got {data_range}")
    diff = reference.detach().double() - test.detach().double().to(reference.device)
    mse = float(diff.square().mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def max_abs_error(a: Tensor, b: Tensor) -> float:
    """Largest absolute element-wise difference: the worst pixel, which a mean such as PSNR can hide."""
    if a.shape != b.shape:
        raise ValueError(f"max_abs_error: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    return float((a.detach().double() - b.detach().double().to(a.device)).abs().max())
