"""TFLite (LiteRT) target: litert-torch, fixed batch, NCHW; fp16/int8 through ai-edge-quantizer (int8_static with
the quantizer's calibration feeds); run in the ai-edge-litert interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.export.graph_check import check_graph
from edgekd.export.targets import tensor_inputs, Converted, ExportOptions, Quantizer
from edgekd.export.tflite import PRECISIONS, QUANTIZATION, export_tflite
from edgekd.manifest import TensorSpec
from edgekd.runtime.steppers import LiteRTStepper, Stepper

LABEL = "TFLite"  # how messages name it
NAME, ORDER, SUFFIX, EXTRA = "tflite", 1, ".tflite", "tflite"
__all__ = ["PRECISIONS", "QUANTIZATION"]


def check_options(precision: str, options: ExportOptions) -> None:
    """Nothing beyond the precision (the driver checks it) for TFLite."""


def convert(job: Any, path: Path, precision: str, options: ExportOptions, quantizer: Quantizer) -> Converted:
    b = options.batch or 1
    example = job.example(b)
    _, findings = check_graph(job.model, tuple(example.values()), "tflite")
    calibration, described = None, None
    if precision == "int8_static":  # ranges from inputs across the graph's timesteps (compress/calibration)
        calibration, described = quantizer.calibration(job, b, {k: v.numpy().dtype for k, v in example.items()})
    checks = export_tflite(job.model, example, path, job.output, precision, calibration)
    if described is not None:
        checks["calibration"] = described
    checks["graph"] = [f.line() for f in findings]
    dims: list[int | str] = [b, *job.shape]
    # litert-torch downcasts int64 I/O to int32 (enable_x64=False): the runtime feeds int32
    inputs = tensor_inputs(job, dims[0], "int32")
    options_out = {"signature": "serving_default", "fixed_batch": b, "layout": "NCHW (as PyTorch)",
                   "delegate": "XNNPACK on CPU (default in LiteRT); GPU delegate: see checks.gpu_delegate_compatible"}
    return Converted(dims, inputs, checks, options_out)


def stepper(path: Path, threads: int | None = None, compute_units: str = "ALL") -> Stepper:
    return LiteRTStepper(path, threads)


def parity_unavailable() -> str | None:
    return None


def parity_runtime(step: Stepper) -> str:
    return step.runtime
