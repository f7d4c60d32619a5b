"""Profiling a multi-model (O2MKD) student: one per-image row like any generator, plus per-step costs.

Per image: the routed DDIM-S loop (torch, and onnxruntime over the exported files of the router manifest) against
the teacher's DDIM-S on the same runtime and threads: the same step count, so the ratio is the cost of a step.
Per step: one network call at batch 1 of the teacher and of every student (at a timestep it owns), its
parameters and MACs, in torch and in onnxruntime (medians of ``repeats``).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgekd.export.multi import read_router_manifest, router_generator, router_manifest_name
from edgekd.profile.generators import OnnxTeacher, TorchRouter
from edgekd.profile.measure import count_macs, count_params, latency_ms


def is_router(student: nn.Module) -> bool:
    """A student made of several timestep-routed networks (O2MKD)."""
    return hasattr(student, "unets") and hasattr(student, "boundaries") and hasattr(student, "route")


def router_manifest_path(run: Any, target: str = "onnx") -> Path:
    return run.exports / target / router_manifest_name()


def call_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time (ms) of one call of ``fn``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


@torch.no_grad()
def profile_router(student: nn.Module, teacher: Any, teacher_onnx: Path, manifest: Path, one: torch.Tensor,
                   repeats: int, threads: list[int]) -> tuple[Any, dict[str, Any]]:
    """The router's per-image Row (profile/run.py) and the per-step table of the teacher and every student."""
    from edgekd.profile.run import Row

    m = read_router_manifest(manifest)
    steps = student.steps
    row = Row(f"o2mkd {student.num_students} students DDIM-{steps}", steps, count_params(student),
              count_macs(student, one), m.total_bytes)
    row.latency_ms["torch"] = latency_ms(TorchRouter(student), one, repeats)
    for t in threads:
        row.latency_ms[f"onnxruntime {t}t"] = latency_ms(router_generator(manifest, t), one, repeats)

    sched, spacing = student.scheduler_config, student.spacing
    timesteps = student.timesteps()
    entries = []
    t_mid = torch.tensor([timesteps[len(timesteps) // 2]])
    entry = {"name": "teacher", "range": [0, student.num_train_timesteps - 1], "steps": steps,
             "params": count_params(teacher.unet), "macs_per_call": count_macs(teacher.unet, one, t_mid),
             "latency_ms": {"torch": call_ms(lambda: teacher.unet(one, t_mid), repeats)}}
    for t in threads:
        gen = OnnxTeacher(teacher_onnx, teacher.scheduler_config, steps, t, spacing)
        entry["latency_ms"][f"onnxruntime {t}t"] = call_ms(lambda: gen._eps(one, t_mid[0]), repeats)
    entries.append(entry)
    folder = Path(manifest).parent
    for s in sorted(m.students, key=lambda s: s.index):
        unet = student.unets[s.index]
        ts = torch.tensor([s.timesteps[0]])
        entry = {"name": f"student {s.index}", "range": list(s.range), "steps": len(s.timesteps),
                 "params": count_params(unet), "macs_per_call": count_macs(unet, one, ts),
                 "latency_ms": {"torch": call_ms(lambda: unet(one, ts), repeats)}}
        for t in threads:
            gen = OnnxTeacher(folder / s.model.file, sched, steps, t, spacing)
            entry["latency_ms"][f"onnxruntime {t}t"] = call_ms(lambda: gen._eps(one, ts[0]), repeats)
        entries.append(entry)
    return row, {"generator": row.name, "rows": entries}


def render_per_step(per_step: dict[str, Any], runtimes: list[str]) -> list[str]:
    """Markdown lines: the per-call table of the teacher and every student, and each student's speed-up."""
    teacher = per_step["rows"][0]
    head = ["network", "timesteps", "DDIM steps", "params", "MACs/call", *[f"{r} ms/call" for r in runtimes],
            *[f"speed-up {r}" for r in runtimes]]
    lines = ["", f"Per step ({per_step['generator']}): one network call at batch 1, median of the repeats:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in per_step["rows"]:
        lat = e["latency_ms"]
        speed = [f"{teacher['latency_ms'][r] / lat[r]:.2f}x" if r in lat and r in teacher["latency_ms"] else "-"
                 for r in runtimes]
        lines.append("| " + " | ".join([e["name"], f"{e['range'][0]}..{e['range'][1]}", str(e["steps"]),
                                        f"{e['params'] / 1e6:.3f}M", f"{e['macs_per_call'] / 1e6:.1f}M",
                                        *[f"{lat[r]:.2f}" if r in lat else "-" for r in runtimes], *speed]) + " |")
    lines.append("")
    lines.append("The o2mkd row's PSNR is against the teacher at the same step count (the others: against the "
                 "teacher with the most steps).")
    return lines
