"""Per-step costs of a student sampled in several steps (any DDIM-sampled model; O2MKD's N routed students are
the case that needs it): one network call at batch 1 of the teacher and of every graph (at a timestep it owns),
its parameters and MACs, in torch and in onnxruntime (medians of ``repeats``). Read from the model's graphs and
its exported manifest; nothing here knows a method.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from edgekd.manifest import read_manifest
from edgekd.models.spec import EpsilonStep
from edgekd.profile.measure import count_macs, count_params
from edgekd.runtime.steppers import OrtStepper


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
def profile_steps(model: Any, teacher: Any, teacher_onnx: Path, manifest: Path, one: torch.Tensor, repeats: int,
                  threads: list[int], name: str) -> dict[str, Any]:
    """The per-call table of the teacher and every graph of ``model`` (a DDIM-sampled model)."""
    m = read_manifest(manifest)
    sampling = model.sampling()
    timesteps, per_step = m.sampling.timesteps, m.sampling.graph_per_step
    t_mid = torch.tensor([timesteps[len(timesteps) // 2]])
    teacher_step = EpsilonStep(teacher.unet)
    entry = {"name": "teacher", "range": [0, int(teacher.num_train_timesteps) - 1], "steps": len(timesteps),
             "params": count_params(teacher.unet), "macs_per_call": count_macs(teacher.unet, one, t_mid),
             "latency_ms": {"torch": call_ms(lambda: teacher_step(one, t_mid), repeats)}}
    for t in threads:
        step = OrtStepper(teacher_onnx, t)
        entry["latency_ms"][f"onnxruntime {t}t"] = call_ms(lambda: step(sample=one, timestep=t_mid), repeats)
    entries = [entry]
    folder = Path(manifest).parent
    for k, (graph, rng) in enumerate(zip(model.graphs(), sampling.owned_ranges())):
        owned = [t for t, g in zip(timesteps, per_step) if g == graph.name]
        ts = torch.tensor([owned[0]])
        module = graph.module
        entry = {"name": f"student {k}", "range": list(rng), "steps": len(owned),
                 "params": count_params(module), "macs_per_call": count_macs(module, one, ts),
                 "latency_ms": {"torch": call_ms(lambda: module(one, ts), repeats)}}
        for t in threads:
            step = OrtStepper(folder / m.graph(graph.name).file, t)
            entry["latency_ms"][f"onnxruntime {t}t"] = call_ms(lambda: step(sample=one, timestep=ts), repeats)
        entries.append(entry)
    return {"generator": name, "rows": entries}


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
    lines.append("The several-step student's PSNR is against the teacher at the same step count (the others: against "
                 "the teacher with the most steps).")
    return lines
