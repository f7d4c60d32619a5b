"""Adv-KD's layerwise student against the Denoising Student and the teacher (DDIM-10, DDIM-50), on the CPU.

    .venv/bin/python benchmarks/adv_kd_compare.py            # ~20-25 min on one busy CPU thread
    .venv/bin/python benchmarks/adv_kd_compare.py --ablations  # + layerwise variants (pure GAN, strong L1, joint)

Both students learn from the same small trajectory store (the shared Fashion-MNIST teacher, DDIM-10, states at
steps 2, 4, 6, 8, 9 and x_0) under the same step budget and batch. Each is exported through edgekd.export.export_run
(the parity gate must pass) and measured: parameters, MACs per image, onnxruntime latency (batch 1, 1 thread,
median), FID against the 10k Fashion-MNIST test images (edgekd's classifier features) on the same N noises for
every generator, and PSNR against the teacher's DDIM-10 output on those noises.
Results go to OUT/compare.md, OUT/compare.json and OUT/samples.png. Trained runs are reused when present
(delete OUT/<name> to retrain); teacher samples are cached in OUT/cache.

This is a CPU smoke-scale comparison (a few hundred training steps, a few hundred FID samples): it shows what each
method does with a tiny budget, not what it reaches at GPU scale (recipes/adv-kd-fmnist-gpu.yaml).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from bench_common import FID_SEED, ROOT, TEACHER, fid_setup, fmt, teacher_samples, train


def base_recipe(name: str, out: Path, args: argparse.Namespace) -> dict:
    return {
        "name": name, "run_dir": str(out / name), "device": "cpu", "seed": 0,
        "teacher": {"path": str(args.teacher), "steps": args.teacher_steps},
        "trajectory": {"num_samples": args.trajectories, "heldout": args.heldout, "record": args.record,
                       "shard_size": 160, "batch_size": 64, "cache_dir": str(out / "cache")},
        "train": {"steps": args.steps, "batch_size": args.batch, "warmup_steps": 20, "eval_every": 50,
                  "sample_every": args.steps, "checkpoint_every": args.steps, "threads": 1},
        "export": {"parity_samples": 8},
    }


def layerwise_recipe(name: str, out: Path, args: argparse.Namespace, **method: object) -> dict:
    r = base_recipe(name, out, args)
    r["student"] = {"kind": "layerwise", "input_size": 4, "channels": [64, 64, 32, 32, 16, 16], "convs_per_block": 1}
    r["method"] = {"name": "adv_kd", "schedule": "progressive", "regression": "l1", "regression_weight": 0.1,
                   "disc_channels": 8, "disc_hidden": 64, **method}
    r["train"].update({"lr": 1e-4, "betas": [0.5, 0.999]})
    return r


def ds_recipe(name: str, out: Path, args: argparse.Namespace) -> dict:
    r = base_recipe(name, out, args)
    r["student"] = {"kind": "unet", "init": "scratch", "block_out_channels": [16, 32, 32]}
    r["method"] = {"name": "denoising_student", "loss": "l1"}
    return r


def long_recipes(out: Path, args: argparse.Namespace) -> dict[str, dict]:
    """``--long-steps`` runs: the layerwise student with both schedules, and the Denoising Student."""
    n, recipes = args.long_steps, {}
    for schedule, suffix in (("progressive", ""), ("joint", "-joint")):
        r = layerwise_recipe(f"layerwise{suffix}-{n}", out, args, schedule=schedule)
        r["train"].update({"steps": n, "sample_every": n, "checkpoint_every": n})
        recipes[f"Adv-KD layerwise, {schedule}, {n} steps"] = r
    r = ds_recipe(f"denoising-student-{n}", out, args)
    r["train"].update({"steps": n, "sample_every": n, "checkpoint_every": n})
    recipes[f"Denoising Student, {n} steps"] = r
    return recipes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "adv-kd-compare")
    p.add_argument("--teacher", type=Path, default=TEACHER)
    p.add_argument("--teacher-steps", type=int, default=10)
    p.add_argument("--record", type=int, nargs="+", default=[2, 4, 6, 8, 9])
    p.add_argument("--trajectories", type=int, default=320)
    p.add_argument("--heldout", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--fid-samples", type=int, default=256)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--ablations", action="store_true", help="also train layerwise variants (FID only)")
    p.add_argument("--long-steps", type=int, default=0,
                   help="also train both layerwise schedules and the Denoising Student for this many steps")
    args = p.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    from edgekd.export import export_run
    from edgekd.grid import labelled_rows
    from edgekd.profile.generators import OnnxStudent, OnnxTeacher, TorchStudent, generate_batched
    from edgekd.profile.measure import count_macs, count_params, latency_ms
    from edgekd.profile.quality import psnr
    from edgekd.rundir import RunDir
    from edgekd.teachers.diffusers_teacher import load_teacher

    teacher = load_teacher(str(args.teacher))
    n = args.fid_samples
    fs = fid_setup(teacher.sample_shape, n)
    noise, floor = fs.noise, fs.floor
    one = noise[:1]

    # ---- the trajectory store both students read (recorded once, before any timed training)
    from edgekd.distill import open_store
    from edgekd.recipe import load_recipe

    t0 = time.time()
    first = layerwise_recipe("layerwise", out, args)
    (out / "layerwise.yaml").write_text(yaml.safe_dump(first, sort_keys=False))
    traj = load_recipe(out / "layerwise.yaml").trajectory
    open_store(load_recipe(out / "layerwise.yaml"), teacher).ensure(teacher, traj.num_samples, traj.shard_size,
                                                                  traj.batch_size)
    trajectories_s = time.time() - t0

    # ---- students
    runs = {"Adv-KD layerwise": train(layerwise_recipe("layerwise", out, args), out),
            "Denoising Student (slim UNet)": train(ds_recipe("denoising-student", out, args), out)}
    if args.long_steps:
        for label, recipe in long_recipes(out, args).items():
            runs[label] = train(recipe, out)
    if args.ablations:
        runs["layerwise, pure GAN (regression_weight 0)"] = train(layerwise_recipe("layerwise-gan-only", out, args, regression_weight=0.0), out)
        runs["layerwise, strong L1 (regression_weight 10)"] = train(layerwise_recipe("layerwise-l1-10", out, args, regression_weight=10.0), out)
        runs["layerwise, joint schedule"] = train(layerwise_recipe("layerwise-joint", out, args, schedule="joint"), out)

    # ---- teacher samples on the FID noise (cached in the store layout that `edgekd profile` uses)
    t_teacher_start = time.time()
    teacher_out = teacher_samples(teacher, out / "cache", n)
    t_teacher_s = time.time() - t_teacher_start

    rows = []
    teacher_macs = count_macs(teacher.unet, one, torch.tensor([999]))
    teacher_onnx = None
    for name, (run_path, seconds) in runs.items():
        run = RunDir.open(run_path)
        student = run.student()
        row = {"name": name, "calls": 1, "params": count_params(student), "macs": count_macs(student, one),
               "train_s": round(seconds, 1)}
        if name in ("Adv-KD layerwise", "Denoising Student (slim UNet)"):
            onnx_path = run.exports / "onnx" / "student.onnx"
            if not onnx_path.is_file():
                export_run(run.path)
            manifest = json.loads((onnx_path.parent / "student.manifest.json").read_text()) \
                if (onnx_path.parent / "student.manifest.json").is_file() else {}
            row["parity_db"] = manifest.get("parity", {}).get("psnr_db")
            row["onnx_ms"] = latency_ms(OnnxStudent(onnx_path, threads=1), one, args.repeats)
            images = generate_batched(OnnxStudent(onnx_path, threads=1), noise, 64).clamp(-1, 1)
            if teacher_onnx is None:
                teacher_onnx = run.exports / "onnx" / "teacher_step.onnx"
                if not teacher_onnx.is_file():
                    export_run(run.path, teacher=True)
        else:
            images = generate_batched(TorchStudent(student), noise, 64).clamp(-1, 1)
        row["fid"] = fs.score(images)
        row["psnr_vs_ddim10"] = psnr(teacher_out[10], images)
        row["images"] = images
        rows.append(row)
    for steps in (10, 50):
        row = {"name": f"teacher DDIM-{steps}", "calls": steps, "params": count_params(teacher.unet),
               "macs": teacher_macs * steps, "train_s": None, "fid": fs.score(teacher_out[steps]),
               "psnr_vs_ddim10": None if steps == 10 else psnr(teacher_out[10], teacher_out[steps]),
               "images": teacher_out[steps]}
        if teacher_onnx is not None:
            row["onnx_ms"] = latency_ms(OnnxTeacher(teacher_onnx, teacher.scheduler_config, steps, threads=1), one,
                                        max(3, args.repeats // (steps // 5)))
        rows.append(row)

    head = ["generator", "net calls", "params", "MACs/img", "ONNX ms/img (1 thread)", f"FID ({n})",
            "PSNR vs DDIM-10 dB", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["name"], str(r["calls"]), f"{r['params'] / 1e6:.3f}M", f"{r['macs'] / 1e6:.1f}M",
                                          fmt(r.get("onnx_ms"), ".2f"), f"{r['fid']:.2f}", fmt(r["psnr_vs_ddim10"], ".1f"),
                                          fmt(r["train_s"], ".0f")]) + " |")
    total = time.time() - started
    lines += ["", f"FID: {n} samples per generator on the same noise (seed {FID_SEED}) against the 10k Fashion-MNIST "
              f"test images, features of builtin:fid/fmnist-classifier; {n} real train images score {floor:.2f} "
              "(the floor at this sample size).",
              f"Students: {args.steps} steps, batch {args.batch}, {args.trajectories - args.heldout} teacher DDIM-{args.teacher_steps} "
              f"trajectories (+{args.heldout} held out; recording them: {trajectories_s / 60:.1f} min, 0 when cached), "
              "1 torch thread, CPU only; 'train s' is the distill wall time (training loop, evaluations, previews). "
              f"Benchmark wall time {total / 60:.1f} min (teacher FID samples {t_teacher_s / 60:.1f} min, "
              "cached for re-runs)."]
    table = "\n".join(lines)
    print(table)
    (out / "compare.md").write_text(table + "\n")
    (out / "compare.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "images"} for r in rows]
                                                 + [{"fid_floor": floor, "seconds": total}], indent=2))
    labelled_rows({r["name"]: r["images"][:16] for r in rows}, out / "samples.png")
    print(f"wrote {out / 'compare.md'} and {out / 'samples.png'}")


if __name__ == "__main__":
    main()
