"""Steppers: one graph called once in one runtime, ``stepper(**inputs) -> output`` (torch tensors in and out).

A stepper hides what differs between runtimes (sessions, signatures, fixed batches, int32 timesteps); samplers
(edgekd/runtime/samplers.py) never know which runtime they drive. Fixed-batch files (TFLite, CoreML) are called in
chunks of their batch, the last one zero-padded and trimmed, so any number of images works.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from edgekd.errors import EdgekdError


class Stepper(Protocol):
    runtime: str

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor: ...


def dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _pad(x: np.ndarray, batch: int) -> np.ndarray:
    if x.shape[0] == batch:
        return x
    pad = np.zeros((batch - x.shape[0], *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad])


def _chunked(batch: int | None, inputs: dict[str, torch.Tensor], call: Callable[[dict[str, np.ndarray]], np.ndarray]) -> torch.Tensor:
    """Call a fixed-batch model over any number of images (``batch`` None: one call)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in inputs.items()}
    n = len(next(iter(arrays.values())))
    if batch is None:
        return torch.from_numpy(np.array(call(arrays), dtype=np.float32))
    outs = []
    for i in range(0, n, batch):
        take = min(batch, n - i)
        part = {k: _pad(v[i : i + take], batch) for k, v in arrays.items()}
        outs.append(torch.from_numpy(np.array(call(part), dtype=np.float32)[:take]))
    return torch.cat(outs)


class TorchStepper:
    """A graph's torch module, called with keyword inputs in its declared order (no grad; the caller chose
    train or eval mode: a stepper never changes the model it is given)."""

    runtime = "torch"

    def __init__(self, module: nn.Module, input_names: list[str]):
        self.module, self.input_names = module, list(input_names)

    @torch.no_grad()
    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.module(*[inputs[n] for n in self.input_names]).float()


def ort_session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32}


class OrtStepper:
    """An .onnx file in onnxruntime on the CPU (dynamic or fixed batch, as the file says)."""

    def __init__(self, path: Path, threads: int | None = None):
        self.session = ort_session(path, threads)
        self.dtypes = {i.name: _ORT_DTYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        dim = self.session.get_inputs()[0].shape[0]
        self.batch = dim if isinstance(dim, int) else None
        self.runtime = f"onnxruntime{'' if threads is None else f' {threads}t'}"

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        def call(arrays: dict[str, np.ndarray]) -> np.ndarray:
            feed = {k: np.ascontiguousarray(v, dtype=self.dtypes[k]) for k, v in arrays.items()}
            return self.session.run(None, feed)[0]

        return _chunked(self.batch, inputs, call)


class LiteRTStepper:
    """A .tflite file in the ai-edge-litert interpreter (XNNPACK on CPU), called through its signature."""

    def __init__(self, path: Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner()
        details = self.runner.get_input_details()
        self.inputs = {name: (tuple(int(s) for s in d["shape"]), d["dtype"]) for name, d in details.items()}
        self.output = next(iter(self.runner.get_output_details()))
        self.batch = next(iter(self.inputs.values()))[0][0]
        self.runtime = f"ai-edge-litert {dist_version('ai-edge-litert')} XNNPACK{'' if threads is None else f' {threads}t'}"

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        def call(arrays: dict[str, np.ndarray]) -> np.ndarray:
            feed = {k: np.ascontiguousarray(v, dtype=self.inputs[k][1]) for k, v in arrays.items()}
            return self.runner(**feed)[self.output].copy()

        return _chunked(self.batch, inputs, call)


class CoreMLStepper:
    """A CoreML ML program (.mlpackage, fixed batch) run with MLModel.predict: macOS only, a clear error elsewhere."""

    def __init__(self, path: Path, compute_units: str = "ALL"):
        if platform.system() != "Darwin":
            raise EdgekdError(f"CoreML models can only be run on macOS (this is {platform.system()}); {path} was "
                              "checked structurally at export")
        import coremltools as ct
        from coremltools.proto import FeatureTypes_pb2 as ft

        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        desc = self.model.get_spec().description
        int32 = ft.ArrayFeatureType.ArrayDataType.Value("INT32")
        self.dtypes = {i.name: (np.int32 if i.type.multiArrayType.dataType == int32 else np.float32) for i in desc.input}
        self.output = desc.output[0].name
        self.batch = int(desc.input[0].type.multiArrayType.shape[0])
        self.runtime = f"coremltools {dist_version('coremltools')} MLModel.predict {compute_units}"

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        def call(arrays: dict[str, np.ndarray]) -> np.ndarray:
            feed = {k: np.ascontiguousarray(v, dtype=self.dtypes[k]) for k, v in arrays.items()}
            return np.asarray(self.model.predict(feed)[self.output], dtype=np.float32)

        return _chunked(self.batch, inputs, call)


# ExecuTorch's ScalarType codes (c10) of the dtypes edgekd graphs take
_ET_DTYPES = {6: torch.float32, 5: torch.float16, 4: torch.int64, 3: torch.int32, 11: torch.bool, 0: torch.uint8}
# the constant method of an edgekd .pte that names the forward inputs in their declared order: a .pte stores no
# input names, and graphs take several inputs (sample, timestep, class ids) that must go in positionally
ET_INPUTS_METHOD = "edgekd_inputs"
_ET_STATE = {"loaded": False}  # has this process loaded an ExecuTorch program (its threadpool is then fixed)?


class ExecuTorchStepper:
    """A .pte program in ExecuTorch's runtime (``executorch.runtime``; XNNPACK delegate on the CPU), fixed batch.

    Inputs are passed positionally in the order the program's ``edgekd_inputs`` constant method names (the graph's
    declared order), cast to the dtypes the program was traced with (int64 timesteps and class ids stay int64).

    ``threads``: ExecuTorch has ONE process-wide threadpool (XNNPACK's). Resizing it after a program was loaded
    corrupts memory here (executorch 1.5.1 ``_unsafe_reset_threadpool``: "malloc(): mismatching next->prev_size"),
    so it is sized only before the process loads its first program; later steppers run on the pool as it is, and
    ``runtime`` names the thread count they really use.
    """

    def __init__(self, path: Path, threads: int | None = None):
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if threads and not _ET_STATE["loaded"] and portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)
        _ET_STATE["loaded"] = True
        try:
            program = Runtime.get().load_program(str(path))
            self.method = program.load_method("forward")
            names = (program.load_method(ET_INPUTS_METHOD).execute([]) if ET_INPUTS_METHOD in program.method_names
                     else None)
        except RuntimeError as exc:  # the runtime says only "Failed to load program, error: 0x.."
            raise EdgekdError(f"ExecuTorch could not load {path} ({str(exc).strip()[:200]}): not a valid .pte "
                              "program (damaged or truncated?)") from None
        meta = self.method.metadata
        infos = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
        self.shapes = [tuple(int(s) for s in info.sizes()) for info in infos]
        self.dtypes = [_ET_DTYPES.get(int(info.dtype()), torch.float32) for info in infos]
        self.names = list(names) if names is not None else None
        self.batch = self.shapes[0][0]
        self.threads = int(portable_lib._threadpool_get_thread_count())
        self.runtime = f"executorch {dist_version('executorch')} XNNPACK {self.threads}t"

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        names = self.names or list(inputs)
        if set(names) != set(inputs):
            raise EdgekdError(f"the ExecuTorch program takes inputs {names}, got {sorted(inputs)}")

        def call(arrays: dict[str, np.ndarray]) -> np.ndarray:
            feed = [torch.from_numpy(np.ascontiguousarray(arrays[n])).to(d) for n, d in zip(names, self.dtypes)]
            return self.method.execute(feed)[0].float().numpy()

        return _chunked(self.batch, {n: inputs[n] for n in names}, call)


# the runtime that runs each export target's files (each target plug-in names its entry: edgekd/export/targets/)
STEPPERS: dict[str, Callable[..., Stepper]] = {
    "onnx": lambda path, threads=None, compute_units="ALL": OrtStepper(path, threads),
    "tflite": lambda path, threads=None, compute_units="ALL": LiteRTStepper(path, threads),
    "coreml": lambda path, threads=None, compute_units="ALL": CoreMLStepper(path, compute_units),
    "executorch": lambda path, threads=None, compute_units="ALL": ExecuTorchStepper(path, threads),
}


def open_stepper(target: str, path: Path, threads: int | None = None, compute_units: str = "ALL") -> Stepper:
    """The stepper for an exported file of ``target`` (a key of ``STEPPERS``)."""
    if target not in STEPPERS:
        raise EdgekdError(f"no runtime for target '{target}' (available: {', '.join(STEPPERS)})")
    return STEPPERS[target](Path(path), threads=threads, compute_units=compute_units)
