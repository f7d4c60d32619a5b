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
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from edgekd.errors import EdgekdError, ParityError
from edgekd.export.graph_check import check_graph
from edgekd.export.targets import Converted, ExportOptions, Quantizer, tensor_inputs
from edgekd.manifest import DelegationSpec
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
    out_shape = [b, *getattr(job, "output_shape", job.shape)]
    if checks["inputs"] != expected or [o["shape"] for o in checks["outputs"]] != [out_shape]:
        raise EdgekdError(f"ExecuTorch program takes {checks['inputs']} -> {checks['outputs']}, expected {expected} "
                          f"-> {out_shape}")
    inputs = tensor_inputs(job, b, "int64")  # ExecuTorch takes int64 (timesteps, class and token ids) as traced
    runtime_options = {"fixed_batch": b, "method": "forward", "input_order": list(job.inputs),
                       "input_names_method": ET_INPUTS_METHOD, "delegate": "XNNPACK (XnnpackPartitioner)"}
    return Converted([b, *job.shape], inputs, checks, runtime_options, delegated)


# the quantizer's bar when it names none (compress.quantize.psnr_min's default: docs/quantization.md)
INT8_TARGET_PSNR = 35.0
HELDOUT_EVERY = 4  # every 4th calibration feed is held out: drawn like the others, never fitted to


def _layers(model: torch.nn.Module) -> list[str]:
    """Module paths of the layers PT2E quantizes with weights (convs and linears), in definition order."""
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    return [name for name, m in model.named_modules() if isinstance(m, kinds)]


# the timestep embedding's modules (diffusers' Timesteps / TimestepEmbedding and their usual attribute names)
TIME_EMBEDDING_CLASSES = ("Timesteps", "TimestepEmbedding", "GaussianFourierProjection")
TIME_EMBEDDING_NAMES = ("time_proj", "time_embedding")


def _always_float(model: torch.nn.Module) -> list[str]:
    """Where every int8 start keeps float: the timestep embedding, and the first and the last conv.

    - the sinusoidal embedding computes t * freq over 0..~1000 and sin/cos of it: an int8 product loses the phase
      (measured on the quickstart-size student: 12.6 dB with it int8, 40.6 dB with it float; LiteRT's int8_static
      keeps it float for the same reason, edgekd/export/tflite.py);
    - the first conv sees the raw 1-3 channel input and the last conv writes the image: few weights, the whole
      output range (44.3 dB with both float on the same student)."""
    floats = [name for name, m in model.named_modules() if name and (type(m).__name__ in TIME_EMBEDDING_CLASSES
              or name.rsplit(".", 1)[-1] in TIME_EMBEDDING_NAMES)]
    convs = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return list(dict.fromkeys(floats + convs[:1] + convs[-1:]))


def _module_paths(node: torch.fx.Node) -> list[str]:
    return [str(v[0]) for v in (node.meta.get("nn_module_stack") or {}).values()]


def _pt2e(captured: torch.fx.GraphModule, calibration: list[tuple[torch.Tensor, ...]],
          keep_float: list[str]) -> torch.fx.GraphModule:
    """PT2E static int8 of ``captured`` (``torch.export(model).module()``, copied: prepare_pt2e rewrites it):
    XNNPACKQuantizer (per-channel symmetric int8 weights, per-tensor int8 activations) on every node outside the
    modules ``keep_float``, ranges observed on ``calibration``."""
    import copy

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    floats = tuple(keep_float)

    def quantize_node(node: torch.fx.Node) -> bool:
        return not any(p == f or p.startswith(f + ".") for p in _module_paths(node) for f in floats)

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(quantize_node)
    with _quiet(), torch.no_grad():
        prepared = prepare_pt2e(copy.deepcopy(captured), quantizer)
        for feed in calibration:
            prepared(*feed)
        return convert_pt2e(prepared)


def _psnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    """edgekd's PSNR convention (peak-to-peak 2, images in [-1, 1]; for epsilon a relative measure)."""
    mse = float(((ref.double() - out.double()) ** 2).mean())
    if not math.isfinite(mse):
        return -999.0
    return 999.0 if mse == 0 else min(999.0, 10.0 * math.log10(4.0 / mse))


def _int8(job: Any, example: dict[str, torch.Tensor], quantizer: Quantizer,
          options: ExportOptions) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    """The PT2E int8 program of ``job``'s graph, with the fewest float layers that clear the bar.

    Calibration: the quantizer's calibration source (edgekd/compress/calibration.py: noise for a one-step
    student; x_t across the timesteps a step graph owns), every ``HELDOUT_EVERY``-th feed held out to judge on.
    Judge: the output PSNR against the fp32 graph on the held-out feeds, in torch on the converted (simulated
    int8) module, against ``--psnr-min`` or the quantizer's ``psnr_min`` (35 dB). The timestep embedding and the
    first and last conv start in float (``_always_float``); while the bar is not met, the sensitivity of each remaining layer (the PSNR with only it
    int8) ranks them and the most sensitive are kept in float, their number found by doubling then bisection
    (as the ONNX path does: edgekd/compress/sensitivity.py). Where no mix clears the bar, the best one is kept and
    the checks say so; the export's parity gate then decides."""
    b = len(next(iter(example.values())))
    feeds, described = quantizer.calibration(job, b, {k: v.numpy().dtype for k, v in example.items()})
    order = list(example)
    tensors = [tuple(torch.from_numpy(f[k]).to(example[k].dtype) for k in order) for f in feeds]
    held = tensors[HELDOUT_EVERY - 1 :: HELDOUT_EVERY]
    calibration = [t for i, t in enumerate(tensors) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    if not held or not calibration:
        raise EdgekdError(f"ExecuTorch int8 needs at least {HELDOUT_EVERY} calibration inputs (got {len(tensors)}); "
                          "raise compress.quantize.calibration_samples")
    cfg = getattr(quantizer, "config", None)
    bar = options.psnr_min if options.psnr_min is not None else float(
        getattr(cfg(job), "psnr_min", INT8_TARGET_PSNR) if callable(cfg) else INT8_TARGET_PSNR)
    model, args = job.model.eval(), tuple(example.values())
    with torch.no_grad():
        reference = torch.cat([model(*h).float() for h in held])
    tried: dict[tuple[str, ...], tuple[float, Any]] = {}
    layers = _layers(model)
    with _quiet():
        captured = torch.export.export(model, args).module()  # captured once; each attempt quantizes a copy

    def attempt(floats: list[str]) -> float:
        key = tuple(sorted(floats))
        if key not in tried:
            converted = _pt2e(captured, calibration, floats)
            with torch.no_grad():
                out = torch.cat([converted(*h).float() for h in held])
            tried[key] = (_psnr(reference, out), converted)
        return tried[key][0]

    start = _always_float(model)
    curve = [{"float_layers": len(start), "psnr": round(attempt(start), 2)}]
    chosen, sensitivity = start, {}
    if tried[tuple(sorted(start))][0] < bar:
        rest = [n for n in layers if not any(n == f or n.startswith(f + ".") for f in start)]
        for name in rest:  # only ``name`` int8, everything else float
            sensitivity[name] = round(attempt([n for n in layers if n != name]), 2)
        ranked = sorted(rest, key=lambda n: sensitivity[n])  # most sensitive first

        def passes(k: int) -> bool:
            value = attempt(start + ranked[:k])
            curve.append({"float_layers": len(start) + k, "psnr": round(value, 2)})
            return value >= bar

        lo, hi = 0, 1  # lo fails; double hi until it passes (or every layer is float), then bisect
        while True:
            hi = min(hi, len(ranked))
            if passes(hi):
                break
            lo = hi
            if hi == len(ranked):
                break
            hi *= 2
        if tried[tuple(sorted(start + ranked[:hi]))][0] >= bar:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if passes(mid) else (mid, hi)
            chosen = start + ranked[:hi]
        else:  # nothing clears the bar: the best mix tried
            chosen = list(max(tried, key=lambda k: tried[k][0]))
    value, converted = tried[tuple(sorted(chosen))]
    with _quiet():
        program = torch.export.export(converted, args)
    checks = {"method": "PT2E static int8, XNNPACKQuantizer per-channel symmetric", "calibration": described,
              "heldout_inputs": len(held), "calibration_inputs": len(calibration), "psnr_min": bar,
              "psnr_heldout": round(value, 2), "reached": value >= bar, "layers": len(layers),
              "float_layers": sorted(chosen), "curve": sorted(curve, key=lambda c: c["float_layers"]),
              "sensitivity_only_this_int8": sensitivity,
              "judged_by": f"output PSNR vs fp32 on {len(held)} held-out calibration inputs (torch, simulated int8)"}
    return program, checks


def stepper(path: Path, threads: int | None = None, compute_units: str = "ALL") -> Stepper:
    return ExecuTorchStepper(path, threads)


def parity_unavailable() -> str | None:
    return None


def parity_runtime(step: Stepper) -> str:
    return f"executorch {dist_version('executorch')} (executorch.runtime, XNNPACK)"
