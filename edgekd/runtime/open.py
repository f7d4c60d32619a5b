"""Build a generator from a manifest alone (as an app does) or from a model's own graphs in torch."""

from __future__ import annotations

import json

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
        names = input_names[sampling.graph]
        return OneStepSampler(steppers[sampling.graph], names[0], name or "student", names[1] if len(names) > 1 else None)
    step_inputs = input_names[sampling.graph_per_step[0]]
    return DDIMSampler(steppers, sampling, name, condition_name=step_inputs[2] if len(step_inputs) > 2 else None)


def pipeline(steppers: dict[str, Stepper], sampling: Any, input_names: dict[str, list[str]],
             condition_kind: str | None, text_graph: str | None, decode_graph: str | None,
             name: str | None = None, num_classes: int | None = None, prompt_tokens: Any = None) -> Generator:
    """The denoiser's sampler with the condition encoder before it and the decoder after it (either optional)."""
    from edgekd.runtime.samplers import PipelineGenerator

    inner = sampler(steppers, sampling, input_names, name)
    if condition_kind is None and decode_graph is None:
        return inner
    return PipelineGenerator(inner, steppers[text_graph] if text_graph else None,
                             steppers[decode_graph] if decode_graph else None, condition_kind, num_classes,
                             prompt_tokens)


def manifest_prompt_tokens(m: Manifest, folder: Path) -> Any:
    """Token ids [P, L] of a text model's prompt list, with the tokenizer files exported beside its manifest."""
    cond = m.condition
    if cond is None or cond.kind != "text" or not cond.example_prompts:
        return None
    from edgekd.models.stages import token_ids

    return token_ids(exported_tokenizer(m, folder), list(cond.example_prompts))


def exported_tokenizer(m: Manifest, folder: Path) -> Any:
    """transformers' CLIPTokenizer on the vocab.json + merges.txt an export ships (what the apps implement)."""
    from transformers import CLIPTokenizer

    spec = m.condition.tokenizer
    vocab = json.loads((folder / spec.files["vocab"]).read_text())
    lines = (folder / spec.files["merges"]).read_text().splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    inv = {v: k for k, v in vocab.items()}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=spec.max_length, bos_token=inv[spec.bos_token_id],
                         eos_token=inv[spec.eos_token_id], pad_token=inv[spec.pad_token_id],
                         unk_token=inv[spec.eos_token_id])


def open_generator(manifest: Path | Manifest, threads: int | None = None, compute_units: str = "ALL",
                   files: dict[str, Path] | None = None, name: str | None = None, steps: int | None = None) -> Generator:
    """Any exported model (any target, one graph or several) from its manifest (v1, v2, v3 or router).

    ``files`` overrides where a graph's file is (the export's parity gate runs the temp files before they are
    renamed into place)."""
    m = manifest if isinstance(manifest, Manifest) else read_manifest(Path(manifest))
    folder = Path(manifest).parent if not isinstance(manifest, Manifest) else Path(".")
    steppers = {g.name: open_stepper(m.target, (files or {}).get(g.name, folder / g.file), threads, compute_units)
                for g in m.models}
    names = {g.name: [i.name for i in g.inputs] for g in m.models}
    cond, dec = m.condition, m.decode
    sampling = m.sampling
    if steps is not None and sampling.kind == "ddim" and steps != sampling.steps:  # the same scheduler, N steps
        sched = dict(sampling.scheduler or {})
        spacing = sched.pop("timestep_spacing", "trailing")
        owners = tuple(dict.fromkeys(sampling.graph_per_step))
        if len(owners) > 1:
            raise ValueError("another step count for a routed (several graphs) DDIM export is not supported")
        sampling = ddim_section(DDIMLoop(sched, steps, spacing, owners))
    return pipeline(steppers, sampling, names, cond.kind if cond is not None else None,
                    getattr(cond, "graph", None), dec.graph if dec is not None else None, name,
                    getattr(cond, "num_classes", None), manifest_prompt_tokens(m, folder))


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
    names = {n: [i.name for i in g.inputs] for n, g in graphs.items()}
    stages = getattr(model, "stages", None)
    if stages is None or not stages.staged:
        return sampler(steppers, section(model.sampling(), only, steps), names, name)
    cond = stages.condition
    tokens = None
    if cond is not None and cond["kind"] == "text":
        from edgekd.models.stages import token_ids

        tokens = token_ids(model.teacher.tokenizer, list(model.teacher.condition.prompts))
    return pipeline(steppers, section(model.sampling(), only, steps), names, cond["kind"] if cond else None,
                    stages.text_graph, stages.decode_graph, name, cond.get("high") if cond else None, tokens)


def section(sampling: OneStep | DDIMLoop, only: str | None = None, steps: int | None = None) -> Any:
    """The manifest sampling section of a model's sampling spec (optionally one graph only / another step count)."""
    if isinstance(sampling, OneStep):
        from edgekd.manifest import OneStepSampling

        return OneStepSampling(graph=only or sampling.graph)
    if only is not None or steps is not None:
        sampling = DDIMLoop(sampling.scheduler_config, steps or sampling.num_steps, sampling.spacing,
                            (only,) if only else sampling.graph_names, () if only else sampling.boundaries)
    return ddim_section(sampling)
