"""The contract every model fulfils: ``graphs()`` (what to export, one entry per network) and ``sampling()``
(how those networks make an image: one call, or a DDIM loop choosing the graph per timestep).

A one-step student is one graph ``noise -> image`` with ``OneStep``; the teacher's step and every O2MKD student are
``(sample, timestep) -> epsilon`` graphs driven by ``DDIMLoop``. One graph is simply the N = 1 case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Union

import torch
from torch import nn

DDIM_UPDATE = ("x0 = (x - sqrt(1-a) eps) / sqrt(a); clip x0 to [-clip_sample_range, clip_sample_range] if "
               "clip_sample; x = sqrt(a') x0 + sqrt(1-a') eps; image = last x (a = alphas_cumprod[k], "
               "a' = alphas_cumprod_prev[k]: diffusers DDIMScheduler.step, eta 0)")


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, per-item shape (no batch) and dtype as traced (``timestep``: int64 [B])."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    high: int | None = None  # an integer input's values are 0..high-1 (class ids)


@dataclass
class GraphSpec:
    """One exportable network: ``module(*inputs) -> output``."""

    name: str
    module: nn.Module
    inputs: list[InputSpec]
    output: str
    timestep: int = 999  # the timestep fed to a step graph's example inputs

    @property
    def is_step(self) -> bool:
        return any(i.name == "timestep" for i in self.inputs)

    def example(self, batch: int) -> dict[str, torch.Tensor]:
        """Example inputs at ``batch`` (what torch.export traces)."""
        out: dict[str, torch.Tensor] = {}
        for spec in self.inputs:
            if spec.name == "timestep":
                out[spec.name] = torch.full((batch,), self.timestep, dtype=spec.dtype)
            elif spec.high is not None:
                count = batch * max(1, int(torch.tensor(spec.shape).prod())) if spec.shape else batch
                out[spec.name] = (torch.arange(count, dtype=spec.dtype) % spec.high).reshape(batch, *spec.shape)
            else:
                out[spec.name] = torch.randn(batch, *spec.shape)
        return out

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.inputs[0].shape


@dataclass(frozen=True)
class OneStep:
    """Call ``graph`` on the noise; its output is the image."""

    graph: str
    kind: str = "one_step"

    def steps(self) -> int:
        return 1


@dataclass(frozen=True)
class DDIMLoop:
    """A deterministic DDIM loop (eta 0) over epsilon graphs; ``route(t)`` names the graph that runs timestep t."""

    scheduler_config: dict[str, Any]
    num_steps: int
    spacing: str
    graph_names: tuple[str, ...]
    boundaries: tuple[int, ...] = ()  # graph i owns edges[i] <= t < edges[i+1], edges = [0, *boundaries, T]
    kind: str = "ddim"

    def steps(self) -> int:
        return self.num_steps

    def scheduler(self) -> Any:
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler_config, timestep_spacing=self.spacing)
        sched.set_timesteps(self.num_steps)
        return sched

    def owned_ranges(self) -> list[tuple[int, int]]:
        """(first, last) timestep each graph owns, inclusive: edges [0, *boundaries, T]."""
        edges = [0, *self.boundaries, int(self.scheduler_config["num_train_timesteps"])]
        return [(edges[i], edges[i + 1] - 1) for i in range(len(self.graph_names))]

    def route(self, t: int) -> str:
        import bisect

        return self.graph_names[bisect.bisect_right(list(self.boundaries), int(t))]

    def lists(self) -> dict[str, Any]:
        """What an app needs to run the loop without diffusers: timesteps, the graph per step and both alphas per
        step exactly as DDIMScheduler.step takes them."""
        sched = self.scheduler()
        timesteps = [int(t) for t in sched.timesteps]
        offset = int(sched.config.num_train_timesteps) // self.num_steps
        a, a_prev = [], []
        for t in timesteps:
            a.append(float(sched.alphas_cumprod[t]))
            prev = t - offset
            a_prev.append(float(sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod))
        return {"timesteps": timesteps, "graph_per_step": [self.route(t) for t in timesteps],
                "alphas_cumprod": a, "alphas_cumprod_prev": a_prev,
                "clip_sample": bool(sched.config.clip_sample),
                "clip_sample_range": float(sched.config.clip_sample_range)}


Sampling = Union[OneStep, DDIMLoop]


class DescribedModel(Protocol):
    """What every exportable model offers (one-step students, layerwise, teacher step, O2MKD)."""

    def graphs(self) -> list[GraphSpec]: ...

    def sampling(self) -> Sampling: ...


class OneStepGraphs:
    """Mixin for students that map noise to an image in one call: one graph named ``student``.

    ``graph_timestep``: the timestep the network is exercised at (a one-step UNet student's own timestep; taylor
    pruning scores channels there). ``outputs(noise)``: every output to distill (a layerwise student: every head)."""

    graph_timestep: int = 999

    def graphs(self) -> list[GraphSpec]:
        return [GraphSpec("student", self, [InputSpec("noise", tuple(self.input_shape))], "image",  # type: ignore[attr-defined,arg-type]
                          self.graph_timestep)]

    def sampling(self) -> Sampling:
        return OneStep("student")

    def outputs(self, noise: torch.Tensor) -> list[torch.Tensor]:
        return [self(noise)]  # type: ignore[operator]


class EpsilonStep(nn.Module):
    """One denoising step of a diffusers UNet: (sample, int64 timestep [B]) -> epsilon, the exported step graph."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep).sample


def step_graph(name: str, unet: nn.Module, shape: tuple[int, ...], timestep: int = 999) -> GraphSpec:
    """A (sample, timestep) -> epsilon graph; ``timestep``: where it is exercised (the middle of what it owns)."""
    return GraphSpec(name, EpsilonStep(unet), [InputSpec("sample", tuple(shape)),
                                                      InputSpec("timestep", (), torch.int64)], "epsilon", timestep)


class TeacherStepModel:
    """The teacher as an exportable model: one step graph, sampled with DDIM at the recipe's step count."""

    def __init__(self, teacher: Any, steps: int, spacing: str = "trailing"):
        self.teacher, self.steps, self.spacing = teacher, int(steps), spacing

    def graphs(self) -> list[GraphSpec]:
        return [step_graph("teacher_step", self.teacher.unet, tuple(self.teacher.sample_shape))]

    def sampling(self) -> Sampling:
        return DDIMLoop(dict(self.teacher.scheduler_config), self.steps, self.spacing, ("teacher_step",))
