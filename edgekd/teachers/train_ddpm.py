"""``edgekd teacher train``: a plain DDPM (epsilon prediction) on a diffusers UNet2DModel + DDPMScheduler.

It exists so a fresh machine has a teacher to distill (the quickstart ships one trained with it), and so users
can make a small teacher for their own data. The output is an ordinary diffusers checkpoint.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.data import load_dataset
from edgekd.paths import claim_folder
from edgekd.grid import labelled_rows
from edgekd.noise import make_noise
from edgekd.recipe import TeacherTrainRecipe, UNetArchConfig
from edgekd.teachers.diffusers_teacher import DiffusionTeacher, save_teacher
from edgekd.train.checkpoint import AtomicDir, atomic_write_json
from edgekd.train.loop import Batch, TensorSource, Trainer, backward_step, pick_device, seed_everything


def build_unet(arch: UNetArchConfig, resolution: int, channels: int) -> nn.Module:
    from diffusers import UNet2DModel

    levels = len(arch.block_out_channels)
    down = tuple("AttnDownBlock2D" if i in arch.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if levels - 1 - i in arch.attention_levels else "UpBlock2D" for i in range(levels))
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(arch.block_out_channels),
        layers_per_block=arch.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=arch.norm_num_groups,
        add_attention=bool(arch.attention_levels),
        attention_head_dim=8,
    )


class DDPMMethod:
    """Epsilon-prediction MSE at uniformly drawn timesteps (Ho et al. 2020), with horizontal flips."""

    def __init__(self, unet: nn.Module, scheduler_config: dict, lr: float, betas: tuple[float, float],
                 weight_decay: float, grad_clip: float | None, hflip: bool):
        from diffusers import DDPMScheduler

        self.generator = unet
        self.noise_scheduler = DDPMScheduler.from_config(scheduler_config)
        self.num_t = int(scheduler_config["num_train_timesteps"])
        self.opt = torch.optim.AdamW(unet.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self.grad_clip = grad_clip
        self.hflip = hflip

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.generator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"unet": self.opt}

    def _loss(self, net: nn.Module, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xt = self.noise_scheduler.add_noise(x0, noise, t)
        return F.mse_loss(net(xt, t).sample.float(), noise)

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        x0 = batch["images"]
        if self.hflip:
            flip = torch.rand(x0.shape[0], device=x0.device) < 0.5
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.num_t, (x0.shape[0],), device=x0.device)
        with autocast():
            loss = self._loss(self.generator, x0, noise, t)
        return {"loss": backward_step(loss, self.opt, self.generator.parameters(), self.grad_clip)}

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        return float(self._loss(generator, batch["images"], batch["noise"], batch["t"]))


def train_teacher(recipe: TeacherTrainRecipe, resume: bool = False) -> Path:
    """Train a DDPM teacher; returns the folder of the finished diffusers checkpoint (run_dir/teacher)."""
    from diffusers import DDPMScheduler

    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.seed)
    device = pick_device(recipe.device)
    run_dir = claim_folder(recipe.resolved_run_dir(), "teacher")  # never a user's folder (edgekd.rundir)
    (run_dir / "recipe.json").write_text(recipe.model_dump_json(indent=2))

    images = load_dataset(recipe.data)
    n_eval = min(512, max(1, len(images) // 10))
    gen = torch.Generator().manual_seed(recipe.seed)
    perm = torch.randperm(len(images), generator=gen)
    heldout_x, train_x = images[perm[:n_eval]], images[perm[n_eval:]]
    sched_cfg = dict(DDPMScheduler(**recipe.schedule.model_dump(), prediction_type="epsilon", clip_sample=True).config)
    heldout = {
        "images": heldout_x,
        "noise": torch.randn(heldout_x.shape, generator=gen),
        "t": torch.randint(0, recipe.schedule.num_train_timesteps, (n_eval,), generator=gen),
    }
    unet = build_unet(recipe.unet, recipe.data.resolution, recipe.data.channels)
    method = DDPMMethod(unet, sched_cfg, recipe.train.lr, recipe.train.betas, recipe.train.weight_decay,
                        recipe.train.grad_clip, recipe.data.hflip)
    shape = (recipe.data.channels, recipe.data.resolution, recipe.data.resolution)
    fixed_noise = make_noise(recipe.seed + 12345, 0, 32, shape)

    def sample_fn(net: nn.Module, step: int) -> None:
        teacher = DiffusionTeacher(net, sched_cfg, source="training", fingerprint="")
        with torch.no_grad():
            x0, _ = teacher.sample(fixed_noise.to(device), recipe.sample_steps)
        labelled_rows({f"DDIM-{recipe.sample_steps} samples, step {step}": x0}, run_dir / "samples" / f"step_{step:08d}.png")

    trainer = Trainer(run_dir, recipe.train, method, TensorSource({"images": train_x}), heldout, device,
                      recipe.seed, sample_fn=sample_fn)
    started = time.time()
    result = trainer.run(resume=resume)
    final = run_dir / "teacher"
    with AtomicDir(final) as tmp:
        save_teacher(trainer.ema.module.cpu(), sched_cfg, tmp)
        params = sum(p.numel() for p in unet.parameters())
        (tmp / "train.json").write_text(json.dumps({
            "name": recipe.name, "steps": result.step, "batch": recipe.train.batch_size, "params": params,
            "eval_loss": result.best_eval, "seconds_this_session": round(time.time() - started, 1),
            "device": str(device), "channels": recipe.unet.block_out_channels,
            "layers_per_block": recipe.unet.layers_per_block, "data": recipe.data.model_dump(),
        }, indent=2))
    atomic_write_json(run_dir / "result.json", {"teacher": str(final), "step": result.step, "eval_loss": result.best_eval})
    return final
