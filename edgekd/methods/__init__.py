"""One module per distillation method: its losses and its training step, nothing else.

Each method registers a ``setup`` function that turns (recipe, teacher, recorded trajectories) into what the
shared loop needs: the Method object, a batch source, a held-out batch and preview rows for sample grids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from edgekd.recipe import Recipe
    from edgekd.teachers.diffusers_teacher import DiffusionTeacher
    from edgekd.teachers.store import TrajectorySet
    from edgekd.train.loop import Batch, BatchSource, Method


@dataclass
class MethodSetup:
    method: "Method"
    source: "BatchSource"
    heldout: "Batch"
    preview: Callable[[nn.Module], dict[str, torch.Tensor]]


SetupFn = Callable[["Recipe", "DiffusionTeacher", "TrajectorySet", "TrajectorySet", torch.device], MethodSetup]
REGISTRY: dict[str, SetupFn] = {}


def register(name: str) -> Callable[[SetupFn], SetupFn]:
    def wrap(fn: SetupFn) -> SetupFn:
        REGISTRY[name] = fn
        return fn

    return wrap


def setup_method(recipe: "Recipe", teacher: "DiffusionTeacher", train: "TrajectorySet", heldout: "TrajectorySet",
                 device: torch.device) -> MethodSetup:
    discover()
    return REGISTRY[recipe.method.name](recipe, teacher, train, heldout, device)


def discover() -> dict[str, SetupFn]:
    """Import every module of this package once, so each method registers itself: a new method is a new file."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return REGISTRY
