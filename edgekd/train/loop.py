"""One training loop for every method (EDM-style: methods supply losses, the loop does everything else).

The loop owns devices, bf16 autocast, channels_last, optional torch.compile, batches prefetched to the device,
warm-up, a fused EMA, held-out evaluation of the EMA model, best-EMA selection, atomic resumable checkpoints,
progress, JSON-lines + TensorBoard metrics, sample grids, and DistributedDataParallel under torchrun
(edgekd.train.distributed). In the hot loop nothing waits for the device: methods may return their losses as
tensors, which are summed on the device and read back once every ``train.log_every`` steps.
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
from edgekd.train.checkpoint import (AtomicDir, atomic_write_json, find_resume_checkpoint, load_state, save_state,
                                     trim_metrics)
from edgekd.train.distributed import SINGLE, DistEnv

Batch = dict[str, torch.Tensor]
Logs = dict[str, "float | torch.Tensor"]


class Method(Protocol):
    """What a distillation method gives the loop.

    ``generator`` is the network that is averaged (EMA), evaluated, sampled and finally exported.
    ``modules`` holds every trained module (generator first; discriminators after) for checkpoints.
    """

    generator: nn.Module

    def modules(self) -> dict[str, nn.Module]: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> Logs:
        """Compute losses, backpropagate and step the optimizers; return scalars to log (0-d tensors preferred:
        a float() per step makes the host wait for the device)."""
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
    part = np.asarray(array[idx])
    if np.issubdtype(part.dtype, np.integer):  # condition ids (class ids, prompt indices) stay integers
        return torch.from_numpy(part.astype(np.int64))
    return torch.from_numpy(part.astype(np.float32, copy=False))


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Any,
                  grad_clip: float | None) -> torch.Tensor:
    """zero_grad, backward, optional gradient-norm clipping, step; returns the detached loss (a 0-d tensor, so
    the caller decides when to wait for the device; ``float()`` it where a number is needed)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss.detach()


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


class FusedEMA:
    """The EMA of a network, updated with fused foreach ops and no host synchronisation.

    Holds a torch AveragedModel (same state dict as before: ``module.*`` + ``n_averaged``), but updates it itself:
    AveragedModel.update_parameters reads its device counter on the host every step (``if n_averaged == 0``),
    which stalls a GPU. Same arithmetic as ``warmup_ema``: a copy at the first update, then
    lerp(ema, param, 1 - min(decay, (1 + n) / (10 + n))) on floats and a copy of integer buffers.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=warmup_ema(decay), use_buffers=True)
        self.averaged.requires_grad_(False)
        self.count = 0  # host copy of averaged.n_averaged

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
        self.count = int(self.averaged.n_averaged)

    def to(self, *args: Any, **kwargs: Any) -> "FusedEMA":
        self.averaged.to(*args, **kwargs)
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema = [*self.averaged.module.parameters(), *self.averaged.module.buffers()]
        src = [*model.parameters(), *model.buffers()]
        if self.count == 0:
            torch._foreach_copy_(ema, [p.detach() for p in src])
        else:
            d = min(self.decay, (1 + self.count) / (10 + self.count))
            floats = [(e, p.detach()) for e, p in zip(ema, src) if e.is_floating_point()]
            if floats:
                torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1.0 - d)
            for e, p in zip(ema, src):
                if not e.is_floating_point():
                    e.copy_(p)
        self.averaged.n_averaged.add_(1)
        self.count += 1


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


DdpTarget = tuple[nn.Module, tuple[str, ...], bool]


def default_ddp_targets(method: Method) -> list[DdpTarget]:
    """What DDP wraps when a method does not say: each trained module's ``forward``; a ModuleList/ModuleDict
    (no forward of its own) stands for its children, each wrapped alone."""
    out: list[DdpTarget] = []

    def add(module: nn.Module) -> None:
        if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            for child in module.children():
                add(child)
        elif any(p.requires_grad for p in module.parameters()):
            out.append((module, ("forward",), False))

    for module in method.modules().values():
        add(module)
    return out


def auto_log_every(cfg: TrainConfig, device: torch.device) -> int:
    """train.log_every, else 1 on a CPU (its ops are synchronous: reading a loss costs nothing) and 50 on a GPU."""
    if cfg.log_every is not None:
        return cfg.log_every
    return 50 if device.type == "cuda" else 1


class MetricWindow:
    """Sums of the logged scalars since the last flush, kept on the device (tensors) or the host (floats)."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.count = 0

    def add(self, logs: Logs) -> None:
        for key, value in logs.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float()
            self.sums[key] = value if key not in self.sums else self.sums[key] + value
        self.count += 1

    def means(self) -> dict[str, float]:
        """One host synchronisation for all tensors of the window."""
        if not self.count:
            return {}
        keys = list(self.sums)
        tensors = [k for k in keys if isinstance(self.sums[k], torch.Tensor)]
        values = dict(zip(tensors, torch.stack([self.sums[k].reshape(()) for k in tensors]).tolist())) if tensors else {}
        out = {k: float(values[k] if k in values else self.sums[k]) / self.count for k in keys}
        self.sums, self.count = {}, 0
        return out


class Trainer:
    """Runs ``method`` for ``cfg.steps`` steps in ``run_dir`` (checkpoints/, metrics.jsonl, tb/, samples/).

    Under torchrun (``dist`` enabled) every rank trains on its own batches (its own RNG stream) through DDP; only
    rank 0 evaluates, writes checkpoints, metrics, grids and the best student.
    """

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
        dist: DistEnv = SINGLE,
        step_callback: Callable[[int], None] | None = None,
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
        self.dist = dist
        self.step_callback = step_callback
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ema = FusedEMA(method.generator, cfg.ema_decay)
        self.optimizers = method.optimizers()
        warm = max(cfg.warmup_steps, 1)
        self.schedulers = {
            k: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / warm)) for k, o in self.optimizers.items()
        }
        self.step = 0
        self.best_eval: float | None = None
        # rank 0 keeps the single-process stream (same batches as before); other ranks draw their own
        self.rng = np.random.default_rng(seed if dist.rank == 0 else [seed, dist.rank])
        self.rng_state: dict[str, Any] = self.rng.bit_generator.state  # after the last batch consumed
        self.use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
        self.channels_last = cfg.channels_last is True or (cfg.channels_last == "auto" and device.type == "cuda")
        self.log_every = auto_log_every(cfg, device)
        self._routed: list[tuple[nn.Module, tuple[str, ...]]] = []
        self.last_batch: Batch | None = None

    @property
    def effective_batch(self) -> int:
        return self.cfg.batch_size * self.dist.world_size

    # ------------------------------------------------------------------ autocast
    def autocast(self) -> AbstractContextManager:
        if self.use_bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ------------------------------------------------------------------ checkpoints
    def latest_checkpoint(self) -> Path | None:
        return find_resume_checkpoint(self.ckpt_dir)  # falls back to the newest complete one, with a warning

    def save_checkpoint(self) -> Path | None:
        """Every rank calls this (the RNG states are gathered); rank 0 alone writes."""
        from edgekd.train.distributed import gather_objects

        rank_rngs = gather_objects(self.dist, json.dumps(self.rng_state)) if self.dist.enabled else None
        if not self.dist.is_main:
            return None
        final = self.ckpt_dir / f"step_{self.step:08d}"
        loop: dict[str, Any] = {
            "step": self.step,
            "best_eval": self.best_eval,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng_state),
            "sched": {k: s.state_dict() for k, s in self.schedulers.items()},
        }
        if rank_rngs is not None:
            loop["rank_rngs"] = rank_rngs
            loop["world_size"] = self.dist.world_size
        with AtomicDir(final) as tmp:
            save_state(tmp, "modules", {k: m.state_dict() for k, m in self.method.modules().items()})
            save_state(tmp, "ema", self.ema.state_dict())
            save_state(tmp, "optim", {k: o.state_dict() for k, o in self.optimizers.items()})
            save_state(tmp, "loop", loop)
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
        if self.dist.rank == 0:
            torch.set_rng_state(loop["torch_rng"])
        else:
            torch.manual_seed(self.seed + 1000 * self.dist.rank + self.step)
        state = json.loads(loop["numpy_rng"])
        saved = loop.get("rank_rngs")
        if self.dist.enabled and saved is not None and int(loop.get("world_size", 0)) == self.dist.world_size:
            state = json.loads(saved[self.dist.rank])
        elif self.dist.rank > 0:
            # another world size than the checkpoint's: a fresh, still reproducible stream for this rank
            state = np.random.default_rng([self.seed, self.dist.rank, self.step]).bit_generator.state
        self.rng.bit_generator.state = state
        self.rng_state = self.rng.bit_generator.state

    # ------------------------------------------------------------------ metrics
    def _trim_metrics(self, upto: int) -> None:
        """After a resume, drop metric lines the killed run wrote past its last checkpoint."""
        trim_metrics(self.run_dir / "metrics.jsonl", upto)  # tolerates a torn last line

    def evaluate(self) -> float:
        self.ema.module.eval()
        with torch.no_grad(), self.autocast():
            loss = float(self.method.eval_loss(self.ema.module, self.heldout))
        return loss

    # ------------------------------------------------------------------ device setup
    def _prepare_modules(self) -> None:
        """Device, memory format, torch.compile and DDP routing of the trained modules (after any resume)."""
        fmt = {"memory_format": torch.channels_last} if self.channels_last else {}
        for module in self.method.modules().values():
            module.to(self.device, **fmt).train()
        self.ema.to(self.device, **fmt)
        targets_fn = getattr(self.method, "ddp_targets", None)
        targets: list[DdpTarget] = targets_fn() if targets_fn is not None else default_ddp_targets(self.method)
        compile_fn = _compiler(self.cfg.compile) if self.cfg.compile else None
        for module, entries, find_unused in targets:
            if self.dist.enabled:
                from edgekd.train.distributed import route_through_ddp

                route_through_ddp(module, self.device, entries, find_unused=find_unused, wrap_fn=compile_fn)
            elif compile_fn is not None:
                for name in entries:
                    object.__setattr__(module, name, compile_fn(getattr(module, name)))
            else:
                continue
            self._routed.append((module, entries))

    def _release_modules(self) -> None:
        from edgekd.train.distributed import unroute

        for module, entries in self._routed:
            unroute(module, entries)
        self._routed = []

    # ------------------------------------------------------------------ the loop
    def _past(self, deadline: float) -> bool:
        """Whether the time budget is spent; under DDP rank 0's clock decides for every rank, so all ranks stop at
        the same step. The all-reduce (a host sync) runs only every ``log_every`` steps, where the loop syncs anyway."""
        past = time.monotonic() >= deadline
        if not self.dist.enabled:
            return past
        if self.step % self.log_every:
            return False
        import torch.distributed as torch_dist

        flag = torch.tensor([1.0 if past and self.dist.is_main else 0.0], device=self.device)
        torch_dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def run(self, resume: bool = False) -> LoopResult:
        from edgekd.train.distributed import broadcast_buffers
        from edgekd.train.prefetch import Prefetcher

        main = self.dist.is_main
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
            if main:
                self._trim_metrics(self.step)
                tqdm.write(f"resumed from {latest} (step {self.step})")
        elif resume and main:
            self._trim_metrics(0)  # nothing to resume from: start over without keeping the old run's lines
        metrics_file, writer = None, None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            metrics_file = (self.run_dir / "metrics.jsonl").open("a")
            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if resumed_from else None)
        self._prepare_modules()
        if main and self.dist.enabled:
            tqdm.write(f"DistributedDataParallel: {self.dist.world_size} processes x batch {self.cfg.batch_size} = "
                       f"effective batch {self.effective_batch}; lr {self.cfg.lr:g} (as written: not scaled "
                       "with the world size)")
        gen_buffers = any(True for _ in self.method.generator.buffers())
        history: list[dict[str, float]] = []
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not main or None)
        window = MetricWindow()
        images_seen, t_window = 0, time.perf_counter()
        first_record = True
        deadline = None if self.cfg.max_minutes is None else time.monotonic() + 60.0 * self.cfg.max_minutes
        prefetch = Prefetcher(self.source, self.cfg.batch_size, self.rng, self.device, depth=self.cfg.prefetch,
                              channels_last=self.channels_last) if self.step < self.cfg.steps else None
        try:
            while self.step < self.cfg.steps:
                assert prefetch is not None
                item = prefetch.next()
                batch = item.batch
                logs = self.method.train_step(batch, self.step, self.autocast)
                self.rng_state = item.rng_state
                self.last_batch = batch
                for sched in self.schedulers.values():
                    sched.step()
                if self.dist.enabled and gen_buffers:
                    broadcast_buffers(self.dist, self.method.generator)  # BatchNorm statistics: rank 0's
                self.ema.update(self.method.generator)
                self.step += 1
                images_seen += self.cfg.batch_size
                window.add(logs)
                if self.step_callback is not None:
                    self.step_callback(self.step)
                out_of_time = deadline is not None and self.step < self.cfg.steps and self._past(deadline)
                last = self.step == self.cfg.steps or out_of_time
                at_eval = self.step % self.cfg.eval_every == 0 or last
                at_sample = self.sample_fn is not None and (self.step % self.cfg.sample_every == 0 or last)
                at_ckpt = self.step % self.cfg.checkpoint_every == 0 or last
                if self.step % self.log_every and not (at_eval or at_sample or at_ckpt):
                    bar.update(1)
                    continue
                means = window.means()  # the one host synchronisation of the window
                if not all(math.isfinite(v) for v in means.values()):
                    raise EdgekdError(
                        f"training diverged by step {self.step} ({means}); lower train.lr or enable train.grad_clip"
                    )
                record: dict[str, float] = {"step": self.step, **means,
                                            "lr": self.schedulers[next(iter(self.schedulers))].get_last_lr()[0]}
                if first_record:
                    record["world_size"] = self.dist.world_size
                    record["effective_batch"] = self.effective_batch
                    first_record = False
                elapsed = time.perf_counter() - t_window
                if elapsed > 2.0:
                    record["images_per_s"] = images_seen * self.dist.world_size / elapsed
                    images_seen, t_window = 0, time.perf_counter()
                    bar.set_postfix({**{k: f"{v:.4f}" for k, v in means.items()},
                                     "img/s": f"{record['images_per_s']:.0f}"})
                if main and at_eval:
                    record["eval_loss"] = self.evaluate()
                    # a method may set select_best False (e.g. a GAN term): then the latest EMA is kept
                    latest = not getattr(self.method, "select_best", True)
                    if self.best_eval is None or record["eval_loss"] < self.best_eval or latest:
                        self.best_eval = record["eval_loss"]
                        if self.save_generator is not None:
                            self.save_generator(self.ema.module, self.run_dir / "best")
                if main and at_sample:
                    self.ema.module.eval()
                    self.sample_fn(self.ema.module, self.step)  # type: ignore[misc]
                if main:
                    assert metrics_file is not None and writer is not None
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    for key, value in record.items():
                        if key != "step":
                            writer.add_scalar(key, value, self.step)
                history.append(record)
                if at_ckpt:
                    self.save_checkpoint()
                bar.update(1)
                if out_of_time:
                    if main:
                        tqdm.write(f"train.max_minutes ({self.cfg.max_minutes:g}) reached at step {self.step} of "
                                   f"{self.cfg.steps}: stopped there (--resume continues the run)")
                    break
            if self.dist.enabled:
                self._record_rank_digests()
        except KeyboardInterrupt:
            bar.close()
            if self.dist.enabled:
                raise EdgekdError(f"interrupted at step {self.step}; continue from the last checkpoint with "
                                  "--resume") from None
            self.save_checkpoint()
            raise EdgekdError(f"interrupted at step {self.step}; checkpoint saved, continue with --resume") from None
        finally:
            if prefetch is not None:
                prefetch.close()
            self._release_modules()
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
            if writer is not None:
                writer.close()
        return LoopResult(step=self.step, best_eval=self.best_eval, resumed_from=resumed_from, history=history)

    def _record_rank_digests(self) -> None:
        """Rank 0 writes ``ranks.json``: every rank's digest of its parameters (as DDP left them), its whole state
        (after rank 0's buffers were broadcast), its EMA and its last batch.

        DDP keeps the weights equal on all ranks while each rank trains on other batches; this file lets anyone
        (and the tests) check both from the outside.
        """
        from edgekd.train.distributed import broadcast_buffers, gather_objects

        modules = self.method.modules()
        params = state_digest({k: dict(m.named_parameters()) for k, m in modules.items()})  # as DDP left them
        for module in modules.values():
            # BatchNorm statistics: DDP copies rank 0's at every forward; the last forward updated them locally
            broadcast_buffers(self.dist, module)
        mine = {"rank": self.dist.rank, "params": params,
                "weights": state_digest({k: m.state_dict() for k, m in modules.items()}),
                "ema": state_digest(self.ema.state_dict()),
                "last_batch": state_digest(self.last_batch or {})}
        every = gather_objects(self.dist, mine)
        if self.dist.is_main:
            atomic_write_json(self.run_dir / "ranks.json", {"world_size": self.dist.world_size, "step": self.step,
                                                            "ranks": every})


def state_digest(state: Any) -> str:
    """sha256 over the names and bytes of every tensor in a (nested) state."""
    import hashlib

    h = hashlib.sha256()

    def walk(node: Any, key: str) -> None:
        if isinstance(node, torch.Tensor):
            h.update(key.encode())
            h.update(node.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(node, dict):
            for k in sorted(node, key=str):
                walk(node[k], f"{key}.{k}")

    walk(state, "")
    return h.hexdigest()


def _compiler(enabled: bool, backend: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """torch.compile for an entry point (inductor by default; EDGEKD_COMPILE_BACKEND overrides, e.g. for tests)."""
    import os

    chosen = backend or os.environ.get("EDGEKD_COMPILE_BACKEND") or "inductor"

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        return torch.compile(fn, backend=chosen)

    return wrap
