"""The forward process q(x_t | x_0), through diffusers' own ``add_noise`` (not written out by hand)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.lru_cache(maxsize=4)
def _scheduler(num_train_timesteps: int):  # noqa: ANN202
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps)


def add_noise(alphas_cumprod: Tensor, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise with the teacher's ``alphas_cumprod`` (any schedule):
    diffusers' ``SchedulerMixin.add_noise`` on a scheduler carrying exactly these alphas."""
    sched = _scheduler(len(alphas_cumprod))
    sched.alphas_cumprod = torch.as_tensor(alphas_cumprod)
    return sched.add_noise(x0, noise, torch.as_tensor(t).long())
