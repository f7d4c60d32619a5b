"""Cost measurements: latency per image (median of repeats), parameters, MACs, file size."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from edgekd.runtime.generator import Generator


def latency_ms(gen: Generator, noise: torch.Tensor, repeats: int, warmup: int = 1) -> float:
    """Median wall time (ms) of generating ``noise`` (one image by default) over ``repeats`` runs."""
    for _ in range(warmup):
        gen.generate(noise)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen.generate(noise)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times) / len(noise)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, *inputs: object) -> int:
    """Multiply-accumulates of one forward pass (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return int(counter.get_total_flops() // 2)


def file_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
