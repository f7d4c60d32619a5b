"""Exports: one module per target, the manifest, and the parity gate every export must clear."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import torch

from edgekd import __version__
from edgekd.data import crop_box
from edgekd.errors import EdgekdError
from edgekd.export.manifest import Manifest, ModelFile, OutputSpec, SamplingSpec, TensorSpec, manifest_path
from edgekd.export.parity import check_parity
from edgekd.noise import make_noise
from edgekd.recipe import Recipe
from edgekd.rundir import RunDir
from edgekd.train.checkpoint import atomic_write_text

TEACHER_PARITY_STEPS = 10


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_crop(recipe: Recipe) -> tuple[int, int, int, int] | None:
    """Where the real image sits in the model's canvas (Fashion-MNIST: 28x28 inside 32x32)."""
    if recipe.data.kind != "fashion_mnist":
        return None
    box = crop_box(recipe.data, (28, 28))
    return None if box == (0, 0, recipe.data.resolution, recipe.data.resolution) else box


def export_run(run_path: Path, target: str = "onnx", teacher: bool = False, batch: int | None = None,
               psnr_min: float | None = None, exporter: str = "dynamo") -> Path:
    """Export a run's student (or the teacher's step), check parity, write the manifest; returns the model path."""
    from edgekd.export.onnx import TeacherStep, export_onnx
    from edgekd.profile.generators import OnnxStudent, OnnxTeacher, TorchStudent, TorchTeacher
    from edgekd.teachers.diffusers_teacher import load_teacher

    if target != "onnx":
        raise EdgekdError(f"unknown export target '{target}' (available: onnx)")
    run = RunDir.open(run_path, need_student=not teacher)
    recipe = run.recipe()
    bar = recipe.export.psnr_min if psnr_min is None else psnr_min
    out_dir = run.exports / target
    out_dir.mkdir(parents=True, exist_ok=True)
    t_model = load_teacher(recipe.teacher.path)
    shape = t_model.sample_shape
    n = recipe.export.parity_samples
    noise = make_noise(recipe.export.parity_seed, 0, n, shape)
    b = batch or 2  # torch.export specialises a dimension traced at size 1: trace dynamic batches at 2
    dims: list[int | str] = [batch if batch else "batch", *shape]
    if teacher:
        name, model = "teacher_step", TeacherStep(t_model.unet)
        example = (torch.randn(b, *shape), torch.full((b,), 999, dtype=torch.int64))
        inputs = [TensorSpec(name="sample", shape=dims), TensorSpec(name="timestep", shape=[dims[0]], dtype="int64")]
        output = "epsilon"
        timesteps = t_model.timesteps(recipe.teacher.steps, recipe.teacher.timestep_spacing)
        sampling = SamplingSpec(kind="ddim_loop", steps=recipe.teacher.steps, timesteps=timesteps,
                                scheduler={**t_model.scheduler_config, "timestep_spacing": recipe.teacher.timestep_spacing},
                                alphas_cumprod=[float(a) for a in t_model.ddim(1).alphas_cumprod])
    else:
        student = run.student()
        name, model = "student", student
        example = (torch.randn(b, *shape),)
        inputs = [TensorSpec(name="noise", shape=dims)]
        output = "image"
        sampling = SamplingSpec(kind="one_step", steps=1, timesteps=[getattr(student, "timestep", 0)])
    final = out_dir / f"{name}.onnx"
    tmp = out_dir / f".{name}.partial.onnx"
    try:
        export_onnx(model, example, tmp, [i.name for i in inputs], output, dynamic_batch=batch is None, exporter=exporter)
        if batch and batch != n:
            noise = make_noise(recipe.export.parity_seed, 0, batch, shape)
        if teacher:
            ref, cand = TorchTeacher(t_model, TEACHER_PARITY_STEPS), OnnxTeacher(tmp, t_model.scheduler_config, TEACHER_PARITY_STEPS)
            what = f"teacher step (through DDIM-{TEACHER_PARITY_STEPS})"
        else:
            ref, cand = TorchStudent(student), OnnxStudent(tmp)
            what = "student"
        parity = check_parity(ref, cand, noise, recipe.export.parity_seed, bar, f"{run.path}: ONNX {what}")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in out_dir.glob(f".{name}.partial.onnx*"):
            extra.unlink(missing_ok=True)
    import onnxruntime

    parity.runtime = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
    manifest = Manifest(
        edgekd_version=__version__, role="teacher_step" if teacher else "student", name=f"{recipe.name}-{name}",
        model=ModelFile(file=final.name, target="onnx", bytes=final.stat().st_size, sha256=sha256(final)),
        inputs=inputs, output=OutputSpec(name=output, shape=dims, crop=image_crop(recipe),
                                         **({"range": (-10.0, 10.0), "to_pixels": "epsilon: feed to the DDIM update"} if teacher else {})),
        sampling=sampling, precision="fp32", parity=parity,
        source={"run": str(run.path), "recipe": recipe.name, "teacher": recipe.teacher.path, "method": recipe.method.name},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    atomic_write_text(manifest_path(final), manifest.model_dump_json(indent=2) + "\n")
    print(f"exported {final} ({final.stat().st_size / 1e6:.2f} MB): parity {parity.psnr_db:.1f} dB, "
          f"max abs error {parity.max_abs_error:.2e} (bar {bar:.0f} dB)")
    return final
