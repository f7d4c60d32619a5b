"""A one-step UNet student: x_0 = z - net(z, t_first), the Denoising Student's epsilon-style parametrisation.

Initialised from the teacher (same architecture, same weights) or a slimmer UNet from scratch. The timestep is a
constant baked into the graph, so the exported model takes noise only.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class OneStepUNetStudent(nn.Module):
    def __init__(self, unet: nn.Module, timestep: int):
        super().__init__()
        self.unet = unet
        self.timestep = int(timestep)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return noise - self.unet(noise, self.timestep).sample

    @property
    def input_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        return (int(cfg.in_channels), int(size), int(size))

    def export_config(self) -> dict[str, Any]:
        return {"kind": "one_step_unet", "timestep": self.timestep, "unet": dict(self.unet.config),
                "parametrisation": "x0 = noise - unet(noise, timestep)"}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "OneStepUNetStudent":
        from diffusers import UNet2DModel

        unet_cfg = {k: v for k, v in config["unet"].items() if not k.startswith("_")}
        return cls(UNet2DModel(**unet_cfg), config["timestep"])


def build_unet_student(cfg: Any, teacher_unet: nn.Module, timestep: int) -> OneStepUNetStudent:
    """A student from the recipe's ``student:`` section (init: teacher copies, init: scratch builds slim)."""
    from diffusers import UNet2DModel

    if cfg.init == "teacher":
        unet = copy.deepcopy(teacher_unet)
    else:
        tc = teacher_unet.config
        levels = len(cfg.block_out_channels)
        down = tuple("AttnDownBlock2D" if cfg.attention and i == levels - 2 else "DownBlock2D" for i in range(levels))
        up = tuple("AttnUpBlock2D" if cfg.attention and i == 1 else "UpBlock2D" for i in range(levels))
        unet = UNet2DModel(sample_size=tc.sample_size, in_channels=tc.in_channels, out_channels=tc.out_channels,
                           block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                           down_block_types=down, up_block_types=up, norm_num_groups=cfg.norm_num_groups,
                           add_attention=cfg.attention, attention_head_dim=8)
    unet.requires_grad_(True).train()
    return OneStepUNetStudent(unet, timestep)
