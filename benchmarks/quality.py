"""The quality benchmark: every one-step method from the same teacher, judged by the same evaluator, one table.

    .venv/bin/python benchmarks/quality.py --scale cpu                                  # the shared teacher
    .venv/bin/python benchmarks/quality.py --scale cpu --teacher builtin:teachers/fmnist-tiny
    .venv/bin/python benchmarks/quality.py --scale gpu                                  # on a lent GPU
    .venv/bin/python benchmarks/quality.py --scale tiny --teacher DIR --out DIR          # seconds (tests/)

Rows: the teacher at DDIM-50 (the reference: its FID, its ONNX latency, measured in this run on the same noise and
evaluator) and the teacher's pair solver (target quality per teacher call); then one row per student:
- ds:         Denoising Student, pure L1 regression to the teacher's pairs, a slim UNet from scratch
- ds-teacher: the same objective, the student initialised from the teacher (Luhman's choice)
- ds-prune:   the same objective, the teacher's weights channel-pruned to ``prune_width`` of its channels
- ds-adv:     ds-teacher + the adversarial term against real images (the regression + GAN hybrid)
- gdd-u:      GDD: the teacher's own UNet at t = T-1, unit-gain parametrisation x0 = z - eps, a regression warm
              start, then a pure non-saturating GAN against real images (conv discriminator, DiffAugment)
- gddi-u:     GDD-I: the same with the paper's frozen 3x3 convolutions
- o2mkd:      O2MKD at its own step count (two pruned students, each owning half of the timesteps, DDIM)
- adv-kd:     Adv-KD's layerwise student (its own trajectory store with recorded states)
- quickstart: the packaged quickstart recipe unchanged but for teacher.path and the pair count
The teacher-size rows (ds-teacher, ds-prune, ds-adv, gdd-u, gddi-u) share one budget (``steps`` x ``batch``), so
the table compares methods at the same budget; a row that fails is listed under the table, the others still run.
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
    """Budgets of one scale. ``pairs``: teacher trajectories (the last ``heldout`` are held out). ``steps`` x
    ``batch``: the budget every teacher-size row gets (ds-teacher, ds-prune, ds-adv, gdd-u, gddi-u: the same
    budget, so rows compare methods, not budgets); the slim row has its own (``slim_steps`` x ``slim_batch``)."""

    pairs: int
    heldout: int
    solver: str
    solver_steps: int
    student: dict
    slim_steps: int
    slim_batch: int
    steps: int
    batch: int
    adv_start: int
    gdd_warm: int
    prune_width: float
    o2mkd_steps: int
    o2mkd_batch: int
    o2mkd_calls: int
    advkd_steps: int
    advkd_batch: int
    fid_samples: int
    repeats: int
    threads: int
    real_images: int | None
    lr: float = 1e-4
    disc_channels: int = 32
    rows: list[str] = field(default_factory=lambda: list(LABELS))
    teacher_steps: int = 50


LABELS = {"ds": "Denoising Student (L1), slim from scratch",
          "ds-teacher": "Denoising Student (L1), teacher init",
          "ds-prune": "Denoising Student (L1), pruned-teacher init",
          "ds-adv": "Denoising Student + adversarial, teacher init",
          "gdd-u": "GDD (unit gain, warm start)", "gddi-u": "GDD-I (unit gain, warm start)",
          "o2mkd": "O2MKD (2 pruned students, DDIM)", "adv-kd": "Adv-KD (layerwise)",
          "quickstart": "quickstart recipe (packaged defaults)"}

SCALES = {
    # seconds: a random tiny teacher, a few steps each; what tests/test_quality_benchmark.py runs
    "tiny": Scale(pairs=40, heldout=8, solver="dpmsolver++", solver_steps=3,
                  student={"kind": "unet", "init": "scratch", "block_out_channels": [8, 8], "norm_num_groups": 4},
                  slim_steps=6, slim_batch=8, steps=4, batch=4, adv_start=2, gdd_warm=2, prune_width=0.5,
                  o2mkd_steps=3, o2mkd_batch=4, o2mkd_calls=4, advkd_steps=4, advkd_batch=8,
                  fid_samples=32, repeats=2, threads=1, real_images=256, disc_channels=4, teacher_steps=4),
    # the CPU table (about 90 min on an idle 2-core machine, teacher samples and pairs included)
    "cpu": Scale(pairs=2048, heldout=128, solver="dpmsolver++", solver_steps=10,
                 student={"kind": "unet", "init": "scratch", "block_out_channels": [8, 16, 32], "norm_num_groups": 8},
                 slim_steps=1200, slim_batch=32, steps=600, batch=32, adv_start=300, gdd_warm=300, prune_width=0.5,
                 o2mkd_steps=300, o2mkd_batch=16, o2mkd_calls=10, advkd_steps=600, advkd_batch=32,
                 fid_samples=2048, repeats=15, threads=2, real_images=None, disc_channels=16),
    # a lent GPU: tens of thousands of pairs, a few thousand steps of batch 256 per method
    "gpu": Scale(pairs=51200, heldout=1024, solver="dpmsolver++", solver_steps=10,
                 student={"kind": "unet", "init": "scratch", "block_out_channels": [32, 64, 64], "norm_num_groups": 8},
                 slim_steps=4000, slim_batch=256, steps=4000, batch=256, adv_start=1500, gdd_warm=1500,
                 prune_width=0.5, o2mkd_steps=4000, o2mkd_batch=128, o2mkd_calls=10, advkd_steps=4000,
                 advkd_batch=256, fid_samples=10000, repeats=30, threads=8, real_images=None),
}


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


def regression(name: str, out: Path, args: argparse.Namespace, s: Scale, student: dict, lr: float) -> dict:
    """A Denoising Student row at the teacher-size budget: L1 to the pairs, EMA 0.99, no warm-up from zero lr."""
    r = base(name, out, args, s, s.steps, s.batch)
    r["student"] = student
    r["method"] = {"name": "denoising_student", "loss": "l1"}
    r["train"].update({"lr": lr, "betas": [0.9, 0.98], "ema_decay": 0.99, "warmup_steps": 0})
    return r


def recipes(out: Path, args: argparse.Namespace, s: Scale) -> dict[str, dict]:
    made: dict[str, dict] = {}
    ds = base("ds", out, args, s, s.slim_steps, s.slim_batch)
    ds["student"] = dict(s.student)
    ds["method"] = {"name": "denoising_student", "loss": "l1"}
    ds["train"].update({"lr": 1e-3, "betas": [0.9, 0.98], "ema_decay": 0.995})
    made["ds"] = ds
    # Luhman's choice: the student starts as the teacher, so one call already gives the teacher's one-step guess
    made["ds-teacher"] = regression("ds-teacher", out, args, s, {"kind": "unet", "init": "teacher"}, s.lr)
    # the teacher's weights at a fraction of its channels: a cheaper network that still starts from knowledge
    made["ds-prune"] = regression("ds-prune", out, args, s, {"kind": "unet", "init": "prune",
                                                             "width": s.prune_width}, 3 * s.lr)
    adv = regression("ds-adv", out, args, s, {"kind": "unet", "init": "teacher"}, s.lr)
    adv["method"].update({"adv_weight": args.adv_weight, "adv_start_step": s.adv_start,
                          "disc_channels": s.disc_channels, "r1_gamma": 0.1, "r1_every": 16, "diffaug": True})
    if args.d_lr:
        adv["method"]["d_lr"] = args.d_lr
    made["ds-adv"] = adv
    for key, innate in (("gdd-u", False), ("gddi-u", True)):
        g = base(key, out, args, s, s.steps, s.batch)
        g["method"] = {"name": "gdd", "innate": innate, "discriminator": "conv", "disc_channels": s.disc_channels,
                       "parametrisation": "unit", "warm_start_steps": s.gdd_warm, "r1_gamma": 0.1, "r1_every": 16,
                       "diffaug": True, "select_best": False, "eval_samples": min(64, s.fid_samples),
                       "eval_real": 256}
        g["train"].update({"lr": s.lr, "betas": [0.0, 0.99], "ema_decay": 0.99, "warmup_steps": 0})
        if args.d_lr:
            g["method"]["d_lr"] = args.d_lr
        made[key] = g
    made["o2mkd"] = o2mkd_recipe(out, args, s)
    made["adv-kd"] = advkd_recipe(out, args, s)
    made["quickstart"] = quickstart_recipe(out, args, s)
    return {key: made[key] for key in s.rows if (not args.only or key in args.only)}


def o2mkd_recipe(out: Path, args: argparse.Namespace, s: Scale) -> dict:
    """O2MKD at its own step count: two students pruned from the teacher, each owning half of the timesteps, output +
    feature KD with the teacher in the loop on real images diffused forward (no pairs)."""
    r = base("o2mkd", out, args, s, s.o2mkd_steps, s.o2mkd_batch)
    r["teacher"] = {"path": str(args.teacher), "steps": s.o2mkd_calls}
    r["trajectory"] = {"num_samples": 24, "heldout": 8, "shard_size": 24, "batch_size": 24}  # preview grids only
    if args.cache:
        r["trajectory"]["cache_dir"] = str(args.cache)
    r["student"] = {"kind": "o2mkd", "boundaries": [500], "init": "prune", "width": s.prune_width}
    r["method"] = {"name": "o2mkd", "timesteps": "mixed", "kd_weight": 1.0, "feature_weight": 0.1,
                   "denoise_weight": 0.0, "heldout_images": 64}
    r["train"].update({"lr": 3 * s.lr, "ema_decay": 0.99})
    return r


def advkd_recipe(out: Path, args: argparse.Namespace, s: Scale) -> dict:
    """Adv-KD's layerwise student: its own trajectory store (DDIM with recorded intermediate states)."""
    r = base("adv-kd", out, args, s, s.advkd_steps, s.advkd_batch)
    small = s.teacher_steps < 10
    r["teacher"] = {"path": str(args.teacher), "steps": 6 if small else 10}  # DDIM: states are recorded
    r["trajectory"]["record"] = [1, 2, 3, 4] if small else [2, 4, 6, 8]
    blocks = len(r["trajectory"]["record"]) + 1
    r["student"] = {"kind": "layerwise", "input_size": 4,
                    "channels": [16] * blocks if small else [128, 64, 64, 32, 32][:blocks]}
    r["method"] = {"name": "adv_kd"}
    return r


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
        r["train"].update({"steps": s.slim_steps, "batch_size": s.slim_batch, "eval_every": 2, "checkpoint_every": 3,
                           "sample_every": s.slim_steps, "warmup_steps": 1})
        if r["method"].get("adv_weight"):
            r["method"].update({"adv_start_step": s.adv_start, "disc_channels": s.disc_channels})
        r["teacher"]["steps"] = s.solver_steps
    return r


START, END = "<!-- quality-table:start -->", "<!-- quality-table:end -->"


def update_readme(path: Path, table: str) -> None:
    """Replace what lies between the README's markers with this run's table (atomically; markers required, so a
    README without them is never half-rewritten)."""
    from edgekd.train.checkpoint import atomic_write_text

    text = path.read_text()
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"error: {path} has no single '{START}' ... '{END}' block; add the two markers where the "
                         "table belongs and run again")
    head, rest = text.split(START)
    atomic_write_text(path, head + START + "\n" + table + "\n" + END + rest.split(END, 1)[1])


def onnx_manifest(run_path: Path, exporter: str = "dynamo") -> Path:
    """The run's ONNX export (made now unless already there): the manifest of one graph or of several."""
    from edgekd.export import export_run
    from edgekd.manifest import manifest_path

    found = sorted(p for p in (run_path / "exports" / "onnx").glob("*.manifest.json") if "teacher" not in p.name)
    if found:
        return found[0]
    made = export_run(run_path, exporter=exporter)
    return made if made.name.endswith(".manifest.json") else manifest_path(made)


def measure_teacher(teacher, s: Scale, cache: Path, noise: torch.Tensor):  # noqa: ANN001
    """The teacher's DDIM-N images and its pair solver's images on the FID noise (cached in the store layout)."""
    from edgekd.teachers.store import TrajectorySpec, TrajectoryStore

    out = {}
    # the reference first; then the pair solver, DDIM and DPM-Solver++ at the same number of calls (target quality
    # per call: which solver suits this teacher)
    for solver, steps in dict.fromkeys([("ddim", s.teacher_steps), (s.solver, s.solver_steps), ("ddim", s.solver_steps),
                                        ("dpmsolver++", s.solver_steps)]):
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
                   help=f"rows to train/measure ({' '.join(LABELS)})")
    p.add_argument("--adv-weight", type=float, default=1.0)
    p.add_argument("--d-lr", type=float, default=None,
                   help="the discriminators' lr in the hybrid and GDD rows (default: the methods' own; e.g. 4x the "
                        "student's for a two-time-scale update)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="torch.onnx exporter of the ONNX rows (the latency column); torchscript takes ~1 s a model "
                        "where dynamo takes ~25 s, which dominates the tiny scale (tests/)")
    p.add_argument("--fid-samples", type=int, default=None)
    p.add_argument("--readme", type=Path, nargs="?", const=ROOT / "README.md", default=None,
                   help="also write the table into README.md (or the file given) between its "
                        "<!-- quality-table:start --> and <!-- quality-table:end --> markers")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="override a budget of the scale, e.g. --set steps=400 batch=16 (see Scale)")
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
    from edgekd.profile.generators import OnnxTeacher, generate_batched
    from edgekd.profile.measure import count_macs, count_params, latency_ms
    from edgekd.profile.quality import psnr
    from edgekd.rundir import RunDir
    from edgekd.train.checkpoint import atomic_write_text
    from edgekd.runtime import open_generator, torch_generator
    from edgekd.teachers.diffusers_teacher import load_teacher

    teacher = load_teacher(args.teacher)
    name = Path(args.teacher.replace("builtin:", "")).name
    out = args.out or ROOT / "runs" / f"quality-{args.scale}-{name}"
    out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or default_cache_dir()
    n = s.fid_samples
    fs = fid_setup(teacher.sample_shape, n)
    one = fs.noise[:1]

    runs, failed = {}, {}
    for key, recipe in recipes(out, args, s).items():
        try:
            runs[key] = train(recipe, out)
        except Exception as exc:  # noqa: BLE001 - one row failing must not cost the other rows' hour
            failed[key] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            print(f"!! row {key} failed: {failed[key]}", flush=True)

    t0 = time.time()
    ref = measure_teacher(teacher, s, cache, fs.noise)
    teacher_seconds = time.time() - t0
    ref_images, _ = ref[("ddim", s.teacher_steps)]
    ref_fid = fs.score(ref_images)

    rows, teacher_onnx = [], None
    for key, (run_path, seconds) in runs.items():
        run = RunDir.open(run_path)
        recipe = run.recipe()
        student = run.student().eval()
        manifest = onnx_manifest(run.path, args.exporter)
        images = generate_batched(torch_generator(student), fs.noise, 64).clamp(-1, 1)
        fid_value = fs.score(images)
        rows.append({"key": key, "name": LABELS[key], "calls": student.sampling().steps(),
                     "params": count_params(student), "macs": count_macs(student, one),
                     "onnx_ms": latency_ms(open_generator(manifest, threads=1), one, s.repeats),
                     "fid": fid_value, "ratio": fid_value / ref_fid, "psnr": psnr(ref_images, images),
                     "train_s": seconds, "images_seen": recipe.train.steps * recipe.train.batch_size,
                     "images": images})
        if teacher_onnx is None:
            teacher_onnx = run.exports / "onnx" / "teacher_step.onnx"
            if not teacher_onnx.is_file():
                export_run(run.path, teacher=True, exporter=args.exporter)

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
               + (f" --d-lr {args.d_lr:g}" if args.d_lr else "")
               + (f" --exporter {args.exporter}" if args.exporter != "dynamo" else "")
               + (f" --only {' '.join(args.only)}" if args.only else ""))
    lines += ["", f"Command: `{command}`. Teacher {teacher.source}.",
              f"FID: {n} samples per generator on the same noise (seed {FID_SEED}) against the 10k Fashion-MNIST test "
              f"images, features of builtin:fid/fmnist-classifier ({n} real train images score {fs.floor:.2f}: the "
              "floor at this sample size). PSNR: against the teacher's DDIM-50 on the same noise. 'teacher s/img here': "
              "the wall time per image the teacher rows took to sample in this run (blank: cached), torch, "
              f"{s.threads} threads. Latency: "
              "onnxruntime, batch 1, 1 thread, median of repeats, every row in this run.",
              f"Budgets: pairs from the teacher's {s.solver}-{s.solver_steps} ({s.pairs - s.heldout} train, "
              f"{s.heldout} held out), shared by every pair-trained row. Teacher-size rows (teacher / pruned-teacher "
              f"init, the hybrid, GDD, GDD-I): the same {s.steps} steps x batch {s.batch} each, lr {s.lr:g} "
              f"(pruned: {3 * s.lr:g}); the hybrid adds the adversarial term (weight {args.adv_weight}, DiffAugment) "
              f"from step {s.adv_start}; GDD rows regress for {s.gdd_warm} warm-start steps, then pure GAN; pruned "
              f"rows keep {s.prune_width:g} of the teacher's channels. Slim row: {s.slim_steps} steps x batch "
              f"{s.slim_batch}, lr 1e-3. O2MKD: {s.o2mkd_steps} steps x batch {s.o2mkd_batch} per student, teacher in "
              f"the loop on real images, DDIM-{s.o2mkd_calls}. Adv-KD: {s.advkd_steps} steps x batch "
              f"{s.advkd_batch}, its own DDIM store with recorded states. The quickstart row: its recipe's own "
              "budget. 'train s' is the distill wall time, pairs excluded when cached. "
              f"Benchmark wall time {total / 60:.1f} min, teacher FID samples {teacher_seconds / 60:.1f} min "
              f"of it (0 when cached). Threads: {s.threads}."]
    if failed:
        lines.append("Rows that failed (not in the table): "
                     + "; ".join(f"{key}: {why}" for key, why in failed.items()))
    if best is not None:
        lines.append(f"Best one-step student: {best['name']}, FID {best['fid']:.2f} = {best['ratio']:.2f}x the "
                     f"teacher's DDIM-50 FID ({ref_fid:.2f}), {fmt(best.get('speedup'), '.0f')}x faster (ONNX).")
    table = "\n".join(lines)
    print(table)
    atomic_write_text(out / "quality.md", table + "\n")
    atomic_write_text(out / "quality.json", json.dumps(
        {"rows": [{k: v for k, v in r.items() if k != "images"} for r in rows], "teacher_fid": ref_fid,
         "fid_floor": fs.floor, "seconds": total, "scale": args.scale, "teacher": args.teacher}, indent=2, default=str))
    labelled_rows({r["name"]: r["images"][:16] for r in rows}, out / "samples.png")
    if args.readme:
        update_readme(args.readme, table)
        print(f"updated the table in {args.readme}")
    print(f"wrote {out / 'quality.md'} and {out / 'samples.png'}")


if __name__ == "__main__":
    main()
