"""``edgekd profile RUN``: every generator of a run on the same noise, with its costs and its quality.

Generators (``profile/inventory.py``): the teacher in torch at each step count, the student in torch, every export
(each target and precision, the teacher's exported step at each step count) and every derived run under
``compressed/``. Each is measured in a fresh subprocess (``profile/measure.py``: load + first run, latency median
and p90 of repeats after warm-up at 1/2/4 threads capped by the machine, peak RSS), then generates the FID images
on the same noise here: FID and KID against the real test set, PSNR against the teacher on the same noise.

Writes report/profile.json (format ``edgekd.profile`` 2; device rows merged by ``--import`` are kept), report/
profile.md and report/samples.png (every generator on the same noise); ``edgekd report`` renders them.
"""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import Any

import torch

from edgekd import __version__
from edgekd.errors import EdgekdError
from edgekd.data import load_dataset
from edgekd.distill import store_root
from edgekd.export import image_crop
from edgekd.grid import labelled_rows
from edgekd.manifest import read_manifest
from edgekd.integrity import check_export
from edgekd.noise import make_noise
from edgekd.profile.measure import REPEAT_BUDGET_S, count_macs, count_params, file_bytes, machine_threads, \
    measure_in_subprocess, thread_counts
from edgekd.rundir import RunDir
from edgekd.runtime import generate_batched
from edgekd.teachers.diffusers_teacher import load_recipe_teacher, load_teacher
from edgekd.teachers.store import TrajectorySpec, TrajectoryStore
from edgekd.train.checkpoint import atomic_write_json, atomic_write_text

PROFILE_FORMAT = "edgekd.profile"
PROFILE_VERSION = 2
GRID_IMAGES = 8


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The profile as Markdown tables: every generator, speed-ups over the teacher rows, the exports."""
    threads = report["threads"]
    q = report["quality"]
    top = f"{max(threads)}t"
    head = ["generator", "runtime", "precision", "steps", "params", "MACs/img", "model MB", "first run ms",
            *[f"{t}t median ms" for t in threads], f"{top} p90 ms", "peak RSS MB", f"FID ({q['samples']})",
            "KID x1e3", "PSNR dB"] + (["asked class %"] if any("asked_class" in r for r in report["rows"]) else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        lat = row.get("latency_ms") or {}
        cells = [row["name"], row["runtime"], row["precision"], str(row.get("steps") or 1),
                 "-" if row.get("params") is None else f"{row['params'] / 1e6:.3f}M",
                 "-" if row.get("macs_per_image") is None else f"{row['macs_per_image'] / 1e6:.1f}M",
                 "-" if row.get("model_bytes") is None else f"{row['model_bytes'] / 1e6:.2f}",
                 _fmt(row.get("first_run_ms"), 0), *[_fmt(lat.get(f"{t}t"), 2) for t in threads],
                 _fmt((row.get("latency_p90_ms") or {}).get(top), 2), _mb(row.get("peak_rss_bytes")),
                 _fmt(row.get("fid"), 2), _fmt(None if row.get("kid") is None else row["kid"] * 1e3, 2),
                 _fmt(row.get("psnr_vs_teacher"), 1)]
        if head[-1] == "asked class %":
            cells.append(_fmt(None if row.get("asked_class") is None else 100 * row["asked_class"], 1))
        if row.get("skipped"):
            cells[7:] = [f"not run: {row['skipped']}"] + [""] * (len(cells) - 8)
        lines.append("| " + " | ".join(cells) + " |")
    teachers = [r["name"] for r in report["rows"] if r["group"] == "teacher" and r.get("reference")]
    others = [r for r in report["rows"] if not r.get("reference") and r.get("speedup")]
    if teachers and others:
        lines += ["", f"Speed-up over each teacher row ({top}, median latency, measured in this run):", "",
                  "| generator | " + " | ".join(teachers) + " |", "|---|" + "---|" * len(teachers)]
        for r in others:
            lines.append(f"| {r['name']} | " + " | ".join(
                _fmt(r["speedup"].get(t, {}).get(top), 1) + "x" if r["speedup"].get(t, {}).get(top) else "-"
                for t in teachers) + " |")
    exports = [r for r in report["rows"] if r.get("manifest")]
    if exports:
        lines += ["", "Exports (from their manifests):", "",
                  "| generator | file | precision | quantization | parity |", "|---|---|---|---|---|"]
        for r in exports:
            lines.append(f"| {r['name']} | {r['manifest']['path']} | {r['precision']} | "
                         f"{r['manifest'].get('quantization') or '-'} | {parity_text(r['manifest'])} |")
    if report.get("stages"):
        lines += render_stages(report["stages"])
    if report.get("per_step"):
        from edgekd.profile.per_step import render_per_step

        lines += render_per_step(report["per_step"], report.get("per_step_runtimes", []))
    lines.append("")
    if q.get("fid_skipped"):
        lines.append(f"FID and KID were not computed: {q['fid_skipped']}. PSNR: against {q['psnr_reference']} on "
                     f"the same noise{', ' + q['conditions'] if q.get('conditions') else ''}.")
    else:
        lines.append(f"Quality: {q['samples']} generated images per generator on the same noise (seed {q['seed']}) "
                     f"against {q['real']} real test images; features: {q['feature_net']}. FID of {q['samples']} real "
                     f"train images against the same test images: {_fmt(q.get('fid_data_floor'), 2)} (the floor). KID: "
                     f"torchmetrics, {q['kid_subsets']} subsets of {q['kid_subset_size']}. PSNR: against "
                     f"{q['psnr_reference']} on the same noise.")
    lines.append(f"Latency: per image at batch 1, median (and p90) of up to {report['repeats']} calls (at least 5; "
                 f"fewer for slow generators, ~{report.get('repeat_budget_s', 4.0):.0f} s per thread count) after "
                 f"{report['warmup']} warm-up call(s), per thread count; first run = model load + first call in a "
                 f"fresh process; peak RSS = that process's high-water mark (VmHWM). {report['machine']}.")
    return "\n".join(lines) + "\n"


def parity_text(facts: dict[str, Any]) -> str:
    p = facts.get("parity")
    if p:
        return (f"{'passed' if p.get('passed') else 'FAILED'} {p.get('psnr_db', float('nan')):.1f} dB, max err "
                f"{p.get('max_abs_error', float('nan')):.1e} ({p.get('runtime', '?')})")
    return f"skipped: {facts.get('parity_skipped') or 'none recorded'}"


def _costs(spec: dict[str, Any], one: torch.Tensor, cache: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(params, MACs per image, model bytes) of a spec, from the torch model it came from."""
    run = spec["run"]
    if spec["group"] == "teacher":
        key = f"teacher:{spec['teacher']}"
        if key not in cache:
            t = cache.get("recipe_teacher") if spec["teacher"] == cache.get("recipe_teacher_path") \
                else load_teacher(spec["teacher"])
            from edgekd.paths import resolve_builtin

            local = resolve_builtin(spec["teacher"])
            unet_dir = next((local / d for d in ("unet", "transformer") if (local / d).is_dir()), None)
            cache[key] = (teacher_params(t), teacher_macs(t, one), file_bytes(local) if unet_dir else None)
        params, (macs_call, macs_once), size = cache[key]
        size = spec["manifest"]["bytes"] if spec.get("manifest") else size
        return params, macs_call * int(spec["steps"]) + macs_once, size
    key = f"student:{run}"
    if key not in cache:
        from edgekd.profile.inventory import staged_student

        student = staged_student(RunDir.open(Path(run)))
        macs = sum(count_macs(g.module, *g.example(1).values()) for g in student.graphs()) \
            if hasattr(student, "stages") else count_macs(student, one)
        cache[key] = (count_params(student.model) + sum(count_params(g.module) for g in student.extra)
                      if hasattr(student, "stages") else count_params(student), macs,
                      file_bytes(Path(run) / "student"), _student_steps(student) if _student_steps(student) > 1 else None)
    params, macs, size, steps = cache[key]
    spec.setdefault("steps", None)
    spec["steps"] = spec["steps"] or steps  # a routed (O2MKD) student runs its own DDIM-N loop
    return params, macs, spec["manifest"]["bytes"] if spec.get("manifest") else size


def teacher_params(teacher: Any) -> int:
    """Parameters of every network the teacher runs per image (denoiser, text encoder, decoder)."""
    parts = [teacher.unet, teacher.text_encoder, teacher.decoder]
    return sum(count_params(m) for m in parts if m is not None)


def teacher_macs(teacher: Any, one: torch.Tensor) -> tuple[int, int]:
    """(MACs of one denoising step, MACs paid once per image: the text encoder and the decoder). A guided step
    runs the network on both branches."""
    from edgekd.models.stages import DecoderGraph, TextEncoderGraph

    cond = None
    if teacher.condition is not None:
        cond = teacher.condition_input(teacher.condition.draw(0, 1))
    per_call = count_macs(teacher.denoiser, one, torch.tensor([999]), cond)
    if teacher.guidance_scale != 1.0:
        per_call *= 2
    once = 0
    if teacher.decoder is not None:
        once += count_macs(DecoderGraph(teacher.decoder, teacher.scaling_factor), one)
    if teacher.text_encoder is not None:
        length = int(teacher.tokenizer.model_max_length)
        once += count_macs(TextEncoderGraph(teacher.text_encoder), torch.zeros(1, length, dtype=torch.int64))
    return per_call, once


def _teacher_samples(recipe: Any, teacher: Any, steps: int, n: int, seed: int, batch: int) -> torch.Tensor:
    """The torch teacher's images on the FID noise (image i: condition i mod K), from (and into) the trajectory
    store: re-profiling is cheap. A latent teacher's stored latents are decoded."""
    import json

    shape = teacher.sample_shape
    condition = json.dumps(teacher.condition.describe(), sort_keys=True) if teacher.condition is not None else None
    store = TrajectoryStore(store_root(recipe), TrajectorySpec(teacher.fingerprint, steps,
                                                               recipe.teacher.timestep_spacing, 0.0, seed, (), shape,
                                                               "ddim", condition, float(teacher.guidance_scale)))
    store.ensure(teacher, n, shard_size=max(n, 1), batch_size=batch)
    x0 = torch.from_numpy(store.read(0, n)["x0"][:])
    if teacher.latent:
        return torch.cat([teacher.decode(x0[i : i + batch]) for i in range(0, n, batch)]).clamp(-1, 1)
    return x0.clamp(-1, 1)


def stage_costs(run: RunDir, teacher: Any, one: torch.Tensor, steps_list: list[int]) -> list[dict[str, Any]] | None:
    """Per stage of a staged model (text encoder, denoiser, decoder): parameters and MACs per image, for the
    student's pipeline and the teacher's at each profiled step count (a phone's decoder can cost more than the
    one-step denoiser: the report shows where the time goes). None for a one-graph model."""
    from edgekd.profile.inventory import staged_student

    student = staged_student(run)
    if not hasattr(student, "stages"):
        return None
    rows = []
    for g in student.graphs():
        rows.append({"model": "student", "stage": g.name, "params": count_params(g.module),
                     "macs_per_image": count_macs(g.module, *g.example(1).values()), "calls": 1})
    per_call, _ = teacher_macs(teacher, one)
    for g in student.extra:
        rows.append({"model": "teacher", "stage": g.name, "params": count_params(g.module),
                     "macs_per_image": count_macs(g.module, *g.example(1).values()), "calls": 1})
    for steps in steps_list:
        calls = steps * (2 if teacher.guidance_scale != 1.0 else 1)
        rows.append({"model": "teacher", "stage": f"denoiser x {calls} calls (DDIM-{steps}"
                     + (", guided" if teacher.guidance_scale != 1.0 else "") + ")",
                     "params": count_params(teacher.unet), "macs_per_image": per_call * steps, "calls": calls})
    return rows


def render_stages(stages: list[dict[str, Any]]) -> list[str]:
    lines = ["", "Cost per stage (MACs per image; the student's pipeline and the teacher's):", "",
             "| model | stage | params | MACs/img | share of its model |", "|---|---|---|---|---|"]
    for model in ("student", "teacher"):
        mine = [r for r in stages if r["model"] == model]
        if model == "teacher":  # the teacher's share at its first (smallest) step count
            first = next((r for r in mine if r["stage"].startswith("denoiser")), None)
            mine = [r for r in mine if not r["stage"].startswith("denoiser")] + ([first] if first else []) + \
                [r for r in mine if r["stage"].startswith("denoiser") and r is not first]
            total = sum(r["macs_per_image"] for r in mine if not r["stage"].startswith("denoiser")) + \
                (first["macs_per_image"] if first else 0)
        else:
            total = sum(r["macs_per_image"] for r in mine)
        for r in mine:
            share = f"{100 * r['macs_per_image'] / total:.0f}%" if total else "-"
            lines.append(f"| {model} | {r['stage']} | {r['params'] / 1e6:.3f}M | {r['macs_per_image'] / 1e6:.1f}M | "
                         f"{share} |")
    return lines


def class_judge(recipe: Any, teacher: Any) -> Any:
    """edgekd's Fashion-MNIST classifier when the teacher is a 10-class teacher of Fashion-MNIST-shaped images
    (it judges whether a sample shows the class it was asked for), else None."""
    cond = teacher.condition
    if cond is None or cond.kind != "class" or cond.num_classes != 10 or recipe.data.kind != "fashion_mnist" \
            or teacher.image_shape[0] != 1:
        return None
    from edgekd.profile.classifier import load_classifier

    return load_classifier()


def asked_class_share(judge: Any, images: torch.Tensor, asked: torch.Tensor) -> tuple[float, list[float]]:
    """(share of the samples the classifier assigns to the class they were asked for, the same per class)."""
    from edgekd.profile.classifier import to_classifier_input

    with torch.no_grad():
        pred = torch.cat([judge(to_classifier_input(images[i : i + 256])).argmax(1) for i in range(0, len(images), 256)])
    hit = (pred == asked).float()
    per = [float(hit[asked == c].mean()) if (asked == c).any() else float("nan") for c in range(10)]
    return float(hit.mean()), per


def fid_skip_reason(recipe: Any, teacher: Any) -> str | None:
    """Why FID against the recipe's data cannot be computed for this teacher's pictures (None: it can)."""
    from edgekd.recipe import check_data_files

    c, h, _ = teacher.image_shape
    if (c, h) != (recipe.data.channels, recipe.data.resolution):
        return (f"the teacher makes {c}x{h}x{h} images and the recipe's data is {recipe.data.channels}x"
                f"{recipe.data.resolution}x{recipe.data.resolution}: no real images to compare with (set data: to "
                "images like the teacher's)")
    try:
        check_data_files(recipe.data, "recipe")
    except EdgekdError as exc:
        return f"the real images are not there ({exc})"
    return None


def _student_steps(student: Any) -> int:
    """Network calls per image of a student as it describes itself (1, or an O2MKD student's DDIM-N)."""
    return int(student.sampling().steps())


def _ensure_onnx(run: RunDir) -> tuple[Path, Path]:
    """The ONNX student and teacher step every profile includes (exported when missing; a conditional or latent
    teacher's step is a guided epsilon graph with its text encoder and decoder: edgekd.models.stages)."""
    from edgekd.export import export_run

    student_manifest = run.exports / "onnx" / "student.manifest.json"
    teacher_onnx = run.exports / "onnx" / "teacher_step.onnx"
    if not student_manifest.is_file():
        export_run(run.path)
    if not teacher_onnx.is_file():
        export_run(run.path, teacher=True)
    return student_manifest, teacher_onnx


def profile_run(run_path: Path, fid_samples: int | None = None, teacher_steps: list[int] | None = None,
                repeats: int | None = None, threads: list[int] | None = None, inception: str | None = None,
                warmup: int = 1) -> dict[str, Any]:
    """Profile every generator of a run; returns the report dict (also written to RUN/report/)."""
    from tqdm.auto import tqdm

    from edgekd.profile import quality
    from edgekd.profile.features import describe, feature_network
    from edgekd.profile.inventory import all_specs, open_spec
    run = RunDir.open(run_path)
    recipe = run.recipe()
    cfg = recipe.profile
    n_fid = fid_samples or cfg.fid_samples
    reps = repeats or cfg.latency_repeats
    thread_list = thread_counts(threads or cfg.threads)
    steps_list = sorted(set(teacher_steps or cfg.teacher_steps))
    features = feature_network(inception, cfg.feature_net)  # fail on a bad --inception before any work
    teacher = load_recipe_teacher(recipe)
    shape = teacher.sample_shape
    student = run.student()
    student_steps = _student_steps(student)  # > 1: O2MKD, several graphs routed by timestep in a DDIM loop
    router = len(student.graphs()) > 1
    if student_steps > 1:
        steps_list = sorted(set(steps_list) | {student_steps})  # the teacher at the student's own step count
    student_manifest, teacher_onnx = _ensure_onnx(run)
    specs = all_specs(run.path, steps_list)
    # refuse a damaged or stale export (made from another student or teacher): edgekd.integrity
    check_export(student_manifest, run.path)
    check_export(teacher_onnx, run.path, teacher.fingerprint)
    one = make_noise(cfg.fid_seed, 0, 1, shape)

    # ---- costs: each generator alone in a fresh process (memory, first run), medians of repeats after warm-up
    rows: list[dict[str, Any]] = []
    cache: dict[str, Any] = {"recipe_teacher": teacher, "recipe_teacher_path": recipe.teacher.path}
    bar = tqdm(specs, desc="latency + memory", unit="gen", dynamic_ncols=True, leave=False)
    for spec in bar:
        bar.set_postfix_str(spec["label"][-40:])
        params, macs, size = _costs(spec, one, cache)  # (also fills a routed student's step count)
        row = {"name": spec["label"], "group": spec["group"], "reference": bool(spec.get("reference")),
               "run": spec["run_label"], "runtime": spec["runtime"], "precision": spec["precision"],
               "steps": spec.get("steps"), "params": params, "macs_per_image": macs, "model_bytes": size,
               "manifest": None, "skipped": spec.get("skip"), "latency_ms": {}, "latency_p90_ms": {}}
        if spec.get("manifest"):
            row["manifest"] = {**{k: spec["manifest"][k] for k in ("target", "quantization", "parity",
                                                                  "parity_skipped", "format_version")},
                               "path": str(Path(spec["path"]).relative_to(run.path))}
        if not row["skipped"]:
            m = measure_in_subprocess({k: v for k, v in spec.items()}, cfg.fid_seed, shape, thread_list, reps, warmup)
            row.update(load_ms=m.load_ms, first_run_ms=m.first_run_ms, latency_ms=m.latency_ms, repeats=m.repeats,
                       latency_p90_ms=m.latency_p90_ms, baseline_rss_bytes=m.baseline_rss_bytes,
                       peak_rss_bytes=m.peak_rss_bytes, arena_bytes=m.arena_bytes,
                       arena_note=m.arena_note or "not reported by this runtime's Python API")
        rows.append(row)
    bar.close()
    reference_rows = [r for r in rows if r["reference"] and not r["skipped"]]
    for row in rows:
        if row["latency_ms"] and not row["reference"]:
            row["speedup"] = {t["name"]: {k: t["latency_ms"][k] / v for k, v in row["latency_ms"].items()
                                          if k in t["latency_ms"] and v > 0} for t in reference_rows}

    # ---- quality: every generator on the same noise; teacher torch images come from the trajectory store
    noise = make_noise(cfg.fid_seed, 0, n_fid, shape)
    conditions = teacher.condition.draw(0, n_fid) if teacher.condition is not None else None  # image i: i mod K
    judge = class_judge(recipe, teacher)
    no_fid = fid_skip_reason(recipe, teacher)
    real = real_f = None
    kid_size, floor = 0, None
    if no_fid is None:
        real = load_dataset(recipe.data.model_copy(update={"split": "test", "limit": None}))
        train_real = load_dataset(recipe.data.model_copy(update={"split": "train", "limit": n_fid}))
        real_f = quality.features(real, features.net)
        kid_size = quality.kid_subset_size(len(real), n_fid)
        floor = quality.fid_from_features(real_f, quality.features(train_real, features.net))
    ref_steps = max(steps_list)
    teacher_images = {s: _teacher_samples(recipe, teacher, s, n_fid, cfg.fid_seed, cfg.batch_size) for s in steps_list}
    grid: dict[str, torch.Tensor] = {}
    for spec, row in tqdm(list(zip(specs, rows)), desc="quality (FID/KID/PSNR)", unit="gen", dynamic_ncols=True,
                          leave=False):
        if row["skipped"]:
            continue
        if spec["kind"] == "torch_teacher" and spec.get("reference"):
            images = teacher_images[spec["steps"]]
        else:
            torch.set_num_threads(max(thread_list))
            images = generate_batched(open_spec(spec, threads=max(thread_list)), noise, cfg.batch_size,
                                      condition=conditions).clamp(-1, 1)
        if no_fid is None:
            fake_f = quality.features(images, features.net)
            row["fid"] = quality.fid_from_features(real_f, fake_f)
            row["kid"], row["kid_std"] = quality.kid_from_features(real_f, fake_f, subset_size=kid_size)
        else:
            row["fid"] = row["kid"] = None
        if judge is not None:
            row["asked_class"], row["asked_class_per_class"] = asked_class_share(judge, images, conditions)
        ref = student_steps if (student_steps > 1 and spec["group"] == "student" and spec["run_label"] == ".") \
            else ref_steps
        row["psnr_reference"] = f"teacher DDIM-{ref} torch"
        same = spec["kind"] == "torch_teacher" and spec.get("reference") and spec["steps"] == ref
        row["psnr_vs_teacher"] = None if same else quality.psnr(teacher_images[ref], images)
        grid[row["name"]] = images[:GRID_IMAGES]

    stages = stage_costs(run, teacher, one, steps_list)
    per_step = per_step_runtimes = None
    if router:  # several graphs: one network call of the teacher and of each graph (profile/per_step.py)
        from edgekd.profile.per_step import profile_steps

        name = f"{recipe.method.name} {len(student.graphs())} students DDIM-{student_steps}"
        per_step = profile_steps(student, teacher, teacher_onnx, student_manifest, one, reps, thread_list, name)
        per_step_runtimes = ["torch", *[f"onnxruntime {t}t" for t in thread_list]]
    torch.set_num_threads(max(thread_list))

    report_dir = run.report_dir
    report = {
        "format": PROFILE_FORMAT, "format_version": PROFILE_VERSION,
        "edgekd_version": __version__, "run": str(run.path), "recipe": recipe.name, "teacher": recipe.teacher.path,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {machine_threads()} cores usable, "
                   f"{platform.system()}, Python {platform.python_version()}, torch {torch.__version__}",
        "threads": thread_list, "repeats": reps, "warmup": warmup, "repeat_budget_s": REPEAT_BUDGET_S,
        "quality": {"samples": n_fid, "seed": cfg.fid_seed, "real": len(real) if real is not None else 0,
                    **describe(features), "fid_skipped": no_fid, "fid_data_floor": floor,
                    "conditions": None if conditions is None else
                    f"image i: {teacher.condition.kind} i mod {len(teacher.condition.prompts) if teacher.condition.kind == 'text' else teacher.condition.num_classes}",
                    "kid_subsets": 50, "kid_subset_size": kid_size,
                    "psnr_reference": f"the torch teacher with the most steps (DDIM-{ref_steps})"
                                      + (f"; the {student_steps}-step student: DDIM-{student_steps}"
                                         if student_steps > 1 else "")},
        "rows": rows, "per_step": per_step, "per_step_runtimes": per_step_runtimes, "stages": stages,
        "device_rows": [], "grid": "samples.png",
    }
    from edgekd.profile.device_import import ROWS_KEY, carry_over, with_device_section

    report = carry_over(report_dir, report)  # rows imported from device benchmarks survive a re-profile
    report_dir.mkdir(parents=True, exist_ok=True)
    labelled_rows(grid, report_dir / "samples.png", crop=image_crop(recipe) if not teacher.latent else None)
    atomic_write_json(report_dir / "profile.json", report)
    markdown = render_markdown(report)
    atomic_write_text(report_dir / "profile.md", with_device_section(
        f"# edgekd profile: {recipe.name}\n\n" + markdown + "\n![every generator on the same noise](samples.png)\n",
        report.get(ROWS_KEY, [])))
    print(markdown)
    print(f"report: {report_dir / 'profile.md'} (render the HTML report with `edgekd report {run.path}`)")
    return report

