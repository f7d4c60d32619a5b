"""Denoising Student (Luhman & Luhman 2021): regress the teacher's deterministic DDIM output in one step.

Data: pairs (x_T, DDIM(x_T)) from the trajectory store (or pairs from another teacher solver, teacher.solver).
Loss: L1 (paper, CIFAR-10) or L2 between the student's output and the teacher's. Adam betas (0.9, 0.98) and EMA
follow the paper; lr, warm-up and batch come from the recipe (the paper's 2e-4 / 5k / 512 are GPU-scale).

Hybrid (``method.adv_weight`` > 0): from step ``adv_start_step`` the generator loss becomes
    regression_weight * L1(G(z), teacher(z)) + adv_weight * softplus(-D(G(z)))
with D a conv discriminator on real images (edgekd.methods.adversarial). One generator forward per step serves both
terms; D steps first on the detached output, then G against the updated D. In that phase the student steps its
own Adam (``adv_lr``, betas (0, 0.99), GAN practice: the regression's lr 1e-3 and beta1 0.9 destabilise a GAN).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.methods import MethodSetup, register
from edgekd.methods.adversarial import AdversarialSettings, AdversarialTerm
from edgekd.recipe import DenoisingStudentConfig, TrainConfig
from edgekd.train.loop import Batch, backward_step

if TYPE_CHECKING:
    from edgekd.recipe import Recipe
    from edgekd.teachers.diffusers_teacher import DiffusionTeacher
    from edgekd.teachers.store import TrajectorySet


class DenoisingStudentMethod:
    def __init__(self, student: nn.Module, cfg: DenoisingStudentConfig, train: TrainConfig,
                 image_shape: tuple[int, int, int] | None = None):
        self.generator = student
        self.cfg = cfg
        self.grad_clip = train.grad_clip
        self.opt = torch.optim.Adam(student.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)
        self.adversarial: AdversarialTerm | None = None
        self.adv_opt: torch.optim.Optimizer | None = None
        if cfg.adv_weight > 0 and cfg.adv_lr is not None:  # the student's own Adam for the GAN phase
            self.adv_opt = torch.optim.Adam(student.parameters(), lr=cfg.adv_lr, betas=(0.0, 0.99),
                                            weight_decay=train.weight_decay)
        if cfg.adv_weight > 0:
            if image_shape is None:
                raise ValueError("the adversarial term needs the image shape")
            self.adversarial = AdversarialTerm(image_shape, AdversarialSettings(
                cfg.disc_channels, cfg.r1_gamma, cfg.r1_every, cfg.d_lr, cfg.diffaug))
        # the GAN trades held-out L1 for sharpness: best-L1 selection would undo it (the loop reads this)
        self.select_best = self.adversarial is None
        self.cond_table: torch.Tensor | None = None  # text teachers: prompt index -> embedding [P, L, D]

    def modules(self) -> dict[str, nn.Module]:
        if self.adversarial is None:
            return {"student": self.generator}
        return {"student": self.generator, "discriminator": self.adversarial.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self.adversarial is None:
            return {"student": self.opt}
        adv = {"student_adv": self.adv_opt} if self.adv_opt is not None else {}
        return {"student": self.opt, **adv, "discriminator": self.adversarial.opt}

    def regression(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = pred.float()
        return F.l1_loss(pred, target) if self.cfg.loss == "l1" else F.mse_loss(pred, target)

    def condition(self, batch: Batch) -> torch.Tensor | None:
        """The student's condition input for the batch's condition ids (text: the prompts' embeddings)."""
        ids = batch.get("cond")
        if ids is None:
            return None
        if self.cond_table is None:
            return ids.long()
        return self.cond_table.to(ids.device)[ids.long()]

    def forward(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        cond = self.condition(batch)
        return net(batch["noise"]) if cond is None else net(batch["noise"], cond)

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        return self.regression(self.forward(net, batch), batch["x0"])

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        adv = self.adversarial is not None and step >= self.cfg.adv_start_step
        if not adv:
            with autocast():
                loss = self.loss(self.generator, batch)
            return {"loss": backward_step(loss, self.opt, self.generator.parameters(), self.grad_clip)}
        assert self.adversarial is not None
        with autocast():
            pred = self.forward(self.generator, batch).float()
        logs = self.adversarial.d_step(pred, batch["real"], step, autocast)
        reg = self.regression(pred, batch["x0"])
        gan = self.adversarial.generator_loss(pred, autocast)
        loss = self.cfg.regression_weight * reg + self.cfg.adv_weight * gan
        backward_step(loss, self.adv_opt or self.opt, self.generator.parameters(), self.grad_clip)
        return {"loss": float(reg.detach()), "loss_g": float(gan.detach()), **logs}

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        return float(self.loss(generator, batch))


@register("denoising_student")
def setup(recipe: "Recipe", teacher: "DiffusionTeacher", train: "TrajectorySet", heldout: "TrajectorySet",
          device: torch.device) -> MethodSetup:
    """Pairs (noise, teacher x_0) from the store; the student evaluates the teacher's first DDIM timestep.
    With the adversarial term, each batch also carries as many real images from recipe.data."""
    from edgekd.methods.adversarial import PairsAndRealSource
    from edgekd.students.unet_student import build_unet_student
    from edgekd.train.loop import TensorSource

    first_t = teacher.timesteps(recipe.teacher.steps, recipe.teacher.timestep_spacing)[0]
    student = build_unet_student(recipe.student, teacher.unet, first_t, teacher)
    method = DenoisingStudentMethod(student, recipe.method, recipe.train, teacher.sample_shape)
    columns = ["noise", "x0"] + (["cond"] if teacher.condition is not None else [])
    if teacher.condition is not None and teacher.condition.kind == "text":
        method.cond_table = teacher.condition_input(torch.arange(len(teacher.condition.prompts))).float().cpu()
    if method.adversarial is not None and (teacher.condition is not None or teacher.latent):
        from edgekd.errors import EdgekdError

        raise EdgekdError("method.adv_weight > 0 (the adversarial term on real images) takes unconditional pixel "
                          "teachers for now; set method.adv_weight: 0 for this teacher")
    held = TensorSource({k: heldout[k] for k in columns}).all()
    preview_batch = {k: v[:16] for k, v in held.items()}
    solver = "DDIM" if recipe.teacher.solver == "ddim" else recipe.teacher.solver

    def preview(net: nn.Module) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = method.forward(net, {k: v.to(device) for k, v in preview_batch.items()}).float().cpu()
        return {f"teacher {solver}-{recipe.teacher.steps}": teacher.decode(preview_batch["x0"]).cpu(),
                "student (1 step)": teacher.decode(out).cpu()}

    source = TensorSource({k: train[k] for k in columns})
    if method.adversarial is not None:
        from edgekd.data import load_dataset

        images = load_dataset(recipe.data)
        if tuple(images.shape[1:]) != tuple(teacher.sample_shape):
            from edgekd.errors import EdgekdError

            raise EdgekdError(f"data images are {tuple(images.shape[1:])} but the teacher makes "
                              f"{teacher.sample_shape}: set data.channels / data.resolution to match")
        source = PairsAndRealSource(source, images, recipe.data.hflip)
    return MethodSetup(method, source, held, preview)
