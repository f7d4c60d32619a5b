"""Portable seeded noise (``mulberry32-boxmuller-v1``) that JavaScript, Kotlin and Swift apps reproduce exactly.

Torch's generator cannot be re-implemented in an app, so the apps' "same seed, same pixels" promise rests on this
small generator instead; docs/manifest-v3.md gives the algorithm, ``apps/golden/portable-noise.json`` golden values.
"""

from __future__ import annotations

import math

import numpy as np

NAME = "mulberry32-boxmuller-v1"
_MASK = 0xFFFFFFFF


def _imul(a: int, b: int) -> int:
    return (a * b) & _MASK


class Mulberry32:
    """The 32-bit mulberry32 generator; every operation wraps at 2**32 as in the apps."""

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next_uint32(self) -> int:
        self.state = (self.state + 0x6D2B79F5) & _MASK
        t = self.state
        t = _imul(t ^ (t >> 15), t | 1)
        t = (t ^ ((t + _imul(t ^ (t >> 7), t | 61)) & _MASK)) & _MASK
        return (t ^ (t >> 14)) & _MASK

    def next_unit(self) -> float:
        return self.next_uint32() / 4294967296.0


def portable_normals(seed: int, count: int) -> np.ndarray:
    """``count`` standard normals (float32) from ``seed`` by Box-Muller, z0 then z1 for each pair."""
    rng = Mulberry32(seed)
    out = np.empty(count + (count & 1), dtype=np.float64)
    for i in range(0, len(out), 2):
        u1 = 1.0 - rng.next_unit()
        u2 = rng.next_unit()
        r = math.sqrt(-2.0 * math.log(u1))
        out[i] = r * math.cos(2.0 * math.pi * u2)
        out[i + 1] = r * math.sin(2.0 * math.pi * u2)
    return out[:count].astype(np.float32)


def portable_noise(seed: int, start: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """Noise [count, *shape] for images start..start+count-1 of ``seed`` (image i uses seed s + i)."""
    size = int(np.prod(shape))
    return np.stack([portable_normals((seed + start + i) & _MASK, size).reshape(shape) for i in range(count)])
