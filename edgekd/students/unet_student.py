"""A one-step UNet student: x_0 = z - net(z, t_first), the Denoising Student's epsilon-style parametrisation.

Initialised from the teacher (same architecture, same weights) or a slimmer UNet from scratch. The timestep is a
constant baked into the graph, so the exported model takes noise only.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgekd.models.spec import OneStepGraphs


class OneStepUNetStudent(OneStepGraphs, nn.Module):
    """``alpha_bar`` set (GDD's generator): x0 = (z - sqrt(1 - alpha_bar) * eps) / sqrt(alpha_bar), the teacher's
    own x0 prediction at ``timestep``, clamped to [-1, 1] in eval mode (what DDIM's clip_sample does, and what the
    export computes) and left raw in train mode, so a discriminator sees and penalises out-of-range pixels and
    every pixel keeps its gradient (see docs/gdd.md)."""

    def __init__(self, unet: nn.Module, timestep: int, alpha_bar: float | None = None):
        super().__init__()
        self.unet = unet
        self.timestep = int(timestep)
        self.graph_timestep = self.timestep
        self.alpha_bar = None if alpha_bar is None else float(alpha_bar)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        if self.alpha_bar is None:
            return noise - self.unet(noise, self.timestep).sample
        if torch.is_autocast_enabled(noise.device.type):  # 1/sqrt(alpha_bar) (~157) amplifies bf16 rounding
            with torch.autocast(noise.device.type, enabled=False):
                return self.forward(noise.float())
        eps = self.unet(noise, self.timestep).sample
        x0 = (noise - (1.0 - self.alpha_bar) ** 0.5 * eps) * (1.0 / self.alpha_bar ** 0.5)
        return x0 if self.training else x0.clamp(-1.0, 1.0)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        return (int(cfg.in_channels), int(size), int(size))

    def export_config(self) -> dict[str, Any]:
        if self.alpha_bar is not None:
            return {"kind": "one_step_unet", "timestep": self.timestep, "unet": dict(self.unet.config), **self._pruned(),
                    "alpha_bar": self.alpha_bar, "parametrisation":
                    "x0 = clamp((noise - sqrt(1 - alpha_bar) * unet(noise, timestep)) / sqrt(alpha_bar), -1, 1)"}
        return {"kind": "one_step_unet", "timestep": self.timestep, "unet": dict(self.unet.config), **self._pruned(),
                "parametrisation": "x0 = noise - unet(noise, timestep)"}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "OneStepUNetStudent":
        from diffusers import UNet2DModel

        unet_cfg = {k: v for k, v in config["unet"].items() if not k.startswith("_")}
        unet = UNet2DModel(**unet_cfg)
        if config.get("pruned"):  # channel-pruned by edgekd compress: config["unet"] is the unpruned build
            from edgekd.compress.prune import apply_structure

            apply_structure(unet, config["pruned"])
        return cls(unet, config["timestep"], config.get("alpha_bar"))

    def _pruned(self) -> dict[str, Any]:
        """``{"pruned": structure}`` when the UNet was channel-pruned (edgekd.compress.prune), else nothing."""
        structure = getattr(self.unet, "pruned_structure", None)
        return {"pruned": structure} if structure else {}


def build_unet_student(cfg: Any, teacher_unet: nn.Module, timestep: int) -> OneStepUNetStudent:
    """A student from the recipe's ``student:`` section (init: teacher copies, init: prune copies and channel-prunes
    (torch-pruning, DepGraph; the structure is saved with the student), init: scratch builds slim)."""
    from diffusers import UNet2DModel

    if cfg.init == "teacher":
        unet = copy.deepcopy(teacher_unet)
    elif cfg.init == "prune":
        from edgekd.compress.prune import prune_unet

        unet = prune_unet(teacher_unet, 1.0 - cfg.width, cfg.importance, timestep=timestep).float()
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
