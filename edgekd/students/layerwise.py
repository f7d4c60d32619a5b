"""The layerwise-denoising student of Adv-KD: a static conv graph whose layers do the denoising.

No timestep input. To keep edgekd's Generator contract (noise [N,C,H,W] -> image [N,C,H,W], what export, profile
and parity use), ``forward`` takes the teacher's FULL-resolution starting noise and downsamples it inside the graph
to ``input_size`` (average pooling times the pooling factor, so i.i.d. unit-variance noise stays unit-variance).
A trunk of K blocks follows (Conv3x3 + BatchNorm + LeakyReLU, or a stride-2 ConvTranspose4x4 up-block +
BatchNorm + LeakyReLU, then ``convs_per_block - 1`` more Conv3x3 + BN + LeakyReLU); the resolution grows with depth.
Block k has a small head (Conv3x3 + BN + LeakyReLU + Conv3x3 -> image channels + Tanh, times a constant
``out_scales[k]`` when the teacher's state at that point leaves [-1, 1]) trained to predict the teacher's state at
the k-th recorded time point, at that block's resolution.

``forward`` runs the trunk and the LAST head only: the exported graph holds AveragePool, Mul, Conv,
ConvTranspose, BatchNormalization (folded at export), LeakyRelu and Tanh, nothing else. ``heads(noise)`` returns
every head's output (training and the layer-by-layer previews).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd.models.spec import OneStepGraphs


def block_resolutions(input_size: int, num_blocks: int, up_blocks: list[int]) -> list[int]:
    """The output resolution of every block: the input size doubled at each up-block."""
    res, out = input_size, []
    for k in range(num_blocks):
        if k in up_blocks:
            res *= 2
        out.append(res)
    return out


def default_up_blocks(input_size: int, image_size: int) -> list[int]:
    """As in the official code (block k at 2**(k//2+3) px from a 4x4 input): up-blocks at indices 0, 2, 4, ..."""
    ups, size = 0, input_size
    while size < image_size:
        size *= 2
        ups += 1
    return [2 * i for i in range(ups)]


def _conv_bn_act(cin: int, cout: int, slope: float, up: bool = False) -> list[nn.Module]:
    conv: nn.Module = (nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False) if up
                       else nn.Conv2d(cin, cout, 3, padding=1, bias=False))
    return [conv, nn.BatchNorm2d(cout), nn.LeakyReLU(slope)]


class Head(nn.Module):
    """Conv3x3 + BN + LeakyReLU + Conv3x3 -> image channels + Tanh (times a constant scale when it is not 1)."""

    def __init__(self, cin: int, hidden: int, out_channels: int, slope: float, scale: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(*_conv_bn_act(cin, hidden, slope), nn.Conv2d(hidden, out_channels, 3, padding=1),
                                 nn.Tanh())
        self.scale = float(scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.net(h)
        return out * self.scale if self.scale != 1.0 else out


class LayerwiseStudent(OneStepGraphs, nn.Module):
    """Noise [N,C,S,S] -> image [N,C,S,S] in one pass of a growing conv trunk; per-block heads for training."""

    def __init__(self, image_channels: int, image_size: int, input_size: int, channels: list[int],
                 up_blocks: list[int], convs_per_block: int = 1, head_channels: int | None = None,
                 negative_slope: float = 0.2, out_scales: list[float] | None = None):
        super().__init__()
        res = block_resolutions(input_size, len(channels), up_blocks)
        if image_size % input_size or res[-1] != image_size:
            raise ValueError(f"input {input_size}px with up-blocks {up_blocks} ends at {res[-1]}px, not {image_size}px")
        self.image_channels, self.image_size, self.input_size = image_channels, image_size, input_size
        self.channels, self.up_blocks = list(channels), sorted(up_blocks)
        self.convs_per_block, self.head_channels, self.negative_slope = convs_per_block, head_channels, negative_slope
        self.out_scales = [float(s) for s in (out_scales or [1.0] * len(channels))]
        if len(self.out_scales) != len(channels):
            raise ValueError(f"out_scales has {len(self.out_scales)} entries for {len(channels)} blocks")
        self.resolutions = res
        factor = image_size // input_size
        self.pool_factor = factor
        self.down = nn.AvgPool2d(factor) if factor > 1 else nn.Identity()
        blocks, heads, cin = [], [], image_channels
        for k, cout in enumerate(channels):
            layers = _conv_bn_act(cin, cout, negative_slope, up=k in self.up_blocks)
            for _ in range(convs_per_block - 1):
                layers += _conv_bn_act(cout, cout, negative_slope)
            blocks.append(nn.Sequential(*layers))
            hidden = head_channels or max(8, cout // 2)
            heads.append(Head(cout, hidden, image_channels, negative_slope, self.out_scales[k]))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head_modules = nn.ModuleList(heads)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_channels, self.image_size, self.image_size)

    def downsample(self, noise: torch.Tensor) -> torch.Tensor:
        """The full-resolution noise pooled to ``input_size`` and rescaled to unit variance."""
        z = self.down(noise)
        return z * float(self.pool_factor) if self.pool_factor > 1 else z

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        h = self.downsample(noise)
        for block in self.blocks:
            h = block(h)
        return self.head_modules[-1](h)

    def outputs(self, noise: torch.Tensor) -> list[torch.Tensor]:
        """Every head's image: what distillation and recovery compare (the last one is the student's output)."""
        return self.heads(noise)

    def heads(self, noise: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Every head's output [N,C,r_k,r_k] for blocks 0..upto (default: all); later blocks are not run."""
        last = self.num_blocks - 1 if upto is None else upto
        h, outs = self.downsample(noise), []
        for k in range(last + 1):
            h = self.blocks[k](h)
            outs.append(self.head_modules[k](h))
        return outs

    def stage_parameters(self, k: int) -> list[nn.Parameter]:
        """Parameters of block k and its head."""
        return [*self.blocks[k].parameters(), *self.head_modules[k].parameters()]

    def export_config(self) -> dict[str, Any]:
        return {"kind": "layerwise", "image_channels": self.image_channels, "image_size": self.image_size,
                "input_size": self.input_size, "channels": self.channels, "up_blocks": self.up_blocks,
                "convs_per_block": self.convs_per_block, "head_channels": self.head_channels,
                "negative_slope": self.negative_slope, "out_scales": self.out_scales,
                "resolutions": self.resolutions,
                "parametrisation": "image = last_head(trunk(avgpool(noise) * pool_factor)); no timestep",
                **({"pruned": self.pruned_structure} if getattr(self, "pruned_structure", None) else {})}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LayerwiseStudent":
        keys = ("image_channels", "image_size", "input_size", "channels", "up_blocks", "convs_per_block",
                "head_channels", "negative_slope", "out_scales")
        student = cls(**{k: config[k] for k in keys})
        if config.get("pruned"):  # channel-pruned by edgekd compress: the keys above are the unpruned build
            from edgekd.compress.prune import apply_structure

            apply_structure(student, config["pruned"])
        return student


def build_layerwise_student(cfg: Any, sample_shape: tuple[int, int, int],
                            out_scales: list[float] | None = None) -> LayerwiseStudent:
    """A student from the recipe's ``student:`` section (kind: layerwise) for the teacher's sample shape."""
    c, size, _ = sample_shape
    ups = default_up_blocks(cfg.input_size, size) if cfg.up_blocks == "auto" else list(cfg.up_blocks)
    return LayerwiseStudent(c, size, cfg.input_size, list(cfg.channels), ups, cfg.convs_per_block,
                            cfg.head_channels, cfg.negative_slope, out_scales)
