"""The quality benchmark: every one-step method from the same teacher, judged by the same evaluator, one table.

    .venv/bin/python benchmarks/quality.py --scale cpu                                  # the shared teacher
    .venv/bin/python benchmarks/quality.py --scale cpu --teacher builtin:teachers/fmnist-tiny
    .venv/bin/python benchmarks/quality.py --scale gpu                                  # on a lent GPU
    .venv/bin/python benchmarks/quality.py --scale tiny --teacher DIR --out DIR          # seconds (tests/)

Rows: the teacher at DDIM-50 (the reference: its FID, its ONNX latency, measured in this run on the same noise and
evaluator) and the teacher's pair solver (target quality per teacher call); then one row per student:
- ds:      Denoising Student, pure L1 regression to the teacher's pairs (teacher.solver, e.g. DPM-Solver++-10)
- ds-adv:  the same student and budget + the adversarial term against real images (method.adv_weight)
- ds-teacher: the Denoising Student initialised from the teacher, pure L1, at the GDD rows' budget and lr
- gdd-u:   GDD: the teacher's own UNet at t = T-1, unit-gain parametrisation x0 = z - eps, a regression warm start,
           then a pure non-saturating GAN against real images (conv discriminator)
- gddi-u:  GDD-I: the same with the paper's frozen 3x3 convolutions
- adv-kd:  Adv-KD's layerwise student (its own trajectory store with recorded states; tiny and gpu scales)
- quickstart: the packaged quickstart recipe unchanged but for teacher.path and the pair count
The discriminators are plain conv nets, never the FID classifier (training on the evaluator measures the metric).

Columns: FID (N samples, the same noise for every generator, against the 10k Fashion-MNIST test images, features of
builtin:fid/fmnist-classifier), FID / teacher DDIM-50 FID, PSNR to the teacher's DDIM-50 on the same noise, params,
MACs per image, ONNX ms/img (onnxruntime, batch 1, 1 thread, median of repeats), the teacher's DDIM-50 ms/img over
the student's (speed ratio), the distill wall time and the images the generator saw (steps x batch).
Writes OUT/quality.md (the table + the settings) and OUT/quality.json. Finished runs in OUT are reused (delete
OUT/<row> to retrain); trajectory pairs and teacher FID samples are cached in the trajectory store
(~/.cache/edgekd unless --cache), so a second run costs only training.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench_common import FID_SEED, ROOT, TEACHER, fmt


@dataclass
class Scale:
    """Budgets of one scale. ``pairs``: teacher trajectories (the last ``heldout`` are held out)."""

    pairs: int
    heldout: int
    solver: str
    solver_steps: int
    student: dict
    ds_steps: int
    batch: int
    adv_start: int
    gdd_steps: int
    gdd_batch: int
    gdd_warm: int
    advkd_steps: int
    fid_samples: int
    repeats: int
    threads: int
    real_images: int | None
    disc_channels: int = 32
    rows: list[str] = field(default_factory=lambda: ["ds", "ds-adv", "quickstart", "ds-teacher", "gdd-u", "gddi-u"])
    teacher_steps: int = 50


SCALES = {
    # seconds: a random tiny teacher, a few steps each; what tests/test_quality_benchmark.py runs
    "tiny": Scale(pairs=40, heldout=8, solver="dpmsolver++", solver_steps=3,
                  student={"kind": "unet", "init": "scratch", "block_out_channels": [8, 8], "norm_num_groups": 4},
                  ds_steps=6, batch=8, adv_start=3, gdd_steps=4, gdd_batch=4, gdd_warm=2, advkd_steps=4,
                  fid_samples=32, repeats=2, threads=1, real_images=256, disc_channels=4,
                  rows=["ds", "ds-adv", "quickstart", "gdd-u", "gddi-u", "adv-kd"], teacher_steps=4),
    # the CPU table (about 90 min on an idle 2-core machine once the pairs are cached)
    "cpu": Scale(pairs=1024, heldout=64, solver="dpmsolver++", solver_steps=10,
                 student={"kind": "unet", "init": "scratch", "block_out_channels": [8, 16, 32], "norm_num_groups": 8},
                 ds_steps=1200, batch=32, adv_start=400, gdd_steps=300, gdd_batch=16, gdd_warm=150, advkd_steps=0,
                 fid_samples=2048, repeats=15, threads=2, real_images=None, disc_channels=16),
    # a lent GPU: tens of thousands of pairs, a few thousand steps of batch 256 per method
    "gpu": Scale(pairs=51200, heldout=1024, solver="dpmsolver++", solver_steps=10,
                 student={"kind": "unet", "init": "scratch", "block_out_channels": [32, 64, 64], "norm_num_groups": 8},
                 ds_steps=4000, batch=256, adv_start=1500, gdd_steps=4000, gdd_batch=256, gdd_warm=1500,
                 advkd_steps=4000, fid_samples=10000, repeats=30, threads=8, real_images=None,
                 rows=["ds", "ds-adv", "quickstart", "ds-teacher", "gdd-u", "gddi-u", "adv-kd"]),
}

LABELS = {"ds": "Denoising Student (L1)", "ds-adv": "Denoising Student + adversarial",
          "ds-teacher": "Denoising Student (L1), teacher init",
          "gdd-u": "GDD (unit gain, warm start)", "gddi-u": "GDD-I (unit gain, warm start)",
          "adv-kd": "Adv-KD (layerwise)", "quickstart": "quickstart recipe (packaged defaults)"}


def base(name: str, out: Path, args: argparse.Namespace, s: Scale, steps: int, batch: int) -> dict:
    """What every row shares: teacher, pairs (the same store for every row), loop settings."""
    r = {"name": name, "run_dir": str(out / name), "device": args.device, "seed": 0,
         "teacher": {"path": str(args.teacher), "steps": s.solver_steps, "solver": s.solver},
         "trajectory": {"num_samples": s.pairs, "heldout": s.heldout, "shard_size": 512, "batch_size": 64},
         "train": {"steps": steps, "batch_size": batch, "warmup_steps": min(50, steps // 10),
                   "eval_every": max(2, steps // 6), "sample_every": steps, "checkpoint_every": max(2, steps // 3),
                   "threads": s.threads},
         "export": {"parity_samples": 4}}
    if args.cache:
        r["trajectory"]["cache_dir"] = str(args.cache)
    if s.real_images:
        r["data"] = {"limit": s.real_images}
    return r


def recipes(out: Path, args: argparse.Namespace, s: Scale) -> dict[str, dict]:
    made: dict[str, dict] = {}
    ds = base("ds", out, args, s, s.ds_steps, s.batch)
    ds["student"] = dict(s.student)
    ds["method"] = {"name": "denoising_student", "loss": "l1"}
    ds["train"].update({"lr": 1e-3, "betas": [0.9, 0.98], "ema_decay": 0.995})
    made["ds"] = ds
    adv = json.loads(json.dumps(ds))
    adv.update({"name": "ds-adv", "run_dir": str(out / "ds-adv")})
    adv["method"] = {"name": "denoising_student", "loss": "l1", "adv_weight": args.adv_weight,
                     "adv_start_step": s.adv_start, "disc_channels": s.disc_channels, "r1_gamma": 0.1,
                     "r1_every": 16}
    adv["train"]["ema_decay"] = 0.99
    made["ds-adv"] = adv
    # the Denoising Student initialised from the teacher (Luhman's choice) at GDD's budget: separates what GDD's
    # GAN phase adds from what the teacher's weights and the regression warm start give
    dst = base("ds-teacher", out, args, s, s.gdd_steps, s.gdd_batch)
    dst["student"] = {"kind": "unet", "init": "teacher"}
    dst["method"] = {"name": "denoising_student", "loss": "l1"}
    dst["train"].update({"lr": 1e-4, "betas": [0.9, 0.98], "ema_decay": 0.99, "warmup_steps": 0})
    made["ds-teacher"] = dst
    for key, innate in (("gdd-u", False), ("gddi-u", True)):
        g = base(key, out, args, s, s.gdd_steps, s.gdd_batch)
        g["method"] = {"name": "gdd", "innate": innate, "discriminator": "conv", "disc_channels": s.disc_channels,
                       "parametrisation": "unit", "warm_start_steps": s.gdd_warm, "r1_gamma": 0.1, "r1_every": 16,
                       "select_best": False, "eval_samples": min(64, s.fid_samples), "eval_real": 256}
        g["train"].update({"lr": 1e-4, "betas": [0.0, 0.99], "ema_decay": 0.99, "warmup_steps": 0})
        made[key] = g
    k = base("adv-kd", out, args, s, s.advkd_steps, s.batch)
    k["teacher"].update({"steps": 6 if s.teacher_steps < 10 else 10})  # its own store: states are recorded
    k["trajectory"]["record"] = [1, 2, 3, 4] if s.teacher_steps < 10 else [2, 4, 6, 8]
    blocks = len(k["trajectory"]["record"]) + 1
    k["student"] = {"kind": "layerwise", "input_size": 4, "channels": ([16] * blocks if s.teacher_steps < 10
                                                                      else [128, 64, 64, 32, 32][:blocks])}
    k["method"] = {"name": "adv_kd"}
    made["adv-kd"] = k
    made["quickstart"] = quickstart_recipe(out, args, s)
    return {key: made[key] for key in s.rows if (not args.only or key in args.only)}


def quickstart_recipe(out: Path, args: argparse.Namespace, s: Scale) -> dict:
    """The packaged quickstart recipe as users get it, with only the teacher, the pair count (the scale's cached
    pairs when its solver matches), the run folder and threads changed."""
    import yaml

    from edgekd.pipeline import QUICKSTART_RECIPE

    r = yaml.safe_load(QUICKSTART_RECIPE.read_text())
    r.update({"name": "quickstart", "run_dir": str(out / "quickstart"), "device": args.device})
    r["teacher"]["path"] = str(args.teacher)
    r["trajectory"].update({"num_samples": s.pairs, "heldout": s.heldout})
    if args.cache:
        r["trajectory"]["cache_dir"] = str(args.cache)
    r["train"]["threads"] = s.threads
    if s.real_images:
        r.setdefault("data", {})["limit"] = s.real_images
    if s.teacher_steps < 10:  # the tiny scale: a few steps only
        r["train"].update({"steps": s.ds_steps, "batch_size": s.batch, "eval_every": 2, "checkpoint_every": 3,
                           "sample_every": s.ds_steps, "warmup_steps": 1})
        if r["method"].get("adv_weight"):
            r["method"].update({"adv_start_step": s.adv_start, "disc_channels": s.disc_channels})
        r["teacher"]["steps"] = s.solver_steps
    return r


def measure_teacher(teacher, s: Scale, cache: Path, noise: torch.Tensor):  # noqa: ANN001
    """The teacher's DDIM-N images and its pair solver's images on the FID noise (cached in the store layout)."""
    from edgekd.teachers.store import TrajectorySpec, TrajectoryStore

    out = {}
    # the reference first; then the pair solver and DDIM at the same number of calls (target quality per call)
    for solver, steps in dict.fromkeys([("ddim", s.teacher_steps), (s.solver, s.solver_steps), ("ddim", s.solver_steps)]):
        spec = TrajectorySpec(teacher.fingerprint, steps, "trailing", 0.0, FID_SEED, (), teacher.sample_shape, solver)
        store = TrajectoryStore(cache, spec)
        t0 = time.perf_counter()
        before = store.available()
        store.ensure(teacher, len(noise), shard_size=64, batch_size=64)
        made = store.available() - before
        seconds = time.perf_counter() - t0
        out[(solver, steps)] = (torch.from_numpy(store.read(0, len(noise))["x0"][:]).clamp(-1, 1),
                                seconds / made if made else None)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=list(SCALES), default="cpu")
    p.add_argument("--teacher", default=str(TEACHER))
    p.add_argument("--out", type=Path, default=None, help="default runs/quality-<scale>-<teacher name>")
    p.add_argument("--cache", type=Path, default=None, help="trajectory store root (default ~/.cache/edgekd)")
    p.add_argument("--only", nargs="+", default=None,
                   help="rows to train/measure (ds ds-adv quickstart ds-teacher gdd-u gddi-u adv-kd)")
    p.add_argument("--adv-weight", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fid-samples", type=int, default=None)
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="override a budget of the scale, e.g. --set ds_steps=400 gdd_steps=150 (see Scale)")
    args = p.parse_args()
    s = SCALES[args.scale]
    if args.fid_samples:
        s.fid_samples = args.fid_samples
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(s, key) or key in ("student", "rows"):
            p.error(f"--set {item}: unknown budget '{key}' (one of {', '.join(sorted(Scale.__dataclass_fields__))})")
        setattr(s, key, type(getattr(s, key))(value) if getattr(s, key) is not None else int(value))
    torch.set_num_threads(s.threads)
    started = time.time()

    from bench_common import fid_setup, train
    from edgekd.export import export_run
    from edgekd.grid import labelled_rows
    from edgekd.paths import default_cache_dir
    from edgekd.profile.generators import OnnxStudent, OnnxTeacher, TorchStudent, generate_batched
    from edgekd.profile.measure import count_macs, count_params, latency_ms
    from edgekd.profile.quality import psnr
    from edgekd.rundir import RunDir
    from edgekd.teachers.diffusers_teacher import load_teacher

    teacher = load_teacher(args.teacher)
    name = Path(args.teacher.replace("builtin:", "")).name
    out = args.out or ROOT / "runs" / f"quality-{args.scale}-{name}"
    out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or default_cache_dir()
    n = s.fid_samples
    fs = fid_setup(teacher.sample_shape, n)
    one = fs.noise[:1]

    runs = {key: train(r, out) for key, r in recipes(out, args, s).items()}

    t0 = time.time()
    ref = measure_teacher(teacher, s, cache, fs.noise)
    teacher_seconds = time.time() - t0
    ref_images, _ = ref[("ddim", s.teacher_steps)]
    ref_fid = fs.score(ref_images)

    rows, teacher_onnx = [], None
    for key, (run_path, seconds) in runs.items():
        run = RunDir.open(run_path)
        recipe = run.recipe()
        student = run.student()
        onnx = run.exports / "onnx" / "student.onnx"
        if not onnx.is_file():
            export_run(run.path)
        images = generate_batched(TorchStudent(student), fs.noise, 64).clamp(-1, 1)
        fid_value = fs.score(images)
        rows.append({"key": key, "name": LABELS[key], "calls": 1, "params": count_params(student),
                     "macs": count_macs(student, one), "onnx_ms": latency_ms(OnnxStudent(onnx, threads=1), one, s.repeats),
                     "fid": fid_value, "ratio": fid_value / ref_fid, "psnr": psnr(ref_images, images),
                     "train_s": seconds, "images_seen": recipe.train.steps * recipe.train.batch_size,
                     "images": images})
        if teacher_onnx is None:
            teacher_onnx = run.exports / "onnx" / "teacher_step.onnx"
            if not teacher_onnx.is_file():
                export_run(run.path, teacher=True)

    teacher_macs = count_macs(teacher.unet, one, torch.tensor([999]))
    teacher_rows = []
    for (solver, steps), (images, s_per_img) in ref.items():
        label = f"teacher {'DDIM' if solver == 'ddim' else solver}-{steps}"
        value = fs.score(images) if (solver, steps) != ("ddim", s.teacher_steps) else ref_fid
        row = {"key": label, "name": label, "calls": steps, "params": count_params(teacher.unet),
               "macs": teacher_macs * steps, "fid": value, "ratio": value / ref_fid,
               "psnr": None if solver == "ddim" and steps == s.teacher_steps else psnr(ref_images, images),
               "train_s": None, "images_seen": None, "images": images, "s_per_img_here": s_per_img}
        if teacher_onnx is not None and solver == "ddim":
            row["onnx_ms"] = latency_ms(OnnxTeacher(teacher_onnx, teacher.scheduler_config, steps, threads=1), one,
                                        max(3, s.repeats // 5))
        teacher_rows.append(row)
    teacher_ms = teacher_rows[0].get("onnx_ms")
    for r in rows:
        r["speedup"] = teacher_ms / r["onnx_ms"] if teacher_ms else None
    rows = teacher_rows + rows

    t = f"DDIM-{s.teacher_steps}"
    head = ["generator", "net calls", f"FID ({n})", f"x teacher {t} FID", f"PSNR vs {t} dB", "params",
            "MACs/img", "ONNX ms/img", f"speed-up vs {t}", "train s", "images seen", "teacher s/img here"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["name"], str(r["calls"]), f"{r['fid']:.2f}", f"{r['ratio']:.2f}", fmt(r["psnr"], ".1f"),
            f"{r['params'] / 1e6:.3f}M", f"{r['macs'] / 1e6:.1f}M", fmt(r.get("onnx_ms"), ".2f"),
            fmt(r.get("speedup"), ".0f"), fmt(r["train_s"], ".0f"), fmt(r["images_seen"], ","),
            fmt(r.get("s_per_img_here"), ".3f")]) + " |")
    total = time.time() - started
    best = min((r for r in rows if r["calls"] == 1), key=lambda r: r["fid"], default=None)
    command = (f"python benchmarks/quality.py --scale {args.scale} --teacher {args.teacher}"
               + (f" --fid-samples {args.fid_samples}" if args.fid_samples else "")
               + (f" --set {' '.join(args.set)}" if args.set else "")
               + (f" --only {' '.join(args.only)}" if args.only else ""))
    lines += ["", f"Command: `{command}`. Teacher {teacher.source}.",
              f"FID: {n} samples per generator on the same noise (seed {FID_SEED}) against the 10k Fashion-MNIST test "
              f"images, features of builtin:fid/fmnist-classifier ({n} real train images score {fs.floor:.2f}: the "
              "floor at this sample size). PSNR: against the teacher's DDIM-50 on the same noise. 'teacher s/img here': "
              "the wall time per image the teacher rows took to sample in this run (blank: cached), torch, "
              f"{s.threads} threads. Latency: "
              "onnxruntime, batch 1, 1 thread, median of repeats, every row in this run.",
              f"Budgets: pairs from the teacher's {s.solver}-{s.solver_steps} ({s.pairs - s.heldout} train, "
              f"{s.heldout} held out); ds/ds-adv {s.ds_steps} steps x batch {s.batch} (adversarial from step "
              f"{s.adv_start}, weight {args.adv_weight}); GDD rows {s.gdd_steps} steps x batch {s.gdd_batch} "
              f"({s.gdd_warm} warm-start regression steps first), ds-teacher the GDD rows' steps and batch at lr 1e-4 "
              "(the quickstart row: its recipe's own). 'train s' is the distill wall time, pairs excluded "
              f"(cached). Benchmark wall time {total / 60:.1f} min, teacher FID samples {teacher_seconds / 60:.1f} min "
              f"of it (0 when cached). Threads: {s.threads}."]
    if best is not None:
        lines.append(f"Best one-step student: {best['name']}, FID {best['fid']:.2f} = {best['ratio']:.2f}x the "
                     f"teacher's DDIM-50 FID ({ref_fid:.2f}), {fmt(best.get('speedup'), '.0f')}x faster (ONNX).")
    table = "\n".join(lines)
    print(table)
    (out / "quality.md").write_text(table + "\n")
    (out / "quality.json").write_text(json.dumps(
        {"rows": [{k: v for k, v in r.items() if k != "images"} for r in rows], "teacher_fid": ref_fid,
         "fid_floor": fs.floor, "seconds": total, "scale": args.scale, "teacher": args.teacher}, indent=2, default=str))
    labelled_rows({r["name"]: r["images"][:16] for r in rows}, out / "samples.png")
    print(f"wrote {out / 'quality.md'} and {out / 'samples.png'}")


if __name__ == "__main__":
    main()
