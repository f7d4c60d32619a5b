"""ExecuTorch target: ``.pte`` programs lowered to the XNNPACK delegate, one per graph, run in ``executorch.runtime``.

- fp32: ``torch.export`` -> ``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` ->
  ``to_executorch()``. Fixed batch (``--batch``, default 1): XNNPACK's kernels are planned for static shapes.
  Inputs keep the dtypes they were traced with (int64 timesteps and class ids stay int64; ExecuTorch takes them).
  A .pte stores no input names, so the program carries a constant method ``edgekd_inputs`` listing them in the
  graph's declared order; the stepper (edgekd/runtime/steppers.py) feeds them positionally in that order.
- int8: PT2E static quantization (torchao ``prepare_pt2e`` / ``convert_pt2e`` with ExecuTorch's
  ``XNNPACKQuantizer``, per-channel symmetric int8 weights, per-tensor int8 activations) calibrated on the
  quantizer's calibration source (edgekd/compress/calibration.py: the inputs the ONNX int8 path uses), then
  lowered to XNNPACK like fp32. Layers the quantizer finds sensitive stay in float (``_int8``).
- delegation: what the lowered program runs in the delegate vs outside it is counted from the edge program
  itself (``delegation``) and recorded in the manifest's graph entry.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from edgekd.errors import EdgekdError, ParityError
from edgekd.export.graph_check import check_graph
from edgekd.export.targets import Converted, ExportOptions, Quantizer
from edgekd.manifest import DelegationSpec, TensorSpec
from edgekd.runtime.steppers import ET_INPUTS_METHOD, ExecuTorchStepper, Stepper, dist_version

LABEL = "ExecuTorch"  # how messages name it
NAME, ORDER, SUFFIX, EXTRA = "executorch", 3, ".pte", "executorch"
PRECISIONS = ("fp32", "int8")
QUANTIZATION = {
    "int8": "static int8 through PT2E: XNNPACKQuantizer, per-channel symmetric int8 weights and per-tensor int8 "
            "activations calibrated on the quantizer's calibration set; lowered to XNNPACK (layers in "
            "checks.quantization.float_layers kept float)",
}
DELEGATE_OP = "executorch_call_delegate"
_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.int32: "int32",
           torch.uint8: "uint8"}


@contextlib.contextmanager
def _quiet() -> Any:
    """torch.export, exir and torchao warn a lot (deprecations, pytree); keep the command's output readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def check_options(precision: str, options: ExportOptions) -> None:
    """Nothing beyond the precision (the driver checks it) for ExecuTorch."""


def lower(program: torch.export.ExportedProgram, input_names: list[str]) -> Any:
    """The edge program manager of ``program`` with every op XNNPACK takes in its delegate."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with _quiet():
        try:
            return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                               constant_methods={ET_INPUTS_METHOD: list(input_names)})
        except Exception as exc:  # exir raises many types; the user needs the op and the first line
            raise EdgekdError(f"ExecuTorch lowering failed ({type(exc).__name__}: {_first_line(exc)})") from None


def delegation(edge: Any) -> DelegationSpec:
    """Ops of the lowered ``forward`` inside the XNNPACK delegate vs outside it, counted on the edge program.

    A delegated partition is one ``executorch_call_delegate`` node whose lowered module keeps the ops it took
    (``original_module``); everything else the top graph calls runs on ExecuTorch's portable CPU kernels.
    ``getitem`` (unpacking a partition's outputs) is bookkeeping, not an op, and is not counted."""
    import operator
    from collections import Counter

    gm = edge.exported_program().graph_module
    inside: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    partitions = 0
    backends: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if getattr(node.target, "__name__", str(node.target)) == DELEGATE_OP:
            partitions += 1
            lowered = getattr(gm, node.args[0].target)
            backends.add(lowered.backend_id)
            inside.update(_op_name(n.target) for n in lowered.original_module.graph.nodes
                          if n.op == "call_function" and n.target is not operator.getitem)
        else:
            outside[_op_name(node.target)] += 1
    total = sum(inside.values()) + sum(outside.values())
    return DelegationSpec(delegate=", ".join(sorted(backends)) or "none", partitions=partitions,
                          delegated_ops=sum(inside.values()), other_ops=sum(outside.values()),
                          delegated_share=round(sum(inside.values()) / total, 4) if total else 0.0,
                          other=dict(outside.most_common()),
                          counted_from="the lowered edge program: ops inside executorch_call_delegate partitions "
                                       "(their lowered modules' graphs) vs the other call_function nodes")


def _op_name(target: Any) -> str:
    """``<EdgeOpOverload: aten.convolution.default>: schema = ...`` -> ``aten.convolution.default``."""
    text = str(getattr(target, "_op", target))
    return text.split(":")[1].strip().rstrip(">") if text.startswith("<EdgeOpOverload") else text.split(" ")[0]


def write_program(edge: Any, path: Path) -> None:
    """Serialise the lowered program to ``path`` (the driver renames it into place after the gate)."""
    with _quiet():
        try:
            buffer = edge.to_executorch().buffer
        except Exception as exc:
            raise EdgekdError(f"ExecuTorch serialisation failed ({type(exc).__name__}: {_first_line(exc)})") from None
    with open(path, "wb") as fh:
        fh.write(buffer)
        fh.flush()
        os.fsync(fh.fileno())


def inspect(path: Path) -> dict[str, Any]:
    """What the runtime sees in the written file: its methods and forward's input/output shapes and dtypes."""
    from executorch.runtime import Runtime

    from edgekd.runtime.steppers import _ET_DTYPES

    try:
        program = Runtime.get().load_program(str(path))
        meta = program.metadata("forward")
    except RuntimeError as exc:  # a damaged file: the gate's business (exit 3), the export is not kept
        raise ParityError(f"{path.name}: ExecuTorch could not load the written program ({_first_line(exc)}); "
                          "the export was not kept") from None

    def spec(info: Any) -> dict[str, Any]:
        dtype = _ET_DTYPES.get(int(info.dtype()))
        return {"shape": [int(s) for s in info.sizes()], "dtype": _DTYPES.get(dtype, str(info.dtype()))}

    return {"methods": sorted(program.method_names),
            "inputs": [spec(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())],
            "outputs": [spec(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]}


def convert(job: Any, path: Path, precision: str, options: ExportOptions, quantizer: Quantizer) -> Converted:
    b = options.batch or 1
    example = job.example(b)
    args = tuple(example.values())
    program, findings = check_graph(job.model, args, "executorch")
    checks: dict[str, Any] = {"graph": [f.line() for f in findings]}
    if precision == "int8":
        program, checks["quantization"] = _int8(job, example, quantizer, options)
    edge = lower(program, job.inputs)
    delegated = delegation(edge)
    write_program(edge, path)
    del edge
    checks.update(inspect(path))
    expected = [{"shape": list(v.shape), "dtype": _DTYPES.get(v.dtype, str(v.dtype))} for v in example.values()]
    if checks["inputs"] != expected or [o["shape"] for o in checks["outputs"]] != [[b, *job.shape]]:
        raise EdgekdError(f"ExecuTorch program takes {checks['inputs']} -> {checks['outputs']}, expected {expected} "
                          f"-> {[b, *job.shape]}")
    inputs = [TensorSpec(name=name, shape=list(t.shape), dtype=_DTYPES.get(t.dtype, "float32"))  # type: ignore[arg-type]
              for name, t in example.items()]
    runtime_options = {"fixed_batch": b, "method": "forward", "input_order": list(job.inputs),
                       "input_names_method": ET_INPUTS_METHOD, "delegate": "XNNPACK (XnnpackPartitioner)"}
    return Converted([b, *job.shape], inputs, checks, runtime_options, delegated)


def _int8(job: Any, example: dict[str, torch.Tensor], quantizer: Quantizer,
          options: ExportOptions) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    raise EdgekdError("ExecuTorch int8 is not available yet")


def stepper(path: Path, threads: int | None = None, compute_units: str = "ALL") -> Stepper:
    return ExecuTorchStepper(path, threads)


def parity_unavailable() -> str | None:
    return None


def parity_runtime(step: Stepper) -> str:
    return f"executorch {dist_version('executorch')} (executorch.runtime, XNNPACK)"
