"""CoreML export through coremltools: an ML program (.mlpackage) from torch.export.

- Converted from ``torch.export(...).run_decompositions({})`` (the jit.trace path fails on diffusers' UNet2DModel
  with an ``int`` op; shared/STACK.md). fp32 / fp16 through ``compute_precision``; int8 = fp16 compute with
  ``ct.optimize.coreml.linear_quantize_weights`` (int8 symmetric, per channel) on every weight. palettize4/6/8 =
  fp16 compute with ``ct.optimize.coreml.palettize_weights`` (k-means look-up tables of 2^bits fp16 values per
  weight tensor, needs scikit-learn; iOS16+/macOS13+), every weight.
- Inputs are typed: float32 ``noise`` / ``sample`` and int32 ``timestep`` (CoreML has no int64 input); the output
  is typed float32 so an fp16 model still returns float32 (with iOS17 + fp16 it would otherwise be FLOAT16).
- Linux cannot run CoreML models (``Model prediction is only supported on macOS``): here the export is checked
  structurally (spec input/output names, shapes, dtypes; the op list; the weight dtypes) and the manifest says that
  numerical parity was not run and why. On macOS the caller runs the parity gate with ``MLModel.predict``.
"""

from __future__ import annotations

import contextlib
import io
import platform
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.errors import EdgekdError

PALETTIZE = {"palettize4": 4, "palettize6": 6, "palettize8": 8}
PRECISIONS = ("fp32", "fp16", "int8", *PALETTIZE)
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")
QUANTIZATION = {
    "fp16": "fp16 weights and compute (coremltools compute_precision=FLOAT16)",
    "int8": "int8 weights, linear symmetric per channel (ct.optimize.coreml.linear_quantize_weights), fp16 compute",
    **{name: f"{bits}-bit palettized weights: a k-means look-up table of {2 ** bits} fp16 values per weight tensor "
             f"(ct.optimize.coreml.palettize_weights), fp16 compute" for name, bits in PALETTIZE.items()},
}
WEIGHT_DTYPE = {"fp32": "FLOAT32", "fp16": "FLOAT16", "int8": "INT8", **{n: f"LUT{b}" for n, b in PALETTIZE.items()}}
LINUX_REASON = ("CoreML models can only be run on macOS (coremltools: 'Model prediction is only supported on macOS'); "
                "checked structurally here: spec inputs/outputs, op list, weight dtypes")


def can_predict() -> bool:
    return platform.system() == "Darwin"


@contextlib.contextmanager
def _quiet() -> Any:
    """coremltools draws progress bars and warns about untested torch/scikit-learn versions."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def import_coremltools() -> Any:
    with _quiet():
        import coremltools as ct
    return ct


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def validate_options(precision: str, compute_units: str, deployment_target: str) -> None:
    if precision not in PRECISIONS:
        raise EdgekdError(f"precision '{precision}' is not supported for target coreml (available: {', '.join(PRECISIONS)})")
    if compute_units not in COMPUTE_UNITS:
        raise EdgekdError(f"unknown CoreML compute units '{compute_units}' (available: {', '.join(COMPUTE_UNITS)})")
    if deployment_target not in DEPLOYMENT_TARGETS:
        raise EdgekdError(f"unknown CoreML deployment target '{deployment_target}' (available: {', '.join(DEPLOYMENT_TARGETS)})")


def _drop_aliases(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """aten.alias (a view that is the tensor itself; CLIP's text encoder and diffusers' attention emit it) has no
    CoreML converter: every use reads the aliased tensor instead."""
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (torch.ops.aten.alias.default, torch.ops.aten.alias_copy.default):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def convert(program: torch.export.ExportedProgram, inputs: dict[str, torch.Tensor], output_name: str,
            precision: str = "fp32", compute_units: str = "ALL", deployment_target: str = "iOS17") -> Any:
    """An ``ExportedProgram`` -> a ``ct.models.MLModel`` (ML program) at ``precision``."""
    validate_options(precision, compute_units, deployment_target)
    ct = import_coremltools()
    types = [ct.TensorType(name=name, shape=tuple(t.shape), dtype=np.int32 if not t.is_floating_point() else np.float32)
             for name, t in inputs.items()]
    with _quiet():
        try:
            program = _drop_aliases(program.run_decompositions({}))
            model = ct.convert(program, inputs=types, outputs=[ct.TensorType(name=output_name, dtype=np.float32)],
                               convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, deployment_target),
                               compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
                               compute_units=getattr(ct.ComputeUnit, compute_units), skip_model_load=not can_predict())
            if precision == "int8":
                config = ct.optimize.coreml.OptimizationConfig(global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
                    mode="linear_symmetric", dtype="int8", weight_threshold=0))
                model = ct.optimize.coreml.linear_quantize_weights(model, config)
            elif precision in PALETTIZE:
                config = ct.optimize.coreml.OptimizationConfig(global_config=ct.optimize.coreml.OpPalettizerConfig(
                    mode="kmeans", nbits=PALETTIZE[precision], weight_threshold=0))
                model = ct.optimize.coreml.palettize_weights(model, config)
        except Exception as exc:  # coremltools raises many types; name the op when it says one
            raise EdgekdError(f"CoreML conversion failed ({type(exc).__name__}: {_first_line(exc)})") from None
    return model


def _array_type(feature: Any) -> tuple[str, list[int]]:
    from coremltools.proto import FeatureTypes_pb2 as ft

    arr = feature.type.multiArrayType
    return ft.ArrayFeatureType.ArrayDataType.Name(arr.dataType), [int(s) for s in arr.shape]


def inspect(path: Path) -> dict[str, Any]:
    """Read the saved .mlpackage back without loading it (works on Linux): I/O, op list, weight dtypes."""
    ct = import_coremltools()
    from coremltools.proto import MIL_pb2

    with _quiet():
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise EdgekdError(f"{path} is not a CoreML ML program")
    ins = {}
    for f in spec.description.input:
        dtype, shape = _array_type(f)
        ins[f.name] = {"shape": shape, "dtype": dtype}
    outs = {}
    for f in spec.description.output:
        dtype, shape = _array_type(f)
        outs[f.name] = {"shape": shape, "dtype": dtype}
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    ops: Counter[str] = Counter()
    weights: Counter[str] = Counter()
    for op in block.operations:
        ops[op.type] += 1
        if op.type == "constexpr_lut_to_dense":  # palettized: record the table size, LUT<bits>
            lut = op.attributes["lut"].type.tensorType if "lut" in op.attributes else None
            if lut is not None and lut.dimensions:
                entries = int(lut.dimensions[-1].constant.size if lut.rank == 1 else lut.dimensions[-2].constant.size)
                weights[f"LUT{max(1, entries - 1).bit_length()}"] += 1
                continue
        if op.type == "const" or op.type.startswith("constexpr_"):
            for key, value in op.attributes.items():
                if value.type.WhichOneof("type") != "tensorType":
                    continue
                tt = value.type.tensorType
                # weights: rank >= 2 tensors (conv 4-D, linear 2-D); for quantized ones, the stored integer data
                if tt.rank >= 2 and (op.type == "const" and key == "val" or key in ("quantized_data", "data")):
                    weights[MIL_pb2.DataType.Name(tt.dataType)] += 1
    return {"spec_version": int(spec.specificationVersion), "opset": fn.opset, "inputs": ins, "outputs": outs,
            "ops": {k: v for k, v in ops.most_common() if k != "const"}, "weight_dtypes": dict(weights)}


def check_structure(info: dict[str, Any], inputs: dict[str, torch.Tensor], output_name: str, output_shape: list[int],
                    precision: str) -> None:
    """Fail (the export is not kept) when the spec does not say what the manifest will promise."""
    expected_in = {name: {"shape": list(t.shape), "dtype": "FLOAT32" if t.is_floating_point() else "INT32"}
                   for name, t in inputs.items()}
    if info["inputs"] != expected_in:
        raise EdgekdError(f"CoreML inputs are {info['inputs']}, expected {expected_in}")
    expected_out = {output_name: {"shape": output_shape, "dtype": "FLOAT32"}}
    if info["outputs"] != expected_out:
        raise EdgekdError(f"CoreML outputs are {info['outputs']}, expected {expected_out}")
    want = WEIGHT_DTYPE[precision]
    if not info["weight_dtypes"] or set(info["weight_dtypes"]) != {want}:
        raise EdgekdError(f"CoreML weights are {info['weight_dtypes'] or 'missing'}, expected all {want} for --precision {precision}")
    if not info["ops"]:
        raise EdgekdError("CoreML program has no operations")


def save(model: Any, path: Path) -> None:
    with _quiet():
        try:
            model.save(str(path))
        except Exception as exc:
            raise EdgekdError(f"could not write {path} ({type(exc).__name__}: {_first_line(exc)})") from None
