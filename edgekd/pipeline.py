"""Multi-stage commands: the quickstart (distill -> export -> profile) and sample grids."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from edgekd.export import export_run, image_crop
from edgekd.grid import labelled_rows
from edgekd.noise import make_noise
from edgekd.paths import ASSETS
from edgekd.recipe import load_recipe
from edgekd.rundir import RunDir

QUICKSTART_RECIPE = ASSETS / "recipes" / "quickstart.yaml"


def quickstart(run_dir: Path, overrides: list[str], resume: bool = False) -> int:
    """Distill the built-in Fashion-MNIST teacher on the CPU, export to ONNX, check it, profile it."""
    from edgekd.distill import distill
    from edgekd.profile.run import profile_run

    started = time.time()
    recipe = load_recipe(QUICKSTART_RECIPE, [f"run_dir={run_dir}", *overrides])
    print(f"edgekd quickstart: recipe {QUICKSTART_RECIPE.name}, run directory {run_dir}")
    path = distill(recipe, resume=resume)
    export_run(path)
    export_run(path, teacher=True)
    profile_run(path)
    print(f"quickstart finished in {(time.time() - started) / 60:.1f} min: student {path / 'student'}, "
          f"ONNX {path / 'exports/onnx/student.onnx'}, report {path / 'report/profile.md'}")
    return 0


def sample_grid(run_path: Path, num: int, seed: int, teacher_steps: int | None, out: str | None) -> Path:
    """Teacher (DDIM-N) and student side by side on the same noise, as one PNG."""
    from edgekd.teachers.diffusers_teacher import load_teacher

    run = RunDir.open(run_path)
    recipe = run.recipe()
    teacher = load_teacher(recipe.teacher.path)
    steps = teacher_steps or recipe.teacher.steps
    noise = make_noise(seed, 0, num, teacher.sample_shape)
    with torch.no_grad():
        student_out = run.student()(noise)
    teacher_out = teacher.sample(noise, steps, recipe.teacher.timestep_spacing)[0]
    path = Path(out) if out else run.path / "samples" / f"teacher_vs_student_seed{seed}.png"
    return labelled_rows({f"teacher DDIM-{steps}": teacher_out, "student (1 step)": student_out}, path,
                         crop=image_crop(recipe))
