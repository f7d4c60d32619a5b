"""The Generator contract: anything that maps noise [N,C,H,W] to images [N,C,H,W] in [-1, 1].

Profiling, FID, sample grids and export parity are written once against it, so "student against teacher" and
"export against torch" are the same loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from edgekd.teachers.diffusers_teacher import DiffusionTeacher, ddim_sample


class Generator(Protocol):
    name: str
    runtime: str
    calls_per_image: int

    def generate(self, noise: torch.Tensor) -> torch.Tensor: ...


class TorchStudent:
    """A one-step torch student (any nn.Module taking noise)."""

    calls_per_image = 1
    runtime = "torch"

    def __init__(self, model: nn.Module, name: str = "student"):
        self.model = model.eval()
        self.name = name

    @torch.no_grad()
    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.model(noise).float()


class TorchTeacher:
    """The teacher sampled with deterministic DDIM for ``steps`` steps."""

    runtime = "torch"

    def __init__(self, teacher: DiffusionTeacher, steps: int, spacing: str = "trailing"):
        self.teacher, self.steps, self.spacing = teacher, steps, spacing
        self.calls_per_image = steps
        self.name = f"teacher DDIM-{steps}"

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.teacher.sample(noise, self.steps, self.spacing)[0]


def ort_session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxStudent:
    """A one-step student exported to ONNX, run in onnxruntime on the CPU."""

    calls_per_image = 1

    def __init__(self, path: Path, threads: int | None = None, name: str = "student"):
        self.session = ort_session(path, threads)
        self.input = self.session.get_inputs()[0].name
        self.name = name
        self.runtime = f"onnxruntime{'' if threads is None else f' {threads}t'}"

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: np.ascontiguousarray(noise.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)


class OnnxTeacher:
    """The teacher's exported denoising step in onnxruntime, driven by diffusers' DDIM scheduler."""

    def __init__(self, path: Path, scheduler_config: dict[str, Any], steps: int, threads: int | None = None,
                 spacing: str = "trailing"):
        self.session = ort_session(path, threads)
        self.scheduler_config, self.steps, self.spacing = scheduler_config, steps, spacing
        self.calls_per_image = steps
        self.name = f"teacher DDIM-{steps}"
        self.runtime = f"onnxruntime{'' if threads is None else f' {threads}t'}"

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ts = np.full((x.shape[0],), int(t), dtype=np.int64)
        out = self.session.run(None, {"sample": np.ascontiguousarray(x.numpy(), dtype=np.float32), "timestep": ts})[0]
        return torch.from_numpy(out)

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return ddim_sample(self.scheduler_config, self._eps, noise, self.steps, self.spacing)[0]


def generate_batched(gen: Generator, noise: torch.Tensor, batch_size: int = 128, progress: str | None = None) -> torch.Tensor:
    """Run ``gen`` over ``noise`` in batches (optionally with a progress bar)."""
    from tqdm.auto import tqdm

    outs = []
    bar = tqdm(total=len(noise), desc=progress, unit="img", dynamic_ncols=True, disable=progress is None, leave=False)
    for i in range(0, len(noise), batch_size):
        outs.append(gen.generate(noise[i : i + batch_size]).float())
        bar.update(len(outs[-1]))
    bar.close()
    return torch.cat(outs)
