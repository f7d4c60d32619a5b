"""CoreML target: coremltools ML program (.mlpackage), fixed batch; fp16 compute, int8 weights or palettized
weights. Prediction needs macOS: elsewhere the file is checked structurally and parity says why it was skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.export import coreml as cm
from edgekd.export.graph_check import check_graph
from edgekd.export.targets import tensor_inputs, Converted, ExportOptions, Quantizer
from edgekd.manifest import TensorSpec
from edgekd.runtime.steppers import CoreMLStepper, Stepper

LABEL = "CoreML"  # how messages name it
NAME, ORDER, SUFFIX, EXTRA = "coreml", 2, ".mlpackage", "coreml"
PRECISIONS = cm.PRECISIONS
QUANTIZATION = cm.QUANTIZATION


def check_options(precision: str, options: ExportOptions) -> None:
    cm.validate_options(precision, options.compute_units, options.deployment_target)


def convert(job: Any, path: Path, precision: str, options: ExportOptions, quantizer: Quantizer) -> Converted:
    b = options.batch or 1
    example = job.example(b)
    program, findings = check_graph(job.model, tuple(example.values()), "coreml")
    model = cm.convert(program, example, job.output, precision, options.compute_units, options.deployment_target)
    cm.save(model, path)
    del model
    dims: list[int | str] = [b, *job.shape]
    checks = cm.inspect(path)
    cm.check_structure(checks, example, job.output, [b, *job.output_shape], precision)
    checks["graph"] = [f.line() for f in findings]
    inputs = tensor_inputs(job, dims[0], "int32")
    runtime_options = {"compute_units": options.compute_units, "minimum_deployment_target": options.deployment_target,
                       "fixed_batch": b, "format": "mlprogram"}
    return Converted(dims, inputs, checks, runtime_options)


def stepper(path: Path, threads: int | None = None, compute_units: str = "ALL") -> Stepper:
    return CoreMLStepper(path, compute_units)


def parity_unavailable() -> str | None:
    return None if cm.can_predict() else cm.LINUX_REASON


def parity_runtime(step: Stepper) -> str:
    return step.runtime
