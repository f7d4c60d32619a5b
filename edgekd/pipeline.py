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


def pick_conditions(teacher, num: int, class_label: str | None, prompt: str | None):  # noqa: ANN001, ANN201
    """(the teacher with the asked prompt as its only prompt, condition ids per image, a row note) for
    ``edgekd sample``; a condition the teacher does not take is one line naming what it takes."""
    import dataclasses

    from edgekd.errors import EdgekdError

    cond = teacher.condition
    if cond is None:
        if class_label is not None or prompt is not None:
            flag = "--class" if class_label is not None else "--prompt"
            raise EdgekdError(f"{flag}: teacher {teacher.source} is unconditional (it takes no class or prompt)")
        return teacher, None, ""
    if cond.kind == "class":
        if prompt is not None:
            raise EdgekdError(f"--prompt: teacher {teacher.source} is class-conditional; use --class N|NAME")
        if class_label is None:
            return teacher, cond.draw(0, num), "classes 0.. in turn"
        i = cond.parse(class_label)
        return teacher, torch.full((num,), i, dtype=torch.int64), f"class {i} ({cond.name(i)})"
    if class_label is not None:
        raise EdgekdError(f"--class: teacher {teacher.source} is text-conditional; use --prompt TEXT")
    if prompt is None:
        return teacher, cond.draw(0, num), "the recipe's prompts in turn"
    teacher.encode_prompts([prompt])  # too long for the tokenizer: one line
    asked = dataclasses.replace(teacher, condition=dataclasses.replace(cond, prompts=(prompt,)), _null_cache={})
    return asked, torch.zeros(num, dtype=torch.int64), f"'{prompt}'"


def student_condition_ids(teacher, ids):  # noqa: ANN001, ANN201
    """What the staged student pipeline takes for condition ids: class ids, or the prompts' token ids."""
    if ids is None or teacher.condition.kind == "class":
        return ids
    from edgekd.models.stages import token_ids

    return token_ids(teacher.tokenizer, [teacher.condition.prompts[int(i)] for i in ids])


def sample_grid(run_path: Path, num: int, seed: int, teacher_steps: int | None, out: str | None,
                previews: bool = False, class_label: str | None = None, prompt: str | None = None,
                guidance: float | None = None) -> Path:
    """Teacher (DDIM-N) and student side by side on the same noise, as one PNG.

    ``previews``: a layerwise (Adv-KD) student's every head, upsampled to full size, under the teacher's state
    that head learned (the recipe's DDIM steps and recorded points), for the same noise: the denoising, layer by
    layer.
    """
    from edgekd.teachers.diffusers_teacher import load_recipe_teacher

    run = RunDir.open(run_path)
    recipe = run.recipe()
    teacher = load_recipe_teacher(recipe)
    if previews:
        return _preview_grid(run, recipe, teacher, num, seed, out)
    steps = teacher_steps or recipe.teacher.steps
    teacher, ids, note = pick_conditions(teacher, num, class_label, prompt)
    if guidance is not None and guidance != 1.0:
        teacher.null_input(1, torch.zeros(1))  # a teacher without an unconditional branch: one line
    noise = make_noise(seed, 0, num, teacher.sample_shape)
    student = run.student()
    from edgekd.runtime import torch_generator

    if getattr(student, "condition", None) is not None or getattr(student, "latent", False):
        from edgekd.models.stages import StagedModel

        student = StagedModel(student, teacher)
    generator = torch_generator(student)  # the student sampled as it says: one step, or its own DDIM loop
    cond = student_condition_ids(teacher, ids)
    student_out = generator.generate(noise) if cond is None else generator.generate(noise, cond)
    calls = generator.calls_per_image
    label = f"student ({calls} step{'s' if calls > 1 else ''})"
    teacher_out = teacher.decode(teacher.sample(noise, steps, recipe.teacher.timestep_spacing, condition=ids,
                                                guidance=guidance)[0])
    g = teacher.guidance_scale if guidance is None else guidance
    tlabel = f"teacher DDIM-{steps}" + (f", guidance {g:g}" if g != 1.0 else "")
    if note:
        tlabel, label = f"{tlabel}, {note}", f"{label}, {note}"
    suffix = "" if ids is None or (class_label is None and prompt is None) else \
        f"_{'class' + str(int(ids[0])) if class_label is not None else 'prompt'}"
    path = Path(out) if out else run.path / "samples" / f"teacher_vs_student_seed{seed}{suffix}.png"
    return labelled_rows({tlabel: teacher_out, label: student_out}, path,
                         crop=image_crop(recipe) if not teacher.latent else None)


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
