"""Exports: one driver for every model and every target (plug-ins in edgekd/export/targets/).

A model describes itself as graphs + sampling (edgekd/models/spec.py); the driver converts every graph with the
target's ``convert`` to a temp name, clears each graph's parity gate (the graph against torch: a one-step graph
on fixed noise, a step graph through a DDIM-``TEACHER_PARITY_STEPS`` loop driven by it alone), then, for several
graphs, the whole sampler (every graph, routed as the model says) in the target's runtime against torch, renames
everything into place and writes ONE version-3 manifest (docs/manifest-v3.md). CoreML on Linux: a structural check,
and parity says why it did not run. Nothing is written under exports/ before the run, recipe, teacher and model
have loaded; nothing replaces the previous export until every gate passed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd import __version__
from edgekd.data import crop_box
from edgekd.errors import EdgekdError
from edgekd.export.parity import check_parity
from edgekd.export.targets import TARGETS as _PLUGINS
from edgekd.export.targets import ExportOptions, Quantizer, all_precisions, get_target
from edgekd.manifest import (GraphEntry, ImageSpec, Manifest, NoiseV3, ParitySpec, SamplingSpec, TensorSpec,
                             manifest_path)
from edgekd.models.spec import DDIMLoop, GraphSpec, TeacherStepModel
from edgekd.models.stages import token_ids
from edgekd.integrity import export_identity, sha256  # noqa: F401  (sha256: edgekd.export's public name)
from edgekd.noise import make_noise
from edgekd.recipe import Recipe
from edgekd.rundir import RunDir
from edgekd.runtime.open import sampler, section, torch_generator
from edgekd.train.checkpoint import atomic_write_text

TEACHER_PARITY_STEPS = 10
TARGETS = tuple(_PLUGINS)
PRECISIONS = {name: tuple(t.PRECISIONS) for name, t in _PLUGINS.items()}
SUFFIX = {name: t.SUFFIX for name, t in _PLUGINS.items()}
# Dynamic-range int8 cannot reach the fp32 bar (recipe export.psnr_min, 35 dB): its own default, recorded in the
# manifest's parity.psnr_min. Measured on the tiny run (docs/export.md): tflite int8 ~ 37 dB (student).
INT8_PSNR_MIN = 25.0


def size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def image_crop(recipe: Recipe) -> tuple[int, int, int, int] | None:
    """Where the real image sits in the model's canvas (Fashion-MNIST: 28x28 inside 32x32)."""
    if recipe.data.kind != "fashion_mnist":
        return None
    box = crop_box(recipe.data, (28, 28))
    return None if box == (0, 0, recipe.data.resolution, recipe.data.resolution) else box


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(tmp: Path, final: Path) -> None:
    """Atomic rename of a file or a directory into place (a directory replacing an old one goes through .old)."""
    if tmp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.old")
        _remove(old)
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)


@dataclass
class ExportResult:
    target: str
    path: Path | None
    bytes: int = 0
    parity: ParitySpec | None = None
    note: str = ""  # why parity was not run, or why the target was skipped / failed
    error: EdgekdError | None = field(default=None, repr=False)

    def parity_text(self) -> str:
        if self.error is not None:
            return f"FAILED: {self.error}"
        if self.parity is not None:
            return f"{self.parity.psnr_db:.1f} dB, max abs {self.parity.max_abs_error:.2e} (bar {self.parity.psnr_min:.0f} dB)"
        return self.note


@dataclass
class GraphJob:
    """One graph of a model to export, with what targets and the quantizer need (run, recipe, the teacher's
    scheduler for step graphs, the timesteps the graph owns)."""

    run: RunDir
    recipe: Recipe
    teacher_model: Any
    graph: GraphSpec
    sampling: SamplingSpec  # this graph's share: kind, steps, the timesteps it owns, scheduler, alphas_cumprod
    quantize_config: Any = None  # set by compress (quantize_run); None: the recipe's compress.quantize

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def model(self) -> nn.Module:
        return self.graph.module

    @property
    def inputs(self) -> list[str]:
        return [i.name for i in self.graph.inputs]

    @property
    def output(self) -> str:
        return self.graph.output

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.graph.sample_shape)

    @property
    def teacher(self) -> bool:
        """A step graph (sample, timestep) -> epsilon, judged through a DDIM loop."""
        return self.graph.is_step

    def example(self, b: int) -> dict[str, torch.Tensor]:
        return self.graph.example(b)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The per-item output shape (a step graph's epsilon and a one-step graph's image/latent: the sample's
        shape; a text encoder's [L, D]; a decoder's image)."""
        if self.graph.name in ("text_encoder", "decoder"):
            with torch.no_grad():
                return tuple(self.model(*self.example(1).values()).shape[1:])
        return self.shape

    def what(self, target: str) -> str:
        who = f"{self.name} step (through DDIM-{TEACHER_PARITY_STEPS} with this graph alone)" if self.teacher else self.name
        return f"{self.run.path}: {target} {who}"


_Job = GraphJob  # the name compress and tests used


@dataclass
class Prepared:
    """A loaded model ready to export: its graphs as jobs, its sampling, and the manifest stem."""

    run: RunDir
    recipe: Recipe
    teacher_model: Any
    model: Any  # anything with graphs() and sampling() (edgekd/models/spec.py)
    stem: str  # "student" | "teacher_step"
    jobs: list[GraphJob]

    @property
    def role(self) -> str:
        return "teacher_step" if self.stem == "teacher_step" else "student"


def prepare(run_path: Path, teacher: bool = False) -> Prepared:
    """Open and load everything (run, recipe, teacher, model) before anything is written: the run's student, or
    with ``teacher`` the teacher's step, as graphs ready for ``export_model``."""
    from edgekd.teachers.diffusers_teacher import load_recipe_teacher

    run = RunDir.open(run_path, need_student=not teacher)
    recipe = run.recipe()
    t_model = load_recipe_teacher(recipe)
    if teacher and not t_model.plain:
        from edgekd.models.stages import ConditionalTeacherStepModel

        model: Any = ConditionalTeacherStepModel(t_model, recipe.teacher.steps, recipe.teacher.timestep_spacing)
    else:
        model = (TeacherStepModel(t_model, recipe.teacher.steps, recipe.teacher.timestep_spacing) if teacher
                 else run.student())
    if getattr(model, "condition", None) is not None or getattr(model, "latent", False):
        from edgekd.models.stages import StagedModel

        model = StagedModel(model, t_model)  # text encoder -> student -> decoder
    sampling = model.sampling()
    jobs = []
    for graph in model.graphs():
        graph.module.eval()
        if isinstance(sampling, DDIMLoop):
            lists = sampling.lists()
            owned = [t for t, g in zip(lists["timesteps"], lists["graph_per_step"]) if g == graph.name]
            share = SamplingSpec(kind="ddim_loop", steps=sampling.num_steps, timesteps=owned,
                                 scheduler={**sampling.scheduler_config, "timestep_spacing": sampling.spacing},
                                 alphas_cumprod=[float(a) for a in sampling.scheduler().alphas_cumprod])
        else:
            share = SamplingSpec(kind="one_step", steps=1, timesteps=[0])
        jobs.append(GraphJob(run, recipe, t_model, graph, share))
    return Prepared(run, recipe, t_model, model, "teacher_step" if teacher else "student", jobs)


_prepare = prepare  # the name tests used


def _validate(target: str, precision: str, batch: int | None, compute_units: str, deployment_target: str) -> None:
    plugin = get_target(target)
    if precision not in plugin.PRECISIONS:
        known = all_precisions()
        if precision not in known:
            raise EdgekdError(f"unknown precision '{precision}' (available: {', '.join(known)})")
        raise EdgekdError(f"precision {precision} is not supported for target {target} "
                          f"(available for {target}: {', '.join(plugin.PRECISIONS)})")
    if batch is not None and batch < 1:
        raise EdgekdError(f"--batch must be >= 1, got {batch}")
    from edgekd.extras import require_export

    require_export(target, precision)
    plugin.check_options(precision, ExportOptions(batch, compute_units=compute_units, deployment_target=deployment_target))


def export_run(run_path: Path, target: str = "onnx", teacher: bool = False, batch: int | None = None,
               psnr_min: float | None = None, exporter: str = "dynamo", precision: str = "fp32",
               compute_units: str = "ALL", deployment_target: str = "iOS17") -> Path:
    """Export a run's student (or the teacher's step) to one target; returns the model file (or .mlpackage), or,
    for a model of several graphs (O2MKD), its manifest."""
    _validate(target, precision, batch, compute_units, deployment_target)
    prep = prepare(Path(run_path), teacher)
    options = ExportOptions(batch, exporter, compute_units, deployment_target, psnr_min)
    return export_model(prep, target, precision, options).path  # type: ignore[return-value]


def _default_quantizer(prep: Prepared) -> Quantizer:
    from edgekd.compress.quantize import RecipeQuantizer

    return RecipeQuantizer(None)


def file_stem(name: str, precision: str) -> str:
    return name if precision == "fp32" else f"{name}_{precision}"


def export_model(prep: Prepared, target: str, precision: str, options: ExportOptions,
                 quantizer: Quantizer | None = None) -> ExportResult:
    """Every graph of ``prep`` to ``target`` at ``precision``, gated, placed atomically, with its v3 manifest."""
    _validate(target, precision, options.batch, options.compute_units, options.deployment_target)
    plugin = get_target(target)
    quantizer = quantizer or _default_quantizer(prep)
    recipe, run = prep.recipe, prep.run
    if options.psnr_min is not None:
        bar = options.psnr_min
    else:
        bar = recipe.export.psnr_min if precision in ("fp32", "fp16") else INT8_PSNR_MIN
    folder = run.exports / target
    finals = [folder / f"{file_stem(job.name, precision)}{plugin.SUFFIX}" for job in prep.jobs]
    tmps = [f.with_name(f".{file_stem(job.name, precision)}.partial{plugin.SUFFIX}") for f, job in zip(finals, prep.jobs)]
    created = [d for d in (run.exports, folder) if not d.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    skipped = plugin.parity_unavailable()
    try:
        converted, parities = [], []
        for job, tmp in zip(prep.jobs, tmps):
            converted.append(plugin.convert(job, tmp, precision, options, quantizer))
            parities.append(None if skipped else _graph_parity(prep, job, plugin, tmp, bar, options))
        if skipped or len(prep.jobs) == 1:
            whole = parities[0] if len(prep.jobs) == 1 else None
        else:
            whole = _sampler_parity(prep, plugin, tmps, bar, options)
        for tmp, final in zip(tmps, finals):
            _replace(tmp, final)
    finally:
        for tmp in tmps:
            _remove(tmp)
            for extra in folder.glob(f"{tmp.name}*"):
                _remove(extra)
        for d in reversed(created):  # a failed first export leaves no empty exports/ folders behind
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    _remove_stale(prep, folder, precision, plugin.SUFFIX)

    manifest = _manifest(prep, target, precision, finals, converted, parities, whole, skipped)
    path = folder / f"{file_stem(prep.stem, precision)}.manifest.json"
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    if len(prep.jobs) > 1 and manifest.format_version < 4:  # O2MKD's older router file, for one release
        from edgekd.export.multi import write_router_manifest

        write_router_manifest(prep, manifest, folder)
    _report(prep, finals, manifest, precision, bar, skipped)
    note = "not run (CoreML predicts on macOS only); structure checked" if skipped else ""
    result_path = finals[0] if len(finals) == 1 else path
    return ExportResult(target, result_path, manifest.total_bytes, manifest.parity, note)


class _Fixed:
    """A graph called once on fixed inputs (a text encoder on token ids, a decoder on the student's latents, a
    conditional student on noise + condition), as a Generator for the parity gate."""

    calls_per_image = 1

    def __init__(self, stepper: Any, feeds: dict[str, torch.Tensor]):
        self.stepper, self.feeds = stepper, feeds
        self.runtime, self.name = stepper.runtime, "graph"

    def generate(self, noise: torch.Tensor, condition: Any = None) -> torch.Tensor:
        return self.stepper(**self.feeds).float()


def parity_feeds(prep: Prepared, n: int) -> dict[str, torch.Tensor]:
    """Realistic inputs for every graph input of a staged model: the parity noise, its condition (sample i:
    condition i mod K; text: the recipe's prompts through the teacher's tokenizer and text encoder), and the
    torch student's latents for the decoder."""
    from edgekd.runtime.steppers import TorchStepper

    recipe, teacher, model = prep.recipe, prep.teacher_model, prep.model
    shape = next(j.shape for j in prep.jobs if j.name not in ("text_encoder", "decoder"))
    feeds: dict[str, torch.Tensor] = {"noise": make_noise(recipe.export.parity_seed, 0, n, shape)}
    stages = getattr(model, "stages", None)
    cond = stages.condition if stages is not None else None
    if cond is not None:
        ids = teacher.condition.draw(0, n)
        if cond["kind"] == "class":
            feeds[cond["input"]] = ids
        else:
            prompts = [teacher.condition.prompts[int(i)] for i in ids]
            feeds["input_ids"] = token_ids(teacher.tokenizer, prompts)
            feeds[cond["input"]] = teacher.text_encoder(feeds["input_ids"])[0].detach().float()
    if stages is not None and stages.decode_graph:
        denoiser = next(j for j in prep.jobs if j.name not in ("text_encoder", "decoder"))
        if denoiser.teacher:  # a teacher's step graph: its DDIM-10 latents in torch
            from edgekd.runtime.samplers import DDIMSampler

            cond_name = denoiser.inputs[2] if len(denoiser.inputs) > 2 else None
            loop = DDIMSampler({denoiser.name: TorchStepper(denoiser.model, denoiser.inputs)},
                               section(model.sampling(), denoiser.name, TEACHER_PARITY_STEPS), condition_name=cond_name)
            feeds["latents"] = loop.generate(feeds["noise"], feeds.get(cond_name) if cond_name else None)
        else:
            feeds["latents"] = TorchStepper(denoiser.model, denoiser.inputs)(**{k: feeds[k] for k in denoiser.inputs})
    return feeds


def _graph_parity(prep: Prepared, job: GraphJob, plugin: Any, tmp: Path, bar: float,
                  options: ExportOptions) -> ParitySpec:
    """One graph against torch: a one-step graph on the noise, a step graph through DDIM-10 driven by it alone;
    a graph of a staged model (text encoder, conditional student, decoder) on realistic fixed inputs."""
    if getattr(getattr(prep.model, "stages", None), "staged", False) and job.teacher:
        return _step_parity(prep, job, plugin, tmp, bar, options)
    if getattr(getattr(prep.model, "stages", None), "staged", False):
        from edgekd.runtime.steppers import TorchStepper

        n = prep.recipe.export.parity_samples
        feeds = {k: v for k, v in parity_feeds(prep, n).items() if k in job.inputs}
        step = _open(plugin, tmp, options, job.what(plugin.LABEL))
        reference = _Fixed(TorchStepper(job.model, job.inputs), feeds)
        parity = check_parity(reference, _Fixed(step, feeds), feeds[job.inputs[0]], prep.recipe.export.parity_seed,
                              bar, job.what(plugin.LABEL))
        parity.runtime = plugin.parity_runtime(step)
        return parity
    only, steps = (job.name, TEACHER_PARITY_STEPS) if job.teacher else (None, None)
    reference = torch_generator(prep.model, only=only, steps=steps)
    step = _open(plugin, tmp, options, job.what(plugin.LABEL))
    candidate = sampler({job.name: step}, section(prep.model.sampling(), only, steps), {job.name: job.inputs})
    noise = make_noise(prep.recipe.export.parity_seed, 0, prep.recipe.export.parity_samples, job.shape)
    parity = check_parity(reference, candidate, noise, prep.recipe.export.parity_seed, bar, job.what(plugin.LABEL))
    parity.runtime = plugin.parity_runtime(step)
    return parity


def _step_parity(prep: Prepared, job: GraphJob, plugin: Any, tmp: Path, bar: float,
                 options: ExportOptions) -> ParitySpec:
    """A conditional teacher's step graph alone through DDIM-10 on latents, against torch, with the parity
    noise's conditions (class ids, or the prompts' embeddings from the torch text encoder)."""
    from edgekd.runtime.samplers import DDIMSampler
    from edgekd.runtime.steppers import TorchStepper

    n = prep.recipe.export.parity_samples
    feeds = parity_feeds(prep, n)
    cond_name = job.inputs[2] if len(job.inputs) > 2 else None
    sampling = section(prep.model.sampling(), job.name, TEACHER_PARITY_STEPS)
    step = _open(plugin, tmp, options, job.what(plugin.LABEL))
    reference = DDIMSampler({job.name: TorchStepper(job.model, job.inputs)}, sampling, condition_name=cond_name)
    candidate = DDIMSampler({job.name: step}, sampling, condition_name=cond_name)
    parity = check_parity(reference, candidate, feeds["noise"], prep.recipe.export.parity_seed, bar,
                          job.what(plugin.LABEL), condition=feeds.get(cond_name) if cond_name else None)
    parity.runtime = plugin.parity_runtime(step)
    return parity


def _open(plugin: Any, tmp: Path, options: ExportOptions, what: str) -> Any:
    """The target runtime on a converted file; a file the runtime cannot load fails the gate (exit 3), like one
    whose output is wrong: either way the export is not kept."""
    from edgekd.errors import ParityError

    try:
        return plugin.stepper(tmp, threads=torch.get_num_threads(), compute_units=options.compute_units)
    except Exception as exc:  # runtimes raise many types on a damaged file
        raise ParityError(f"{what}: the runtime could not load the exported model ({_first_line(exc)}); "
                          "the export was not kept") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _sampler_parity(prep: Prepared, plugin: Any, tmps: list[Path], bar: float, options: ExportOptions) -> ParitySpec:
    """The whole sampler (every graph, routed as the model says) in the target runtime against torch."""
    steppers = {job.name: _open(plugin, tmp, options, job.what(plugin.LABEL)) for job, tmp in zip(prep.jobs, tmps)}
    sampling = prep.model.sampling()
    names = {job.name: job.inputs for job in prep.jobs}
    stages = getattr(prep.model, "stages", None)
    condition = None
    if stages is not None and stages.staged:
        from edgekd.runtime.open import pipeline

        cond = stages.condition
        candidate = pipeline(steppers, section(sampling), names, cond["kind"] if cond else None, stages.text_graph,
                             stages.decode_graph)
        feeds = parity_feeds(prep, prep.recipe.export.parity_samples)
        noise = feeds["noise"]
        condition = feeds.get("input_ids") if stages.text_graph else feeds.get(cond["input"]) if cond else None
        what = f"{prep.run.path}: {plugin.NAME} pipeline of {len(prep.jobs)} graphs ({', '.join(names)})"
    else:
        candidate = sampler(steppers, section(sampling), names)
        shape = prep.jobs[0].shape
        noise = make_noise(prep.recipe.export.parity_seed, 0, prep.recipe.export.parity_samples, shape)
        what = (f"{prep.run.path}: {plugin.NAME} {len(prep.jobs)} graphs routed through DDIM-{sampling.steps()} "
                f"(the whole sampler)")
    parity = check_parity(torch_generator(prep.model), candidate, noise, prep.recipe.export.parity_seed, bar, what,
                          condition=condition)
    parity.runtime = plugin.parity_runtime(next(iter(steppers.values())))
    return parity


def _remove_stale(prep: Prepared, folder: Path, precision: str, suffix: str) -> None:
    """Graph files of an earlier export with more graphs than this one (student_<k>, same precision) go."""
    if len(prep.jobs) < 2:
        return
    k = len(prep.jobs)
    while (folder / f"{file_stem(f'student_{k}', precision)}{suffix}").exists():
        _remove(folder / f"{file_stem(f'student_{k}', precision)}{suffix}")
        k += 1


def _manifest(prep: Prepared, target: str, precision: str, finals: list[Path], converted: list[Any],
              parities: list[ParitySpec | None], whole: ParitySpec | None, skipped: str | None) -> Manifest:
    from edgekd.runtime.open import section as sampling_section

    models = []
    for job, final, conv, parity in zip(prep.jobs, finals, converted, parities):
        out_dims = [conv.dims[0], *job.output_shape]
        models.append(GraphEntry(name=job.name, file=final.name, bytes=size_bytes(final), sha256=sha256(final),
                                 inputs=conv.inputs, output=TensorSpec(name=job.output, shape=out_dims),
                                 parity=parity, parity_skipped=skipped, checks=conv.checks,
                                 runtime_options=conv.runtime_options, delegation=conv.delegation))
    stages = getattr(prep.model, "stages", None)
    denoiser = next(j for j in prep.jobs if j.name not in ("text_encoder", "decoder"))
    if stages is not None and stages.staged:
        for entry in models:
            entry.stage = {"text_encoder": "condition", "decoder": "decode"}.get(entry.name, "denoise")
    shape = [int(d) for d in denoiser.shape]
    channels = shape[0]
    recipe = prep.recipe
    staged: dict[str, Any] = {}
    image_shape = None
    if stages is not None and stages.staged:
        staged = _stage_specs(prep, stages, finals[0].parent)
        dec = next((j for j in prep.jobs if j.name == "decoder"), None)
        channels = int(dec.output_shape[0]) if dec is not None else channels
        image_shape = [int(d) for d in (dec.output_shape if dec is not None else denoiser.shape)]
    return Manifest(**staged,
        edgekd_version=__version__, role=prep.role, name=f"{recipe.name}-{file_stem(prep.stem, precision)}",  # type: ignore[arg-type]
        target=target, precision=precision, quantization=quantization_text(target, precision, converted[0].checks),  # type: ignore[arg-type]
        models=models, sampling=sampling_section(prep.model.sampling()), parity=whole,
        parity_skipped=skipped if whole is None else None, noise=NoiseV3(shape=shape),
        image=ImageSpec(crop=image_crop(recipe) if not staged.get("decode") else None, channels=channels,
                        shape=image_shape if staged else None),
        source={"run": str(prep.run.path), "recipe": recipe.name, "teacher": recipe.teacher.path,
                "method": recipe.method.name, "model": prep.stem,
                **export_identity(prep.run.path, prep.role == "teacher_step", prep.teacher_model.fingerprint)},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _stage_specs(prep: Prepared, stages: Any, folder: Path) -> dict[str, Any]:
    """The version-4 fields of a staged model (edgekd.models.stages): its condition, decoder and guidance; a text
    model's tokenizer files are written beside the manifest (tokenizer/)."""
    from edgekd.manifest import PIPELINE_VERSION, ClassConditionSpec, DecodeSpec, TextConditionSpec, TokenizerSpec

    teacher = prep.teacher_model
    out: dict[str, Any] = {"format_version": PIPELINE_VERSION, "guidance_scale": float(teacher.guidance_scale)}
    cond = stages.condition
    if cond is not None and cond["kind"] == "class":
        names = cond.get("names") or {}
        n = int(cond["high"])
        out["condition"] = ClassConditionSpec(
            input=cond["input"], num_classes=n, names=[names.get(str(i), str(i)) for i in range(n)] if names else None,
            null_class=teacher.condition.null)
    elif cond is not None:
        tok = teacher.tokenizer
        files = write_tokenizer_files(tok, folder / "tokenizer")
        out["condition"] = TextConditionSpec(
            input=cond["input"], encoder_graph=stages.text_graph, example_prompts=list(teacher.condition.prompts),
            tokenizer=TokenizerSpec(files={k: f"tokenizer/{v}" for k, v in files.items()},
                                    sha256={k: sha256(folder / "tokenizer" / v) for k, v in files.items()},
                                    max_length=int(tok.model_max_length), bos_token_id=int(tok.bos_token_id),
                                    eos_token_id=int(tok.eos_token_id), pad_token_id=int(tok.pad_token_id),
                                    lowercase=bool(getattr(tok, "do_lower_case", True))))
    if stages.decode_graph:
        out["decode"] = DecodeSpec(graph=stages.decode_graph, scaling_factor=float(stages.scaling_factor))
    return out


def write_tokenizer_files(tokenizer: Any, folder: Path) -> dict[str, str]:
    """The CLIP BPE tokenizer as an app reads it: vocab.json and merges.txt (rank = line after the #version
    header), from the tokenizer's own tokenizer.json (kept too, for Python); written atomically."""
    import json

    from edgekd.train.checkpoint import AtomicDir

    with AtomicDir(folder) as tmp:
        tokenizer.save_pretrained(str(tmp))
        model = json.loads((tmp / "tokenizer.json").read_text())["model"]
        if model.get("type") != "BPE":
            raise EdgekdError(f"the teacher's tokenizer is {model.get('type')}, not CLIP's BPE: cannot export it")
        (tmp / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        (tmp / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    return {"vocab": "vocab.json", "merges": "merges.txt", "tokenizer": "tokenizer.json"}


def _report(prep: Prepared, finals: list[Path], manifest: Manifest, precision: str, bar: float,
            skipped: str | None) -> None:
    size = manifest.total_bytes / 1e6
    what = str(finals[0]) if len(finals) == 1 else f"{len(finals)} graphs to {finals[0].parent}"
    parity = manifest.parity
    if parity is not None:
        print(f"exported {what} ({size:.2f} MB, {precision}): parity {parity.psnr_db:.1f} dB, "
              f"max abs error {parity.max_abs_error:.2e} (bar {bar:.0f} dB, {parity.runtime})")
        return
    checks = manifest.models[0].checks

    def io(specs: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v['shape']} {v['dtype']}" for k, v in specs.items())

    print(f"exported {what} ({size:.2f} MB, {precision}): structure checked ({io(checks['inputs'])} -> "
          f"{io(checks['outputs'])}; {sum(checks['ops'].values())} ops; weights {checks['weight_dtypes']})")
    print(f"  numerical parity NOT run: {skipped}")


def quantization_text(target: str, precision: str, checks: dict[str, Any] | None = None) -> str | None:
    """The manifest's ``quantization`` line for a target and precision (an ONNX int8 export says its own)."""
    if precision == "fp32":
        return None
    described = ((checks or {}).get("quantization") or {}).get("description")
    return described or get_target(target).QUANTIZATION.get(precision)


def export_all(run_path: Path, teacher: bool = False, batch: int | None = None, psnr_min: float | None = None,
               exporter: str = "dynamo", precision: str = "fp32", compute_units: str = "ALL",
               deployment_target: str = "iOS17") -> list[ExportResult]:
    """Every target in turn, then a summary table; a failed target does not stop the others, but the command
    still fails (with the first failure's exit code) after the table."""
    known = all_precisions()
    if precision not in known:
        raise EdgekdError(f"unknown precision '{precision}' (available: {', '.join(known)})")
    if batch is not None and batch < 1:
        raise EdgekdError(f"--batch must be >= 1, got {batch}")
    options = ExportOptions(batch, exporter, compute_units, deployment_target, psnr_min)
    for plugin in _PLUGINS.values():  # bad options fail before any work, also for a target the precision skips
        plugin.check_options(precision if precision in plugin.PRECISIONS else plugin.PRECISIONS[0], options)
    prep = prepare(Path(run_path), teacher)
    results: list[ExportResult] = []
    for name, plugin in _PLUGINS.items():
        if precision not in plugin.PRECISIONS:
            results.append(ExportResult(name, None, note=f"skipped: {name} exports {', '.join(plugin.PRECISIONS)} only"))
            continue
        try:
            results.append(export_model(prep, name, precision, options))
        except EdgekdError as exc:
            results.append(ExportResult(name, None, error=exc))
    return _summarise(results)


def _summarise(results: list[ExportResult]) -> list[ExportResult]:
    """Print the table; fail (with the first failure's exit code) when any target failed."""
    print(summary_table(results))
    failed = [r.error for r in results if r.error is not None]
    if failed:
        raise type(failed[0])(f"{len(failed)} of {len(TARGETS)} targets failed; first: {failed[0]}")
    return results


def summary_table(results: list[ExportResult]) -> str:
    rows = [("target", "file", "size", "parity")]
    for r in results:
        rows.append((r.target, str(r.path) if r.path else "-", f"{r.bytes / 1e6:.2f} MB" if r.path else "-",
                     r.parity_text()))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + " | " + row[3] for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths) + "-+-" + "-" * 6)
    return "\n".join(lines)
