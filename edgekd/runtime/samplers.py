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

    def __init__(self, stepper: Stepper, input_name: str = "noise", name: str = "student",
                 condition_name: str | None = None):
        self.stepper, self.input_name, self.name = stepper, input_name, name
        self.condition_name = condition_name
        self.runtime = stepper.runtime

    def generate(self, noise: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        feeds = {self.input_name: noise}
        if self.condition_name is not None:
            if condition is None:
                raise ValueError(f"graph input {self.condition_name} (the condition) is not given")
            feeds[self.condition_name] = condition
        return self.stepper(**feeds).float()


class DDIMSampler:
    """Deterministic DDIM (eta 0) over epsilon graphs: ``steppers`` maps graph name -> stepper, ``sampling`` is the
    manifest's ddim section (timesteps, graph_per_step, alphas_cumprod, alphas_cumprod_prev, clip_sample[_range])."""

    def __init__(self, steppers: dict[str, Stepper], sampling: Any, name: str | None = None,
                 timestep_dtype: torch.dtype = torch.int64, condition_name: str | None = None):
        self.steppers, self.s = dict(steppers), sampling
        self.condition_name = condition_name  # a conditional step graph's condition input (fed at every step)
        missing = sorted(set(sampling.graph_per_step) - set(self.steppers))
        if missing:
            raise ValueError(f"sampling names graphs {missing} with no stepper")
        self.calls_per_image = len(sampling.timesteps)
        self.runtime = next(iter(self.steppers.values())).runtime
        n = len(self.steppers)
        self.name = name or (f"DDIM-{self.calls_per_image}" if n == 1 else f"{n} graphs DDIM-{self.calls_per_image}")
        self.timestep_dtype = timestep_dtype

    def eps(self, x: torch.Tensor, k: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Epsilon of step ``k`` from the graph that owns it."""
        t = torch.full((x.shape[0],), int(self.s.timesteps[k]), dtype=self.timestep_dtype)
        feeds = {"sample": x, "timestep": t}
        if self.condition_name is not None:
            if condition is None:
                raise ValueError(f"step graph input {self.condition_name} (the condition) is not given")
            feeds[self.condition_name] = condition
        return self.steppers[self.s.graph_per_step[k]](**feeds).float()

    @torch.no_grad()
    def generate(self, noise: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is not None and self.condition_name is None:
            raise ValueError("these step graphs take no condition")
        x = noise.float()
        for k in range(len(self.s.timesteps)):
            eps = self.eps(x, k, condition)
            a = torch.tensor(self.s.alphas_cumprod[k], dtype=torch.float32)
            a_prev = torch.tensor(self.s.alphas_cumprod_prev[k], dtype=torch.float32)
            x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
            if self.s.clip_sample:
                x0 = x0.clamp(-self.s.clip_sample_range, self.s.clip_sample_range)
            x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        return x


class PipelineGenerator:
    """condition encoder -> denoiser sampler -> decoder (edgekd.models.stages): ``condition`` is what the user
    picked, as ids: class ids [B], or token ids [B, L] that the text-encoder graph turns into the denoiser's
    encoder_hidden_states. The output is the picture (decoded when the model makes latents)."""

    def __init__(self, inner: Any, text: Stepper | None = None, decoder: Stepper | None = None,
                 condition_kind: str | None = None, num_classes: int | None = None,
                 prompt_tokens: torch.Tensor | None = None):
        self.inner, self.text, self.decoder, self.condition_kind = inner, text, decoder, condition_kind
        self.num_classes, self.prompt_tokens = num_classes, prompt_tokens  # [P, L] token ids of the prompt list
        self.name, self.runtime, self.calls_per_image = inner.name, inner.runtime, inner.calls_per_image

    def default_condition(self, n: int) -> torch.Tensor | None:
        """edgekd's convention when no condition is given: image i gets class i mod K / prompt i mod P."""
        if self.condition_kind == "class" and self.num_classes:
            return torch.arange(n, dtype=torch.int64) % self.num_classes
        if self.condition_kind == "text" and self.prompt_tokens is not None:
            return torch.arange(n, dtype=torch.int64) % len(self.prompt_tokens)
        return None

    @torch.no_grad()
    def generate(self, noise: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``condition``: class ids [B]; for a text model token ids [B, L], or prompt indices [B] into its
        prompt list; None: ``default_condition``."""
        if condition is None:
            condition = self.default_condition(len(noise))
        if self.condition_kind is not None and condition is None:
            raise ValueError(f"this model is {self.condition_kind}-conditional: a condition is needed")
        cond = condition
        if self.text is not None and condition is not None:
            if condition.dim() == 1:
                if self.prompt_tokens is None:
                    raise ValueError("prompt indices given but this pipeline has no prompt list")
                condition = self.prompt_tokens[condition.long()]
            cond = self.text(input_ids=condition).float()
        x = self.inner.generate(noise, cond)
        return self.decoder(latents=x).float() if self.decoder is not None else x
