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
    for target in dict.fromkeys(["onnx", *recipe.export.targets]):  # the profiler runs the ONNX pair
        export_run(path, target=target)
    export_run(path, teacher=True)
    profile_run(path)
    from edgekd.report import render_report

    html_path, _ = render_report(path)
    print(f"quickstart finished in {(time.time() - started) / 60:.1f} min: student {path / 'student'}, "
          f"ONNX {path / 'exports/onnx/student.onnx'}, report {html_path}")
    return 0


def sample_grid(run_path: Path, num: int, seed: int, teacher_steps: int | None, out: str | None,
                previews: bool = False) -> Path:
    """Teacher (DDIM-N) and student side by side on the same noise, as one PNG.

    ``previews``: a layerwise (Adv-KD) student's every head, upsampled to full size, under the teacher's state
    that head learned (the recipe's DDIM steps and recorded points), for the same noise: the denoising, layer by
    layer.
    """
    from edgekd.teachers.diffusers_teacher import load_recipe_teacher, load_teacher

    run = RunDir.open(run_path)
    recipe = run.recipe()
    teacher = load_recipe_teacher(recipe)
    if previews:
        return _preview_grid(run, recipe, teacher, num, seed, out)
    steps = teacher_steps or recipe.teacher.steps
    noise = make_noise(seed, 0, num, teacher.sample_shape)
    student = run.student()
    from edgekd.runtime import torch_generator

    generator = torch_generator(student)  # the student sampled as it says: one step, or its own DDIM loop
    student_out = generator.generate(noise)
    calls = generator.calls_per_image
    label = f"student ({calls} step{'s' if calls > 1 else ''})"
    teacher_out = teacher.sample(noise, steps, recipe.teacher.timestep_spacing)[0]
    path = Path(out) if out else run.path / "samples" / f"teacher_vs_student_seed{seed}.png"
    return labelled_rows({f"teacher DDIM-{steps}": teacher_out, label: student_out}, path,
                         crop=image_crop(recipe))


def _preview_grid(run: RunDir, recipe, teacher, num: int, seed: int, out: str | None) -> Path:  # noqa: ANN001
    from edgekd.errors import EdgekdError
    from edgekd.methods.adv_kd import point_labels, preview_rows, record_points

    student = run.student()
    if not hasattr(student, "heads"):
        raise EdgekdError(f"{run.path}: --previews needs a layerwise (adv_kd) student; this run's student has no "
                          "per-block heads")
    steps, spacing = recipe.teacher.steps, recipe.teacher.timestep_spacing
    points = record_points(recipe.trajectory.record, steps)
    if len(points) != student.num_blocks - 1:
        raise EdgekdError(f"{run.path}: recipe records {len(points)} states but the student has {student.num_blocks} "
                          "blocks (expected one fewer)")
    noise = make_noise(seed, 0, num, teacher.sample_shape)
    x0, states = teacher.sample(noise, steps, spacing, recipe.teacher.eta, points)
    targets = [states[:, i] for i in range(len(points))] + [x0]
    resize_mode = getattr(recipe.method, "resize", "area")
    rows = preview_rows(student, noise, targets, point_labels(teacher, steps, spacing, points), resize_mode)
    path = Path(out) if out else run.path / "samples" / f"previews_seed{seed}.png"
    return labelled_rows(rows, path, crop=None)
