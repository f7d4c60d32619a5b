"""The O2MKD router manifest (router format 1), kept for one release beside the version-3 manifest.

Every export of a model with several graphs writes ``student.manifest.json`` (version 3: the N graphs and a ddim
sampling section with the graph per step: docs/manifest-v3.md), which is what edgekd and the apps read. Earlier
releases wrote only ``router.manifest.json``; it is still written, from the v3 manifest, so readers of the old
format keep working for one release, and still read (``read_manifest`` upgrades it to the v3 shape).

Why N files and not one graph: a graph that chooses the student inside needs control flow on the timestep
(``If`` / ``torch.cond``), which the TFLite and CoreML converters used here do not take from torch.export, while a
branch-free graph (run every student, select one output) costs N students per step and defeats the method; a graph
with the whole DDIM loop unrolled fixes the step count in the file and hides per-step progress from the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.manifest import (ROUTER_FORMAT_VERSION, Manifest, ModelFile, NoiseSpec, OutputSpec, RoutedStudent,  # noqa: F401
                             RouterManifest, SamplingSpec, ScheduleStep, read_router_manifest)
from edgekd.train.checkpoint import atomic_write_text

ROUTER_STEM = "router"
DDIM_UPDATE = (
    "deterministic DDIM (eta 0). Start: x = noise. For each schedule step in order: a = alpha_cumprod, "
    "a' = alpha_cumprod_prev (both listed per step); eps = students[student](x, timestep); "
    "x0 = (x - sqrt(1 - a) * eps) / sqrt(a), clipped to [-clip_sample_range, clip_sample_range] when "
    "scheduler.clip_sample; x = sqrt(a') * x0 + sqrt(1 - a') * eps. The image is the last x. This is diffusers' "
    "DDIMScheduler.step, which the profiler and the parity gate run: a' is alphas_cumprod[timestep - T // steps] "
    "(not the next listed timestep: with trailing spacing they can differ by one), or final_alpha_cumprod when "
    "that index is negative."
)


def router_manifest_name(precision: str = "fp32") -> str:
    return f"{ROUTER_STEM if precision == 'fp32' else f'{ROUTER_STEM}_{precision}'}.manifest.json"


def student_stem(index: int, precision: str = "fp32") -> str:
    return f"student_{index}" if precision == "fp32" else f"student_{index}_{precision}"


def router_generator(manifest_path: Path, threads: int | None = None, compute_units: str = "ALL") -> Any:
    """The routed DDIM loop over the exported files of a manifest (router or v3), in the target's runtime."""
    from edgekd.runtime.open import open_generator

    return open_generator(manifest_path, threads, compute_units)


def write_router_manifest(prep: Any, m: Manifest, folder: Path) -> Path:
    """The router-format twin of the v3 manifest ``m`` of an O2MKD export (graphs ``student_<i>``)."""
    student = prep.model
    sampling = m.sampling
    ranges = student.ranges()
    routed = []
    for i, g in enumerate(m.models):
        lo, hi = ranges[i]
        routed.append(RoutedStudent(index=i, range=(lo, hi),
                                    timesteps=[t for t, n in zip(sampling.timesteps, sampling.graph_per_step) if n == g.name],
                                    model=ModelFile(file=g.file, target=m.target, bytes=g.bytes, sha256=g.sha256),
                                    params=sum(p.numel() for p in student.unets[i].parameters()), parity=g.parity))
    schedule = [ScheduleStep(step=k, timestep=t, student=int(n.rsplit("_", 1)[1]), alpha_cumprod=a, alpha_cumprod_prev=ap)
                for k, (t, n, a, ap) in enumerate(zip(sampling.timesteps, sampling.graph_per_step,
                                                      sampling.alphas_cumprod, sampling.alphas_cumprod_prev))]
    ddim = student.sampling().scheduler()
    first = m.models[0]
    router = RouterManifest(
        edgekd_version=m.edgekd_version, name=m.name.replace("-student", f"-{ROUTER_STEM}", 1), target=m.target,
        students=routed, boundaries=list(student.boundaries), schedule=schedule, inputs=first.inputs,
        output=OutputSpec(name="epsilon", shape=first.output.shape, range=(-10.0, 10.0),
                          to_pixels="epsilon: feed to the DDIM update"),
        image=OutputSpec(name="image", shape=[first.output.shape[0], *m.noise.shape], crop=m.image.crop),
        sampling=SamplingSpec(kind="ddim_loop", steps=sampling.steps, timesteps=sampling.timesteps,
                              scheduler=sampling.scheduler, alphas_cumprod=[float(a) for a in ddim.alphas_cumprod]),
        ddim_update=DDIM_UPDATE + f" Here final_alpha_cumprod = {float(ddim.final_alpha_cumprod):g}.",
        precision=m.precision, quantization=m.quantization, parity=m.parity, parity_skipped=m.parity_skipped,
        checks={g.name: g.checks for g in m.models}, runtime_options=first.runtime_options,
        total_bytes=m.total_bytes, source=m.source, created=m.created)
    path = folder / router_manifest_name(m.precision)
    atomic_write_text(path, router.model_dump_json(indent=2) + "\n")
    return path
