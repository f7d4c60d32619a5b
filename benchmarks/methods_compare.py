"""Every distillation method against the teacher, on the shared Fashion-MNIST teacher, on the CPU: one table.

    .venv/bin/python benchmarks/methods_compare.py                 # about an hour on one CPU thread
    .venv/bin/python benchmarks/methods_compare.py --steps 100     # a quicker, rougher pass

Rows: the teacher (DDIM-10, DDIM-50); the Denoising Student (a slim scratch UNet regressing the teacher's DDIM-10
output in one step); GDD and GDD-I (the teacher's own UNet at t = 999 tuned as a one-step GAN against real
images; GDD-I freezes the 3x3 convolutions); O2MKD (N slim copies of the teacher, each owning a range of timesteps,
sampled with DDIM-10 like the teacher row it is measured against). Every student is exported through
edgekd.export.export_run (the parity gate must pass) and measured the same way: parameters, MACs per image,
onnxruntime latency per network call and per image (batch 1, 1 thread, medians), FID against the 10k Fashion-MNIST
test images (edgekd's classifier features) on the same N noises for every generator, and PSNR against the
teacher's DDIM-10 output on those noises. Results: OUT/compare.md, OUT/compare.json, OUT/samples.png.

Trained runs are reused when present (delete OUT/<name> to retrain); teacher samples are cached in OUT/cache.
This is CPU smoke scale (a few hundred steps): it shows what each method does with a small budget, not what it
reaches at GPU scale (recipes/*-fmnist-gpu.yaml).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench_common import FID_SEED, ROOT, TEACHER, fid_setup, fmt, teacher_samples, train


def base_recipe(name: str, out: Path, args: argparse.Namespace, steps: int | None = None) -> dict:
    steps = steps or args.steps
    return {
        "name": name, "run_dir": str(out / name), "device": "cpu", "seed": 0,
        "teacher": {"path": str(args.teacher), "steps": 10},
        "trajectory": {"num_samples": args.trajectories, "heldout": args.heldout, "shard_size": 160,
                       "batch_size": 64, "cache_dir": str(out / "cache")},
        "train": {"steps": steps, "batch_size": args.batch, "warmup_steps": 20, "eval_every": max(25, steps // 6),
                  "sample_every": steps, "checkpoint_every": max(25, steps // 6), "threads": 1},
        "export": {"parity_samples": 8},
    }


def ds_recipe(out: Path, args: argparse.Namespace) -> dict:
    r = base_recipe("denoising-student", out, args)
    r["student"] = {"kind": "unet", "init": "scratch", "block_out_channels": [16, 32, 32]}
    r["method"] = {"name": "denoising_student", "loss": "l1"}
    return r


def gdd_recipe(out: Path, args: argparse.Namespace, innate: bool) -> dict:
    r = base_recipe("gdd-i" if innate else "gdd", out, args, args.gdd_steps)
    r["trajectory"].update({"num_samples": 72, "heldout": 64})  # previews only: GDD never regresses the teacher
    r["data"] = {"limit": args.real_images}
    r["method"] = {"name": "gdd", "innate": innate, "discriminator": "projected",
                   "r1_gamma": args.r1_gamma, "r1_every": 16, "eval_samples": 128, "eval_real": 1024}
    r["train"].update({"batch_size": args.gdd_batch, "warmup_steps": 0, "ema_decay": 0.99})
    return r


def o2mkd_recipe(out: Path, args: argparse.Namespace) -> dict:
    r = base_recipe("o2mkd", out, args, args.o2mkd_steps)
    r["trajectory"].update({"num_samples": 72, "heldout": 64})  # previews only: students learn from x_t of real data
    r["data"] = {"limit": args.real_images}
    r["student"] = {"kind": "o2mkd", "boundaries": args.boundaries, "init": args.o2mkd_init, "width": args.width}
    r["method"] = {"name": "o2mkd", "timesteps": "mixed", "kd_weight": 1.0, "denoise_weight": 0.1,
                   "heldout_images": 128}
    r["train"].update({"lr": 5e-4, "batch_size": args.o2mkd_batch})
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "methods-compare")
    p.add_argument("--teacher", type=Path, default=TEACHER)
    p.add_argument("--trajectories", type=int, default=320, help="teacher DDIM-10 pairs for the Denoising Student")
    p.add_argument("--heldout", type=int, default=64)
    p.add_argument("--steps", type=int, default=600, help="Denoising Student training steps")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--gdd-steps", type=int, default=200)
    p.add_argument("--gdd-batch", type=int, default=8)
    p.add_argument("--r1-gamma", type=float, default=1e-4)
    p.add_argument("--o2mkd-steps", type=int, default=300)
    p.add_argument("--o2mkd-batch", type=int, default=8, help="per student")
    p.add_argument("--boundaries", type=int, nargs="+", default=[500])
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--o2mkd-init", default="prune", choices=["prune", "scratch"])
    p.add_argument("--real-images", type=int, default=8192)
    p.add_argument("--fid-samples", type=int, default=256)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--only", nargs="+", default=None, help="train/measure only these students (ds gdd gdd-i o2mkd)")
    args = p.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    from edgekd.export import export_run
    from edgekd.export.multi import router_generator, router_manifest_name
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

    wanted = {"ds": ("Denoising Student (slim UNet)", lambda: ds_recipe(out, args)),
              "gdd": ("GDD (teacher UNet, one step)", lambda: gdd_recipe(out, args, innate=False)),
              "gdd-i": ("GDD-I (frozen 3x3 convs)", lambda: gdd_recipe(out, args, innate=True)),
              "o2mkd": (f"O2MKD {len(args.boundaries) + 1} students x{args.width} ({args.o2mkd_init}), DDIM-10",
                        lambda: o2mkd_recipe(out, args))}
    runs = {label: train(make(), out) for key, (label, make) in wanted.items() if not args.only or key in args.only}

    # ---- teacher samples on the FID noise (cached in the store layout that `edgekd profile` uses)
    t_teacher = time.time()
    teacher_out = teacher_samples(teacher, out / "cache", n)
    t_teacher = time.time() - t_teacher

    rows, teacher_onnx = [], None
    for name, (run_path, seconds) in runs.items():
        run = RunDir.open(run_path)
        student = run.student()
        routed = hasattr(student, "route")
        calls = student.steps if routed else 1
        row = {"name": name, "calls": calls, "params": count_params(student), "macs": count_macs(student, one),
               "train_s": round(seconds, 1)}
        onnx_dir = run.exports / "onnx"
        marker = onnx_dir / (router_manifest_name() if routed else "student.onnx")
        if not marker.is_file():
            export_run(run.path)
        generator = router_generator(marker, threads=1) if routed else OnnxStudent(marker, threads=1)
        row["onnx_ms"] = latency_ms(generator, one, args.repeats)
        row["onnx_ms_call"] = row["onnx_ms"] / calls
        images = generate_batched(TorchStudent(student), noise, 64).clamp(-1, 1)
        row["fid"] = fs.score(images)
        row["psnr_vs_ddim10"] = psnr(teacher_out[10], images)
        row["images"] = images
        rows.append(row)
        if teacher_onnx is None:
            teacher_onnx = onnx_dir / "teacher_step.onnx"
            if not teacher_onnx.is_file():
                export_run(run.path, teacher=True)
    teacher_macs = count_macs(teacher.unet, one, torch.tensor([999]))
    for steps in (10, 50):
        row = {"name": f"teacher DDIM-{steps}", "calls": steps, "params": count_params(teacher.unet),
               "macs": teacher_macs * steps, "train_s": None, "fid": fs.score(teacher_out[steps]),
               "psnr_vs_ddim10": None if steps == 10 else psnr(teacher_out[10], teacher_out[steps]),
               "images": teacher_out[steps]}
        if teacher_onnx is not None:
            row["onnx_ms"] = latency_ms(OnnxTeacher(teacher_onnx, teacher.scheduler_config, steps, threads=1), one,
                                        max(3, args.repeats // (steps // 5)))
            row["onnx_ms_call"] = row["onnx_ms"] / steps
        rows.append(row)

    head = ["generator", "net calls", "params", "MACs/img", "ONNX ms/call", "ONNX ms/img", f"FID ({n})",
            "PSNR vs DDIM-10 dB", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["name"], str(r["calls"]), f"{r['params'] / 1e6:.3f}M", f"{r['macs'] / 1e6:.1f}M",
            fmt(r.get("onnx_ms_call"), ".2f"), fmt(r.get("onnx_ms"), ".2f"), f"{r['fid']:.2f}",
            fmt(r["psnr_vs_ddim10"], ".1f"), fmt(r["train_s"], ".0f")]) + " |")
    total = time.time() - started
    lines += ["", f"FID: {n} samples per generator on the same noise (seed {FID_SEED}) against the 10k Fashion-MNIST "
              f"test images, features of builtin:fid/fmnist-classifier; {n} real train images score {floor:.2f} "
              "(the floor at this sample size). Latency: onnxruntime, batch 1, 1 thread, median of repeats; "
              "ms/call = ms/img / net calls.",
              f"Budgets (1 torch thread, CPU): Denoising Student {args.steps} steps x batch {args.batch} on "
              f"{args.trajectories - args.heldout} teacher DDIM-10 pairs; GDD/GDD-I {args.gdd_steps} steps x batch "
              f"{args.gdd_batch} on {args.real_images} real images (projected discriminator on edgekd's classifier, R1 gamma {args.r1_gamma} every 16 steps); O2MKD "
              f"{args.o2mkd_steps} steps x batch {args.o2mkd_batch} per student, boundaries {args.boundaries}. "
              f"'train s' is the distill wall time. Benchmark wall time {total / 60:.1f} min "
              f"(teacher FID samples {t_teacher / 60:.1f} min, cached for re-runs)."]
    table = "\n".join(lines)
    print(table)
    (out / "compare.md").write_text(table + "\n")
    (out / "compare.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "images"} for r in rows]
                                                 + [{"fid_floor": floor, "seconds": total, "args": vars(args)}],
                                                 indent=2, default=str))
    labelled_rows({r["name"]: r["images"][:16] for r in rows}, out / "samples.png")
    print(f"wrote {out / 'compare.md'} and {out / 'samples.png'}")


if __name__ == "__main__":
    main()
