"""Export of a multi-model student (O2MKD): one step model per student plus a router manifest.

Each student i becomes its own file ``student_<i>.<ext>``, a step model (sample, timestep) -> epsilon exactly like
the teacher's exported step, and ``router.manifest.json`` says which file owns which timesteps, the step-by-step
schedule (DDIM timestep -> file), the DDIM scheduler and alphas_cumprod, the noise convention and how to make
pixels. An app runs the same DDIM loop it runs for the teacher step and picks the file per step from the manifest.

Why not a single graph: a graph that chooses the student inside needs control flow on the timestep (``If`` /
``torch.cond``), which the TFLite and CoreML converters used here do not take from torch.export, while a
branch-free graph (run every student, select one output) costs N students per step and defeats the method; a
graph with the whole DDIM loop unrolled fixes the step count and spacing in the file, grows with the step count
and hides per-step progress from the app. Separate files keep every target's existing exporter and parity gate,
let an app load all students at once (their sum is what the manifest's bytes add up to) or one at a time (each
owns a contiguous block of steps, so peak memory is one student), and make per-step latency measurable.

Gates: every student file passes the usual parity gate (through a DDIM loop of TEACHER_PARITY_STEPS steps driven
by that student alone, as the teacher step is checked), then the whole routed loop in the target runtime is
compared with the torch O2MKDStudent on the same noise. Nothing replaces the previous export until all passed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekd import __version__
from edgekd.errors import EdgekdError
from edgekd.export.manifest import (ModelFile, NoiseSpec, OutputSpec, ParitySpec, SamplingSpec, TensorSpec,
                                    read_versioned)
from edgekd.noise import make_noise
from edgekd.train.checkpoint import atomic_write_text

ROUTER_FORMAT_VERSION = 1
ROUTER_STEM = "router"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoutedStudent(_M):
    """One exported student: its file and the timesteps it owns."""

    index: int
    range: tuple[int, int] = Field(description="first and last timestep owned, inclusive")
    timesteps: list[int] = Field(description="the DDIM timesteps of this sampler that go to this file")
    model: ModelFile
    params: int
    parity: ParitySpec | None = None


class ScheduleStep(_M):
    """One DDIM step: the timestep, the student to call, and the two alphas its update uses."""

    step: int
    timestep: int
    student: int
    alpha_cumprod: float
    alpha_cumprod_prev: float


class RouterManifest(_M):
    """What an app needs to run an O2MKD student: N step models, who owns which step, and the DDIM loop."""

    format_version: int = ROUTER_FORMAT_VERSION
    edgekd_version: str
    role: Literal["router"] = "router"
    kind: Literal["o2mkd"] = "o2mkd"
    name: str
    target: Literal["onnx", "tflite", "coreml"]
    students: list[RoutedStudent]
    boundaries: list[int]
    routing: str = ("student i owns timesteps range[0] <= t <= range[1]; equivalently its index is the number of "
                    "boundaries <= t")
    schedule: list[ScheduleStep] = Field(description="every DDIM step in order: its timestep and the student to call")
    inputs: list[TensorSpec] = Field(description="inputs of every student file (all the same)")
    output: OutputSpec = Field(description="output of every student file: epsilon")
    image: OutputSpec = Field(description="the image the DDIM loop ends with")
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    sampling: SamplingSpec
    ddim_update: str
    precision: str = "fp32"
    quantization: str | None = Field(None, description="how student 0's weights/activations were reduced (all "
                                                         "students the same way; per student in checks)")
    parity: ParitySpec | None = Field(None, description="the whole routed loop in the target runtime vs torch")
    parity_skipped: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
    runtime_options: dict[str, Any] = Field(default_factory=dict)
    total_bytes: int
    source: dict[str, Any] = Field(default_factory=dict)
    created: str


DDIM_UPDATE = (
    "deterministic DDIM (eta 0). Start: x = noise. For each schedule step in order: a = alpha_cumprod, "
    "a' = alpha_cumprod_prev (both listed per step); eps = students[student](x, timestep); "
    "x0 = (x - sqrt(1 - a) * eps) / sqrt(a), clipped to [-clip_sample_range, clip_sample_range] when "
    "scheduler.clip_sample; x = sqrt(a') * x0 + sqrt(1 - a') * eps. The image is the last x. This is diffusers' "
    "DDIMScheduler.step, which the profiler and the parity gate run: a' is alphas_cumprod[timestep - T // steps] "
    "(not the next listed timestep: with trailing spacing they can differ by one), or final_alpha_cumprod when "
    "that index is negative."
)


def ddim_alphas(sched: Any, t: int, steps: int) -> tuple[float, float]:
    """(alpha_cumprod at t, the one DDIMScheduler.step uses after t), exactly as diffusers computes them."""
    prev = t - int(sched.config.num_train_timesteps) // steps
    a_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
    return float(sched.alphas_cumprod[t]), float(a_prev)


def router_manifest_name(precision: str = "fp32") -> str:
    return f"{ROUTER_STEM if precision == 'fp32' else f'{ROUTER_STEM}_{precision}'}.manifest.json"


def student_stem(index: int, precision: str = "fp32") -> str:
    return f"student_{index}" if precision == "fp32" else f"student_{index}_{precision}"


def is_multi_student_run(run_path: Path) -> bool:
    """True when the run's student is a multi-model (O2MKD) student, read from its config.json alone."""
    cfg = Path(run_path) / "student" / "config.json"
    try:
        return json.loads(cfg.read_text()).get("kind") == "o2mkd"
    except (OSError, ValueError, AttributeError):
        return False


def read_router_manifest(path: Path) -> RouterManifest:
    """Read and validate a router manifest; problems are one line."""
    return read_versioned(path, RouterManifest, "router manifest", "export the run with `edgekd export RUN`",
                          (ROUTER_FORMAT_VERSION,), str(ROUTER_FORMAT_VERSION))


# --------------------------------------------------------------------------------------------- generators


def router_generator(manifest_path: Path, threads: int | None = None, compute_units: str = "ALL") -> Any:
    """The routed DDIM loop over the exported files of a router manifest, in the target's runtime."""
    from edgekd.profile.generators import CoreMLTeacher, OnnxTeacher, RoutedLoop, TFLiteTeacher

    m = read_router_manifest(manifest_path)
    folder = Path(manifest_path).parent
    sched, steps, spacing = m.sampling.scheduler, m.sampling.steps, m.sampling.scheduler.get("timestep_spacing", "trailing")
    steppers = []
    for s in sorted(m.students, key=lambda s: s.index):
        path = folder / s.model.file
        if m.target == "onnx":
            steppers.append(OnnxTeacher(path, sched, steps, threads, spacing))
        elif m.target == "tflite":
            steppers.append(TFLiteTeacher(path, sched, steps, threads, spacing))
        else:
            steppers.append(CoreMLTeacher(path, sched, steps, compute_units, spacing))
    return RoutedLoop(steppers, m.boundaries, sched, steps, spacing)


# --------------------------------------------------------------------------------------------- export


@dataclass
class _Prepared:
    run: Any
    recipe: Any
    student: Any
    jobs: list[Any]


def _prepare_multi(run_path: Path) -> _Prepared:
    """Load the run and make one export job per student (a step model driven by its own DDIM loop for parity)."""
    from edgekd.export import TEACHER_PARITY_STEPS, _Job
    from edgekd.export.onnx import TeacherStep
    from edgekd.rundir import RunDir
    from edgekd.teachers.diffusers_teacher import DiffusionTeacher

    class StudentStepJob(_Job):
        index: int = 0

        def what(self, target: str) -> str:
            return (f"{self.run.path}: {target} O2MKD student {self.index} step "
                    f"(through DDIM-{TEACHER_PARITY_STEPS} with this student alone)")

    run = RunDir.open(run_path)
    recipe = run.recipe()
    student = run.student()
    if not hasattr(student, "unets"):
        raise EdgekdError(f"{run.path}: the student is not a multi-model (O2MKD) student")
    sched = {**student.scheduler_config, "timestep_spacing": student.spacing}
    alphas = [float(a) for a in student_ddim(student).alphas_cumprod]
    jobs = []
    for i, ((lo, hi), unet) in enumerate(zip(student.ranges(), student.unets)):
        owned = [t for t in student.timesteps() if lo <= t <= hi]
        sampling = SamplingSpec(kind="ddim_loop", steps=student.steps, timesteps=owned, scheduler=sched,
                                alphas_cumprod=alphas)
        stepper = DiffusionTeacher(unet=unet.eval(), scheduler_config=student.scheduler_config,
                                   source=f"{run.path}/student[{i}]", fingerprint="")
        job = StudentStepJob(run, recipe, stepper, student_stem(i), TeacherStep(unet).eval(), ["sample", "timestep"],
                             "epsilon", tuple(student.sample_shape), sampling, True)
        job.index = i
        jobs.append(job)
    return _Prepared(run, recipe, student.eval(), jobs)


def student_ddim(student: Any) -> Any:
    from edgekd.teachers.diffusers_teacher import make_ddim

    return make_ddim(student.scheduler_config, student.steps, student.spacing)


def export_router(run_path: Path, target: str = "onnx", batch: int | None = None, psnr_min: float | None = None,
                  exporter: str = "dynamo", precision: str = "fp32", compute_units: str = "ALL",
                  deployment_target: str = "iOS17", prepared: _Prepared | None = None) -> Any:
    """Export every student of an O2MKD run to ``target`` + the router manifest; returns an ExportResult."""
    from edgekd import export as ex
    from edgekd.export.parity import check_parity
    from edgekd.profile.generators import TorchRouter
    from edgekd.profile.measure import count_params

    ex._validate(target, precision, batch, compute_units, deployment_target)
    prep = prepared or _prepare_multi(Path(run_path))
    recipe, run, student = prep.recipe, prep.run, prep.student
    if psnr_min is not None:
        bar = psnr_min
    else:  # as export._export: the recipe's bar for fp32/fp16, the int8 bar for every reduced precision
        bar = recipe.export.psnr_min if precision in ("fp32", "fp16") else ex.INT8_PSNR_MIN
    folder = run.exports / target
    suffix = ex.SUFFIX[target]
    created = [d for d in (run.exports, folder) if not d.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    finals = [folder / f"{job.name if precision == 'fp32' else f'{job.name}_{precision}'}{suffix}" for job in prep.jobs]
    tmps = [f.with_name(f".{f.stem}.partial{suffix}") for f in finals]
    outs = []
    try:
        for job, tmp in zip(prep.jobs, tmps):
            if target == "onnx":
                outs.append(ex._onnx(job, tmp, batch, bar, exporter, precision=precision, target_psnr=psnr_min))
            elif target == "tflite":
                outs.append(ex._tflite(job, tmp, batch or 1, bar, precision))
            else:
                outs.append(ex._coreml(job, tmp, batch or 1, bar, precision, compute_units, deployment_target))
        parity, skipped = _router_parity(prep, tmps, target, bar, precision, compute_units, check_parity, TorchRouter)
        for tmp, final in zip(tmps, finals):
            ex._replace(tmp, final)
    finally:
        for tmp in tmps:
            ex._remove(tmp)
            for extra in folder.glob(f"{tmp.name}*"):
                ex._remove(extra)
        for d in reversed(created):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    _remove_stale(folder, len(finals), precision, suffix)

    dims, inputs, _, _, _, runtime_options = outs[0]
    sched = prep.jobs[0].sampling.scheduler
    ddim = student_ddim(student)
    schedule = [ScheduleStep(step=k, timestep=t, student=i, alpha_cumprod=ddim_alphas(ddim, t, student.steps)[0],
                             alpha_cumprod_prev=ddim_alphas(ddim, t, student.steps)[1])
                for k, (t, i) in enumerate(student.schedule())]
    routed = []
    for i, (job, final, out) in enumerate(zip(prep.jobs, finals, outs)):
        lo, hi = student.ranges()[i]
        routed.append(RoutedStudent(index=i, range=(lo, hi), timesteps=job.sampling.timesteps,
                                    model=ModelFile(file=final.name, target=target, bytes=ex.size_bytes(final),
                                                    sha256=ex.sha256(final)),
                                    params=count_params(student.unets[i]), parity=out[3]))
    checks = {f"student_{i}": out[2] for i, out in enumerate(outs)}
    quantization = ex.quantization_text(target, precision, outs[0][2])
    manifest = RouterManifest(
        edgekd_version=__version__, name=f"{recipe.name}-{ROUTER_STEM}", target=target, students=routed,
        boundaries=list(student.boundaries), schedule=schedule, inputs=inputs,
        output=OutputSpec(name="epsilon", shape=dims, range=(-10.0, 10.0), to_pixels="epsilon: feed to the DDIM update"),
        image=OutputSpec(name="image", shape=[dims[0], *student.sample_shape], crop=ex.image_crop(recipe)),
        sampling=SamplingSpec(kind="ddim_loop", steps=student.steps, timesteps=student.timesteps(), scheduler=sched,
                              alphas_cumprod=prep.jobs[0].sampling.alphas_cumprod),
        ddim_update=DDIM_UPDATE + f" Here final_alpha_cumprod = {float(ddim.final_alpha_cumprod):g}.",
        precision=precision, quantization=quantization, parity=parity, parity_skipped=skipped, checks=checks,
        runtime_options=runtime_options, total_bytes=sum(s.model.bytes for s in routed),
        source={"run": str(run.path), "recipe": recipe.name, "teacher": recipe.teacher.path, "method": recipe.method.name},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    path = folder / router_manifest_name(precision)
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    total = manifest.total_bytes / 1e6
    if parity is not None:
        print(f"exported {len(finals)} O2MKD students to {folder} ({total:.2f} MB, {precision}) + {path.name}: routed "
              f"DDIM-{student.steps} parity {parity.psnr_db:.1f} dB, max abs error {parity.max_abs_error:.2e} "
              f"(bar {bar:.0f} dB, {parity.runtime})")
    else:
        print(f"exported {len(finals)} O2MKD students to {folder} ({total:.2f} MB, {precision}) + {path.name}: "
              f"structure checked; numerical parity NOT run: {skipped}")
    note = "not run (CoreML predicts on macOS only); structure checked" if skipped else ""
    return ex.ExportResult(target, path, manifest.total_bytes, parity, note)


def _router_parity(prep: _Prepared, tmps: list[Path], target: str, bar: float, precision: str, compute_units: str,
                   check_parity: Any, torch_router: Any) -> tuple[ParitySpec | None, str | None]:
    """The whole routed DDIM loop in the target runtime (the temp files) against the torch student."""
    from edgekd.export import coreml as cm
    from edgekd.profile.generators import CoreMLTeacher, OnnxTeacher, RoutedLoop, TFLiteTeacher

    student, recipe = prep.student, prep.recipe
    if target == "coreml" and not cm.can_predict():
        return None, cm.LINUX_REASON
    import torch

    sched, steps, spacing = student.scheduler_config, student.steps, student.spacing
    threads = torch.get_num_threads()
    if target == "onnx":
        steppers = [OnnxTeacher(p, sched, steps, None, spacing) for p in tmps]
    elif target == "tflite":
        steppers = [TFLiteTeacher(p, sched, steps, threads, spacing) for p in tmps]
    else:
        steppers = [CoreMLTeacher(p, sched, steps, compute_units, spacing) for p in tmps]
    candidate = RoutedLoop(steppers, student.boundaries, sched, steps, spacing)
    noise = make_noise(recipe.export.parity_seed, 0, recipe.export.parity_samples, tuple(student.sample_shape))
    what = f"{prep.run.path}: {target} O2MKD router (DDIM-{steps}, {student.num_students} students)"
    parity = check_parity(torch_router(student), candidate, noise, recipe.export.parity_seed, bar, what)
    if target == "onnx":
        import onnxruntime

        parity.runtime = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
    return parity, None


def _remove_stale(folder: Path, n: int, precision: str, suffix: str) -> None:
    """Student files of an earlier export with more students than this one (same precision) are removed."""
    from edgekd.export import _remove

    k = n
    while (folder / f"{student_stem(k, precision)}{suffix}").exists():
        _remove(folder / f"{student_stem(k, precision)}{suffix}")
        k += 1


def export_router_all(run_path: Path, batch: int | None = None, psnr_min: float | None = None,
                      exporter: str = "dynamo", precision: str = "fp32", compute_units: str = "ALL",
                      deployment_target: str = "iOS17") -> list[Any]:
    """onnx, tflite and coreml in turn (as ``export_all``) for a multi-student run."""
    from edgekd import export as ex

    prep = _prepare_multi(Path(run_path))
    results = []
    for target in ex.TARGETS:
        if precision not in ex.PRECISIONS[target]:
            results.append(ex.ExportResult(target, None, note=f"skipped: {target} exports "
                                                              f"{', '.join(ex.PRECISIONS[target])} only"))
            continue
        try:
            results.append(export_router(run_path, target, batch, psnr_min, exporter, precision, compute_units,
                                         deployment_target, prepared=prep))
        except EdgekdError as exc:
            results.append(ex.ExportResult(target, None, error=exc))
    return results
