"""The manifest: a small versioned JSON next to every exported model saying what a runtime needs.

Version 3 (docs/manifest-v3.md) is what every export writes: ``models[]`` (one entry per graph: file, inputs,
output, parity) and one ``sampling`` section (``one_step``, or ``ddim`` with the graph per step and the alphas).
Apps, the web demo, the profiler and edgekd.runtime.open_generator read it; nothing is hard-coded twice.
``read_manifest`` also reads versions 1 and 2 (one model) and the O2MKD router manifest, upgraded in memory to the
version-3 shape (``format_version`` keeps the version of the file). Validated when read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekd.errors import EdgekdError

MANIFEST_VERSION = 3
# Version 2 added tflite/coreml fields (quantization, parity_skipped, checks, runtime_options); every one is
# optional, so a version-1 file (ONNX only) still reads as it was written. Version 3: models[] + sampling.
READABLE_VERSIONS = (1, 2, 3, 4)
# Version 4 (docs/manifest-v4.md): a pipeline of graphs, written when a model has a condition or a decoder stage
# (``condition``: class ids or text through a text-encoder graph; ``decode``: the decoder graph); a model without
# either is still written as version 3, byte for byte what older apps read.
PIPELINE_VERSION = 4
PORTABLE_NOISE = "mulberry32-boxmuller-v1"
SEED_CONVENTION = "image i of seed s: torch.randn(shape, generator=torch.Generator().manual_seed(s + i))"
TO_PIXELS = "pixel = round((clip(x, -1, 1) + 1) * 127.5), uint8"
# any export target plug-in's NAME (edgekd/export/targets/): not listed here, so a new target is one file there
Target = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
Precision = Literal["fp32", "fp16", "int8", "int8_static", "palettize4", "palettize6", "palettize8"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_M):
    name: str
    shape: list[int | str]
    dtype: Literal["float32", "float16", "int64", "int32", "uint8"] = "float32"
    layout: str = "NCHW"


class OutputSpec(TensorSpec):
    range: tuple[float, float] = (-1.0, 1.0)
    to_pixels: str = "pixel = round((clip(x, -1, 1) + 1) * 127.5), uint8"
    crop: tuple[int, int, int, int] | None = Field(None, description="(top, left, height, width) of the real image")


class NoiseSpec(_M):
    distribution: Literal["standard_normal"] = "standard_normal"
    seed_convention: str = "image i of seed s: torch.randn(shape, generator=torch.Generator().manual_seed(s + i))"
    scale: float = 1.0


class SamplingSpec(_M):
    """How to run the model: one call for a one-step student, a DDIM loop for a teacher step."""

    kind: Literal["one_step", "ddim_loop"]
    steps: int
    timesteps: list[int]
    scheduler: dict[str, Any] | None = None
    alphas_cumprod: list[float] | None = None


class ParitySpec(_M):
    runtime: str
    samples: int
    seed: int
    max_abs_error: float
    psnr_db: float
    psnr_min: float
    passed: bool


class ModelFile(_M):
    file: str
    target: Target
    bytes: int
    sha256: str


class ManifestV2(_M):
    """Versions 1 and 2: one model file (read only; upgraded to ``Manifest`` by ``read_manifest``)."""

    format_version: int = 2
    edgekd_version: str
    role: Literal["student", "teacher_step"]
    name: str
    model: ModelFile
    inputs: list[TensorSpec]
    output: OutputSpec
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    sampling: SamplingSpec
    precision: Literal["fp32", "fp16", "int8", "int8_static", "palettize4", "palettize6", "palettize8"] = "fp32"
    quantization: str | None = Field(None, description="how the weights/activations were reduced, when not fp32")
    parity: ParitySpec | None = None
    parity_skipped: str | None = Field(None, description="why parity is null (e.g. CoreML cannot predict on Linux)")
    checks: dict[str, Any] = Field(default_factory=dict, description="structural/accelerator checks run at export")
    runtime_options: dict[str, Any] = Field(default_factory=dict, description="what the runtime must be told")
    source: dict[str, Any] = Field(default_factory=dict)
    created: str

    @model_validator(mode="after")
    def _parity_or_reason(self) -> "ManifestV2":
        if self.format_version >= 2 and self.parity is None and not self.parity_skipped:
            raise ValueError("parity is null but parity_skipped gives no reason")
        return self


def read_json(path: Path, label: str, hint: str) -> Any:
    """The parsed JSON at ``path``; a missing file or bad JSON is one clear error naming ``label``."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgekdError(f"{label} {path} not found ({hint})") from None
    except ValueError as exc:
        raise EdgekdError(f"{label} {path} is not valid JSON ({exc})") from None


def read_versioned(path: Path, model: type[BaseModel], label: str, hint: str, readable: tuple[int, ...],
                   readable_text: str) -> Any:
    """Read a JSON manifest and validate it into ``model``; a missing file, bad JSON, an unknown format_version
    or an invalid field is one clear error naming ``label`` and ``path``."""
    raw = read_json(path, label, hint)
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version not in readable:
        raise EdgekdError(f"{label} {path} has format_version {version!r}; this edgekd reads {readable_text}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise EdgekdError(f"{label} {path}: field '{'.'.join(map(str, first['loc']))}': {first['msg']}") from None


# ============================================================================================ version 3


class DelegationSpec(_M):
    """How much of a graph the runtime's delegate (accelerator or optimised CPU library) runs, counted from the
    converted program itself: the question every export tool is asked (does it really run in the delegate, or
    fall back op by op?). Optional: a target reports it where its converter shows it."""

    delegate: str = Field(description="the delegate's name as the runtime knows it, e.g. XnnpackBackend")
    partitions: int = Field(ge=0, description="delegated subgraphs: each is one call into the delegate")
    delegated_ops: int = Field(ge=0)
    other_ops: int = Field(ge=0, description="ops run outside the delegate (the runtime's portable kernels)")
    delegated_share: float = Field(ge=0.0, le=1.0, description="delegated_ops / (delegated_ops + other_ops)")
    other: dict[str, int] = Field(default_factory=dict, description="op -> count, of the ops outside the delegate")
    counted_from: str = ""


class GraphEntry(_M):
    """One exported graph: its file and I/O, and the parity gate it cleared (or why it was not run)."""

    name: str
    file: str = Field(description="relative to the manifest's folder")
    bytes: int
    sha256: str
    inputs: list[TensorSpec]
    output: TensorSpec
    parity: ParitySpec | None = None
    parity_skipped: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
    runtime_options: dict[str, Any] = Field(default_factory=dict)
    stage: Literal["condition", "denoise", "decode"] | None = Field(None, description="version 4; None: denoise")
    delegation: DelegationSpec | None = Field(None, description="ops in the delegate vs outside it, where known")


class OneStepSampling(_M):
    kind: Literal["one_step"] = "one_step"
    graph: str


class DDIMSampling(_M):
    """A deterministic DDIM loop (eta 0) over epsilon graphs, written out so an app needs no scheduler."""

    kind: Literal["ddim"] = "ddim"
    prediction: Literal["epsilon"] = "epsilon"
    steps: int
    timesteps: list[int]
    graph_per_step: list[str]
    alphas_cumprod: list[float]
    alphas_cumprod_prev: list[float]
    clip_sample: bool
    clip_sample_range: float = 1.0
    update: str = ""
    scheduler: dict[str, Any] | None = Field(None, description="diffusers scheduler config, for Python")

    @model_validator(mode="after")
    def _one_per_step(self) -> "DDIMSampling":
        lengths = {len(self.timesteps), len(self.graph_per_step), len(self.alphas_cumprod),
                   len(self.alphas_cumprod_prev)}
        if lengths != {self.steps}:
            raise ValueError(f"timesteps, graph_per_step and both alphas lists need {self.steps} entries (one per step)")
        return self


class NoiseV3(_M):
    distribution: Literal["standard_normal"] = "standard_normal"
    shape: list[int] = Field(description="per image (C, H, W)")
    seed_convention: str = SEED_CONVENTION
    portable: str = PORTABLE_NOISE


class ImageSpec(_M):
    range: tuple[float, float] = (-1.0, 1.0)
    to_pixels: str = TO_PIXELS
    crop: tuple[int, int, int, int] | None = Field(None, description="(top, left, height, width) of the real image")
    channels: int
    shape: list[int] | None = Field(None, description="version 4: per image (C, H, W) of the final picture")


class ClassConditionSpec(_M):
    """The denoiser takes class ids (0..num_classes-1) in graph input ``input``; ``names[i]`` names class i."""

    kind: Literal["class"] = "class"
    input: str
    num_classes: int
    names: list[str] | None = None
    null_class: int | None = Field(None, description="the 'no class' id guidance uses, when the model has one")
    default: int = 0


class TokenizerSpec(_M):
    """The CLIP BPE tokenizer (docs/manifest-v4.md): vocab.json + merges.txt beside the manifest, padding rules."""

    kind: Literal["clip_bpe"] = "clip_bpe"
    files: dict[str, str] = Field(description="vocab / merges (and tokenizer.json for Python), relative paths")
    sha256: dict[str, str]
    max_length: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    lowercase: bool = True


class TextConditionSpec(_M):
    """The denoiser takes text embeddings in graph input ``input``, made by graph ``encoder_graph`` from token ids
    (``tokenizer``); ``example_prompts``: what the student was distilled on."""

    kind: Literal["text"] = "text"
    input: str
    encoder_graph: str
    tokenizer: TokenizerSpec
    null_prompt: str = ""
    example_prompts: list[str] = Field(default_factory=list)

    @property
    def graph(self) -> str:
        return self.encoder_graph


class DecodeSpec(_M):
    """The denoiser makes latents; graph ``graph`` makes the picture (decoder(latents / scaling_factor +
    shift_factor), computed inside the graph: apps feed it the denoise output unchanged)."""

    graph: str
    input: str = "latents"
    scaling_factor: float
    shift_factor: float = 0.0
    applied_in_graph: bool = True


class Manifest(_M):
    """Version 3: every export, one graph or several; version 4 adds the condition and decode stages."""

    format_version: int = MANIFEST_VERSION
    edgekd_version: str
    role: Literal["student", "teacher_step"]
    name: str
    target: Target
    precision: Precision = "fp32"
    quantization: str | None = None
    models: list[GraphEntry]
    sampling: OneStepSampling | DDIMSampling = Field(discriminator="kind")
    parity: ParitySpec | None = Field(None, description="the whole sampler (every graph, as sampling says) against "
                                                        "torch; equals models[0].parity for a one-step model")
    parity_skipped: str | None = None
    noise: NoiseV3
    image: ImageSpec
    source: dict[str, Any] = Field(default_factory=dict)
    created: str
    condition: ClassConditionSpec | TextConditionSpec | None = Field(None, discriminator="kind")
    decode: DecodeSpec | None = None
    guidance_scale: float | None = Field(None, description="the teacher's classifier-free guidance the student "
                                                           "learned (the student itself runs unguided, once)")

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        names = [g.name for g in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"graph names {names} are not unique")
        staged = [x for x in (getattr(self.condition, "graph", None), getattr(self.decode, "graph", None)) if x]
        if sorted(set(staged) - set(names)):
            raise ValueError(f"condition/decode name graphs {sorted(set(staged) - set(names))} that models[] lacks")
        if (self.condition is not None or self.decode is not None) and self.format_version < PIPELINE_VERSION:
            raise ValueError("condition and decode stages need format_version 4")
        used = [self.sampling.graph] if isinstance(self.sampling, OneStepSampling) else self.sampling.graph_per_step
        unknown = sorted(set(used) - set(names))
        if unknown:
            raise ValueError(f"sampling names graphs {unknown} that models[] does not list ({names})")
        if self.format_version >= 2:
            for g in self.models:
                if g.parity is None and not g.parity_skipped:
                    raise ValueError(f"graph {g.name}: parity is null but parity_skipped gives no reason")
            if self.parity is None and not self.parity_skipped:
                raise ValueError("parity is null but parity_skipped gives no reason")
        return self

    # conveniences for the one-graph case (what v1/v2 readers used)
    def graph(self, name: str) -> GraphEntry:
        return next(g for g in self.models if g.name == name)

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.models[0].inputs

    @property
    def output(self) -> TensorSpec:
        return self.models[0].output

    @property
    def model(self) -> GraphEntry:
        """The first graph (the only one of a one-graph manifest)."""
        return self.models[0]

    @property
    def checks(self) -> dict[str, Any]:
        return self.models[0].checks

    @property
    def runtime_options(self) -> dict[str, Any]:
        return self.models[0].runtime_options

    @property
    def total_bytes(self) -> int:
        return sum(g.bytes for g in self.models)


def manifest_path(model_path: Path) -> Path:
    """``student.onnx`` -> ``student.manifest.json`` (also for a ``student.mlpackage`` directory)."""
    return model_path.with_name(model_path.stem + ".manifest.json")


def read_manifest(path: Path) -> Manifest:
    """Read and validate any manifest edgekd wrote (v1, v2, v3, router) as a version-3 ``Manifest``; an unknown
    version or a malformed file is one clear error."""
    hint = "export the model with `edgekd export`"
    raw = read_json(path, "manifest", hint)
    if isinstance(raw, dict) and raw.get("role") == "router":
        return _from_router(read_router_manifest(path))
    readable = f"versions {', '.join(map(str, READABLE_VERSIONS))}"
    if isinstance(raw, dict) and raw.get("format_version") in (1, 2):
        return _from_v2(read_versioned(path, ManifestV2, "manifest", hint, (1, 2), readable))
    return read_versioned(path, Manifest, "manifest", hint, (3, 4), readable)


def _from_v2(m: ManifestV2) -> Manifest:
    """A v1/v2 single-model manifest in the version-3 shape."""
    graph = "teacher_step" if m.role == "teacher_step" else "student"
    entry = GraphEntry(name=graph, file=m.model.file, bytes=m.model.bytes, sha256=m.model.sha256, inputs=m.inputs,
                       output=TensorSpec(**m.output.model_dump(include={"name", "shape", "dtype", "layout"})),
                       parity=m.parity, parity_skipped=m.parity_skipped, checks=m.checks,
                       runtime_options=m.runtime_options)
    shape = [int(d) for d in m.inputs[0].shape[1:]]
    if m.sampling.kind == "one_step":
        sampling: Any = OneStepSampling(graph=graph)
    else:
        sampling = _ddim_from_scheduler(m.sampling.scheduler or {}, m.sampling.steps, [graph])
    return Manifest(format_version=m.format_version, edgekd_version=m.edgekd_version, role=m.role, name=m.name,
                    target=m.model.target, precision=m.precision, quantization=m.quantization, models=[entry],
                    sampling=sampling, parity=m.parity, parity_skipped=m.parity_skipped,
                    noise=NoiseV3(shape=shape, seed_convention=m.noise.seed_convention),
                    image=ImageSpec(crop=m.output.crop if m.role == "student" else None, channels=shape[0]),
                    source=m.source, created=m.created)


def _ddim_from_scheduler(scheduler: dict[str, Any], steps: int, graphs: list[str],
                         boundaries: list[int] | None = None) -> DDIMSampling:
    from edgekd.models.spec import DDIM_UPDATE, DDIMLoop

    config = {k: v for k, v in scheduler.items() if k != "timestep_spacing"}
    loop = DDIMLoop(config, steps, scheduler.get("timestep_spacing", "trailing"), tuple(graphs),
                    tuple(boundaries or ()))
    return DDIMSampling(steps=steps, update=DDIM_UPDATE, scheduler=scheduler, **loop.lists())


# ============================================================================================ router (O2MKD, read)

ROUTER_FORMAT_VERSION = 1


class RoutedStudent(_M):
    """One exported student: its file and the timesteps it owns."""

    index: int
    range: tuple[int, int] = Field(description="first and last timestep owned, inclusive")
    timesteps: list[int] = Field(description="the DDIM timesteps of this sampler that go to this file")
    model: ModelFile
    params: int
    parity: ParitySpec | None = None


class ScheduleStep(_M):
    """One DDIM step: the timestep, the student to call, and the two alphas its update uses."""

    step: int
    timestep: int
    student: int
    alpha_cumprod: float
    alpha_cumprod_prev: float


class RouterManifest(_M):
    """O2MKD's first multi-model manifest (router format 1): N step models, who owns which step, the DDIM loop.
    Still written beside ``student.manifest.json`` for one release and still read; new code reads version 3."""

    format_version: int = ROUTER_FORMAT_VERSION
    edgekd_version: str
    role: Literal["router"] = "router"
    kind: Literal["o2mkd"] = "o2mkd"
    name: str
    target: Target
    students: list[RoutedStudent]
    boundaries: list[int]
    routing: str = ("student i owns timesteps range[0] <= t <= range[1]; equivalently its index is the number of "
                    "boundaries <= t")
    schedule: list[ScheduleStep] = Field(description="every DDIM step in order: its timestep and the student to call")
    inputs: list[TensorSpec] = Field(description="inputs of every student file (all the same)")
    output: OutputSpec = Field(description="output of every student file: epsilon")
    image: OutputSpec = Field(description="the image the DDIM loop ends with")
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    sampling: SamplingSpec
    ddim_update: str
    precision: str = "fp32"
    quantization: str | None = Field(None, description="how student 0's weights/activations were reduced (all "
                                                         "students the same way; per student in checks)")
    parity: ParitySpec | None = Field(None, description="the whole routed loop in the target runtime vs torch")
    parity_skipped: str | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
    runtime_options: dict[str, Any] = Field(default_factory=dict)
    total_bytes: int
    source: dict[str, Any] = Field(default_factory=dict)
    created: str


def read_router_manifest(path: Path) -> RouterManifest:
    """Read and validate a router manifest; problems are one line."""
    return read_versioned(path, RouterManifest, "router manifest", "export the run with `edgekd export RUN`",
                          (ROUTER_FORMAT_VERSION,), str(ROUTER_FORMAT_VERSION))


def _from_router(r: RouterManifest) -> Manifest:
    students = sorted(r.students, key=lambda s: s.index)
    output = TensorSpec(**r.output.model_dump(include={"name", "shape", "dtype", "layout"}))
    models = [GraphEntry(name=f"student_{s.index}", file=s.model.file, bytes=s.model.bytes, sha256=s.model.sha256,
                         inputs=r.inputs, output=output, parity=s.parity,
                         parity_skipped=None if s.parity else (r.parity_skipped or "not recorded"),
                         checks=r.checks.get(f"student_{s.index}", {}), runtime_options=r.runtime_options)
              for s in students]
    sched = r.sampling.scheduler or {}
    sampling = DDIMSampling(
        steps=len(r.schedule), timesteps=[s.timestep for s in r.schedule],
        graph_per_step=[f"student_{s.student}" for s in r.schedule],
        alphas_cumprod=[s.alpha_cumprod for s in r.schedule], alphas_cumprod_prev=[s.alpha_cumprod_prev for s in r.schedule],
        clip_sample=bool(sched.get("clip_sample", True)), clip_sample_range=float(sched.get("clip_sample_range", 1.0)),
        update=r.ddim_update, scheduler=sched)
    shape = [int(d) for d in r.image.shape[1:]]
    return Manifest(format_version=r.format_version, edgekd_version=r.edgekd_version, role="student", name=r.name,
                    target=r.target, precision=r.precision, quantization=r.quantization,  # type: ignore[arg-type]
                    models=models, sampling=sampling, parity=r.parity, parity_skipped=r.parity_skipped,
                    noise=NoiseV3(shape=shape, seed_convention=r.noise.seed_convention),
                    image=ImageSpec(range=r.image.range, to_pixels=r.image.to_pixels, crop=r.image.crop,
                                    channels=shape[0]),
                    source=r.source, created=r.created)
