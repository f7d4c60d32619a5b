"""Exports: one module per target, the manifest, and the parity gate every export must clear.

``export_run`` exports one target (onnx | tflite | coreml); ``export_all`` exports them in turn and prints a table.
Every export: checks the graph for the target (graph_check), converts to a temp name, checks the result (parity
against PyTorch on fixed noise; for CoreML on Linux, a structural check), renames into place, writes the manifest.
Nothing is written under exports/ before the run, its recipe, teacher and student have loaded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd import __version__
from edgekd.data import crop_box
from edgekd.errors import EdgekdError
from edgekd.export.manifest import Manifest, ModelFile, OutputSpec, ParitySpec, SamplingSpec, TensorSpec, manifest_path
from edgekd.export.parity import check_parity
from edgekd.integrity import export_identity
from edgekd.noise import make_noise
from edgekd.recipe import Recipe
from edgekd.rundir import RunDir
from edgekd.train.checkpoint import atomic_write_text

TEACHER_PARITY_STEPS = 10
TARGETS = ("onnx", "tflite", "coreml")
PRECISIONS = {"onnx": ("fp32", "fp16", "int8"), "tflite": ("fp32", "fp16", "int8", "int8_static"),
              "coreml": ("fp32", "fp16", "int8", "palettize4", "palettize6", "palettize8")}
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}
# Dynamic-range int8 cannot reach the fp32 bar (recipe export.psnr_min, 35 dB): its own default, recorded in the
# manifest's parity.psnr_min. Measured on the tiny run (docs/export.md): tflite int8 ~ 37 dB (student).
INT8_PSNR_MIN = 25.0


def sha256(path: Path) -> str:
    """Hash of a file, or of a directory (an .mlpackage) as its sorted relative paths and contents."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def image_crop(recipe: Recipe) -> tuple[int, int, int, int] | None:
    """Where the real image sits in the model's canvas (Fashion-MNIST: 28x28 inside 32x32)."""
    if recipe.data.kind != "fashion_mnist":
        return None
    box = crop_box(recipe.data, (28, 28))
    return None if box == (0, 0, recipe.data.resolution, recipe.data.resolution) else box


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(tmp: Path, final: Path) -> None:
    """Atomic rename of a file or a directory into place (a directory replacing an old one goes through .old)."""
    if tmp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.old")
        _remove(old)
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)


@dataclass
class ExportResult:
    target: str
    path: Path | None
    bytes: int = 0
    parity: ParitySpec | None = None
    note: str = ""  # why parity was not run, or why the target was skipped / failed
    error: EdgekdError | None = field(default=None, repr=False)

    def parity_text(self) -> str:
        if self.error is not None:
            return f"FAILED: {self.error}"
        if self.parity is not None:
            return f"{self.parity.psnr_db:.1f} dB, max abs {self.parity.max_abs_error:.2e} (bar {self.parity.psnr_min:.0f} dB)"
        return self.note


@dataclass
class _Job:
    """What every target needs: the run, the torch model, its I/O description and the parity references."""

    run: RunDir
    recipe: Recipe
    teacher_model: Any
    name: str
    model: nn.Module
    inputs: list[str]
    output: str
    shape: tuple[int, ...]
    sampling: SamplingSpec
    teacher: bool

    def example(self, b: int) -> dict[str, torch.Tensor]:
        ex = {self.inputs[0]: torch.randn(b, *self.shape)}
        if self.teacher:
            ex["timestep"] = torch.full((b,), 999, dtype=torch.int64)
        return ex

    def reference(self) -> Any:
        from edgekd.profile.generators import TorchStudent, TorchTeacher

        return TorchTeacher(self.teacher_model, TEACHER_PARITY_STEPS) if self.teacher else TorchStudent(self.model)

    def what(self, target: str) -> str:
        who = f"teacher step (through DDIM-{TEACHER_PARITY_STEPS})" if self.teacher else "student"
        return f"{self.run.path}: {target} {who}"


def _prepare(run_path: Path, teacher: bool) -> _Job:
    """Open and load everything (run, recipe, teacher, student) before anything is written."""
    from edgekd.export.onnx import TeacherStep
    from edgekd.teachers.diffusers_teacher import load_teacher

    run = RunDir.open(run_path, need_student=not teacher)
    recipe = run.recipe()
    t_model = load_teacher(recipe.teacher.path)
    shape = tuple(t_model.sample_shape)
    if teacher:
        timesteps = t_model.timesteps(recipe.teacher.steps, recipe.teacher.timestep_spacing)
        sampling = SamplingSpec(kind="ddim_loop", steps=recipe.teacher.steps, timesteps=timesteps,
                                scheduler={**t_model.scheduler_config, "timestep_spacing": recipe.teacher.timestep_spacing},
                                alphas_cumprod=[float(a) for a in t_model.ddim(1).alphas_cumprod])
        return _Job(run, recipe, t_model, "teacher_step", TeacherStep(t_model.unet).eval(), ["sample", "timestep"],
                    "epsilon", shape, sampling, True)
    student = run.student()
    sampling = SamplingSpec(kind="one_step", steps=1, timesteps=[getattr(student, "timestep", 0)])
    return _Job(run, recipe, t_model, "student", student.eval(), ["noise"], "image", shape, sampling, False)


def _validate(target: str, precision: str, batch: int | None, compute_units: str, deployment_target: str) -> None:
    if target not in TARGETS:
        raise EdgekdError(f"unknown export target '{target}' (available: {', '.join(TARGETS)}, all)")
    if precision not in PRECISIONS[target]:
        known = sorted({p for ps in PRECISIONS.values() for p in ps})
        if precision not in known:
            raise EdgekdError(f"unknown precision '{precision}' (available: {', '.join(known)})")
        raise EdgekdError(f"precision {precision} is not supported for target {target} "
                          f"(available for {target}: {', '.join(PRECISIONS[target])})")
    if batch is not None and batch < 1:
        raise EdgekdError(f"--batch must be >= 1, got {batch}")
    from edgekd.extras import require_export

    require_export(target, precision)
    if target == "coreml":
        from edgekd.export.coreml import validate_options

        validate_options(precision, compute_units, deployment_target)


def export_run(run_path: Path, target: str = "onnx", teacher: bool = False, batch: int | None = None,
               psnr_min: float | None = None, exporter: str = "dynamo", precision: str = "fp32",
               compute_units: str = "ALL", deployment_target: str = "iOS17") -> Path:
    """Export a run's student (or the teacher's step) to one target; returns the model path (file or .mlpackage).

    A multi-model student (O2MKD) exports one file per student and returns its router manifest (export/multi.py).
    """
    from edgekd.export.multi import export_router, is_multi_student_run

    if not teacher and is_multi_student_run(Path(run_path)):
        return export_router(Path(run_path), target, batch, psnr_min, exporter, precision, compute_units,
                             deployment_target).path
    return _export(run_path, target, teacher, batch, psnr_min, exporter, precision, compute_units, deployment_target).path  # type: ignore[return-value]


def _export(run_path: Path, target: str, teacher: bool, batch: int | None, psnr_min: float | None, exporter: str,
            precision: str, compute_units: str, deployment_target: str, job: _Job | None = None) -> ExportResult:
    _validate(target, precision, batch, compute_units, deployment_target)
    job = job or _prepare(Path(run_path), teacher)
    recipe = job.recipe
    if psnr_min is not None:
        bar = psnr_min
    else:
        bar = recipe.export.psnr_min if precision in ("fp32", "fp16") else INT8_PSNR_MIN
    stem = job.name if precision == "fp32" else f"{job.name}_{precision}"
    final = job.run.exports / target / f"{stem}{SUFFIX[target]}"
    tmp = final.with_name(f".{stem}.partial{SUFFIX[target]}")
    created = [d for d in (job.run.exports, final.parent) if not d.exists()]
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        if target == "onnx":
            out = _onnx(job, tmp, batch, bar, exporter, precision=precision, target_psnr=psnr_min)
        elif target == "tflite":
            out = _tflite(job, tmp, batch or 1, bar, precision)
        else:
            out = _coreml(job, tmp, batch or 1, bar, precision, compute_units, deployment_target)
        _replace(tmp, final)
    finally:
        _remove(tmp)
        for extra in final.parent.glob(f".{stem}.partial{SUFFIX[target]}*"):
            _remove(extra)
        for d in reversed(created):  # a failed first export leaves no empty exports/ folders behind
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    dims, inputs, checks, parity, skipped, runtime_options = out
    size = size_bytes(final)
    quantization = quantization_text(target, precision, checks)
    out_extra = {"range": (-10.0, 10.0), "to_pixels": "epsilon: feed to the DDIM update"} if job.teacher else {}
    manifest = Manifest(
        edgekd_version=__version__, role="teacher_step" if job.teacher else "student", name=f"{recipe.name}-{stem}",
        model=ModelFile(file=final.name, target=target, bytes=size, sha256=sha256(final)),
        inputs=inputs, output=OutputSpec(name=job.output, shape=dims, crop=image_crop(recipe), **out_extra),
        sampling=job.sampling, precision=precision, quantization=quantization, parity=parity, parity_skipped=skipped,
        checks=checks, runtime_options=runtime_options,
        source={"run": str(job.run.path), "recipe": recipe.name, "teacher": recipe.teacher.path, "method": recipe.method.name,
                **export_identity(job.run.path, job.teacher, job.teacher_model.fingerprint)},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    atomic_write_text(manifest_path(final), manifest.model_dump_json(indent=2) + "\n")
    if parity is not None:
        print(f"exported {final} ({size / 1e6:.2f} MB, {precision}): parity {parity.psnr_db:.1f} dB, "
              f"max abs error {parity.max_abs_error:.2e} (bar {bar:.0f} dB, {parity.runtime})")
    else:
        def io(specs: dict[str, Any]) -> str:
            return ", ".join(f"{k} {v['shape']} {v['dtype']}" for k, v in specs.items())

        print(f"exported {final} ({size / 1e6:.2f} MB, {precision}): structure checked ({io(checks['inputs'])} -> "
              f"{io(checks['outputs'])}; {sum(checks['ops'].values())} ops; weights {checks['weight_dtypes']})")
        print(f"  numerical parity NOT run: {skipped}")
    note = "not run (CoreML predicts on macOS only); structure checked" if skipped else ""
    return ExportResult(target, final, size, parity, note)


def _graph_notes(findings: list[Any]) -> list[str]:
    return [f.line() for f in findings]


def quantization_text(target: str, precision: str, checks: dict[str, Any] | None = None) -> str | None:
    """The manifest's ``quantization`` line for a target and precision (an ONNX int8 export says its own)."""
    from edgekd.export import coreml as _cm
    from edgekd.export import tflite as _tf
    from edgekd.export.onnx import QUANTIZATION as _onnx_q

    if precision == "fp32":
        return None
    described = ((checks or {}).get("quantization") or {}).get("description")
    return described or {"onnx": _onnx_q, "tflite": _tf.QUANTIZATION, "coreml": _cm.QUANTIZATION}[target].get(precision)


def _quantize_config(job: _Job) -> Any:
    """compress.quantize of the recipe (defaults when absent), or what quantize_run set on the job."""
    from edgekd.compress.quantize import config_for

    return getattr(job, "quantize_config", None) or config_for(job.recipe)


def _onnx(job: _Job, tmp: Path, batch: int | None, bar: float, exporter: str, precision: str = "fp32",
          target_psnr: float | None = None) -> tuple:
    import onnxruntime

    from edgekd.export.graph_check import check_graph
    from edgekd.export.onnx import export_onnx
    from edgekd.profile.generators import OnnxStudent, OnnxTeacher

    n = job.recipe.export.parity_samples
    b = batch or 2  # torch.export specialises a dimension traced at size 1: trace dynamic batches at 2
    example = tuple(job.example(b).values())
    _, findings = check_graph(job.model, example, "onnx")
    dims: list[int | str] = [batch if batch else "batch", *job.shape]
    inputs = [TensorSpec(name=job.inputs[0], shape=dims)]
    if job.teacher:
        inputs.append(TensorSpec(name="timestep", shape=[dims[0]], dtype="int64"))
    export_onnx(job.model, example, tmp, job.inputs, job.output, dynamic_batch=batch is None, exporter=exporter)
    quantized = None
    if precision != "fp32":  # int8 (NNCF QDQ + mixed-precision fallback) or fp16, from the fp32 file (compress/quantize)
        from edgekd.compress.quantize import quantize_job_onnx

        quantized = quantize_job_onnx(job, tmp, precision, _quantize_config(job), target_psnr)
        if quantized.sensitivity is not None:  # written before the gate: it explains a failed gate too
            stem = f"{job.name}_{precision}"
            quantized.sensitivity.write(job.run.report_dir, f"sensitivity_{stem}", f"{job.run.path.name} {stem}.onnx")
    noise = make_noise(job.recipe.export.parity_seed, 0, batch if batch else n, job.shape)
    cand = (OnnxTeacher(tmp, job.teacher_model.scheduler_config, TEACHER_PARITY_STEPS) if job.teacher else OnnxStudent(tmp))
    parity = check_parity(job.reference(), cand, noise, job.recipe.export.parity_seed, bar, job.what("ONNX"))
    parity.runtime = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
    checks: dict[str, Any] = {"graph": _graph_notes(findings)}
    if quantized is not None:
        checks["quantization"] = quantized.manifest_checks()
    return dims, inputs, checks, parity, None, {"execution_provider": "CPUExecutionProvider"}


def _tflite(job: _Job, tmp: Path, b: int, bar: float, precision: str) -> tuple:
    from edgekd.export.graph_check import check_graph
    from edgekd.export.tflite import export_tflite
    from edgekd.profile.generators import TFLiteStudent, TFLiteTeacher

    example = job.example(b)
    _, findings = check_graph(job.model, tuple(example.values()), "tflite")
    calibration = None
    if precision == "int8_static":  # ranges from inputs across the whole timestep range (compress/calibration)
        from edgekd.compress.calibration import job_sets

        qcfg = _quantize_config(job)
        calib, _ = job_sets(job, qcfg.calibration_samples, 0, qcfg.calibration)
        calibration = list(calib.batches(b, {k: v.numpy().dtype for k, v in example.items()}))
    checks = export_tflite(job.model, example, tmp, job.output, precision, calibration)
    if calibration is not None:
        checks["calibration"] = calib.describe()
    checks["graph"] = _graph_notes(findings)
    dims: list[int | str] = [b, *job.shape]
    inputs = [TensorSpec(name=job.inputs[0], shape=dims)]
    if job.teacher:  # litert-torch downcasts int64 I/O to int32 (enable_x64=False): the runtime feeds int32
        inputs.append(TensorSpec(name="timestep", shape=[b], dtype="int32"))
    noise = make_noise(job.recipe.export.parity_seed, 0, job.recipe.export.parity_samples, job.shape)
    threads = torch.get_num_threads()
    cand = (TFLiteTeacher(tmp, job.teacher_model.scheduler_config, TEACHER_PARITY_STEPS, threads=threads)
            if job.teacher else TFLiteStudent(tmp, threads=threads))
    parity = check_parity(job.reference(), cand, noise, job.recipe.export.parity_seed, bar, job.what("TFLite"))
    options = {"signature": "serving_default", "fixed_batch": b, "layout": "NCHW (as PyTorch)",
               "delegate": "XNNPACK on CPU (default in LiteRT); GPU delegate: see checks.gpu_delegate_compatible"}
    return dims, inputs, checks, parity, None, options


def _coreml(job: _Job, tmp: Path, b: int, bar: float, precision: str, compute_units: str, deployment_target: str) -> tuple:
    from edgekd.export import coreml as cm
    from edgekd.export.graph_check import check_graph
    from edgekd.profile.generators import CoreMLStudent, CoreMLTeacher

    example = job.example(b)
    program, findings = check_graph(job.model, tuple(example.values()), "coreml")
    model = cm.convert(program, example, job.output, precision, compute_units, deployment_target)
    cm.save(model, tmp)
    del model
    dims: list[int | str] = [b, *job.shape]
    checks = cm.inspect(tmp)
    cm.check_structure(checks, example, job.output, [b, *job.shape], precision)
    checks["graph"] = _graph_notes(findings)
    inputs = [TensorSpec(name=job.inputs[0], shape=dims)]
    if job.teacher:
        inputs.append(TensorSpec(name="timestep", shape=[b], dtype="int32"))
    parity, skipped = None, None
    if cm.can_predict():
        noise = make_noise(job.recipe.export.parity_seed, 0, job.recipe.export.parity_samples, job.shape)
        cand = (CoreMLTeacher(tmp, job.teacher_model.scheduler_config, TEACHER_PARITY_STEPS, compute_units)
                if job.teacher else CoreMLStudent(tmp, compute_units))
        parity = check_parity(job.reference(), cand, noise, job.recipe.export.parity_seed, bar, job.what("CoreML"))
    else:
        skipped = cm.LINUX_REASON
    options = {"compute_units": compute_units, "minimum_deployment_target": deployment_target, "fixed_batch": b,
               "format": "mlprogram"}
    return dims, inputs, checks, parity, skipped, options


def export_all(run_path: Path, teacher: bool = False, batch: int | None = None, psnr_min: float | None = None,
               exporter: str = "dynamo", precision: str = "fp32", compute_units: str = "ALL",
               deployment_target: str = "iOS17") -> list[ExportResult]:
    """onnx, tflite and coreml in turn, then a summary table; a failed target does not stop the others, but the
    command still fails (with the first failure's exit code) after the table."""
    from edgekd.export.coreml import validate_options

    known = sorted({p for ps in PRECISIONS.values() for p in ps})
    if precision not in known:
        raise EdgekdError(f"unknown precision '{precision}' (available: {', '.join(known)})")
    if batch is not None and batch < 1:
        raise EdgekdError(f"--batch must be >= 1, got {batch}")
    validate_options(precision, compute_units, deployment_target)
    from edgekd.export.multi import export_router_all, is_multi_student_run

    if not teacher and is_multi_student_run(Path(run_path)):
        return _summarise(export_router_all(Path(run_path), batch, psnr_min, exporter, precision, compute_units,
                                            deployment_target))
    job = _prepare(Path(run_path), teacher)
    results: list[ExportResult] = []
    for target in TARGETS:
        if precision not in PRECISIONS[target]:
            results.append(ExportResult(target, None, note=f"skipped: {target} exports {', '.join(PRECISIONS[target])} only"))
            continue
        try:
            results.append(_export(run_path, target, teacher, batch, psnr_min, exporter, precision, compute_units,
                                   deployment_target, job=job))
        except EdgekdError as exc:
            results.append(ExportResult(target, None, error=exc))
    return _summarise(results)


def _summarise(results: list[ExportResult]) -> list[ExportResult]:
    """Print the table; fail (with the first failure's exit code) when any target failed."""
    print(summary_table(results))
    failed = [r.error for r in results if r.error is not None]
    if failed:
        raise type(failed[0])(f"{len(failed)} of {len(TARGETS)} targets failed; first: {failed[0]}")
    return results


def summary_table(results: list[ExportResult]) -> str:
    rows = [("target", "file", "size", "parity")]
    for r in results:
        rows.append((r.target, str(r.path) if r.path else "-", f"{r.bytes / 1e6:.2f} MB" if r.path else "-",
                     r.parity_text()))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + " | " + row[3] for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths) + "-+-" + "-" * 6)
    return "\n".join(lines)
