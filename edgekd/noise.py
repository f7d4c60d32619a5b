"""The noise convention shared by trajectories, training, parity checks and profiling.

Image ``i`` of a seed ``s`` is always ``torch.randn(shape, generator=torch.Generator().manual_seed(s + i))``,
so any range of indices can be regenerated in any batch size, shard or process, and every generator
(teacher, student, ONNX, LiteRT) sees bit-identical noise.
"""

from __future__ import annotations

import torch


def make_noise(seed: int, start: int, count: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard-normal float32 noise [count, *shape] for indices start..start+count-1 of ``seed``."""
    out = torch.empty((count, *shape), dtype=torch.float32)
    gen = torch.Generator(device="cpu")
    for i in range(count):
        gen.manual_seed(seed + start + i)
        out[i] = torch.randn(shape, generator=gen)
    return out
