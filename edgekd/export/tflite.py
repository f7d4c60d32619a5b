"""TFLite (LiteRT) export through litert-torch, with no TensorFlow; int8/fp16 through ai-edge-quantizer.

- fp32: ``litert_torch.convert`` (torch.export -> StableHLO -> TFLite flatbuffer). Fixed batch, NCHW I/O as in
  PyTorch, input/output names from the signature (``serving_default``). int64 inputs (the teacher's timestep)
  become int32: LiteRT runtimes and accelerators do not take 64-bit tensors.
- int8: dynamic-range quantization of the fp32 flatbuffer with ai-edge-quantizer's ``dynamic_wi8_afp32`` recipe
  (int8 channel-wise weights, activations quantized on the fly by the kernels). Static int8 through PT2E fails in
  litert-torch 0.10 ('tfl.pad' same-scale constraint).
- int8_static: ai-edge-quantizer's ``static_wi8_ai8`` (int8 weights and activations, ranges calibrated on
  edgekd.compress.calibration inputs) with float32 model inputs/outputs. ai-edge-quantizer's static recipes quantize
  the signature itself by default (an int8 ``noise`` input): fed float32 that gives garbage, which is what
  shared/STACK.md recorded for ``static_wi8_ai16``; the INPUT/OUTPUT ops are therefore left unquantized here.
- fp16: fp16 weights of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV through ai-edge-quantizer's
  FLOAT_CASTING algorithm, compute in float (litert-torch itself has no fp16 conversion option).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.errors import EdgekdError

PRECISIONS = ("fp32", "fp16", "int8", "int8_static")
QUANTIZATION = {
    "int8": "dynamic-range int8: int8 channel-wise weights, float32 activations quantized at run time "
            "(ai-edge-quantizer dynamic_wi8_afp32)",
    "int8_static": "static int8: int8 channel-wise weights and int8 activations with ranges calibrated ahead of time "
                   "(ai-edge-quantizer static_wi8_ai8); float32 model inputs/outputs (QUANTIZE/DEQUANTIZE at the edges) "
                   "and a float timestep embedding",
    "fp16": "fp16 weights of CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED/TRANSPOSE_CONV, float32 compute "
            "(ai-edge-quantizer FLOAT_CASTING)",
}


class NamedOutput(nn.Module):
    """Wrap a module so the TFLite signature names its output (``image`` / ``epsilon``) instead of ``output_0``."""

    def __init__(self, module: nn.Module, output_name: str):
        super().__init__()
        self.module, self.output_name = module, output_name

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
        # keyword inputs (the signature's names) go in positionally, in their declared order: a graph input's
        # name (class_labels, encoder_hidden_states) need not be the module's parameter name
        return {self.output_name: self.module(*args, *kwargs.values())}


@contextlib.contextmanager
def _quiet() -> Any:
    """litert-torch prints a progress tree and both libraries warn a lot; keep the command's output readable."""
    import litert_torch

    previous = litert_torch.config.show_progress
    litert_torch.config.show_progress = False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        litert_torch.config.show_progress = previous


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:300] if text else type(exc).__name__)


def convert_fp32(model: nn.Module, example: dict[str, torch.Tensor], output_name: str) -> bytes:
    """The fp32 flatbuffer of ``model`` traced with keyword inputs ``example`` (their names become the signature's)."""
    import litert_torch

    with _quiet():
        try:
            edge = litert_torch.convert(NamedOutput(model.eval(), output_name).eval(), sample_kwargs=example)
            return bytes(edge.model_content())
        except Exception as exc:  # the converter raises many types; name the op when it says one
            msg = _first_line(exc)
            op = re.search(r"(aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)", str(exc))
            hint = f" (op {op.group(1)})" if op else ""
            raise EdgekdError(f"TFLite conversion failed{hint}: {type(exc).__name__}: {msg}") from None


# tensor names litert-torch gives diffusers' timestep projection and embedding (module paths)
TIME_EMBEDDING = ".*(time_proj|time_embedding).*"


def _signature_dtypes(flatbuffer: bytes) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=flatbuffer, num_threads=1).get_signature_runner()
    return {name: d["dtype"] for name, d in runner.get_input_details().items()}


def quantize(flatbuffer: bytes, precision: str, calibration: list[dict[str, Any]] | None = None) -> bytes:
    """fp32 flatbuffer -> int8 dynamic-range, static int8 (needs ``calibration``: signature inputs, one dict per
    call at the model's batch) or fp16-weight flatbuffer (ai-edge-quantizer)."""
    if precision == "fp32":
        return flatbuffer
    from ai_edge_quantizer import qtyping, quantizer, recipe

    if precision == "int8_static" and not calibration:
        raise EdgekdError("TFLite int8_static needs calibration inputs")
    with _quiet():
        try:
            if precision == "int8":
                q = quantizer.Quantizer(flatbuffer, recipe.dynamic_wi8_afp32())
            elif precision == "int8_static":
                # the model keeps float32 inputs/outputs: without this the signature itself becomes int8 and a
                # caller feeding float32 gets garbage (what shared/STACK.md saw as "static_wi8_ai16 garbage")
                q = quantizer.Quantizer(flatbuffer, recipe.static_wi8_ai8())
                for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                    q.update_quantization_recipe(regex=".*", operation_name=op,
                                                 algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
                # the sinusoidal timestep embedding stays float: t * freq spans 0..~1000 and int8 loses its phase
                # (a teacher step fell from 14.8 to 7.3 dB through DDIM-10 with it quantized)
                q.update_quantization_recipe(regex=TIME_EMBEDDING, operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                             algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
                dtypes = _signature_dtypes(flatbuffer)  # e.g. the int64 timestep is int32 in the signature
                feeds = [{k: np.asarray(v, dtype=dtypes.get(k, np.float32)) for k, v in item.items()}
                         for item in calibration or []]
                calibrated = q.calibrate({"serving_default": feeds}, num_threads=1)
            elif precision == "fp16":
                q = quantizer.Quantizer(flatbuffer)
                config = qtyping.OpQuantizationConfig(
                    weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                    compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True)
                for op in (qtyping.TFLOperationName.CONV_2D, qtyping.TFLOperationName.DEPTHWISE_CONV_2D,
                           qtyping.TFLOperationName.FULLY_CONNECTED, qtyping.TFLOperationName.CONV_2D_TRANSPOSE):
                    q.update_quantization_recipe(regex=".*", operation_name=op, op_config=config,
                                                 algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING)
            else:
                raise EdgekdError(f"precision '{precision}' is not supported for target tflite (available: {', '.join(PRECISIONS)})")
            result = q.quantize(calibrated if precision == "int8_static" else None, enable_progress_bar=False,
                                enable_progress_report=False)
        except EdgekdError:
            raise
        except Exception as exc:
            raise EdgekdError(f"TFLite {precision} quantization failed (ai-edge-quantizer: {type(exc).__name__}: "
                              f"{_first_line(exc)})") from None
    return bytes(result.quantized_model)


def inspect(path: Path) -> dict[str, Any]:
    """What the runtime sees: signature I/O, op histogram, XNNPACK partitions, LiteRT's GPU-compatibility verdict."""
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer
    except ImportError:
        analyzer = None

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    runner = interp.get_signature_runner()
    ins = {k: {"shape": [int(s) for s in d["shape"]], "dtype": d["dtype"].__name__} for k, d in runner.get_input_details().items()}
    outs = {k: {"shape": [int(s) for s in d["shape"]], "dtype": d["dtype"].__name__} for k, d in runner.get_output_details().items()}
    # the op list and the analyzer are private/undocumented APIs of ai-edge-litert: informative, never fatal
    try:
        ops = Counter(op["op_name"] for op in interp._get_ops_details())
    except Exception:
        ops = Counter()
    delegates = ops.pop("DELEGATE", 0)
    try:
        with _quiet():
            report = analyzer.ModelAnalyzer(str(path), True, True)
        gpu_lines = [ln.strip() for ln in report.splitlines() if "GPU COMPATIBILITY WARNING" in ln or "Not supported op" in ln]
        gpu_ok: bool | None = "looks compatible with GPU delegate" in report
    except Exception as exc:
        gpu_lines, gpu_ok = [f"analyzer unavailable: {_first_line(exc)}"], None
    return {"signature": "serving_default", "inputs": ins, "outputs": outs, "ops": dict(ops.most_common()),
            "xnnpack_partitions": int(delegates), "gpu_delegate_compatible": gpu_ok,
            "gpu_delegate_warnings": gpu_lines[:20]}


def export_tflite(model: nn.Module, example: dict[str, torch.Tensor], path: Path, output_name: str,
                  precision: str = "fp32", calibration: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``model`` as a .tflite at ``path`` (which the caller renames into place); returns its checks."""
    if precision not in PRECISIONS:
        raise EdgekdError(f"precision '{precision}' is not supported for target tflite (available: {', '.join(PRECISIONS)})")
    flatbuffer = quantize(convert_fp32(model, example, output_name), precision, calibration)
    with open(path, "wb") as fh:
        fh.write(flatbuffer)
        fh.flush()
        os.fsync(fh.fileno())
    checks = inspect(path)
    expected = {name: list(t.shape) for name, t in example.items()}
    got = {name: spec["shape"] for name, spec in checks["inputs"].items()}
    if got != expected or list(checks["outputs"]) != [output_name]:
        raise EdgekdError(f"TFLite signature is {got} -> {list(checks['outputs'])}, expected {expected} -> [{output_name!r}]")
    return checks
