"""ONNX export through torch.onnx (dynamo exporter by default; TorchScript exporter as a faster fallback)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models.spec import EpsilonStep

# fp16/int8 are made from the fp32 file by edgekd.compress.quantize (docs/quantization.md); an int8 manifest
# replaces this line with one naming its calibration set and the layers kept in fp32
QUANTIZATION = {
    "int8": "static int8 QDQ (QuantizeLinear/DequantizeLinear pairs), NNCF post-training quantization",
    "fp16": "fp16 weights and compute, fp32 inputs/outputs (onnxruntime.transformers.float16, keep_io_types)",
}


# one denoising step (sample, int64 timestep [B]) -> epsilon: the graph of the teacher step and of every O2MKD
# student, defined once with the model contract (edgekd/models/spec.py)
TeacherStep = EpsilonStep


def export_onnx(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
                output_name: str, dynamic_batch: bool = True, exporter: str = "dynamo") -> Path:
    """Export ``model`` to ``path``; batch is dynamic unless ``dynamic_batch`` is False."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                dyn = None
                if dynamic_batch:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    dyn = tuple({0: batch} for _ in input_names)  # positional: graph input names need not
                    # be the forward's parameter names (a student's condition input is named class_labels)
                torch.onnx.export(model, example, str(path), dynamo=True, input_names=input_names,
                                  output_names=[output_name], dynamic_shapes=dyn, verbose=False,
                                  external_data=False)
            else:
                axes = {n: {0: "batch"} for n in [*input_names, output_name]} if dynamic_batch else None
                torch.onnx.export(model, example, str(path), dynamo=False, input_names=input_names,
                                  output_names=[output_name], dynamic_axes=axes, opset_version=17)
        except Exception as exc:  # the exporters raise many types; the user needs the op and the fix
            raise EdgekdError(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
                              "try --exporter torchscript") from None
    return path
