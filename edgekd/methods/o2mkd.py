"""O2MKD (one-to-many knowledge distillation, arXiv 2410.04191): N students, each on its own timestep range.

Data: real images (``recipe.data``) diffused forward to x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps at timesteps drawn
from each student's own range: ``ddim`` (the sampler's timesteps in the range: what the student will see when
sampling), ``uniform`` (any integer t in the range: the DDPM objective restricted to the range) or ``mixed`` (each
sample flips a coin between the two; default). Every step trains all N students, ``train.batch_size`` samples each.

Loss of student i on its samples (student i only ever sees timesteps it owns; routing is by t, so a batch whose
timesteps all fall in one range trains only that student):
    kd_weight      * mean w(t) ||eps_i(x_t, t) - eps_teacher(x_t, t)||^2       output KD (the paper's main term)
  + denoise_weight * mean w(t) ||eps_i(x_t, t) - eps||^2                        the DDPM loss on real data
  + feature_weight * mean_k ||P_ik f_ik - g_k||^2 / mean(g_k^2)               feature KD
with f_ik / g_k the outputs of the mid block and of every up block of student i / the teacher, and P_ik a 1x1 conv
from the student's channels to the teacher's (trained with the student, not exported). The normalisation by
the teacher feature's mean square makes every feature count equally whatever its scale.

w(t) (``weighting``): 1 for ``eps`` (default: the paper's output KD); max(1, (1 - a_t) / a_t) for ``x0_trunc``,
i.e. the error of the implied x_0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) where noise dominates (SNR < 1) and of
epsilon elsewhere. Why the option: at high t an epsilon error is multiplied by sqrt((1 - a_t) / a_t) (about 150 at
t = 999) in the x_0 that DDIM steps with, so plain epsilon-MSE lets the noisiest student look nearly perfect
(eps-MSE 0.004 on the shared teacher) while its x_0 is still a guess (x_0-MSE 1.4). In a 160-step CPU run it did
not improve FID (docs/o2mkd.md), hence not the default.

One Adam over all students (per-parameter, so the students are independent) with the gradient norm clipped per
student; the shared loop does warm-up, EMA of the whole O2MKDStudent, checkpoints and resume.

eval_loss (best-EMA selection): the same w(t)-weighted MSE between each student's epsilon and the teacher's on
held-out real images (``heldout_images``, kept out of training) diffused with fixed noise to the sampler's DDIM
timesteps in the student's range, averaged over students (each student weighs the same). The teacher's targets
are computed once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgekd.errors import EdgekdError
from edgekd.methods import MethodSetup, register
from edgekd.recipe import O2MKDConfig, TrainConfig
from edgekd.students.o2mkd import O2MKDStudent
from edgekd.train.loop import Batch, Logs

if TYPE_CHECKING:
    from edgekd.recipe import Recipe
    from edgekd.teachers.diffusers_teacher import DiffusionTeacher
    from edgekd.teachers.store import TrajectorySet


# --------------------------------------------------------------------------------------------- features


def feature_layers(unet: nn.Module) -> list[nn.Module]:
    """The layers whose outputs feature KD matches: the mid block, then every up block."""
    return [unet.mid_block, *unet.up_blocks]


@contextmanager
def tap_features(unet: nn.Module, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """Collect the feature layers' outputs during the forward passes inside the block (hooks removed after, so
    copies of the module such as the EMA never carry them)."""
    out: list[torch.Tensor] = []
    if not enabled:
        yield out
        return

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        out.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(hook) for layer in feature_layers(unet)]
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def feature_channels(unet: nn.Module, shape: tuple[int, int, int]) -> list[int]:
    """Channels of each feature layer's output (one tiny forward pass)."""
    with torch.no_grad(), tap_features(unet) as feats:
        unet(torch.zeros(1, *shape), torch.tensor([0]))
    return [int(f.shape[1]) for f in feats]


def feature_loss(student_feats: list[torch.Tensor], teacher_feats: list[torch.Tensor],
                 projections: nn.ModuleList) -> torch.Tensor:
    losses = []
    for f, g, proj in zip(student_feats, teacher_feats, projections):
        g = g.float()
        losses.append(F.mse_loss(proj(f.float()), g) / g.square().mean().clamp_min(1e-6))
    return torch.stack(losses).mean()


# --------------------------------------------------------------------------------------------- data


class RangeSource:
    """Batches of (x_0, t, eps) with ``size`` samples per student, t drawn from the student's own range.

    Everything random comes from the loop's numpy generator, so a resumed run draws the same batches.
    """

    def __init__(self, images: torch.Tensor, edges: list[int], ddim_timesteps: list[int], mode: str, hflip: bool):
        self.images = images
        self.edges = edges
        self.mode = mode
        self.hflip = hflip
        self.owned = [np.array([t for t in ddim_timesteps if edges[i] <= t < edges[i + 1]], dtype=np.int64)
                      for i in range(len(edges) - 1)]

    def __len__(self) -> int:
        return len(self.images)

    def timesteps(self, student: int, size: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self.edges[student], self.edges[student + 1]
        uniform = rng.integers(lo, hi, size=size)
        if self.mode == "uniform":
            return uniform
        ddim = rng.choice(self.owned[student], size=size)
        if self.mode == "ddim":
            return ddim
        return np.where(rng.random(size) < 0.5, ddim, uniform)

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        n = len(self.edges) - 1
        idx = rng.integers(0, len(self.images), size=size * n)
        x0 = self.images[torch.from_numpy(idx)]
        if self.hflip:
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        t = np.concatenate([self.timesteps(i, size, rng) for i in range(n)])
        noise = rng.standard_normal(size=x0.shape, dtype=np.float32)
        return {"x0": x0, "t": torch.from_numpy(t), "noise": torch.from_numpy(noise)}


def diffuse(alphas_cumprod: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0) with the teacher's noise schedule."""
    from edgekd.models.diffusion import add_noise

    return add_noise(alphas_cumprod, x0, noise, t)


def loss_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, weighting: str) -> torch.Tensor:
    """Per-sample w(t): ones (eps) or max(1, (1 - a_t) / a_t) (x0_trunc), see the module docstring."""
    if weighting == "eps":
        return torch.ones(t.shape, device=t.device)
    a = alphas_cumprod.to(t.device)[t].float()
    return ((1 - a) / a).clamp_min(1.0)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (w * (pred.float() - target.float()).square().flatten(1).mean(1)).mean()


# --------------------------------------------------------------------------------------------- the method


class O2MKDMethod:
    """Output KD (+ feature KD, + denoising loss) of every student to the teacher on its own timestep range."""

    def __init__(self, student: O2MKDStudent, teacher_unet: nn.Module, cfg: O2MKDConfig, train: TrainConfig,
                 alphas_cumprod: torch.Tensor):
        self.generator = student
        self.teacher = teacher_unet.eval().requires_grad_(False)
        self.cfg = cfg
        self.grad_clip = train.grad_clip
        self.alphas_cumprod = alphas_cumprod.float()
        self.projections: nn.ModuleList | None = None
        if cfg.feature_weight > 0:
            shape = student.sample_shape
            t_ch = feature_channels(self.teacher, shape)
            self.projections = nn.ModuleList()
            for unet in student.unets:
                s_ch = feature_channels(unet, shape)
                self.projections.append(nn.ModuleList([nn.Conv2d(s, t, 1) for s, t in zip(s_ch, t_ch)]))
        params = list(student.parameters()) + (list(self.projections.parameters()) if self.projections else [])
        self.opt = torch.optim.Adam(params, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)

    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"student": self.generator}
        if self.projections is not None:
            mods["projections"] = self.projections
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.opt}

    def ddp_targets(self) -> list[tuple[nn.Module, tuple[str, ...], bool]]:
        """Under torchrun: training calls each student UNet (and each feature projection) on its own."""
        targets = [(unet, ("forward",), False) for unet in self.generator.unets]
        if self.projections is not None:
            targets += [(conv, ("forward",), False) for convs in self.projections for conv in convs]
        return targets

    def _student_params(self, i: int) -> list[torch.Tensor]:
        params = list(self.generator.unets[i].parameters())
        if self.projections is not None:
            params += list(self.projections[i].parameters())
        return params

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> Logs:
        student, cfg = self.generator, self.cfg
        t, noise = batch["t"].long(), batch["noise"]
        x_t = diffuse(self.alphas_cumprod, batch["x0"], t, noise)
        use_feats = self.projections is not None
        with torch.no_grad(), autocast(), tap_features(self.teacher, use_feats) as t_feats:
            t_eps = self.teacher(x_t, t).sample.float()
        owner = student.route_batch(t)
        w = loss_weights(self.alphas_cumprod, t, cfg.weighting)
        total = x_t.new_zeros(())
        logs: Logs = {}  # 0-d tensors: the loop reads them back every train.log_every steps
        zero = x_t.new_zeros((), dtype=torch.float32)
        sums = {"kd": zero, "denoise": zero, "feature": zero, "eps_mse": zero}
        trained = 0
        for i, unet in enumerate(student.unets):
            idx = (owner == i).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            trained += 1
            with autocast(), tap_features(unet, use_feats) as s_feats:
                eps = unet(x_t[idx], t[idx]).sample.float()
            kd = weighted_mse(eps, t_eps[idx], w[idx])
            loss = cfg.kd_weight * kd
            logs[f"kd_{i}"] = kd.detach()
            sums["kd"] = sums["kd"] + kd.detach()
            sums["eps_mse"] = sums["eps_mse"] + F.mse_loss(eps.detach(), t_eps[idx]).detach()
            if cfg.denoise_weight > 0:
                den = weighted_mse(eps, noise[idx], w[idx])
                loss = loss + cfg.denoise_weight * den
                sums["denoise"] = sums["denoise"] + den.detach()
            if use_feats:
                feat = feature_loss(s_feats, [g[idx] for g in t_feats], self.projections[i])
                loss = loss + cfg.feature_weight * feat
                sums["feature"] = sums["feature"] + feat.detach()
            total = total + loss
        if trained == 0:
            raise EdgekdError("o2mkd: a training batch had no timestep inside any student's range")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.grad_clip:
            for i in range(student.num_students):
                params = [p for p in self._student_params(i) if p.grad is not None]
                if params:
                    torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.opt.step()
        logs["loss"] = total.detach() / trained
        logs["loss_kd"] = sums["kd"] / trained
        logs["eps_mse"] = sums["eps_mse"] / trained  # unweighted, comparable across weightings
        if cfg.denoise_weight > 0:
            logs["loss_denoise"] = sums["denoise"] / trained
        if use_feats:
            logs["loss_feature"] = sums["feature"] / trained
        return logs

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        """Mean over students of MSE(student eps, teacher eps) on the fixed held-out (x_t, t)."""
        return float(np.mean(student_kd_losses(generator, batch)))


@torch.no_grad()
def student_kd_losses(student: O2MKDStudent, batch: Batch) -> list[float]:
    """Per student: the w(t)-weighted MSE (batch["w"], else plain) of its epsilon against the teacher's on the
    held-out samples it owns."""
    owner = student.route_batch(batch["t"])
    w = batch.get("w", torch.ones(batch["t"].shape, device=batch["t"].device))
    out = []
    for i, unet in enumerate(student.unets):
        idx = (owner == i).nonzero().squeeze(1)
        if idx.numel():
            out.append(float(weighted_mse(unet(batch["x_t"][idx], batch["t"][idx]).sample, batch["eps"][idx], w[idx])))
    return out


# --------------------------------------------------------------------------------------------- setup


@torch.no_grad()
def heldout_batch(student: O2MKDStudent, teacher_unet: nn.Module, images: torch.Tensor,
                  alphas_cumprod: torch.Tensor, seed: int, device: torch.device, chunk: int = 256,
                  weighting: str = "eps") -> Batch:
    """Every held-out image at one of each student's DDIM timesteps (cycled), fixed noise, the teacher's eps and
    the loss weight of each sample."""
    gen = torch.Generator().manual_seed(seed)
    xs, ts, noises = [], [], []
    for lo, hi in student.ranges():
        owned = [t for t in student.timesteps() if lo <= t <= hi]
        ts.append(torch.tensor([owned[j % len(owned)] for j in range(len(images))], dtype=torch.int64))
        noises.append(torch.randn(images.shape, generator=gen))
        xs.append(images)
    t = torch.cat(ts)
    x_t = diffuse(alphas_cumprod, torch.cat(xs), t, torch.cat(noises))
    eps = torch.cat([teacher_unet(x_t[i:i + chunk].to(device), t[i:i + chunk].to(device)).sample.float().cpu()
                     for i in range(0, len(t), chunk)])
    return {"x_t": x_t, "t": t, "eps": eps, "w": loss_weights(alphas_cumprod, t, weighting)}


@register("o2mkd")
def setup(recipe: "Recipe", teacher: "DiffusionTeacher", train: "TrajectorySet", heldout: "TrajectorySet",
          device: torch.device) -> MethodSetup:
    """Real images for training and evaluation; the trajectory store's held-out runs for the preview grids."""
    from edgekd.data import load_dataset
    from edgekd.recipe import check_o2mkd
    from edgekd.students.o2mkd import build_o2mkd_student
    from edgekd.train.loop import TensorSource

    check_o2mkd(recipe, "recipe")
    cfg = recipe.method
    steps, spacing = recipe.teacher.steps, recipe.teacher.timestep_spacing
    try:
        student = build_o2mkd_student(recipe.student, teacher, steps, spacing)
    except ValueError as exc:
        raise EdgekdError(f"student.boundaries: {exc}") from None
    images = load_dataset(recipe.data)
    if len(images) <= cfg.heldout_images:
        raise EdgekdError(f"method.heldout_images ({cfg.heldout_images}) must be smaller than the {len(images)} "
                          "training images")
    train_images, held_images = images[: -cfg.heldout_images], images[-cfg.heldout_images:]
    alphas = teacher.ddim(steps, spacing).alphas_cumprod.float()
    teacher.unet.to(device)
    held = heldout_batch(student, teacher.unet, held_images, alphas, recipe.seed + 1, device, weighting=cfg.weighting)
    method = O2MKDMethod(student, teacher.unet, cfg, recipe.train, alphas)
    source = RangeSource(train_images, student.edges(), student.timesteps(), cfg.timesteps, recipe.data.hflip)
    previews = TensorSource({"noise": heldout["noise"], "x0": heldout["x0"]}).all()
    preview_noise, preview_x0 = previews["noise"][:16], previews["x0"][:16]

    def preview(net: nn.Module) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = net(preview_noise.to(device)).float().cpu()
        return {f"teacher DDIM-{steps}": preview_x0, f"o2mkd {net.num_students} students DDIM-{steps}": out}

    return MethodSetup(method, source, held, preview)
