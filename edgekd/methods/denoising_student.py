"""Denoising Student (Luhman & Luhman 2021): regress the teacher's deterministic DDIM output in one step.

Data: pairs (x_T, DDIM(x_T)) from the trajectory store. Loss: L1 (paper, CIFAR-10) or L2 between the student's
output and the teacher's. Adam betas (0.9, 0.98) and EMA follow the paper; lr, warm-up and batch come from the
recipe (the paper's 2e-4 / 5k / 512 are GPU-scale).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from typing import TYPE_CHECKING

from edgekd.methods import MethodSetup, register
from edgekd.recipe import DenoisingStudentConfig, TrainConfig
from edgekd.train.loop import Batch, backward_step

if TYPE_CHECKING:
    from edgekd.recipe import Recipe
    from edgekd.teachers.diffusers_teacher import DiffusionTeacher
    from edgekd.teachers.store import TrajectorySet


class DenoisingStudentMethod:
    def __init__(self, student: nn.Module, cfg: DenoisingStudentConfig, train: TrainConfig):
        self.generator = student
        self.cfg = cfg
        self.grad_clip = train.grad_clip
        self.opt = torch.optim.Adam(student.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.generator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.opt}

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        pred = net(batch["noise"]).float()
        if self.cfg.loss == "l1":
            return F.l1_loss(pred, batch["x0"])
        return F.mse_loss(pred, batch["x0"])

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        with autocast():
            loss = self.loss(self.generator, batch)
        return {"loss": backward_step(loss, self.opt, self.generator.parameters(), self.grad_clip)}

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        return float(self.loss(generator, batch))


@register("denoising_student")
def setup(recipe: "Recipe", teacher: "DiffusionTeacher", train: "TrajectorySet", heldout: "TrajectorySet",
          device: torch.device) -> MethodSetup:
    """Pairs (noise, teacher x_0) from the store; the student evaluates the teacher's first DDIM timestep."""
    from edgekd.students.unet_student import build_unet_student
    from edgekd.train.loop import TensorSource

    first_t = teacher.timesteps(recipe.teacher.steps, recipe.teacher.timestep_spacing)[0]
    student = build_unet_student(recipe.student, teacher.unet, first_t)
    method = DenoisingStudentMethod(student, recipe.method, recipe.train)
    held = TensorSource({"noise": heldout["noise"], "x0": heldout["x0"]}).all()
    preview_noise, preview_x0 = held["noise"][:16], held["x0"][:16]

    def preview(net: nn.Module) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = net(preview_noise.to(device)).float().cpu()
        return {f"teacher DDIM-{recipe.teacher.steps}": preview_x0, "student (1 step)": out}

    return MethodSetup(method, TensorSource({"noise": train["noise"], "x0": train["x0"]}), held, preview)
