"""ExecuTorch fp32 vs int8 on a quickstart-size student: latency in executorch.runtime and PSNR of int8 vs fp32.

    PYTHONPATH=. .venv/bin/python benchmarks/executorch_int8.py                # builds OUT/run (quickstart student)
    PYTHONPATH=. .venv/bin/python benchmarks/executorch_int8.py --run RUN      # a run of yours (one-step student)
    ... --reuse                                                                # time the programs exported before

Without --run it builds a run from edgekd's quickstart recipe with its student (init: teacher, a copy of the
packaged teacher builtin:teachers/fmnist-tiny, 620k parameters), untrained: the size and the ops are the
quickstart's, the weights are the teacher's (latency does not depend on training; the PSNR is of these weights).
Both programs are made by `edgekd export RUN --target executorch [--precision int8]` (the driver, with its parity
gate), then timed in executorch.runtime on ONE thread (the threadpool sized before any program loads): batch 1,
3 warm-up calls, the median of --repeats (5) timed calls, fp32 and int8 interleaved (both see the same load). PSNR: int8 against fp32 (both in executorch.runtime)
on --images noises (seed 41_000_000, none of the calibration/held-out/parity seeds), edgekd's convention
(peak-to-peak 2). Prints a Markdown table; writes OUT/executorch_int8.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOISE_SEED = 41_000_000


def quickstart_run(path: Path) -> Path:
    import torch
    import yaml

    from edgekd.pipeline import QUICKSTART_RECIPE
    from edgekd.recipe import Recipe, validate_mapping
    from edgekd.rundir import RunDir
    from edgekd.students import save_student
    from edgekd.students.unet_student import build_unet_student
    from edgekd.teachers.diffusers_teacher import load_recipe_teacher

    if (path / "student").is_dir():
        return path
    raw = yaml.safe_load(QUICKSTART_RECIPE.read_text())
    raw["run_dir"] = str(path)
    recipe = validate_mapping(raw, Recipe, str(QUICKSTART_RECIPE))
    run = RunDir(path)
    run.path.mkdir(parents=True, exist_ok=True)
    run.save_recipe(recipe)
    teacher = load_recipe_teacher(recipe)
    torch.manual_seed(0)
    save_student(build_unet_student(recipe.student, teacher.unet, 999, teacher).eval(), run.student_dir)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "executorch"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--reuse", action="store_true", help="time the programs already exported in RUN")
    args = parser.parse_args()

    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(1)  # before any program loads (later resizes corrupt memory)
    import torch

    torch.set_num_threads(1)
    from edgekd.export import export_run
    from edgekd.manifest import read_manifest
    from edgekd.metrics import psnr
    from edgekd.noise import make_noise
    from edgekd.runtime.steppers import ExecuTorchStepper

    out = Path(args.out)
    run = Path(args.run) if args.run else quickstart_run(out / "run")
    rows = {}
    for precision in ("fp32", "int8"):
        t0 = time.time()
        stem = "student" if precision == "fp32" else f"student_{precision}"
        path = run / "exports" / "executorch" / f"{stem}.pte"
        if not (args.reuse and path.with_name(f"{stem}.manifest.json").is_file()):
            path = export_run(run, target="executorch", precision=precision)
        rows[precision] = {"file": str(path), "bytes": path.stat().st_size, "export_s": round(time.time() - t0, 1),
                           "manifest": read_manifest(path.with_name(f"{path.stem}.manifest.json"))}
    m32 = rows["fp32"]["manifest"]
    shape = tuple(m32.noise.shape)
    noise = make_noise(NOISE_SEED, 0, args.images, shape)
    name = m32.inputs[0].name
    outputs, steppers = {}, {}
    for precision, row in rows.items():
        steppers[precision] = step = ExecuTorchStepper(Path(row["file"]), threads=1)
        outputs[precision] = step(**{name: noise})
        row["runtime"] = step.runtime
    one = noise[:1]
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(3):  # warm-up
        for step in steppers.values():
            step(**{name: one})
    for _ in range(args.repeats):  # interleaved: both programs see the same load on a shared machine
        for precision, step in steppers.items():
            t = time.perf_counter()
            step(**{name: one})
            times[precision].append(time.perf_counter() - t)
    for precision, row in rows.items():
        row["latency_ms"] = round(statistics.median(times[precision]) * 1000, 3)
    p = psnr(outputs["fp32"], outputs["int8"])
    q = rows["int8"]["manifest"].checks["quantization"]
    summary = {
        "run": str(run), "images": args.images, "repeats": args.repeats, "threads": 1,
        "fp32_ms": rows["fp32"]["latency_ms"], "int8_ms": rows["int8"]["latency_ms"],
        "int8_vs_fp32_latency": round(rows["int8"]["latency_ms"] / rows["fp32"]["latency_ms"], 3),
        "int8_psnr_vs_fp32_db": round(float(p), 2), "fp32_bytes": rows["fp32"]["bytes"],
        "int8_bytes": rows["int8"]["bytes"], "float_layers": q["float_layers"], "layers": q["layers"],
        "heldout_psnr_db": q["psnr_heldout"], "parity_int8_db": round(rows["int8"]["manifest"].parity.psnr_db, 2),
        "parity_fp32_db": round(m32.parity.psnr_db, 2), "runtime": rows["fp32"]["runtime"],
        "delegation": {k: r["manifest"].models[0].delegation.model_dump(exclude={"counted_from"}) for k, r in rows.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "executorch_int8.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("| program | MB | latency ms (1 thread, median of %d) | vs fp32 | PSNR vs fp32 dB | XNNPACK partitions "
          "| ops in XNNPACK / outside |" % args.repeats)
    print("|---|---|---|---|---|---|---|")
    for k, r in rows.items():
        d = summary["delegation"][k]
        print(f"| {k} | {r['bytes'] / 1e6:.2f} | {r['latency_ms']:.2f} | "
              f"{r['latency_ms'] / rows['fp32']['latency_ms']:.2f}x | {'-' if k == 'fp32' else f'{p:.1f}'} | "
              f"{d['partitions']} | {d['delegated_ops']} / {d['other_ops']} |")
    print(f"int8 float layers ({len(q['float_layers'])} of {q['layers']}): {', '.join(q['float_layers'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
