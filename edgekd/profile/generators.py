"""Kept for callers of the old role x runtime classes (benchmarks, older tests): each is now a thin constructor
over edgekd.runtime (one stepper per runtime, two samplers). New code: ``edgekd.runtime.open_generator(manifest)``
for an export and ``edgekd.runtime.torch_generator(model)`` for a model in torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from edgekd.models.spec import DDIMLoop
from edgekd.runtime.generator import Generator, generate_batched  # noqa: F401
from edgekd.runtime.open import section
from edgekd.runtime.samplers import DDIMSampler, OneStepSampler
from edgekd.runtime.steppers import (CoreMLStepper, LiteRTStepper, OrtStepper, Stepper, TorchStepper,  # noqa: F401
                                     ort_session)


def _ddim(scheduler_config: dict[str, Any], steps: int, spacing: str, graphs: dict[str, Stepper],
          boundaries: list[int] | None = None, name: str | None = None) -> DDIMSampler:
    config = {k: v for k, v in scheduler_config.items() if k != "timestep_spacing"}
    loop = DDIMLoop(config, steps, spacing, tuple(graphs), tuple(boundaries or ()))
    return DDIMSampler(graphs, section(loop), name)


def TorchStudent(model: nn.Module, name: str = "student") -> OneStepSampler:  # noqa: N802
    """A one-step torch student (any nn.Module taking noise)."""
    return OneStepSampler(TorchStepper(model.eval(), ["noise"]), "noise", name)


class DiffusersTeacherGenerator:
    """Any teacher (conditional, latent, v/x0 prediction, guided) through its own diffusers scheduler: image i
    gets condition i mod K unless ``condition`` says otherwise; latents are decoded."""

    runtime = "torch"

    def __init__(self, teacher: Any, steps: int, spacing: str = "trailing"):
        self.teacher, self.steps, self.spacing = teacher, int(steps), spacing
        self.name, self.calls_per_image = f"teacher DDIM-{steps}", int(steps)

    def generate(self, noise: Any, condition: Any = None) -> Any:
        t = self.teacher
        if t.condition is not None and condition is None:
            condition = t.condition.draw(0, len(noise))
        x, _ = t.sample(noise, self.steps, self.spacing, condition=condition)
        return t.decode(x).clamp(-1.0, 1.0)


def TorchTeacher(teacher: Any, steps: int, spacing: str = "trailing") -> Any:  # noqa: N802
    """The teacher sampled with deterministic DDIM for ``steps`` steps (the runtime's DDIM loop for a plain
    teacher; the diffusers scheduler with its condition, guidance and decoder for any other)."""
    from edgekd.models.spec import EpsilonStep

    if not teacher.plain:
        return DiffusersTeacherGenerator(teacher, steps, spacing)

    return _ddim(teacher.scheduler_config, steps, spacing,
                 {"teacher_step": TorchStepper(EpsilonStep(teacher.unet), ["sample", "timestep"])},
                 name=f"teacher DDIM-{steps}")


def TorchRouter(model: nn.Module, name: str | None = None) -> Generator:  # noqa: N802
    """A model with several graphs (O2MKD) in torch, sampled as it says."""
    from edgekd.runtime.open import torch_generator

    return torch_generator(model, name or f"o2mkd {len(model.graphs())} students DDIM-{model.sampling().steps()}")


def OnnxStudent(path: Path, threads: int | None = None, name: str = "student") -> OneStepSampler:  # noqa: N802
    step = OrtStepper(path, threads)
    return OneStepSampler(step, step.session.get_inputs()[0].name, name)


def OnnxTeacher(path: Path, scheduler_config: dict[str, Any], steps: int, threads: int | None = None,  # noqa: N802
                spacing: str = "trailing") -> DDIMSampler:
    return _ddim(scheduler_config, steps, spacing, {"teacher_step": OrtStepper(path, threads)},
                 name=f"teacher DDIM-{steps}")


def TFLiteStudent(path: Path, threads: int | None = None, name: str = "student") -> OneStepSampler:  # noqa: N802
    step = LiteRTStepper(path, threads)
    return OneStepSampler(step, next(iter(step.inputs)), name)


def TFLiteTeacher(path: Path, scheduler_config: dict[str, Any], steps: int, threads: int | None = None,  # noqa: N802
                  spacing: str = "trailing") -> DDIMSampler:
    return _ddim(scheduler_config, steps, spacing, {"teacher_step": LiteRTStepper(path, threads)},
                 name=f"teacher DDIM-{steps}")


def CoreMLStudent(path: Path, compute_units: str = "ALL", name: str = "student") -> OneStepSampler:  # noqa: N802
    step = CoreMLStepper(path, compute_units)
    return OneStepSampler(step, next(iter(step.dtypes)), name)


def CoreMLTeacher(path: Path, scheduler_config: dict[str, Any], steps: int, compute_units: str = "ALL",  # noqa: N802
                  spacing: str = "trailing") -> DDIMSampler:
    return _ddim(scheduler_config, steps, spacing, {"teacher_step": CoreMLStepper(path, compute_units)},
                 name=f"teacher DDIM-{steps}")


__all__ = ["Generator", "generate_batched", "TorchStudent", "TorchTeacher", "TorchRouter", "OnnxStudent",
           "OnnxTeacher", "TFLiteStudent", "TFLiteTeacher", "CoreMLStudent", "CoreMLTeacher", "ort_session"]
