"""The adversarial term a one-step student can add to its regression: a discriminator on REAL images.

Why: regression to the teacher's output (the Denoising Student) averages what the student cannot fit, so a small
student trained on few pairs makes blurry images. A non-saturating GAN term against real data (as in Adv-KD and
DMD2) restores the detail, and it costs no teacher calls: Fashion-MNIST has 60k real images on disk. Measured: a
~1,200-step fine-tune of the old quickstart student went from 7.0x to 3.0x its teacher's DDIM-50 FID
(/work/shared/METHODS.md); a 300-step GAN phase on a slim student did not beat pure regression (docs/quality.md).

One object owns D, D's Adam and the D step; the method adds ``weight * generator_loss(fake)`` to its own loss:
    D:   softplus(D(aug(fake))) + softplus(-D(aug(real)))
    R1:  every r1_every steps, r1_every * r1_gamma / 2 * E ||grad_real D(real)||^2 (lazy, StyleGAN2/GDD), own D step
    G:   softplus(-D(aug(fake)))             (D's weights get no gradient in it)
D's Adam: betas (0, 0.99) (GDD's), scaled for lazy R1 as StyleGAN2 does (lr x c, betas ** c, c = k / (k + 1)).
``aug`` is DiffAugment's translation (Zhao et al. 2020: shift by up to 1/8 of the size; the border is filled with
the background value -1 instead of zeros), applied to real and fake alike and differentiable, so D cannot memorise
a small real set.
The discriminator is the plain conv one by default: the projected one is built on edgekd's Fashion-MNIST
classifier, the network the reported FID is computed with, and training on the evaluator measures the metric,
not the images.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from edgekd.methods.discriminators import build_discriminator

Batch = dict[str, Tensor]


def ns_loss(logits: list[Tensor], real: bool) -> Tensor:
    """Non-saturating GAN loss summed over D's heads: softplus(-l) for real/generator targets, softplus(l) for fake."""
    sign = -1.0 if real else 1.0
    return sum(F.softplus(sign * l.float()).mean() for l in logits)  # type: ignore[return-value]


def translate(images: Tensor, fraction: float = 0.125, fill: float = -1.0,
              generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment translation: each image shifted by an integer in [-s, s] pixels (s = fraction x size) per axis,
    the uncovered border filled with ``fill`` (Fashion-MNIST's background). Differentiable in ``images``."""
    n, _, h, w = images.shape
    sh, sw = max(1, int(h * fraction)), max(1, int(w * fraction))
    padded = F.pad(images, (sw, sw, sh, sh), value=fill)
    dy = torch.randint(0, 2 * sh + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * sw + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)  # [n, h]
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(images.device)  # [n, w]
    idx_r = rows.view(n, 1, h, 1).expand(n, images.shape[1], h, padded.shape[-1])
    out = padded.gather(2, idx_r)
    idx_c = cols.view(n, 1, 1, w).expand(n, images.shape[1], h, w)
    return out.gather(3, idx_c)


@dataclass
class AdversarialSettings:
    """What the term needs from a method's config (the Denoising Student's or GDD's)."""

    disc_channels: int = 32
    r1_gamma: float = 0.1
    r1_every: int = 16
    d_lr: float = 2e-4
    diffaug: bool = False


class AdversarialTerm:
    """A conv discriminator on real images, its optimiser and its step (see the module docstring)."""

    def __init__(self, image_shape: tuple[int, int, int], settings: AdversarialSettings,
                 discriminator: nn.Module | None = None):
        self.settings = settings
        self.discriminator = discriminator or build_discriminator("conv", image_shape, settings.disc_channels)
        self.params = list(self.discriminator.trainable_parameters())
        lazy = settings.r1_every / (settings.r1_every + 1) if settings.r1_gamma > 0 else 1.0
        self.opt = torch.optim.Adam(self.params, lr=settings.d_lr * lazy, betas=(0.0, 0.99 ** lazy))

    def _aug(self, x: Tensor) -> Tensor:
        return translate(x) if self.settings.diffaug else x

    def _set_grad(self, on: bool) -> None:
        for p in self.params:
            p.requires_grad_(on)

    def r1_penalty(self, real: Tensor) -> Tensor:
        """Mean over the batch of ||grad_x sum_heads D(x)||^2 at real images (float32)."""
        x = real.detach().float().requires_grad_(True)
        logits = self.discriminator(x)
        (grad,) = torch.autograd.grad(sum(l.float().sum() for l in logits), x, create_graph=True)
        return grad.square().flatten(1).sum(1).mean()

    def d_step(self, fake: Tensor, real: Tensor, step: int,
               autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        """One D update on detached fakes and real images (plus the lazy R1 step when it is due)."""
        self._set_grad(True)
        with autocast():
            d_fake = self.discriminator(self._aug(fake.detach()))
            d_real = self.discriminator(self._aug(real))
        loss = ns_loss(d_fake, real=False) + ns_loss(d_real, real=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        logs = {"loss_d": float(loss.detach()),
                "d_real": float(sum(l.float().mean() for l in d_real).detach()) / len(d_real),
                "d_fake": float(sum(l.float().mean() for l in d_fake).detach()) / len(d_fake)}
        if self.settings.r1_gamma > 0 and step % self.settings.r1_every == 0:
            penalty = self.r1_penalty(real)
            self.opt.zero_grad(set_to_none=True)
            (penalty * (self.settings.r1_gamma / 2 * self.settings.r1_every)).backward()
            self.opt.step()
            logs["r1"] = float(penalty.detach())
        return logs

    def generator_loss(self, fake: Tensor, autocast: Callable[[], AbstractContextManager]) -> Tensor:
        """softplus(-D(fake)) with D frozen for this backward (its weights get no gradient)."""
        self._set_grad(False)
        with autocast():
            logits = self.discriminator(self._aug(fake))
        loss = ns_loss(logits, real=True)
        self._set_grad(True)
        return loss


@dataclass
class PairsAndRealSource:
    """Teacher pairs (noise, x0) from the trajectory store plus as many random real images (optionally flipped),
    all drawn from the loop's numpy RNG so a resumed run continues with the same batches."""

    pairs: object  # a TensorSource
    images: Tensor
    hflip: bool = False

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        out = self.pairs.batch(size, rng)  # type: ignore[attr-defined]
        idx = np.sort(rng.choice(len(self.images), size=size, replace=len(self.images) < size))
        real = self.images[torch.from_numpy(idx)].float()
        if self.hflip:
            flip = torch.from_numpy(rng.random(size) < 0.5).view(-1, 1, 1, 1)
            real = torch.where(flip, real.flip(-1), real)
        return {**out, "real": real}


__all__ = ["AdversarialSettings", "AdversarialTerm", "PairsAndRealSource", "ns_loss", "translate"]
