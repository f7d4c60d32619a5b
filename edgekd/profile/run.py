"""``edgekd profile RUN``: every generator (teacher DDIM-N, student in torch and onnxruntime) on the same noise.

Writes report/profile.json, report/profile.md and report/samples.png (teacher and student side by side on the
same noise), and prints the table. Latencies are per image at batch 1 (what a phone does), medians of repeats;
speed-ups are teacher over student measured in the same run, the same runtime and the same thread count.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from edgekd import __version__
from edgekd.data import load_dataset
from edgekd.export import image_crop
from edgekd.grid import labelled_rows
from edgekd.integrity import check_export
from edgekd.noise import make_noise
from edgekd.profile.generators import OnnxStudent, OnnxTeacher, TorchStudent, TorchTeacher, generate_batched
from edgekd.profile.measure import count_macs, count_params, file_bytes, latency_ms
from edgekd.distill import store_root
from edgekd.rundir import RunDir
from edgekd.teachers.diffusers_teacher import load_teacher
from edgekd.teachers.store import TrajectorySpec, TrajectoryStore
from edgekd.train.checkpoint import atomic_write_json, atomic_write_text


@dataclass
class Row:
    name: str
    steps: int
    params: int
    macs_per_image: int
    model_bytes: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    fid: float | None = None
    psnr_vs_teacher: float | None = None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict) -> str:
    runtimes = report["runtimes"]
    head = ["generator", "steps", "params", "MACs/img", "model MB", *[f"{r} ms/img" for r in runtimes],
            f"FID ({report['fid_samples']})", "PSNR vs teacher dB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        cells = [row["name"], str(row["steps"]), f"{row['params'] / 1e6:.3f}M", f"{row['macs_per_image'] / 1e6:.1f}M",
                 f"{row['model_bytes'] / 1e6:.2f}", *[_fmt(row["latency_ms"].get(r), 2) for r in runtimes],
                 _fmt(row["fid"], 2), _fmt(row["psnr_vs_teacher"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Speed-up of the student over each teacher (same runtime, same threads, measured in this run):")
    lines.append("")
    lines.append("| teacher | " + " | ".join(runtimes) + " |")
    lines.append("|---|" + "---|" * len(runtimes))
    for name, ratios in report["speedup"].items():
        lines.append(f"| {name} | " + " | ".join(f"{ratios[r]:.0f}x" if r in ratios else "-" for r in runtimes) + " |")
    if report.get("per_step"):
        from edgekd.profile.o2mkd import render_per_step

        lines += render_per_step(report["per_step"], runtimes)
    lines.append("")
    lines.append(f"FID: {report['fid_samples']} generated images against {report['fid_real']} real Fashion-MNIST test "
                 f"images, features from {report['feature_net']} (test accuracy {report['feature_net_accuracy']}). "
                 f"Real train images against the same test images score {_fmt(report['fid_data_floor'], 2)} (the floor).")
    lines.append(f"Latency: batch 1, median of {report['repeats']} repeats, {report['machine']}.")
    return "\n".join(lines) + "\n"


def profile_run(run_path: Path, fid_samples: int | None = None, teacher_steps: list[int] | None = None,
                repeats: int | None = None, threads: list[int] | None = None) -> dict:
    """Profile a run's student against its teacher; returns the report dict (also written to disk)."""
    from edgekd.export import export_run
    from edgekd.profile.classifier import FeatureNet, load_classifier
    from edgekd.profile.quality import fid, psnr

    run = RunDir.open(run_path)
    recipe = run.recipe()
    cfg = recipe.profile
    n_fid = fid_samples or cfg.fid_samples
    steps_list = sorted(set(teacher_steps or cfg.teacher_steps))
    reps = repeats or cfg.latency_repeats
    thread_list = threads or cfg.threads
    teacher = load_teacher(recipe.teacher.path)
    shape = teacher.sample_shape
    student = run.student()
    from edgekd.profile.o2mkd import is_router, profile_router, router_manifest_path

    router = is_router(student)  # O2MKD: N students routed by timestep inside a DDIM loop (profile/o2mkd.py)
    if router:
        steps_list = sorted(set(steps_list) | {student.steps})  # the teacher at the students' own step count

    student_onnx = router_manifest_path(run) if router else run.exports / "onnx" / "student.onnx"
    teacher_onnx = run.exports / "onnx" / "teacher_step.onnx"
    if not student_onnx.is_file():
        export_run(run.path)
    if not teacher_onnx.is_file():
        export_run(run.path, teacher=True)
    if not router:  # refuse a damaged or stale export (made from another student or teacher): edgekd.integrity
        check_export(student_onnx, run.path)
    check_export(teacher_onnx, run.path, teacher.fingerprint)

    one = make_noise(cfg.fid_seed, 0, 1, shape)
    runtimes = ["torch", *[f"onnxruntime {t}t" for t in thread_list]]
    n_threads = torch.get_num_threads()

    # ---- costs
    t_steps_max = max(steps_list)
    teacher_macs = count_macs(teacher.unet, one, torch.tensor([999]))
    rows: list[Row] = []
    for steps in steps_list:
        row = Row(f"teacher DDIM-{steps}", steps, count_params(teacher.unet), teacher_macs * steps, file_bytes(teacher_onnx))
        row.latency_ms["torch"] = latency_ms(TorchTeacher(teacher, steps, recipe.teacher.timestep_spacing), one, reps)
        for t in thread_list:
            gen = OnnxTeacher(teacher_onnx, teacher.scheduler_config, steps, t, recipe.teacher.timestep_spacing)
            row.latency_ms[f"onnxruntime {t}t"] = latency_ms(gen, one, reps)
        rows.append(row)
    per_step = None
    if router:
        srow, per_step = profile_router(student, teacher, teacher_onnx, student_onnx, one, reps, thread_list)
    else:
        srow = Row("student", 1, count_params(student), count_macs(student, one), file_bytes(student_onnx))
        srow.latency_ms["torch"] = latency_ms(TorchStudent(student), one, reps)
        for t in thread_list:
            srow.latency_ms[f"onnxruntime {t}t"] = latency_ms(OnnxStudent(student_onnx, t), one, reps)
    torch.set_num_threads(n_threads)

    # ---- quality: teacher samples come from (and go into) the trajectory store, so re-profiling is cheap
    root = store_root(recipe)
    samples: dict[int, torch.Tensor] = {}
    for steps in steps_list:
        store = TrajectoryStore(root, TrajectorySpec(teacher.fingerprint, steps, recipe.teacher.timestep_spacing,
                                                     0.0, cfg.fid_seed, (), shape))
        store.ensure(teacher, n_fid, shard_size=max(n_fid, 1), batch_size=cfg.batch_size)
        samples[steps] = torch.from_numpy(store.read(0, n_fid)["x0"][:]).clamp(-1, 1)
    noise = make_noise(cfg.fid_seed, 0, n_fid, shape)
    # quality is judged on what users see: outputs clipped to [-1, 1] as the manifest's to_pixels does
    if router:
        from edgekd.export.multi import router_generator

        student_gen = router_generator(student_onnx)
    else:
        student_gen = OnnxStudent(student_onnx)
    student_out = generate_batched(student_gen, noise, cfg.batch_size, progress="student (onnxruntime)").clamp(-1, 1)
    feature_net = FeatureNet(load_classifier(cfg.feature_net))
    real = load_dataset(recipe.data.model_copy(update={"split": "test", "limit": None}))
    train_real = load_dataset(recipe.data.model_copy(update={"split": "train", "limit": n_fid}))
    reference = samples[t_steps_max]
    for row, steps in zip(rows, steps_list):
        row.fid = fid(real, samples[steps], feature_net)
        row.psnr_vs_teacher = None if steps == t_steps_max else psnr(reference, samples[steps])
    srow.fid = fid(real, student_out, feature_net)
    srow.psnr_vs_teacher = psnr(samples[student.steps] if router else reference, student_out)
    rows.append(srow)

    speedup = {r.name: {rt: r.latency_ms[rt] / srow.latency_ms[rt] for rt in runtimes} for r in rows[:-1]}
    accuracy = _classifier_accuracy(cfg.feature_net)
    report = {
        "edgekd_version": __version__, "run": str(run.path), "recipe": recipe.name, "teacher": recipe.teacher.path,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "runtimes": runtimes, "repeats": reps, "fid_samples": n_fid, "fid_real": len(real),
        "feature_net": cfg.feature_net, "feature_net_accuracy": accuracy,
        "fid_data_floor": fid(real, train_real, feature_net),
        "rows": [asdict(r) for r in rows], "speedup": speedup, "per_step": per_step,
    }
    run.report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.report_dir / "profile.json", report)
    markdown = render_markdown(report)
    atomic_write_text(run.report_dir / "profile.md", f"# edgekd profile: {recipe.name}\n\n" + markdown +
                      "\n![teacher and student on the same noise](samples.png)\n")
    grid_rows = {f"teacher DDIM-{s}": samples[s][:16] for s in steps_list}
    grid_rows[srow.name if router else "student (1 step)"] = student_out[:16]
    labelled_rows(grid_rows, run.report_dir / "samples.png", crop=image_crop(recipe))
    print(markdown)
    print(f"report: {run.report_dir / 'profile.md'}")
    return report


def _classifier_accuracy(path: str) -> str:
    from edgekd.paths import resolve_builtin

    try:
        info = json.loads((resolve_builtin(path) / "config.json").read_text())
        return f"{100 * float(info['test_accuracy']):.1f}%"
    except (OSError, ValueError, KeyError):
        return "unknown"
