"""The Generator contract: anything that maps noise [N,C,H,W] to images [N,C,H,W] in [-1, 1].

Profiling, FID, sample grids and export parity are written once against it, so "student against teacher" and
"export against torch" are the same loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from edgekd.teachers.diffusers_teacher import DiffusionTeacher, ddim_sample


class Generator(Protocol):
    name: str
    runtime: str
    calls_per_image: int

    def generate(self, noise: torch.Tensor) -> torch.Tensor: ...


class TorchStudent:
    """A one-step torch student (any nn.Module taking noise)."""

    calls_per_image = 1
    runtime = "torch"

    def __init__(self, model: nn.Module, name: str = "student"):
        self.model = model.eval()
        self.name = name

    @torch.no_grad()
    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.model(noise).float()


class TorchTeacher:
    """The teacher sampled with deterministic DDIM for ``steps`` steps."""

    runtime = "torch"

    def __init__(self, teacher: DiffusionTeacher, steps: int, spacing: str = "trailing"):
        self.teacher, self.steps, self.spacing = teacher, steps, spacing
        self.calls_per_image = steps
        self.name = f"teacher DDIM-{steps}"

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return self.teacher.sample(noise, self.steps, self.spacing)[0]


def ort_session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxStudent:
    """A one-step student exported to ONNX, run in onnxruntime on the CPU."""

    calls_per_image = 1

    def __init__(self, path: Path, threads: int | None = None, name: str = "student"):
        self.session = ort_session(path, threads)
        self.input = self.session.get_inputs()[0].name
        self.name = name
        self.runtime = f"onnxruntime{'' if threads is None else f' {threads}t'}"

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: np.ascontiguousarray(noise.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)


class DDIMLoopTeacher:
    """A teacher whose exported denoising step runs in some runtime, driven by diffusers' DDIM scheduler.

    Subclasses set ``runtime`` and implement ``_eps(x, t)`` (one call of the exported step); the sampling loop
    is the same diffusers scheduler the torch teacher uses, so only the network differs.
    """

    runtime = "unknown"

    def __init__(self, scheduler_config: dict[str, Any], steps: int, spacing: str = "trailing"):
        self.scheduler_config, self.steps, self.spacing = scheduler_config, steps, spacing
        self.calls_per_image = steps
        self.name = f"teacher DDIM-{steps}"

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return ddim_sample(self.scheduler_config, self._eps, noise, self.steps, self.spacing)[0]


class OnnxTeacher(DDIMLoopTeacher):
    """The teacher's exported denoising step in onnxruntime, driven by diffusers' DDIM scheduler."""

    def __init__(self, path: Path, scheduler_config: dict[str, Any], steps: int, threads: int | None = None,
                 spacing: str = "trailing"):
        super().__init__(scheduler_config, steps, spacing)
        self.session = ort_session(path, threads)
        self.runtime = f"onnxruntime{'' if threads is None else f' {threads}t'}"

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ts = np.full((x.shape[0],), int(t), dtype=np.int64)
        out = self.session.run(None, {"sample": np.ascontiguousarray(x.numpy(), dtype=np.float32), "timestep": ts})[0]
        return torch.from_numpy(out)


class TorchRouter(TorchStudent):
    """An O2MKD student in torch: its forward runs the DDIM loop, each step routed to the student owning it."""

    def __init__(self, model: nn.Module, name: str | None = None):
        super().__init__(model, name or f"o2mkd {model.num_students} students DDIM-{model.steps}")
        self.calls_per_image = model.steps


class RoutedLoop(DDIMLoopTeacher):
    """O2MKD in any runtime: N exported step models (each a DDIMLoopTeacher of that runtime, used only for its
    ``_eps``), every DDIM step sent to the one owning its timestep (index = number of boundaries <= t)."""

    def __init__(self, steppers: list[DDIMLoopTeacher], boundaries: list[int], scheduler_config: dict[str, Any],
                 steps: int, spacing: str = "trailing", name: str | None = None):
        super().__init__(scheduler_config, steps, spacing)
        if len(steppers) != len(boundaries) + 1:
            raise ValueError(f"{len(boundaries)} boundaries need {len(boundaries) + 1} step models, got {len(steppers)}")
        self.steppers, self.boundaries = list(steppers), [int(b) for b in boundaries]
        self.runtime = steppers[0].runtime
        self.name = name or f"o2mkd {len(steppers)} students DDIM-{steps}"

    def owner(self, t: int | torch.Tensor) -> int:
        import bisect

        return bisect.bisect_right(self.boundaries, int(t))

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.steppers[self.owner(t)]._eps(x, t)


def generate_batched(gen: Generator, noise: torch.Tensor, batch_size: int = 128, progress: str | None = None) -> torch.Tensor:
    """Run ``gen`` over ``noise`` in batches (optionally with a progress bar)."""
    from tqdm.auto import tqdm

    outs = []
    bar = tqdm(total=len(noise), desc=progress, unit="img", dynamic_ncols=True, disable=progress is None, leave=False)
    for i in range(0, len(noise), batch_size):
        outs.append(gen.generate(noise[i : i + batch_size]).float())
        bar.update(len(outs[-1]))
    bar.close()
    return torch.cat(outs)


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _fixed_batch_run(batch: int, n: int, call: Any) -> torch.Tensor:
    """Run a fixed-batch model over ``n`` images: chunks of ``batch``, the last one zero-padded and trimmed."""
    outs = []
    for i in range(0, n, batch):
        take = min(batch, n - i)
        outs.append(call(i, take)[:take])
    return torch.cat(outs)


def _pad(x: np.ndarray, batch: int) -> np.ndarray:
    if x.shape[0] == batch:
        return x
    pad = np.zeros((batch - x.shape[0], *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad])


class _LiteRTModel:
    """A .tflite file in the ai-edge-litert interpreter (XNNPACK on CPU), called through its signature."""

    def __init__(self, path: Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner()
        details = self.runner.get_input_details()
        self.inputs = {name: (tuple(int(s) for s in d["shape"]), d["dtype"]) for name, d in details.items()}
        self.output = next(iter(self.runner.get_output_details()))
        self.batch = next(iter(self.inputs.values()))[0][0]
        self.runtime = f"ai-edge-litert {_dist_version('ai-edge-litert')} XNNPACK{'' if threads is None else f' {threads}t'}"

    def __call__(self, **arrays: np.ndarray) -> np.ndarray:
        feed = {k: _pad(np.ascontiguousarray(v, dtype=self.inputs[k][1]), self.batch) for k, v in arrays.items()}
        return self.runner(**feed)[self.output]


class TFLiteStudent:
    """A one-step student exported to TFLite (fixed batch), run in ai-edge-litert; loops over any number of images."""

    calls_per_image = 1

    def __init__(self, path: Path, threads: int | None = None, name: str = "student"):
        self.model = _LiteRTModel(path, threads)
        self.input = next(iter(self.model.inputs))
        self.name, self.runtime = name, self.model.runtime

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        x = noise.numpy()
        return _fixed_batch_run(self.model.batch, len(noise),
                                lambda i, k: torch.from_numpy(self.model(**{self.input: x[i : i + k]}).copy()))


class TFLiteTeacher(DDIMLoopTeacher):
    """The teacher's exported denoising step in ai-edge-litert, driven by diffusers' DDIM scheduler."""

    def __init__(self, path: Path, scheduler_config: dict[str, Any], steps: int, threads: int | None = None,
                 spacing: str = "trailing"):
        super().__init__(scheduler_config, steps, spacing)
        self.model = _LiteRTModel(path, threads)
        self.runtime = self.model.runtime

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xs = x.numpy()

        def call(i: int, k: int) -> torch.Tensor:
            ts = np.full((k,), int(t), dtype=np.int64)
            return torch.from_numpy(self.model(sample=xs[i : i + k], timestep=ts).copy())

        return _fixed_batch_run(self.model.batch, len(x), call)


def _coreml_model(path: Path, compute_units: str) -> Any:
    import platform

    from edgekd.errors import EdgekdError

    if platform.system() != "Darwin":
        raise EdgekdError(f"CoreML models can only be run on macOS (this is {platform.system()}); {path} was checked "
                          "structurally at export")
    import coremltools as ct

    return ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))


class _CoreMLRunner:
    def __init__(self, path: Path, compute_units: str):
        self.model = _coreml_model(path, compute_units)
        desc = self.model.get_spec().description
        self.inputs = {i.name: tuple(int(s) for s in i.type.multiArrayType.shape) for i in desc.input}
        from coremltools.proto import FeatureTypes_pb2 as ft

        int32 = ft.ArrayFeatureType.ArrayDataType.Value("INT32")
        self.dtypes = {i.name: (np.int32 if i.type.multiArrayType.dataType == int32 else np.float32) for i in desc.input}
        self.output = desc.output[0].name
        self.batch = next(iter(self.inputs.values()))[0]
        self.runtime = f"coremltools {_dist_version('coremltools')} MLModel.predict {compute_units}"

    def __call__(self, **arrays: np.ndarray) -> np.ndarray:
        feed = {k: _pad(np.ascontiguousarray(v, dtype=self.dtypes[k]), self.batch) for k, v in arrays.items()}
        return np.asarray(self.model.predict(feed)[self.output], dtype=np.float32)


class CoreMLStudent:
    """A one-step student as a CoreML ML program (.mlpackage, fixed batch), run with MLModel.predict (macOS only)."""

    calls_per_image = 1

    def __init__(self, path: Path, compute_units: str = "ALL", name: str = "student"):
        self.model = _CoreMLRunner(path, compute_units)
        self.input = next(iter(self.model.inputs))
        self.name, self.runtime = name, self.model.runtime

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        x = noise.numpy()
        return _fixed_batch_run(self.model.batch, len(noise),
                                lambda i, k: torch.from_numpy(self.model(**{self.input: x[i : i + k]})))


class CoreMLTeacher(DDIMLoopTeacher):
    """The teacher's denoising step as a CoreML ML program driven by diffusers' DDIM scheduler (macOS only)."""

    def __init__(self, path: Path, scheduler_config: dict[str, Any], steps: int, compute_units: str = "ALL",
                 spacing: str = "trailing"):
        super().__init__(scheduler_config, steps, spacing)
        self.model = _CoreMLRunner(path, compute_units)
        self.runtime = self.model.runtime

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xs = x.numpy()

        def call(i: int, k: int) -> torch.Tensor:
            return torch.from_numpy(self.model(sample=xs[i : i + k], timestep=np.full((k,), int(t), dtype=np.int32)))

        return _fixed_batch_run(self.model.batch, len(x), call)
