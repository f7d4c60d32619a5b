"""ONNX target: torch.onnx (dynamo by default, TorchScript as a fallback), dynamic batch unless --batch; fp16 and
int8 are made from the fp32 file by the quantizer (edgekd.compress.quantize), run in onnxruntime on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.export.graph_check import check_graph
from edgekd.export.onnx import QUANTIZATION, export_onnx
from edgekd.export.targets import tensor_inputs, Converted, ExportOptions, Quantizer
from edgekd.manifest import TensorSpec
from edgekd.runtime.steppers import OrtStepper, Stepper, dist_version

LABEL = "ONNX"  # how messages name it
NAME, ORDER, SUFFIX, EXTRA = "onnx", 0, ".onnx", "onnx"
PRECISIONS = ("fp32", "fp16", "int8")
__all__ = ["QUANTIZATION"]


def check_options(precision: str, options: ExportOptions) -> None:
    """Nothing beyond the precision (the driver checks it) for ONNX."""


def convert(job: Any, path: Path, precision: str, options: ExportOptions, quantizer: Quantizer) -> Converted:
    b = options.batch or 2  # torch.export specialises a dimension traced at size 1: trace dynamic batches at 2
    example = job.example(b)
    _, findings = check_graph(job.model, tuple(example.values()), "onnx")
    dims: list[int | str] = [options.batch if options.batch else "batch", *job.shape]
    inputs = tensor_inputs(job, dims[0], "int64")
    export_onnx(job.model, tuple(example.values()), path, job.inputs, job.output, dynamic_batch=options.batch is None,
                exporter=options.exporter)
    checks: dict[str, Any] = {"graph": [f.line() for f in findings]}
    if precision != "fp32":  # int8 (NNCF QDQ + mixed-precision fallback) or fp16, from the fp32 file
        quantized = quantizer.onnx(job, path, precision, options.psnr_min)
        if quantized.sensitivity is not None:  # written before the gate: it explains a failed gate too
            stem = f"{job.name}_{precision}"
            quantized.sensitivity.write(job.run.report_dir, f"sensitivity_{stem}", f"{job.run.path.name} {stem}.onnx")
        checks["quantization"] = quantized.manifest_checks()
    return Converted(dims, inputs, checks, {"execution_provider": "CPUExecutionProvider"})


def stepper(path: Path, threads: int | None = None, compute_units: str = "ALL") -> Stepper:
    return OrtStepper(path, threads)


def parity_unavailable() -> str | None:
    return None


def parity_runtime(step: Stepper) -> str:
    return f"onnxruntime {dist_version('onnxruntime')} CPUExecutionProvider"
