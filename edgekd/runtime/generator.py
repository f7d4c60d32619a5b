"""The Generator contract: anything that maps noise [N,C,H,W] (and, for a conditional model, condition ids: class
ids or token ids) to images [N,C,H,W] in [-1, 1].

Profiling, FID, sample grids and export parity are written once against it, so "student against teacher" and
"export against torch" are the same loop.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Generator(Protocol):
    name: str
    runtime: str
    calls_per_image: int

    def generate(self, noise: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor: ...


def generate_batched(gen: Generator, noise: torch.Tensor, batch_size: int = 128, progress: str | None = None,
                     condition: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``gen`` over ``noise`` (and its ``condition`` ids, one per image) in batches (optionally with a
    progress bar)."""
    from tqdm.auto import tqdm

    outs = []
    bar = tqdm(total=len(noise), desc=progress, unit="img", dynamic_ncols=True, disable=progress is None, leave=False)
    for i in range(0, len(noise), batch_size):
        if condition is None:
            outs.append(gen.generate(noise[i : i + batch_size]).float())
        else:
            outs.append(gen.generate(noise[i : i + batch_size], condition[i : i + batch_size]).float())
        bar.update(len(outs[-1]))
    bar.close()
    return torch.cat(outs)
