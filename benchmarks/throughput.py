"""Throughput: teacher trajectory recording and every method's training step, through edgekd's real trainer and
through a bare loop on the same networks, in one run; the trainer's overhead is their ratio.

    .venv/bin/python benchmarks/throughput.py --scale tiny       # CPU-sized (the test recipes), a few minutes
    .venv/bin/python benchmarks/throughput.py                    # GPU sizes (recipes/*-fmnist-gpu.yaml), on a GPU
    .venv/bin/python benchmarks/throughput.py --methods denoising_student gdd --repeats 7 --out results.json

Rows:
- teacher trajectories: ``teacher.sample`` (deterministic DDIM) on one batch of noise, as ``edgekd distill``
  records it (bf16 autocast on CUDA), images per second.
- one row per method: images per second of training, (a) through ``edgekd.train.loop.Trainer`` exactly as
  ``edgekd distill`` runs it (batches drawn from the trajectory store / data by the prefetch thread and copied to the
  device, the method's train_step, lr schedule, fused EMA, metric logging, progress bar), and (b) a bare loop
  calling the same method's ``train_step`` (the same forward + backward + optimizer steps, the same autocast and
  memory format) on one batch already on the device, with nothing else. trainer / bare is the share of the bare
  speed the trainer keeps; the target is 0.70 or more on a GPU.
Each figure is the median over ``--repeats`` windows of ``--window`` steps after ``--warmup`` steps; a window is
timed between two device synchronisations. "images" are the samples the step trains on (O2MKD: batch x students).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {  # method -> (GPU-size recipe, tiny recipe, tiny overrides)
    "denoising_student": ("recipes/denoising-student-fmnist-gpu.yaml", "edgekd/assets/recipes/quickstart.yaml",
                          ["teacher.steps=4", "trajectory.num_samples=256", "trajectory.heldout=32",
                           "trajectory.shard_size=256"]),
    "adv_kd": ("recipes/adv-kd-fmnist-gpu.yaml", "recipes/adv-kd-tiny.yaml", ["train.batch_size=16"]),
    "gdd": ("recipes/gdd-fmnist-gpu.yaml", "recipes/gdd-tiny.yaml", ["train.batch_size=16"]),
    "o2mkd": ("recipes/o2mkd-fmnist-gpu.yaml", "recipes/o2mkd-tiny.yaml", []),
}


EXTRA: list[str] = []  # --set, for every recipe


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = f"{names[0]} x{len(names)}" if names else cpu
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU"
    return f"{cpu}{gpu}; torch {torch.__version__}, {torch.get_num_threads()} torch threads"


def windows_per_s(times: list[float], window: int, per_step: int) -> float:
    """Median images/s over consecutive windows of ``window`` steps (``times`` at window boundaries)."""
    rates = [window * per_step / (b - a) for a, b in zip(times, times[1:])]
    return statistics.median(rates)


def load(recipe_path: str, overrides: list[str], out: Path, steps: int, device: str) -> Any:
    from edgekd.recipe import load_recipe

    return load_recipe(ROOT / recipe_path, [
        *overrides, *EXTRA, f"run_dir={out / 'run'}", f"trajectory.cache_dir={out.parent / 'cache'}", f"device={device}",
        f"train.steps={steps}", f"train.eval_every={steps}", f"train.sample_every={steps}",
        f"train.checkpoint_every={steps}"])


def trajectory_rate(recipe: Any, device: torch.device, repeats: int, steps: int | None) -> tuple[str, float]:
    from edgekd.distill import teacher_autocast, teacher_precision
    from edgekd.noise import make_noise
    from edgekd.teachers.diffusers_teacher import load_teacher

    teacher = load_teacher(recipe.teacher.path, device)
    steps = steps or recipe.teacher.steps
    batch = recipe.trajectory.batch_size
    precision = teacher_precision(recipe, device)
    noise = make_noise(0, 0, batch, teacher.sample_shape).to(device)
    rates = []
    with teacher_autocast(precision, device):
        for i in range(repeats + 1):
            sync(device)
            t0 = time.perf_counter()
            teacher.sample(noise, steps, recipe.teacher.timestep_spacing)
            sync(device)
            if i:  # the first is warm-up
                rates.append(batch / (time.perf_counter() - t0))
    label = f"teacher DDIM-{steps} trajectories ({teacher.source.split('/')[-1]}, batch {batch}, {precision})"
    return label, statistics.median(rates)


def method_rates(method_name: str, recipe: Any, device: torch.device, warmup: int, window: int,
                 repeats: int) -> dict[str, Any]:
    from edgekd.distill import open_store, teacher_autocast, teacher_precision
    from edgekd.methods import setup_method
    from edgekd.teachers.diffusers_teacher import load_teacher
    from edgekd.train.loop import Trainer, seed_everything
    from edgekd.train.prefetch import to_device

    seed_everything(recipe.seed)
    teacher = load_teacher(recipe.teacher.path, device)
    store = open_store(recipe, teacher, device)
    traj = recipe.trajectory
    with teacher_autocast(teacher_precision(recipe, device), device):
        store.ensure(teacher, traj.num_samples, traj.shard_size, traj.batch_size, device)
    n_train = traj.num_samples - traj.heldout
    setup = setup_method(recipe, teacher, store.read(0, n_train), store.read(n_train, traj.num_samples), device)

    marks: dict[int, float] = {}
    bounds = {warmup + i * window for i in range(repeats + 1)}

    def on_step(step: int) -> None:
        if step in bounds:
            sync(device)
            marks[step] = time.perf_counter()

    trainer = Trainer(Path(recipe.resolved_run_dir()), recipe.train, setup.method, setup.source, setup.heldout,
                      device, recipe.seed, step_callback=on_step)
    probe = setup.source.batch(recipe.train.batch_size, np.random.default_rng(0))
    per_step = len(next(iter(probe.values())))
    trainer.run()
    trainer_rate = windows_per_s([marks[b] for b in sorted(bounds)], window, per_step)

    # the bare loop: the same train_step on one batch already on the device, nothing else
    trainer._prepare_modules()
    batch = to_device(probe, device, trainer.channels_last)
    times = []
    for step in range(warmup + repeats * window + 1):
        if step >= warmup and (step - warmup) % window == 0:
            sync(device)
            times.append(time.perf_counter())
        if step == warmup + repeats * window:
            break
        setup.method.train_step(batch, step, trainer.autocast)
    trainer._release_modules()
    bare_rate = windows_per_s(times, window, per_step)
    return {"method": method_name, "images_per_step": per_step, "trainer_images_per_s": trainer_rate,
            "bare_images_per_s": bare_rate, "ratio": trainer_rate / bare_rate}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=["gpu", "tiny"], default="gpu",
                        help="gpu: the recipes/*-fmnist-gpu.yaml sizes (default); tiny: the test recipes (CPU)")
    parser.add_argument("--methods", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--warmup", type=int, default=None, help="steps before timing (default 20 gpu, 5 tiny)")
    parser.add_argument("--window", type=int, default=None, help="steps per timed window (default 50 gpu, 10 tiny)")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows; the median is reported")
    parser.add_argument("--gen-steps", type=int, default=None, help="DDIM steps for the trajectory row "
                        "(default: the recipe's; tiny: 4)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override applied to every recipe (e.g. train.batch_size=256)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (trajectory cache is kept there)")
    args = parser.parse_args(argv)

    from edgekd.cli import quiet_libraries
    from edgekd.train.loop import pick_device

    quiet_libraries()
    EXTRA[:] = args.overrides
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = args.scale == "tiny"
    warmup = args.warmup if args.warmup is not None else (5 if tiny else 20)
    window = args.window or (10 if tiny else 50)
    steps = warmup + args.repeats * window
    device = pick_device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekd-throughput-"))
    rows: list[dict[str, Any]] = []
    first = RECIPES["denoising_student"]
    gen_recipe = load(first[1] if tiny else first[0], first[2] if tiny else [], work / "gen", steps, args.device)
    label, rate = trajectory_rate(gen_recipe, device, args.repeats, args.gen_steps or (4 if tiny else None))
    rows.append({"method": label, "trainer_images_per_s": rate})
    print(f"{label}: {rate:.1f} images/s", flush=True)
    for name in args.methods:
        gpu_path, tiny_path, tiny_overrides = RECIPES[name]
        recipe = load(tiny_path if tiny else gpu_path, tiny_overrides if tiny else [], work / name, steps, args.device)
        row = method_rates(name, recipe, device, warmup, window, args.repeats)
        rows.append(row)
        print(f"{name}: trainer {row['trainer_images_per_s']:.1f} img/s, bare {row['bare_images_per_s']:.1f} img/s, "
              f"ratio {row['ratio']:.2f}", flush=True)

    where = machine(device)
    print(f"\nthroughput ({args.scale} sizes), {where}")
    print(f"medians of {args.repeats} windows of {window} steps after {warmup} warm-up steps\n")
    print("| workload | images/step | trainer img/s | bare loop img/s | trainer / bare |")
    print("|---|---|---|---|---|")
    for row in rows:
        if "bare_images_per_s" in row:
            print(f"| {row['method']} | {row['images_per_step']} | {row['trainer_images_per_s']:.1f} | "
                  f"{row['bare_images_per_s']:.1f} | {row['ratio']:.2f} |")
        else:
            print(f"| {row['method']} | - | {row['trainer_images_per_s']:.1f} | - | - |")
    if args.out:
        args.out.write_text(json.dumps({"scale": args.scale, "machine": where, "repeats": args.repeats,
                                        "window": window, "warmup": warmup, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
