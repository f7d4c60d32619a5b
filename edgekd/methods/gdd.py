"""GDD / GDD-I (Zheng & Yang, "Diffusion Models Are Innate One-Step Generators"): distributional distillation.

Generator: the teacher's own UNet, evaluated once at its highest noise level t = T-1 on pure noise z, its epsilon
turned into x0 = (z - sqrt(1 - abar) * eps) / sqrt(abar), abar = alphas_cumprod[T-1] (OneStepUNetStudent with
alpha_bar). At initialisation this is exactly the teacher's one-step DDIM prediction (clip_sample included).

Loss: a plain non-saturating GAN against REAL images (the paper's "exclusive distributional loss"): no teacher
output is regressed, the teacher contributes only the initial weights.
    D:  softplus(D(fake)) + softplus(-D(real))                     (summed over D's heads, means over logits)
    R1: every r1_every steps, r1_every * r1_gamma / 2 * E ||grad_real D(real)||^2, its own D step (lazy
        regularisation; D's Adam lr and betas are scaled by c = r1_every / (r1_every + 1) as in StyleGAN2 and
        GDD's code)
    G:  softplus(-D(G(z)))
Per step: one generator forward on fresh noise; D steps on the detached fakes, then G steps against the updated
D on the same fakes (GDD's code draws new noise for the D pass: one more generator forward per step for no known
benefit, and generator forwards dominate the cost here). Adam betas (0, 0.99), lr 1e-4, no clipping (recipe
defaults). EMA of the generator is the loop's.

GDD-I: parameters of the UNet whose names match ``method.freeze`` regexes (default: the paper's rule, see
edgekd.recipe.GDD_FREEZE_DEFAULT) get requires_grad False and are left out of the optimiser.

Output range: by default D sees the generator's raw x0 in training, as in the paper (out-of-range pixels keep
gradients and D learns that real pixels lie in [-1, 1]); ``clamp_fakes`` shows D the clamped x0 with a
straight-through gradient instead (measured to let saturated pixels drift without bound). Eval mode, the EMA model,
samples and the export clamp to [-1, 1].

Status: on the shared DDPM (epsilon, linear schedule) teacher no configuration tried learned garments within ~2.5k
GPU steps of batch 256; docs/gdd.md has the measurements and the likely reason (x0 = 157 x an epsilon residual).
Two options address it (docs/quality.md measures them): ``parametrisation: unit`` (x0 = z - eps(z, T-1), the
Denoising Student's unit-gain form) and ``warm_start_steps`` (first steps regress the teacher's recorded pairs
with L1, no GAN, so the GAN starts from garments). ``diffaug`` adds DiffAugment translation to D's inputs.

Best-EMA selection (eval_loss): FID between the EMA generator on fixed held-out noise (method.eval_samples images,
seed method.eval_seed) and a fixed random subset of the training images (method.eval_real), with edgekd's
Fashion-MNIST classifier features (method.feature_net). The GAN losses are useless for selection (they measure a
moving discriminator) and there is no paired target. The small-sample FID is biased upwards but deterministic, so
it ranks checkpoints; report quality with `edgekd profile` on the test split.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from edgekd.errors import EdgekdError
from edgekd.methods import MethodSetup, register
from edgekd.methods.discriminators import build_discriminator
from edgekd.recipe import GDDConfig, TrainConfig
from edgekd.students.unet_student import OneStepUNetStudent
from edgekd.train.loop import Batch

if TYPE_CHECKING:
    from edgekd.recipe import Recipe
    from edgekd.teachers.diffusers_teacher import DiffusionTeacher
    from edgekd.teachers.store import TrajectorySet


# --------------------------------------------------------------------------------------------- generator


def top_alpha_bar(scheduler_config: dict, timestep: int | None = None) -> tuple[int, float]:
    """(t, alphas_cumprod[t]) of the teacher's training schedule (diffusers DDPMScheduler); t defaults to T-1."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(scheduler_config)
    last = int(sched.config.num_train_timesteps) - 1
    t = last if timestep is None else int(timestep)
    if not 0 <= t <= last:
        raise EdgekdError(f"method.timestep {t} is outside the teacher's 0..{last}")
    return t, float(sched.alphas_cumprod[t])


def build_gdd_generator(teacher: "DiffusionTeacher", timestep: int | None = None,
                        parametrisation: str = "x0") -> OneStepUNetStudent:
    """A trainable copy of the teacher's UNet evaluated at ``timestep`` (default T-1).

    ``x0``: the teacher's own x0 prediction, (z - sqrt(1 - abar) eps) / sqrt(abar) (gain 157 at T-1 on a linear
    schedule: a small change of eps moves x0 a lot, which stalls the GAN, docs/gdd.md). ``unit``: the Denoising
    Student's x0 = z - eps(z, t), unit gain, so an update of the network moves the image by as much as the output.
    """
    import copy

    t, abar = top_alpha_bar(teacher.scheduler_config, timestep)
    unet = copy.deepcopy(teacher.unet).float().requires_grad_(True).train()
    if parametrisation == "unit":
        return OneStepUNetStudent(unet, t)
    if parametrisation != "x0":
        raise EdgekdError(f"method.parametrisation '{parametrisation}' is unknown (x0 or unit)")
    return OneStepUNetStudent(unet, t, alpha_bar=abar)


@dataclass
class FreezeReport:
    frozen: list[str]
    trainable_params: int
    total_params: int

    @property
    def fraction(self) -> float:
        return self.trainable_params / max(1, self.total_params)


def freeze_by_patterns(unet: nn.Module, patterns: list[str]) -> FreezeReport:
    """requires_grad False for every parameter whose name matches any regex (re.search); the rest require grad.

    Raises EdgekdError when patterns are given and match nothing, or match everything: both are recipe mistakes.
    """
    compiled = [re.compile(p) for p in patterns]
    frozen, trainable, total = [], 0, 0
    for name, param in unet.named_parameters():
        hit = any(c.search(name) for c in compiled)
        param.requires_grad_(not hit)
        total += param.numel()
        if hit:
            frozen.append(name)
        else:
            trainable += param.numel()
    if patterns and not frozen:
        example = next(iter(dict(unet.named_parameters())), "?")
        raise EdgekdError(f"method.freeze: the patterns {patterns} match no parameter of the teacher UNet "
                          f"(names look like '{example}'); fix the regexes")
    if patterns and trainable == 0:
        raise EdgekdError(f"method.freeze: the patterns {patterns} freeze every parameter of the teacher UNet; "
                          "nothing would train")
    return FreezeReport(frozen, trainable, total)


# --------------------------------------------------------------------------------------------- held-out FID


class HeldoutFID:
    """FID of generated images against a fixed real set whose features are computed once (torchmetrics keeps them:
    reset_real_features=False); runs on the CPU with the small classifier whatever the training device."""

    def __init__(self, real: Tensor, feature_net: str, batch_size: int = 500):
        from torchmetrics.image.fid import FrechetInceptionDistance

        from edgekd.profile.classifier import FeatureNet

        # sync_on_compute False: under torchrun only rank 0 evaluates; a cross-rank sync would wait for the others
        self.metric = FrechetInceptionDistance(feature=FeatureNet.from_path(feature_net), normalize=True,
                                               reset_real_features=False, sync_on_compute=False)
        self.batch_size = batch_size
        for chunk in real.split(batch_size):
            self.metric.update(chunk.float().clamp(-1, 1).cpu(), real=True)

    def __call__(self, fake: Tensor) -> float:
        self.metric.reset()  # fake statistics only
        for chunk in fake.split(self.batch_size):
            self.metric.update(chunk.float().clamp(-1, 1).cpu(), real=False)
        return max(0.0, float(self.metric.compute()))


# --------------------------------------------------------------------------------------------- the method


def straight_through_clamp(x: Tensor) -> Tensor:
    """clamp(x, -1, 1) forward, identity backward: D judges what the export outputs, saturated pixels still learn."""
    return x + (x.clamp(-1.0, 1.0) - x).detach()


def _ns_loss(logits: list[Tensor], real: bool) -> Tensor:
    """Non-saturating GAN loss summed over D's heads: softplus(-l) for real/generator targets, softplus(l) for fake."""
    sign = -1.0 if real else 1.0
    return sum(F.softplus(sign * l.float()).mean() for l in logits)  # type: ignore[return-value]


class GDDMethod:
    """The GAN of GDD around a one-step generator and a discriminator (see the module docstring)."""

    def __init__(self, generator: OneStepUNetStudent, discriminator: nn.Module, cfg: GDDConfig, train: TrainConfig,
                 fid: HeldoutFID | None = None, generate_batch: int = 256):
        self.generator = generator
        self.discriminator = discriminator
        self.cfg = cfg
        self.grad_clip = train.grad_clip
        self.fid = fid
        self.generate_batch = generate_batch
        self.freeze = freeze_by_patterns(generator.unet, cfg.freeze_patterns())
        self.g_params = [p for p in generator.parameters() if p.requires_grad]
        self.d_params = list(discriminator.trainable_parameters())
        self.g_opt = torch.optim.Adam(self.g_params, lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)
        lazy = cfg.r1_every / (cfg.r1_every + 1) if cfg.r1_gamma > 0 else 1.0
        d_lr = (cfg.d_lr or train.lr) * lazy
        self.d_opt = torch.optim.Adam(self.d_params, lr=d_lr, betas=(train.betas[0] ** lazy, train.betas[1] ** lazy))
        self.select_best = cfg.select_best  # the loop keeps the latest EMA when False

    # ------------------------------------------------------------------ protocol
    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.g_opt, "discriminator": self.d_opt}

    def describe(self) -> str:
        f = self.freeze
        what = "GDD-I" if self.cfg.innate else "GDD"
        frozen = f", {len(f.frozen)} tensors frozen by {len(self.cfg.freeze_patterns())} patterns" if f.frozen else ""
        return (f"{what}: {f.trainable_params:,} of {f.total_params:,} generator parameters train "
                f"({100 * f.fraction:.1f}%){frozen}")

    def _set_d_grad(self, on: bool) -> None:
        for p in self.d_params:
            p.requires_grad_(on)

    def _step(self, loss: Tensor, opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        opt.step()

    def r1_penalty(self, real: Tensor) -> Tensor:
        """Mean over the batch of ||grad_x sum_heads D(x)||^2 at real images (float32, no autocast)."""
        x = real.detach().float().requires_grad_(True)
        logits = self.discriminator(x)
        (grad,) = torch.autograd.grad(sum(l.float().sum() for l in logits), x, create_graph=True)
        # + 0 x the logits: the output biases get a (zero) gradient too, which DDP needs to finish its all-reduce
        # (under torchrun a parameter without a gradient in this backward pass stalls the next step)
        return grad.square().flatten(1).sum(1).mean() + 0.0 * sum(l.float().mean() for l in logits)

    # ------------------------------------------------------------------ one step
    def _aug(self, x: Tensor) -> Tensor:
        from edgekd.methods.adversarial import translate

        return translate(x) if self.cfg.diffaug else x

    def warm_start_step(self, batch: Batch) -> dict[str, float]:
        """L1 regression of the generator to the teacher's recorded pairs (no GAN): puts it on the image manifold."""
        pred = self.generator(batch["pair_noise"]).float()
        loss = F.l1_loss(pred, batch["pair_x0"])
        self._step(loss, self.g_opt, self.g_params)
        return {"loss_warm": float(loss.detach())}

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        if step < self.cfg.warm_start_steps:
            return self.warm_start_step(batch)
        real, noise = batch["real"], batch["noise"]
        with autocast():
            raw = self.generator(noise).float()  # raw x0 (train mode); the generator itself runs in float32
        fake = straight_through_clamp(raw) if self.cfg.clamp_fakes else raw

        # discriminator
        self._set_d_grad(True)
        with autocast():
            d_fake = self.discriminator(self._aug(fake.detach()))
            d_real = self.discriminator(self._aug(real))
        loss_d = _ns_loss(d_fake, real=False) + _ns_loss(d_real, real=True)
        self._step(loss_d, self.d_opt, self.d_params)
        logs = {"loss_d": float(loss_d.detach()),
                "d_real": float(sum(l.float().mean() for l in d_real).detach()) / len(d_real),
                "d_fake": float(sum(l.float().mean() for l in d_fake).detach()) / len(d_fake)}
        if self.cfg.r1_gamma > 0 and step % self.cfg.r1_every == 0:
            penalty = self.r1_penalty(real)
            self._step(penalty * (self.cfg.r1_gamma / 2 * self.cfg.r1_every), self.d_opt, self.d_params)
            logs["r1"] = float(penalty.detach())

        # generator against the updated discriminator (its weights get no gradient here)
        self._set_d_grad(False)
        with autocast():
            g_logits = self.discriminator(self._aug(fake))
        loss_g = _ns_loss(g_logits, real=True)
        self._step(loss_g, self.g_opt, self.g_params)
        self._set_d_grad(True)

        logs.update({"loss_g": float(loss_g.detach()),
                     "out_of_range": float((raw.detach().abs() > 1).float().mean())})
        if step == 0:
            logs["g_trainable_fraction"] = self.freeze.fraction
        return logs

    @torch.no_grad()
    def generate(self, generator: nn.Module, noise: Tensor) -> Tensor:
        return torch.cat([generator(chunk).float() for chunk in noise.split(self.generate_batch)])

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        """FID of the (EMA) generator on the fixed held-out noise; see the module docstring."""
        fake = self.generate(generator, batch["noise"])
        if self.fid is None:
            raise EdgekdError("GDDMethod.eval_loss needs a HeldoutFID (built by setup)")
        return self.fid(fake)


# --------------------------------------------------------------------------------------------- data


@dataclass
class RealNoiseSource:
    """Random real images (optionally flipped) plus fresh standard-normal generator noise, both drawn from the
    loop's numpy RNG, so a resumed run continues with the same batches."""

    images: Tensor
    hflip: bool = False
    pairs: object | None = None  # a TensorSource of teacher (noise, x0) for the warm start: pair_noise, pair_x0

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        idx = np.sort(rng.choice(len(self), size=size, replace=len(self) < size))
        real = self.images[torch.from_numpy(idx)]
        if self.hflip:
            flip = torch.from_numpy(rng.random(size) < 0.5).view(-1, 1, 1, 1)
            real = torch.where(flip, real.flip(-1), real)
        noise = torch.from_numpy(rng.standard_normal((size, *self.images.shape[1:]), dtype=np.float32))
        out = {"real": real.float(), "noise": noise}
        if self.pairs is not None:
            pairs = self.pairs.batch(size, rng)  # type: ignore[attr-defined]
            out.update({"pair_noise": pairs["noise"], "pair_x0": pairs["x0"]})
        return out


# --------------------------------------------------------------------------------------------- setup


@register("gdd")
def setup(recipe: "Recipe", teacher: "DiffusionTeacher", train: "TrajectorySet", heldout: "TrajectorySet",
          device: torch.device) -> MethodSetup:
    """Real images from recipe.data; held-out FID noise from edgekd.noise; previews from the trajectory store."""
    from edgekd.data import load_dataset
    from edgekd.noise import make_noise
    from edgekd.train.loop import TensorSource

    cfg = recipe.method
    if not isinstance(cfg, GDDConfig):
        raise EdgekdError(f"method {cfg.name} is not gdd")
    shape = teacher.sample_shape
    images = load_dataset(recipe.data)
    if tuple(images.shape[1:]) != tuple(shape):
        raise EdgekdError(f"data images are {tuple(images.shape[1:])} but the teacher makes {shape}: "
                          "set data.channels / data.resolution to match")
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.eval_seed))[: cfg.eval_real]
    fid = HeldoutFID(images[pick], cfg.feature_net)
    generator = build_gdd_generator(teacher, cfg.timestep, cfg.parametrisation)
    discriminator = build_discriminator(cfg.discriminator, shape, cfg.disc_channels, cfg.feature_net)
    method = GDDMethod(generator, discriminator, cfg, recipe.train, fid)
    tqdm.write(method.describe())

    held = {"noise": make_noise(cfg.eval_seed, 0, cfg.eval_samples, shape)}
    store = TensorSource({"noise": heldout["noise"], "x0": heldout["x0"]}).all()
    preview_noise, preview_x0 = store["noise"][:8], store["x0"][:8]
    with torch.no_grad():
        one_step = generator.eval()(preview_noise.to(next(generator.parameters()).device)).cpu()
    generator.train()
    preview_real = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(recipe.seed))[:8]]

    init_label = f"teacher 1 step at t={generator.timestep} (the init)"

    def preview(net: nn.Module) -> dict[str, Tensor]:
        with torch.no_grad():
            out = net(preview_noise.to(device)).float().cpu()
        return {f"teacher DDIM-{recipe.teacher.steps}": preview_x0, init_label: one_step,
                "generator (1 step)": out, "real images (not paired)": preview_real}

    pairs = TensorSource({"noise": train["noise"], "x0": train["x0"]}) if cfg.warm_start_steps else None
    return MethodSetup(method, RealNoiseSource(images, recipe.data.hflip, pairs), held, preview)


__all__ = ["FreezeReport", "GDDMethod", "HeldoutFID", "RealNoiseSource", "build_gdd_generator", "freeze_by_patterns",
           "top_alpha_bar"]
