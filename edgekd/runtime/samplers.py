"""The two samplers: one step (the graph's output is the image) and a deterministic DDIM loop whose every step
calls the graph the manifest names for it, with the update written from the manifest's own lists (what an app
does; diffusers' DDIMScheduler.step gives the same numbers: tests/test_runtime.py)."""

from __future__ import annotations

from typing import Any

import torch

from edgekd.runtime.steppers import Stepper


class OneStepSampler:
    """noise -> image in one call of one graph."""

    calls_per_image = 1

    def __init__(self, stepper: Stepper, input_name: str = "noise", name: str = "student"):
        self.stepper, self.input_name, self.name = stepper, input_name, name
        self.runtime = stepper.runtime

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.stepper(**{self.input_name: noise}).float()


class DDIMSampler:
    """Deterministic DDIM (eta 0) over epsilon graphs: ``steppers`` maps graph name -> stepper, ``sampling`` is the
    manifest's ddim section (timesteps, graph_per_step, alphas_cumprod, alphas_cumprod_prev, clip_sample[_range])."""

    def __init__(self, steppers: dict[str, Stepper], sampling: Any, name: str | None = None,
                 timestep_dtype: torch.dtype = torch.int64):
        self.steppers, self.s = dict(steppers), sampling
        missing = sorted(set(sampling.graph_per_step) - set(self.steppers))
        if missing:
            raise ValueError(f"sampling names graphs {missing} with no stepper")
        self.calls_per_image = len(sampling.timesteps)
        self.runtime = next(iter(self.steppers.values())).runtime
        n = len(self.steppers)
        self.name = name or (f"DDIM-{self.calls_per_image}" if n == 1 else f"{n} graphs DDIM-{self.calls_per_image}")
        self.timestep_dtype = timestep_dtype

    def eps(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Epsilon of step ``k`` from the graph that owns it."""
        t = torch.full((x.shape[0],), int(self.s.timesteps[k]), dtype=self.timestep_dtype)
        return self.steppers[self.s.graph_per_step[k]](sample=x, timestep=t).float()

    @torch.no_grad()
    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        x = noise.float()
        for k in range(len(self.s.timesteps)):
            eps = self.eps(x, k)
            a = torch.tensor(self.s.alphas_cumprod[k], dtype=torch.float32)
            a_prev = torch.tensor(self.s.alphas_cumprod_prev[k], dtype=torch.float32)
            x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
            if self.s.clip_sample:
                x0 = x0.clamp(-self.s.clip_sample_range, self.s.clip_sample_range)
            x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        return x
