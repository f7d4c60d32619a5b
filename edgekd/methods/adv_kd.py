"""Adv-KD: a layerwise-denoising student trained adversarially against the teacher's trajectory.

Data: the trajectory store's noise x_T, the teacher's states at ``trajectory.record`` (DDIM step indices; index 0,
x_T itself, is ignored since it is the noise) and x_0: K+1 points for a student of K blocks. Head k learns point
k+1, resized to block k's resolution (area averaging by default: it is what a lower-resolution view of the state
is, and it shrinks the state's noise by the pooling factor exactly as the student's own input pooling does).

Losses, per active block k, with D_k conditioned on the student's input (the pooled noise):
    D:  softplus(-D_k(real, z)) + softplus(D_k(fake, z)) + gp_weight * E ||grad_real D_k(real, z)||^2
    G:  softplus(-D_k(fake, z)) + regression_weight * L1|L2(fake, real)
real = the teacher's state at point k+1 (resized), fake = head k's output. The published method uses the
non-saturating loss and a gradient penalty of weight 10; which penalty is not stated, so this uses R1 on real
samples (the usual partner of the non-saturating loss; no interpolates needed). The regression term is an option
(the official code has none; an earlier variant had one): default L1 with weight 0.1, set 0 for the pure GAN.

Schedules: ``progressive`` (published) splits train.steps into K stages with lengths proportional to 10*(k+1);
stage k trains blocks 0..k and their heads (every active head keeps its own GAN loss, so earlier heads stay
consistent with the trunk they sit on and the previews stay meaningful); blocks after k are frozen (no gradient,
not even run). ``joint`` trains every head from step 0.

Heads end in Tanh. Teacher states before x_0 can leave [-1, 1] (x_t = sqrt(a) x_0 + sqrt(1-a) eps at full
resolution); a fixed per-head output scale (the 99.9th percentile of |state| on the training set, at least 1)
is measured at setup and stored in the student's config, so the discriminator cannot tell real from fake by range
alone. The final head predicts x_0, which the teacher clips to [-1, 1]: its scale is 1.

eval_loss (best-EMA selection): the L1 distance between the FINAL head (what forward() and the export compute)
and the teacher's x_0 for the same held-out noise. The GAN losses cannot be used: they measure the student
against a discriminator that keeps changing, so their values are not comparable across steps. L1 to x_0 is
discriminator-free, deterministic on a fixed batch, and measures what a user of a distilled model expects (the
teacher's image for this noise). Its bias: it favours blur, because the student sees only the pooled noise and
cannot know the teacher's fine detail; with the regression term on, the training objective shares that bias.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgekd.methods import MethodSetup, register
from edgekd.recipe import AdvKDConfig, TrainConfig
from edgekd.students.layerwise import LayerwiseStudent
from edgekd.train.loop import Batch, Logs

if TYPE_CHECKING:
    from edgekd.recipe import Recipe
    from edgekd.teachers.diffusers_teacher import DiffusionTeacher
    from edgekd.teachers.store import TrajectorySet


# --------------------------------------------------------------------------------------------- trajectory points


def record_points(record: list[int] | str, steps: int) -> list[int]:
    """The DDIM step indices whose states are targets (sorted, 0 dropped): K-1 of them for K blocks."""
    rec = list(range(steps)) if record == "all" else sorted(set(record))
    return [r for r in rec if r != 0]


def resize(x: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    """A state at ``size`` px: area averaging (default) or antialiased bilinear; identity at full size."""
    if x.shape[-1] == size:
        return x
    if mode == "area":
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour upsampling for display (shows each head's true resolution)."""
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="nearest")


def stage_boundaries(steps: int, num_blocks: int) -> list[int]:
    """End step (exclusive) of each progressive stage: lengths proportional to 10*(k+1), scaled to ``steps``."""
    weights = [10 * (k + 1) for k in range(num_blocks)]
    total, acc, ends = sum(weights), 0, []
    for w in weights:
        acc += w
        ends.append(round(steps * acc / total))
    ends[-1] = max(ends[-1], steps)
    return ends


# --------------------------------------------------------------------------------------------- discriminator


def _down_stack(cin: int, size: int, width: int, max_width: int) -> tuple[nn.Sequential, int, int]:
    """Conv4x4 stride 2 + BN + LeakyReLU(0.2) until the map is 4x4 or smaller (a Conv3x3 if already <= 4)."""
    layers: list[nn.Module] = []
    ch = cin
    if size <= 4:
        layers += [nn.Conv2d(ch, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
        return nn.Sequential(*layers), width, size
    while size > 4:
        layers += [nn.Conv2d(ch, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
        ch, size, width = width, size // 2, min(width * 2, max_width)
    return nn.Sequential(*layers), ch, size


class StageDiscriminator(nn.Module):
    """D_k(image at r_k px, pooled input noise) -> one logit per sample.

    Image branch: Conv4x4 s2 + BN + LeakyReLU(0.2) down to 4x4. Noise branch: the same convs when the student's
    input is larger than 4x4, then Linear + LeakyReLU. An MLP head joins both.
    """

    def __init__(self, image_channels: int, image_size: int, noise_channels: int, noise_size: int,
                 width: int = 64, hidden: int = 256):
        super().__init__()
        self.image, ch, size = _down_stack(image_channels, image_size, width, 4 * width)
        img_feat = ch * size * size
        if noise_size > 4:
            noise_convs, nch, nsize = _down_stack(noise_channels, noise_size, width, 4 * width)
        else:
            noise_convs, nch, nsize = nn.Identity(), noise_channels, noise_size
        self.noise = nn.Sequential(noise_convs, nn.Flatten(), nn.Linear(nch * nsize * nsize, hidden), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.Linear(img_feat + hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([self.image(image).flatten(1), self.noise(noise)], dim=1)
        return self.head(feats).squeeze(1)


# --------------------------------------------------------------------------------------------- the method


class AdvKDMethod:
    """One conditional GAN per block of a LayerwiseStudent, on the teacher's trajectory (see the module doc)."""

    def __init__(self, student: LayerwiseStudent, cfg: AdvKDConfig, train: TrainConfig,
                 state_positions: list[int]):
        self.generator = student
        self.cfg = cfg
        self.grad_clip = train.grad_clip
        self.num_blocks = student.num_blocks
        if len(state_positions) != self.num_blocks - 1:
            raise ValueError(f"{self.num_blocks} blocks need {self.num_blocks - 1} recorded states, got {len(state_positions)}")
        self.state_positions = list(state_positions)
        c = student.image_channels
        self.discriminators = nn.ModuleList([
            StageDiscriminator(c, r, c, student.input_size, cfg.disc_channels, cfg.disc_hidden)
            for r in student.resolutions
        ])
        self.boundaries = stage_boundaries(train.steps, self.num_blocks)
        self.g_opt = torch.optim.Adam(student.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)
        self.d_opt = torch.optim.Adam(self.discriminators.parameters(), lr=train.lr, betas=train.betas)
        self._stage: int | None = None

    # ------------------------------------------------------------------ protocol
    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.generator, "discriminators": self.discriminators}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.g_opt, "discriminators": self.d_opt}

    def ddp_targets(self) -> list[tuple[nn.Module, tuple[str, ...], bool]]:
        """Under torchrun: training calls the student's ``heads`` (blocks after the current stage sit out, hence
        DDP's unused-parameter search) and each discriminator's forward."""
        return [(self.generator, ("heads",), True), *((d, ("forward",), False) for d in self.discriminators)]

    # ------------------------------------------------------------------ schedule
    def stage_of(self, step: int) -> int:
        """The last trainable block at ``step`` (joint: always the last block)."""
        if self.cfg.schedule == "joint":
            return self.num_blocks - 1
        for k, end in enumerate(self.boundaries):
            if step < end:
                return k
        return self.num_blocks - 1

    def set_stage(self, stage: int) -> None:
        """Blocks/heads/discriminators 0..stage train; later ones are frozen (requires_grad False)."""
        if stage == self._stage:
            return
        for k in range(self.num_blocks):
            on = k <= stage
            for p in self.generator.stage_parameters(k):
                p.requires_grad_(on)
            self.discriminators[k].requires_grad_(on)
        self._stage = stage

    # ------------------------------------------------------------------ targets
    def targets(self, batch: Batch, upto: int | None = None) -> list[torch.Tensor]:
        """The teacher's point k+1 at block k's resolution, for k = 0..upto."""
        last = self.num_blocks - 1 if upto is None else upto
        out = []
        for k in range(last + 1):
            full = batch["x0"] if k == self.num_blocks - 1 else batch["states"][:, self.state_positions[k]]
            out.append(resize(full.float(), self.generator.resolutions[k], self.cfg.resize))
        return out

    def regression(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(fake, real) if self.cfg.regression == "l1" else F.mse_loss(fake, real)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> "Logs":
        stage = self.stage_of(step)
        self.set_stage(stage)
        active = range(stage + 1)
        student = self.generator
        noise = batch["noise"]
        z = student.downsample(noise).detach()
        reals = self.targets(batch, stage)
        with autocast():
            fakes = [f.float() for f in student.heads(noise, upto=stage)]

        # discriminators
        d_total = torch.zeros((), device=noise.device)
        logs: Logs = {"stage": float(stage)}
        gp_sum = torch.zeros((), device=noise.device)
        for k in active:
            d = self.discriminators[k]
            real = reals[k].detach().requires_grad_(True)
            with autocast():
                d_real = d(real, z).float()
                d_fake = d(fakes[k].detach(), z).float()
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            if self.cfg.gp_weight > 0:
                (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                gp = grad.float().square().flatten(1).sum(1).mean()
                loss = loss + self.cfg.gp_weight * gp
                gp_sum = gp_sum + gp.detach()
            d_total = d_total + loss
        self.d_opt.zero_grad(set_to_none=True)
        d_total.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.discriminators.parameters(), self.grad_clip)
        self.d_opt.step()

        # generator (discriminators frozen for this pass)
        for k in active:
            self.discriminators[k].requires_grad_(False)
        g_adv = torch.zeros((), device=noise.device)
        g_reg = torch.zeros((), device=noise.device)
        for k in active:
            with autocast():
                g_adv = g_adv + F.softplus(-self.discriminators[k](fakes[k], z).float()).mean()
            g_reg = g_reg + self.regression(fakes[k], reals[k])
        g_total = g_adv + self.cfg.regression_weight * g_reg
        self.g_opt.zero_grad(set_to_none=True)
        g_total.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for p in student.parameters() if p.requires_grad], self.grad_clip)
        self.g_opt.step()
        for k in active:
            self.discriminators[k].requires_grad_(True)

        n = len(active)
        # 0-d tensors: the loop reads them back every train.log_every steps, not after every step
        logs.update({"loss_d": d_total.detach() / n, "loss_g_adv": g_adv.detach() / n,
                     "loss_reg": g_reg.detach() / n, "gp": gp_sum / n,
                     "loss_final_l1": F.l1_loss(fakes[-1].detach(), reals[-1]).detach()})
        return logs

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        """L1 of the final head (= forward, = the export) to the teacher's x_0; see the module docstring."""
        return float(F.l1_loss(generator(batch["noise"]).float(), batch["x0"].float()))


# --------------------------------------------------------------------------------------------- previews


@torch.no_grad()
def preview_rows(student: LayerwiseStudent, noise: torch.Tensor, teacher_points: list[torch.Tensor],
                 point_labels: list[str], resize_mode: str = "area") -> dict[str, torch.Tensor]:
    """Rows for a labelled grid: the input noise, then for every block the teacher's point (at the block's
    resolution) above the block's head output, all upsampled (nearest) to full size. ``teacher_points[k]`` is the
    full-resolution teacher state that head k learns (the last is x_0)."""
    size = student.image_size
    student.eval()
    heads = [h.float().cpu() for h in student.heads(noise)]
    rows = {"teacher x_T (the input noise)": noise.cpu(),
            f"input pooled to {student.input_size}px": upsample(student.downsample(noise).cpu(), size)}
    for k, (head, target, label) in enumerate(zip(heads, teacher_points, point_labels)):
        r = student.resolutions[k]
        rows[f"teacher {label} at {r}px"] = upsample(resize(target.float().cpu(), r, resize_mode), size)
        rows[f"student head {k} ({r}px)"] = upsample(head, size)
    return rows


def point_labels(teacher: "DiffusionTeacher", steps: int, spacing: str, points: list[int]) -> list[str]:
    timesteps = teacher.timesteps(steps, spacing)
    return [f"x_{timesteps[i]} (step {i})" for i in points] + ["x_0"]


# --------------------------------------------------------------------------------------------- setup


def measure_out_scales(train: "TrajectorySet", positions: list[int], resolutions: list[int], mode: str,
                       limit: int = 512) -> list[float]:
    """Per head, max(1, 99.9th percentile of |teacher point| at the head's resolution) on training samples."""
    idx = np.arange(min(limit, len(train)))
    states = torch.from_numpy(np.asarray(train["states"][idx], dtype=np.float32)) if positions else None
    x0 = torch.from_numpy(np.asarray(train["x0"][idx], dtype=np.float32))
    scales = []
    for k, r in enumerate(resolutions):
        full = x0 if k == len(resolutions) - 1 else states[:, positions[k]]
        q = float(torch.quantile(resize(full, r, mode).abs().flatten()[:1_000_000], 0.999))
        scales.append(1.0 if q <= 1.0 else math.ceil(q * 20) / 20)
    return scales


@register("adv_kd")
def setup(recipe: "Recipe", teacher: "DiffusionTeacher", train: "TrajectorySet", heldout: "TrajectorySet",
          device: torch.device) -> MethodSetup:
    """Noise, the recorded states and x_0 from the store; a layerwise student sized by the recipe."""
    from edgekd.recipe import check_layerwise
    from edgekd.students.layerwise import build_layerwise_student, block_resolutions, default_up_blocks
    from edgekd.train.loop import TensorSource

    check_layerwise(recipe, "recipe")
    cfg, scfg = recipe.method, recipe.student
    store_record = list(range(recipe.teacher.steps)) if recipe.trajectory.record == "all" else sorted(set(recipe.trajectory.record))
    points = record_points(recipe.trajectory.record, recipe.teacher.steps)
    positions = [store_record.index(p) for p in points]
    c, size, _ = teacher.sample_shape
    ups = default_up_blocks(scfg.input_size, size) if scfg.up_blocks == "auto" else list(scfg.up_blocks)
    resolutions = block_resolutions(scfg.input_size, len(scfg.channels), ups)
    scales = measure_out_scales(train, positions, resolutions, cfg.resize)
    student = build_layerwise_student(scfg, teacher.sample_shape, scales)
    method = AdvKDMethod(student, cfg, recipe.train, positions)
    keys = ["noise", "x0", "states"] if positions else ["noise", "x0"]
    held = TensorSource({k: heldout[k] for k in keys}).all()
    labels = point_labels(teacher, recipe.teacher.steps, recipe.teacher.timestep_spacing, points)
    preview_noise = held["noise"][:8]
    preview_points = [held["states"][:8, p] for p in positions] + [held["x0"][:8]]

    def preview(net: nn.Module) -> dict[str, torch.Tensor]:
        was_training = net.training
        rows = preview_rows(net, preview_noise.to(device), preview_points, labels, cfg.resize)
        net.train(was_training)
        return rows

    return MethodSetup(method, TensorSource({k: train[k] for k in keys}), held, preview)
