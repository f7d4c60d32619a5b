"""Recovery after pruning: distillation fine-tuning of the pruned model from the UNPRUNED one, in the shared loop.

Pruning keeps the surviving weights, so the pruned network starts close to the unpruned one but not on it; a short
distillation from the unpruned network (the best teacher a pruned model can have: same function, same data)
closes most of the gap. Two kinds of model:

- one-step students (noise -> image: one-step UNet, layerwise): match the unpruned student's output on fresh
  noise every step (a layerwise student matches every head, so each block keeps its job); no data needed;
- epsilon models (a teacher UNet, O2MKD's per-interval UNets): epsilon MSE to the unpruned UNet on x_t made from
  real data at timesteps drawn uniformly from the range each UNet owns.

The shared ``Trainer`` runs it (warm-up, EMA, held-out loss of the EMA model with best-EMA selection, atomic
checkpoints and ``--resume``, progress bar, metrics.jsonl/TensorBoard) in the derived run directory.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgekd.recipe import PruneConfig, TrainConfig
from edgekd.train.loop import Batch, backward_step


def recovery_train_config(prune: PruneConfig, train: TrainConfig) -> TrainConfig:
    """The recipe's loop settings with the recovery's steps, lr and batch; ~10 evaluations, ~5 checkpoints."""
    steps = max(1, prune.recover_steps)
    return train.model_copy(update={
        "steps": steps, "lr": recovery_lr(prune, train), "batch_size": prune.batch_size,
        "warmup_steps": min(train.warmup_steps, steps // 10), "eval_every": max(1, steps // 10),
        "sample_every": steps, "checkpoint_every": max(1, steps // 5), "keep_checkpoints": 1,
    })


def recovery_lr(prune: PruneConfig, train: TrainConfig) -> float:
    """``prune.recover_lr``, else the lr the run was trained with (1e-4 left the quickstart student far behind)."""
    return prune.recover_lr if prune.recover_lr is not None else train.lr


def _distance(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


class _Base:
    """Adam on the pruned model's parameters; the unpruned reference is frozen and never trained."""

    def __init__(self, pruned: nn.Module, reference: nn.Module, cfg: PruneConfig, train: TrainConfig):
        self.generator = pruned
        self.reference = reference.eval().requires_grad_(False)
        self.cfg = cfg
        self.grad_clip = train.grad_clip
        self.opt = torch.optim.Adam([p for p in pruned.parameters() if p.requires_grad], lr=train.lr,
                                    betas=train.betas, weight_decay=train.weight_decay)

    def modules(self) -> dict[str, nn.Module]:
        return {"student": self.generator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.opt}

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        self.reference.to(batch[next(iter(batch))].device)
        with autocast():
            loss = self.loss(self.generator, batch)
        return {"loss": backward_step(loss, self.opt, self.generator.parameters(), self.grad_clip)}

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        self.reference.to(batch[next(iter(batch))].device)
        return float(self.loss(generator, batch))


class OutputDistill(_Base):
    """One-step students: the pruned output (every head for a layerwise student) against the unpruned one, plus
    ``teacher_weight`` x the distance to the teacher's DDIM x_0 when the batch carries it (trajectory store)."""

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        noise = batch["noise"]
        with torch.no_grad():
            targets = self.reference.outputs(noise)
        outs = net.outputs(noise)  # every output the student distils (a layerwise student: every head)
        out = outs[-1].float()
        loss = sum(_distance(self.cfg.loss, o.float(), t.float()) for o, t in zip(outs, targets)) / len(outs)
        if "x0" in batch and self.cfg.teacher_weight > 0:
            loss = loss + self.cfg.teacher_weight * _distance(self.cfg.loss, out, batch["x0"].float())
        return loss


def eps_unets(model: nn.Module) -> list[nn.Module]:
    """The epsilon UNets of a model: a bare UNet2DModel, or the ``unets`` of an O2MKD student."""
    if type(model).__name__ == "UNet2DModel":
        return [model]
    graphs = model.graphs()
    if not all(g.is_step for g in graphs):
        raise TypeError(f"{type(model).__name__} has no epsilon UNets to recover")
    return [g.module.unet for g in graphs]


def eps_ranges(model: nn.Module, num_train_timesteps: int) -> list[tuple[int, int]]:
    """(first, last) timestep each UNet owns: the whole schedule for a teacher, the routed ranges for O2MKD."""
    if type(model).__name__ == "UNet2DModel":
        return [(0, num_train_timesteps - 1)]
    return model.sampling().owned_ranges()


class EpsDistill(_Base):
    """Epsilon models: MSE (or L1) to the unpruned UNet's epsilon on x_t = sqrt(ab) x0 + sqrt(1 - ab) eps."""

    def __init__(self, pruned: nn.Module, reference: nn.Module, cfg: PruneConfig, train: TrainConfig,
                 alphas_cumprod: torch.Tensor):
        super().__init__(pruned, reference, cfg, train)
        self.alphas_cumprod = alphas_cumprod.float()
        self.ranges = eps_ranges(pruned, len(alphas_cumprod))

    def _noisy(self, x0: torch.Tensor, lo: int, hi: int, gen: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.randint(lo, hi + 1, (x0.shape[0],), generator=gen).to(x0.device)
        eps = torch.randn(x0.shape, generator=gen).to(x0.device)
        from edgekd.models.diffusion import add_noise

        return add_noise(self.alphas_cumprod, x0, eps, t), t

    def fixed_batch(self, x0: torch.Tensor, seed: int) -> Batch:
        """A held-out batch: images plus one fixed (x_t, t) pair per UNet, so the eval loss is comparable."""
        gen = torch.Generator().manual_seed(seed)
        batch: Batch = {"x0": x0}
        for i, (lo, hi) in enumerate(self.ranges):
            batch[f"xt{i}"], batch[f"t{i}"] = self._noisy(x0, lo, hi, gen)
        return batch

    def loss(self, net: nn.Module, batch: Batch) -> torch.Tensor:
        refs = eps_unets(self.reference)
        total = 0.0
        for i, (unet, (lo, hi)) in enumerate(zip(eps_unets(net), self.ranges)):
            if f"xt{i}" in batch:
                xt, t = batch[f"xt{i}"], batch[f"t{i}"]
            else:
                xt, t = self._noisy(batch["x0"], lo, hi)
            with torch.no_grad():
                target = refs[i](xt, t).sample.float()
            total = total + _distance(self.cfg.loss, unet(xt, t).sample.float(), target)
        return total / len(self.ranges)


class NoiseSource:
    """Endless fresh standard-normal noise (the one-step students need no data to follow their unpruned self)."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)

    def __len__(self) -> int:
        return 1 << 30

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        return {"noise": torch.from_numpy(rng.standard_normal((size, *self.shape), dtype=np.float32))}


def recover(
    pruned: nn.Module,
    reference: nn.Module,
    cfg: PruneConfig,
    train: TrainConfig,
    run_dir: Path,
    device: torch.device,
    seed: int,
    save: Callable[[nn.Module, Path], None],
    images: torch.Tensor | None = None,
    alphas_cumprod: torch.Tensor | None = None,
    resume: bool = False,
    preview: Callable[[nn.Module, int], None] | None = None,
    pairs: tuple[dict[str, Any], Batch] | None = None,
) -> nn.Module:
    """Fine-tune ``pruned`` toward ``reference`` for ``cfg.recover_steps`` steps; return the best EMA model (CPU).

    ``images`` + ``alphas_cumprod`` select epsilon distillation (teacher, O2MKD); without them the model is a
    one-step student and is matched on fresh noise, or on the recorded (noise, x0) ``pairs`` (train arrays,
    held-out batch) when given. ``save(model, folder)`` writes the best EMA model.
    """
    from edgekd.noise import make_noise
    from edgekd.train.loop import TensorSource, Trainer

    loop_cfg = recovery_train_config(cfg, train)
    pruned = pruned.float().to(device).train().requires_grad_(True)
    reference = copy.deepcopy(reference).float().to(device)
    if images is not None:
        if alphas_cumprod is None:
            raise ValueError("epsilon recovery needs the teacher's alphas_cumprod")
        method: Any = EpsDistill(pruned, reference, cfg, loop_cfg, alphas_cumprod)
        n_held = min(64, max(2, len(images) // 8))
        heldout = method.fixed_batch(images[:n_held], seed)
        source: Any = TensorSource({"x0": images[n_held:] if len(images) > 2 * n_held else images})
    else:
        shape = tuple(int(s) for s in pruned.input_shape)
        method = OutputDistill(pruned, reference, cfg, loop_cfg)
        if pairs is not None:
            source, heldout = TensorSource(pairs[0]), pairs[1]
        else:
            heldout = {"noise": make_noise(seed + 7_000_000, 0, 64, shape)}
            source = NoiseSource(shape)
    trainer = Trainer(run_dir, loop_cfg, method, source, heldout, device, seed, sample_fn=preview, save_generator=save)
    trainer.run(resume=resume)
    return copy.deepcopy(trainer.ema.module).cpu().eval()


def alphas_cumprod_of(scheduler_config: dict[str, Any]) -> torch.Tensor:
    """The teacher's cumulative alphas (diffusers' DDPMScheduler on its saved config)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config).alphas_cumprod.clone()
