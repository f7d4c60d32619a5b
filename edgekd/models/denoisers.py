"""Denoiser families: how each kind of diffusers network is called, what it outputs and what it is conditioned on.

Every family maps ``(x_t, t, condition)`` to the network's raw prediction with as many channels as ``x_t`` (DiT's
learned-sigma half is dropped, as DiTPipeline does). A student built from a teacher calls its network the same way,
so one module serves the teacher, the students initialised from it and their exported graphs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd.errors import MissingResourceError


def _size(cfg: Any) -> int:
    s = cfg.sample_size
    return int(s if isinstance(s, int) else s[0])


class DenoiserCall(nn.Module):
    """``(sample, timestep, condition=None) -> prediction`` for any supported diffusers denoiser."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.family = family_of(net)

    @property
    def config(self) -> Any:
        return self.net.config

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (int(self.net.config.in_channels), _size(self.net.config), _size(self.net.config))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        return call_denoiser(self.net, self.family, sample, timestep, condition)


def call_denoiser(net: nn.Module, family: str, sample: torch.Tensor, timestep: torch.Tensor | int,
                  condition: torch.Tensor | None = None) -> torch.Tensor:
    """The prediction of ``net`` (of ``family``) at (sample, timestep) given the condition (class ids or text
    embeddings; None for an unconditional network)."""
    if family == "unet2d":
        return net(sample, timestep, class_labels=condition).sample
    if family == "unet2d_condition":
        return net(sample, timestep, encoder_hidden_states=condition).sample
    if not torch.is_tensor(timestep) or timestep.dim() == 0:
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(1).expand(sample.shape[0])
    out = net(sample, timestep=timestep, class_labels=condition).sample
    return out[:, : sample.shape[1]]  # learned sigma: the variance half is not part of the ODE


def family_of(net: nn.Module) -> str:
    name = type(net).__name__
    if name == "UNet2DModel":
        return "unet2d"
    if name == "UNet2DConditionModel":
        return "unet2d_condition"
    if name in ("DiTTransformer2DModel", "Transformer2DModel"):
        return "dit"
    raise MissingResourceError(f"denoiser {name} is not supported (UNet2DModel, UNet2DConditionModel, DiT)")


def num_classes(net: nn.Module) -> tuple[int, int | None]:
    """(classes the network takes, the null label id for guidance or None); (0, None) when unconditional."""
    cfg = net.config
    name = type(net).__name__
    if name == "UNet2DModel":
        if cfg.get("num_class_embeds"):
            return int(cfg.num_class_embeds), None
        if cfg.get("class_embed_type"):
            raise MissingResourceError(f"UNet2DModel class_embed_type '{cfg.class_embed_type}' is not supported "
                                       "(edgekd takes num_class_embeds class labels)")
        return 0, None
    if name in ("DiTTransformer2DModel", "Transformer2DModel"):
        n = cfg.get("num_embeds_ada_norm")
        if not n:
            raise MissingResourceError(f"{name} without num_embeds_ada_norm is not a class-conditional DiT; "
                                       "edgekd runs DiT (ada-norm-zero with class labels)")
        # LabelEmbedding keeps one extra row (id = num_classes) as the null class when trained with dropout
        return int(n), int(n)
    if cfg.get("num_class_embeds") or cfg.get("class_embed_type"):
        raise MissingResourceError("UNet2DConditionModel with class embeddings is not supported (text only)")
    return 0, None


def load_denoiser(folder: Any, class_name: str) -> nn.Module:
    import diffusers

    cls = getattr(diffusers, class_name)
    return cls.from_pretrained(str(folder))
