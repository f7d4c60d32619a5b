"""Many processes through PyTorch's own engine: torch.distributed + DistributedDataParallel, nothing home-made.

``torchrun --nproc_per_node N -m edgekd distill RECIPE`` starts N copies of edgekd; each reads its rank from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Backend: nccl on CUDA, gloo on CPU.

Methods call their networks in their own ways (Adv-KD calls ``student.heads``, O2MKD calls each of its UNets,
GANs call discriminators several times per step). Rather than making every method aware of DDP, ``route_through_ddp``
wraps a module in DDP and points the module's own entry points (``forward`` and any others named) at the DDP
wrapper: ``module(x)`` then runs DDP's forward (buffer broadcast, reducer bookkeeping) around the original
``forward``, and the backward pass all-reduces the gradients. Parameter names, state dicts and the EMA copy are
untouched, because the module object itself is not replaced.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank among world_size processes (1 and 0 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistEnv()
_OWNED = False  # whether init_distributed created the process group


def env_from_torchrun() -> DistEnv:
    """The rank/world torchrun exported, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def init_distributed(device_name: str) -> tuple[DistEnv, torch.device | None]:
    """Join the process group torchrun prepared (nccl on CUDA, gloo on CPU).

    Returns the environment and, for CUDA, this rank's device (``cuda:LOCAL_RANK``); None means "use the recipe's
    device as usual". A single process (no torchrun) gets SINGLE and no process group.
    """
    env = env_from_torchrun()
    if not env.enabled:
        return env, None
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name == "cuda" and not torch.cuda.is_available():
        raise EdgekdError("device: cuda was asked for but no CUDA GPU is visible (use device: auto or cpu)")
    device = None
    if use_cuda:
        if env.local_rank >= torch.cuda.device_count():
            raise EdgekdError(f"torchrun started local rank {env.local_rank} but only {torch.cuda.device_count()} "
                              "GPUs are visible: lower --nproc_per_node")
        torch.cuda.set_device(env.local_rank)
        device = torch.device("cuda", env.local_rank)
    if not dist.is_initialized():
        global _OWNED
        _OWNED = True
        backend = "nccl" if use_cuda else "gloo"
        timeout = timedelta(minutes=int(os.environ.get("EDGEKD_DIST_TIMEOUT_MIN", "30")))
        dist.init_process_group(backend=backend, timeout=timeout,
                                **({"device_id": device} if device is not None and _takes_device_id() else {}))
    return env, (device if device is not None else torch.device("cpu"))


def _takes_device_id() -> bool:
    import inspect

    return "device_id" in inspect.signature(dist.init_process_group).parameters


def shutdown() -> None:
    """Leave the process group, if edgekd joined it (a caller's own group is left alone)."""
    global _OWNED
    if _OWNED and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def broadcast_object(env: DistEnv, obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s Python object on every rank (small objects: counts, decisions)."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank (used for per-rank RNG states in checkpoints)."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(env: DistEnv, module: nn.Module, src: int = 0) -> None:
    """Rank ``src``'s buffers (BatchNorm statistics) on every rank, so the EMA that averages them stays identical."""
    if not env.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=src)


class _EntryPoints(nn.Module):
    """What DDP wraps: dispatches ``forward(name, *args)`` to the original bound methods of ``inner``."""

    def __init__(self, inner: nn.Module, originals: dict[str, Callable[..., Any]]):
        super().__init__()
        self.inner = inner
        self._originals = originals

    def forward(self, _entry: str, *args: Any, **kwargs: Any) -> Any:
        return self._originals[_entry](*args, **kwargs)


def route_through_ddp(module: nn.Module, device: torch.device, entry_points: Iterable[str] = ("forward",),
                      find_unused: bool = False,
                      wrap_fn: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None) -> DistributedDataParallel:
    """Wrap ``module`` in DDP and make its ``entry_points`` run through it (see the module docstring).

    ``find_unused``: parameters that some steps do not use (Adv-KD's later blocks before their stage) need DDP's
    unused-parameter search. ``wrap_fn`` (torch.compile) is applied to each original entry point.
    """
    originals: dict[str, Callable[..., Any]] = {}
    for name in entry_points:
        fn = getattr(module, name)
        originals[name] = wrap_fn(fn) if wrap_fn is not None else fn
    # a 1-channel conv's gradient may carry other (equivalent) strides than DDP's bucket view: harmless, but the
    # warning would be printed by every rank
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    holder = _EntryPoints(module, originals)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    ddp = DistributedDataParallel(holder, device_ids=ids, find_unused_parameters=find_unused)
    for name in entry_points:
        # instance attributes shadow the class's methods; nn.Module.__call__ finds the patched forward
        object.__setattr__(module, name, _routed(ddp, name))
    return ddp


def _routed(ddp: DistributedDataParallel, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return ddp(name, *args, **kwargs)

    call.__name__ = f"ddp_{name}"
    return call


def unroute(module: nn.Module, entry_points: Iterable[str] = ("forward",)) -> None:
    """Undo ``route_through_ddp`` / a compiled entry point: the class's own methods again."""
    for name in entry_points:
        module.__dict__.pop(name, None)


def all_reduce_mean(env: DistEnv, value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (a copy; the input is left as it was)."""
    if not env.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / env.world_size


__all__ = ["DistEnv", "SINGLE", "all_reduce_mean", "barrier", "broadcast_buffers", "broadcast_object",
           "env_from_torchrun", "gather_objects", "init_distributed", "route_through_ddp", "shutdown", "unroute"]
