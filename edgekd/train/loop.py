"""One training loop for every method (EDM-style: methods supply losses, the loop does everything else).

The loop owns devices, bf16 autocast, warm-up, EMA, held-out evaluation of the EMA model, best-EMA selection,
atomic resumable checkpoints, progress, JSON-lines + TensorBoard metrics and sample grids.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from edgekd.errors import EdgekdError
from edgekd.recipe import TrainConfig
from edgekd.train.checkpoint import AtomicDir, atomic_write_json, load_state, save_state

Batch = dict[str, torch.Tensor]


class Method(Protocol):
    """What a distillation method gives the loop.

    ``generator`` is the network that is averaged (EMA), evaluated, sampled and finally exported.
    ``modules`` holds every trained module (generator first; discriminators after) for checkpoints.
    """

    generator: nn.Module

    def modules(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        """Compute losses, backpropagate and step the optimizers; return scalars to log."""
        ...

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        """The held-out loss of ``generator`` (the EMA copy) on a fixed batch."""
        ...


class BatchSource(Protocol):
    def __len__(self) -> int: ...

    def batch(self, size: int, rng: np.random.Generator) -> Batch: ...


@dataclass
class TensorSource:
    """Random batches from aligned arrays (in memory or memory-mapped)."""

    arrays: dict[str, Any]

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def batch(self, size: int, rng: np.random.Generator) -> Batch:
        idx = np.sort(rng.choice(len(self), size=min(size, len(self)), replace=len(self) < size))
        return {k: _as_tensor(v, idx) for k, v in self.arrays.items()}

    def all(self) -> Batch:
        return {k: _as_tensor(v, slice(None)) for k, v in self.arrays.items()}


def _as_tensor(array: Any, idx: Any) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array[idx]
    return torch.from_numpy(np.asarray(array[idx], dtype=np.float32))


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Any, grad_clip: float | None) -> float:
    """zero_grad, backward, optional gradient-norm clipping, step; returns the loss as a float."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return float(loss.detach())


def warmup_ema(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Any], None]:
    """EMA whose decay warms up as min(decay, (1 + n) / (10 + n)) (as diffusers' EMAModel does).

    A fixed 0.999 keeps 0.999**n of the random initialisation in the average: 37% after 1000 steps, which
    ruins the short runs edgekd makes on CPUs.
    """

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: Any) -> None:
        n = int(num_averaged) if not isinstance(num_averaged, torch.Tensor) else int(num_averaged.item())
        d = min(decay, (1 + n) / (10 + n))
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1.0 - d)
        for e, p in zip(ema_params, params):
            if not e.is_floating_point():
                e.copy_(p)

    return update


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgekdError("device: cuda was asked for but no CUDA GPU is visible (use device: auto or cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class LoopResult:
    step: int
    best_eval: float | None
    resumed_from: int | None
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Runs ``method`` for ``cfg.steps`` steps in ``run_dir`` (checkpoints/, metrics.jsonl, tb/, samples/)."""

    def __init__(
        self,
        run_dir: Path,
        cfg: TrainConfig,
        method: Method,
        source: BatchSource,
        heldout: Batch,
        device: torch.device,
        seed: int,
        sample_fn: Callable[[nn.Module, int], None] | None = None,
        save_generator: Callable[[nn.Module, Path], None] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.method = method
        self.source = source
        self.heldout = {k: v.to(device) for k, v in heldout.items()}
        self.device = device
        self.seed = seed
        self.sample_fn = sample_fn
        self.save_generator = save_generator
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ema = AveragedModel(method.generator, multi_avg_fn=warmup_ema(cfg.ema_decay), use_buffers=True)
        self.ema.requires_grad_(False)
        self.optimizers = method.optimizers()
        warm = max(cfg.warmup_steps, 1)
        self.schedulers = {
            k: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / warm)) for k, o in self.optimizers.items()
        }
        self.step = 0
        self.best_eval: float | None = None
        self.rng = np.random.default_rng(seed)
        self.use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")

    # ------------------------------------------------------------------ autocast
    def autocast(self) -> AbstractContextManager:
        if self.use_bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ------------------------------------------------------------------ checkpoints
    def latest_checkpoint(self) -> Path | None:
        pointer = self.ckpt_dir / "latest.json"
        if not pointer.is_file():
            return None
        try:
            name = json.loads(pointer.read_text())["name"]
        except (ValueError, KeyError):
            raise EdgekdError(f"{pointer} is corrupt; delete {self.ckpt_dir} to start over") from None
        path = self.ckpt_dir / name
        return path if path.is_dir() else None

    def save_checkpoint(self) -> Path:
        final = self.ckpt_dir / f"step_{self.step:08d}"
        with AtomicDir(final) as tmp:
            save_state(tmp, "modules", {k: m.state_dict() for k, m in self.method.modules().items()})
            save_state(tmp, "ema", self.ema.state_dict())
            save_state(tmp, "optim", {k: o.state_dict() for k, o in self.optimizers.items()})
            save_state(
                tmp,
                "loop",
                {
                    "step": self.step,
                    "best_eval": self.best_eval,
                    "torch_rng": torch.get_rng_state(),
                    "numpy_rng": json.dumps(self.rng.bit_generator.state),
                    "sched": {k: s.state_dict() for k, s in self.schedulers.items()},
                },
            )
        atomic_write_json(self.ckpt_dir / "latest.json", {"name": final.name, "step": self.step})
        old = sorted(p for p in self.ckpt_dir.glob("step_*") if p.is_dir())
        for path in old[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(path, ignore_errors=True)
        return final

    def load_checkpoint(self, path: Path) -> None:
        modules = load_state(path, "modules")
        for name, module in self.method.modules().items():
            module.load_state_dict(modules[name])
        self.ema.load_state_dict(load_state(path, "ema"))
        for name, state in load_state(path, "optim").items():
            self.optimizers[name].load_state_dict(state)
        loop = load_state(path, "loop")
        for name, state in loop["sched"].items():
            self.schedulers[name].load_state_dict(state)
        self.step = int(loop["step"])
        self.best_eval = loop["best_eval"]
        torch.set_rng_state(loop["torch_rng"])
        self.rng.bit_generator.state = json.loads(loop["numpy_rng"])

    # ------------------------------------------------------------------ metrics
    def _trim_metrics(self, upto: int) -> None:
        """After a resume, drop metric lines the killed run wrote past its last checkpoint."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= upto]
        path.write_text("".join(line + "\n" for line in keep))

    def evaluate(self) -> float:
        self.ema.module.eval()
        with torch.no_grad(), self.autocast():
            loss = float(self.method.eval_loss(self.ema.module, self.heldout))
        return loss

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool = False) -> LoopResult:
        from torch.utils.tensorboard import SummaryWriter

        resumed_from = None
        latest = self.latest_checkpoint()
        if latest is not None and not resume:
            raise EdgekdError(
                f"{self.run_dir} already holds checkpoints (last: {latest.name}); "
                "pass --resume to continue it, or choose another run_dir"
            )
        if resume and latest is not None:
            self.load_checkpoint(latest)
            resumed_from = self.step
            self._trim_metrics(self.step)
            tqdm.write(f"resumed from {latest} (step {self.step})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics_file = (self.run_dir / "metrics.jsonl").open("a")
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if resumed_from else None)
        for module in self.method.modules().values():
            module.to(self.device).train()
        self.ema.to(self.device)
        history: list[dict[str, float]] = []
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        images_seen, t_window = 0, time.perf_counter()
        try:
            while self.step < self.cfg.steps:
                batch = {k: v.to(self.device, non_blocking=True) for k, v in self.source.batch(self.cfg.batch_size, self.rng).items()}
                logs = self.method.train_step(batch, self.step, self.autocast)
                for sched in self.schedulers.values():
                    sched.step()
                self.ema.update_parameters(self.method.generator)
                self.step += 1
                images_seen += self.cfg.batch_size
                if not all(math.isfinite(v) for v in logs.values()):
                    raise EdgekdError(
                        f"training diverged at step {self.step} ({logs}); lower train.lr or enable train.grad_clip"
                    )
                record: dict[str, float] = {"step": self.step, **logs, "lr": self.schedulers[next(iter(self.schedulers))].get_last_lr()[0]}
                elapsed = time.perf_counter() - t_window
                if elapsed > 2.0:
                    record["images_per_s"] = images_seen / elapsed
                    images_seen, t_window = 0, time.perf_counter()
                    bar.set_postfix({**{k: f"{v:.4f}" for k, v in logs.items()}, "img/s": f"{record['images_per_s']:.0f}"})
                if self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps:
                    record["eval_loss"] = self.evaluate()
                    # a method may set select_best False (e.g. a GAN term): then the latest EMA is kept
                    latest = not getattr(self.method, "select_best", True)
                    if self.best_eval is None or record["eval_loss"] < self.best_eval or latest:
                        self.best_eval = record["eval_loss"]
                        if self.save_generator is not None:
                            self.save_generator(self.ema.module, self.run_dir / "best")
                if self.sample_fn is not None and (self.step % self.cfg.sample_every == 0 or self.step == self.cfg.steps):
                    self.ema.module.eval()
                    self.sample_fn(self.ema.module, self.step)
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                for key, value in record.items():
                    if key != "step":
                        writer.add_scalar(key, value, self.step)
                history.append(record)
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    self.save_checkpoint()
                bar.update(1)
        except KeyboardInterrupt:
            self.save_checkpoint()
            bar.close()
            raise EdgekdError(f"interrupted at step {self.step}; checkpoint saved, continue with --resume") from None
        finally:
            bar.close()
            metrics_file.close()
            writer.close()
        return LoopResult(step=self.step, best_eval=self.best_eval, resumed_from=resumed_from, history=history)
