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
    if not teacher.plain and recipe.method.name not in ANY_TEACHER:
        from edgekd.errors import EdgekdError

        raise EdgekdError(f"method {recipe.method.name} takes unconditional epsilon-prediction pixel UNet2DModel "
                          f"teachers for now; this teacher is {teacher_kind(teacher)}: use method: "
                          "denoising_student (docs/teachers.md)")
    return REGISTRY[recipe.method.name](recipe, teacher, train, heldout, device)


# methods whose students take any teacher edgekd loads (condition, latents, prediction type, denoiser family)
ANY_TEACHER = ("denoising_student",)


def teacher_kind(teacher: "DiffusionTeacher") -> str:
    """A few words for what a teacher is: '<class> (class-conditional, latent, v_prediction)'."""
    notes = [f"{teacher.condition.kind}-conditional"] if teacher.condition is not None else []
    notes += ["latent"] if teacher.latent else []
    notes += [teacher.prediction_type] if teacher.prediction_type != "epsilon" else []
    return f"a {type(teacher.unet).__name__}" + (f" ({', '.join(notes)})" if notes else "")


def method_reads_data(recipe: "Recipe") -> bool:
    """Whether the recipe's method trains on real images (the others learn from the teacher's outputs alone)."""
    if recipe.method.name == "denoising_student":
        return recipe.method.adv_weight > 0
    return True


def discover() -> dict[str, SetupFn]:
    """Import every module of this package once, so each method registers itself: a new method is a new file."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return REGISTRY
