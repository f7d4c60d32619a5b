"""Build a generator from a manifest alone (as an app does) or from a model's own graphs in torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.manifest import DDIMSampling, Manifest, read_manifest
from edgekd.models.spec import DDIM_UPDATE, DDIMLoop, DescribedModel, OneStep
from edgekd.runtime.generator import Generator
from edgekd.runtime.samplers import DDIMSampler, OneStepSampler
from edgekd.runtime.steppers import Stepper, TorchStepper, open_stepper


def sampler(steppers: dict[str, Stepper], sampling: Any, input_names: dict[str, list[str]],
            name: str | None = None) -> Generator:
    """A one-step or DDIM sampler over named steppers, as ``sampling`` (a manifest sampling section) says."""
    if sampling.kind == "one_step":
        return OneStepSampler(steppers[sampling.graph], input_names[sampling.graph][0], name or "student")
    return DDIMSampler(steppers, sampling, name)


def open_generator(manifest: Path | Manifest, threads: int | None = None, compute_units: str = "ALL",
                   files: dict[str, Path] | None = None, name: str | None = None) -> Generator:
    """Any exported model (any target, one graph or several) from its manifest (v1, v2, v3 or router).

    ``files`` overrides where a graph's file is (the export's parity gate runs the temp files before they are
    renamed into place)."""
    m = manifest if isinstance(manifest, Manifest) else read_manifest(Path(manifest))
    folder = Path(manifest).parent if not isinstance(manifest, Manifest) else Path(".")
    steppers = {g.name: open_stepper(m.target, (files or {}).get(g.name, folder / g.file), threads, compute_units)
                for g in m.models}
    names = {g.name: [i.name for i in g.inputs] for g in m.models}
    return sampler(steppers, m.sampling, names, name)


def ddim_section(loop: DDIMLoop) -> DDIMSampling:
    """A model's DDIM loop written out as the manifest's sampling section."""
    return DDIMSampling(steps=loop.num_steps, update=DDIM_UPDATE,
                        scheduler={**loop.scheduler_config, "timestep_spacing": loop.spacing}, **loop.lists())


def torch_generator(model: DescribedModel, name: str | None = None, only: str | None = None,
                    steps: int | None = None) -> Generator:
    """The model's own graphs in torch, sampled as the model says: the reference every export is checked against.

    ``only``: drive a DDIM model with that one graph at every step (how a single step graph is gated);
    ``steps``: another DDIM step count (same scheduler and spacing)."""
    graphs = {g.name: g for g in model.graphs()}
    steppers: dict[str, Stepper] = {n: TorchStepper(g.module, [i.name for i in g.inputs]) for n, g in graphs.items()}
    return sampler(steppers, section(model.sampling(), only, steps), {n: [i.name for i in g.inputs] for n, g in graphs.items()},
                   name)


def section(sampling: OneStep | DDIMLoop, only: str | None = None, steps: int | None = None) -> Any:
    """The manifest sampling section of a model's sampling spec (optionally one graph only / another step count)."""
    if isinstance(sampling, OneStep):
        from edgekd.manifest import OneStepSampling

        return OneStepSampling(graph=only or sampling.graph)
    if only is not None or steps is not None:
        sampling = DDIMLoop(sampling.scheduler_config, steps or sampling.num_steps, sampling.spacing,
                            (only,) if only else sampling.graph_names, () if only else sampling.boundaries)
    return ddim_section(sampling)
