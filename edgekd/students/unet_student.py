"""A one-step student: x_0 = z - net(z, t_first), the Denoising Student's epsilon-style parametrisation.

Initialised from the teacher (same architecture, same weights) or a slimmer UNet from scratch. The timestep is a
constant baked into the graph, so the exported model takes noise (and the teacher's condition: class ids or text
embeddings, a real graph input) only. ``net`` is any denoiser family the teacher has (edgekd.models.denoisers);
the output is scaled with unit gain for the teacher's prediction type, so a student initialised from the teacher
starts at the teacher's own one-step x0 estimate:
    epsilon:      x0 = z - net
    v_prediction: x0 = sqrt(a) z - sqrt(1 - a) net      (a = alphas_cumprod[t_first])
    sample:       x0 = net
For a latent teacher x0 is a latent (the decoder graph makes the picture).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models.stages import student_condition
from edgekd.models.spec import OneStepGraphs


class OneStepUNetStudent(OneStepGraphs, nn.Module):
    """``alpha_bar`` set (GDD's generator): x0 = (z - sqrt(1 - alpha_bar) * eps) / sqrt(alpha_bar), the teacher's
    own x0 prediction at ``timestep``, clamped to [-1, 1] in eval mode (what DDIM's clip_sample does, and what the
    export computes) and left raw in train mode, so a discriminator sees and penalises out-of-range pixels and
    every pixel keeps its gradient (see docs/gdd.md)."""

    def __init__(self, unet: nn.Module, timestep: int, alpha_bar: float | None = None,
                 prediction_type: str = "epsilon", condition: dict[str, Any] | None = None,
                 latent: bool = False, t_alpha: float | None = None):
        super().__init__()
        from edgekd.models.denoisers import family_of

        self.unet = unet
        self.family = family_of(unet)
        self.timestep = int(timestep)
        self.graph_timestep = self.timestep
        self.alpha_bar = None if alpha_bar is None else float(alpha_bar)
        self.prediction_type = prediction_type
        self.condition = condition  # {"kind": "class", "input": "class_labels", "high": K} or text (shape)
        self.latent = bool(latent)
        self.t_alpha = t_alpha  # alphas_cumprod[timestep], for the v-prediction parametrisation
        if prediction_type == "v_prediction" and t_alpha is None:
            raise ValueError("a v-prediction student needs alphas_cumprod at its timestep")

    def _net(self, noise: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        from edgekd.models.denoisers import call_denoiser

        return call_denoiser(self.unet, self.family, noise, self.timestep, condition)

    def forward(self, noise: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if self.condition is not None and condition is None:
            raise ValueError(f"this student takes a {self.condition['kind']} condition")
        if self.prediction_type == "v_prediction":
            a = float(self.t_alpha)
            return a ** 0.5 * noise - (1.0 - a) ** 0.5 * self._net(noise, condition)
        if self.prediction_type == "sample":
            return self._net(noise, condition)
        if self.alpha_bar is None:
            return noise - self._net(noise, condition)
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

    def graphs(self) -> list[Any]:
        """noise (+ the condition input) -> image (a latent for a latent teacher)."""
        from edgekd.models.spec import GraphSpec, InputSpec

        inputs = [InputSpec("noise", tuple(self.input_shape))]
        if self.condition is not None:
            c = self.condition
            inputs.append(InputSpec(c["input"], (), torch.int64, high=int(c["high"])) if c["kind"] == "class"
                          else InputSpec(c["input"], tuple(c["shape"])))
        return [GraphSpec("student", self, inputs, "latents" if self.latent else "image", self.graph_timestep)]

    def export_config(self) -> dict[str, Any]:
        extra = {"net_class": type(self.unet).__name__, "prediction_type": self.prediction_type,
                 "condition": self.condition, "latent": self.latent, "t_alpha": self.t_alpha}
        if self.family != "unet2d" or self.condition is not None or self.latent or self.prediction_type != "epsilon":
            return {"kind": "one_step_unet", "timestep": self.timestep, "unet": dict(self.unet.config),
                    **self._pruned(), **extra, "parametrisation": self.parametrisation()}
        if self.alpha_bar is not None:
            return {"kind": "one_step_unet", "timestep": self.timestep, "unet": dict(self.unet.config), **self._pruned(),
                    "alpha_bar": self.alpha_bar, "parametrisation":
                    "x0 = clamp((noise - sqrt(1 - alpha_bar) * unet(noise, timestep)) / sqrt(alpha_bar), -1, 1)"}
        return {"kind": "one_step_unet", "timestep": self.timestep, "unet": dict(self.unet.config), **self._pruned(),
                "parametrisation": "x0 = noise - unet(noise, timestep)"}

    def parametrisation(self) -> str:
        cond = ", condition" if self.condition is not None else ""
        return {"epsilon": f"x0 = noise - net(noise, timestep{cond})",
                "v_prediction": f"x0 = sqrt(a) noise - sqrt(1 - a) net(noise, timestep{cond}), a = {self.t_alpha}",
                "sample": f"x0 = net(noise, timestep{cond})"}[self.prediction_type]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "OneStepUNetStudent":
        import diffusers

        unet_cfg = {k: v for k, v in config["unet"].items() if not k.startswith("_")}
        unet = getattr(diffusers, config.get("net_class", "UNet2DModel")).from_config(unet_cfg)
        if config.get("pruned"):  # channel-pruned by edgekd compress: config["unet"] is the unpruned build
            from edgekd.compress.prune import apply_structure

            apply_structure(unet, config["pruned"])
        return cls(unet, config["timestep"], config.get("alpha_bar"), config.get("prediction_type", "epsilon"),
                   config.get("condition"), bool(config.get("latent", False)), config.get("t_alpha"))

    def _pruned(self) -> dict[str, Any]:
        """``{"pruned": structure}`` when the UNet was channel-pruned (edgekd.compress.prune), else nothing."""
        structure = getattr(self.unet, "pruned_structure", None)
        return {"pruned": structure} if structure else {}


def build_unet_student(cfg: Any, teacher_unet: nn.Module, timestep: int, teacher: Any = None) -> OneStepUNetStudent:
    """A student from the recipe's ``student:`` section (init: teacher copies, init: prune copies and channel-prunes
    (torch-pruning, DepGraph; the structure is saved with the student), init: scratch builds slim). With the
    ``teacher`` it takes the teacher's condition and prediction type, and outputs latents for a latent teacher."""
    special = teacher is not None and not teacher.plain
    if special and cfg.init == "prune" and (teacher.family != "unet2d" or teacher.condition is not None):
        raise EdgekdError(f"student.init: prune takes unconditional UNet2DModel teachers; this teacher is a "
                          f"{type(teacher_unet).__name__}{' with a condition' if teacher.condition else ''} "
                          "(use init: teacher or scratch)")
    if special and cfg.init == "scratch" and teacher.family == "dit":
        raise EdgekdError("student.init: scratch builds UNets; for a DiT teacher use init: teacher")
    if cfg.init == "teacher":
        unet = copy.deepcopy(teacher_unet)
    elif cfg.init == "prune":
        from edgekd.compress.prune import prune_unet

        unet = prune_unet(teacher_unet, 1.0 - cfg.width, cfg.importance, timestep=timestep).float()
    else:
        unet = _scratch(cfg, teacher_unet)
    unet.requires_grad_(True).train()
    if not special:
        return OneStepUNetStudent(unet, timestep)
    from edgekd.teachers.diffusers_teacher import make_ddim

    a = float(make_ddim(teacher.scheduler_config, 1).alphas_cumprod[timestep])
    return OneStepUNetStudent(unet, timestep, None, teacher.prediction_type, student_condition(teacher),
                              teacher.latent, a)


def _scratch(cfg: Any, teacher_unet: nn.Module) -> nn.Module:
    """A slim UNet of the teacher's family (UNet2DModel, or UNet2DConditionModel with cross-attention on the
    teacher's text width) on the teacher's sample shape, taking the same class labels."""
    import diffusers

    tc = teacher_unet.config
    levels = len(cfg.block_out_channels)
    common = dict(sample_size=tc.sample_size, in_channels=tc.in_channels, out_channels=tc.in_channels,
                  block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                  norm_num_groups=cfg.norm_num_groups)
    if type(teacher_unet).__name__ == "UNet2DConditionModel":
        down = tuple("CrossAttnDownBlock2D" if i < levels - 1 else "DownBlock2D" for i in range(levels))
        up = tuple("UpBlock2D" if i == 0 else "CrossAttnUpBlock2D" for i in range(levels))
        return diffusers.UNet2DConditionModel(**common, down_block_types=down, up_block_types=up,
                                              cross_attention_dim=tc.cross_attention_dim, attention_head_dim=8)
    down = tuple("AttnDownBlock2D" if cfg.attention and i == levels - 2 else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if cfg.attention and i == 1 else "UpBlock2D" for i in range(levels))
    return diffusers.UNet2DModel(**common, down_block_types=down, up_block_types=up, add_attention=cfg.attention,
                                 attention_head_dim=8, num_class_embeds=tc.get("num_class_embeds"))
