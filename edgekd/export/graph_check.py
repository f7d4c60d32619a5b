"""Look at the graph before converting: ops a target cannot take (or should not be given) stop the export early.

The graph is the one every converter sees: ``torch.export`` of the model in eval mode. Each finding names the
aten op, the layer it sits in (module path and class) and the source line, so the user knows what to change.

What is refused, and why, was decided from what actually converts here (litert-torch 0.10, coremltools 9.0,
torch.onnx dynamo; see docs/export.md):

- random ops (``randn``, ``randn_like``, ``rand``, ``bernoulli``, ``normal``, dropout in train mode, ...) on every
  target: litert-torch has no lowering for them (``Lowering not found: aten.randn_like``), and where a converter
  does take them (ONNX RandomNormal, CoreML random_normal) the output differs from PyTorch on every call, so the
  parity gate means nothing and the app would get different images for the same noise. Noise is an input.
- ops whose output shape depends on the data (``nonzero``, ``masked_select``, ``unique``): TFLite and CoreML
  models here have fixed shapes.

GroupNorm and attention (``scaled_dot_product_attention``) convert on all three targets here (TFLite lowers
GroupNorm to MEAN/RSQRT/MUL and the LiteRT GPU-compatibility analyzer accepts it; CoreML lowers it to
reduce_mean/batch_norm and attention to matmul/softmax), so they are reported as notes, not rewritten.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgekdError

RANDOM_OPS = {
    "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "normal", "bernoulli",
    "multinomial", "uniform", "exponential", "poisson", "native_dropout", "dropout", "rrelu_with_noise",
    "random", "cauchy", "geometric", "log_normal", "feature_dropout", "alpha_dropout",
}
DATA_DEPENDENT_SHAPE_OPS = {"nonzero", "masked_select", "unique", "_unique2", "unique_consecutive", "nonzero_static"}
NOTE_OPS = {
    "group_norm": "GroupNorm converts on onnx (InstanceNormalization), tflite (MEAN/RSQRT) and coreml "
                  "(reduce_mean/batch_norm); kept as is",
    "native_group_norm": "GroupNorm (see group_norm)",
    "scaled_dot_product_attention": "attention converts on onnx, tflite and coreml (matmul + softmax); kept as is",
    "_softmax": "softmax converts on every target; kept as is",
    "softmax": "softmax converts on every target; kept as is",
}


@dataclass
class Finding:
    op: str  # the aten op, e.g. "aten.randn_like.default"
    layer: str  # module path and class, e.g. "unet.mid_block (UNetMidBlock2D)"
    source: str  # the line of Python that made it, when known
    action: str  # "stop" or "note"
    why: str

    def line(self) -> str:
        where = f" in layer {self.layer}" if self.layer else ""
        src = f" ({self.source})" if self.source else ""
        return f"{self.op}{where}{src}: {self.why}"


def _op_base(target: Any) -> str:
    """``aten.randn_like.default`` -> ``randn_like``; in-place ``uniform_`` -> ``uniform``."""
    name = getattr(target, "_opname", None) or str(target).split(".")[-2 if str(target).count(".") >= 2 else -1]
    return name.rstrip("_")


def _dropout_active(node: torch.fx.Node) -> bool:
    """``aten.dropout(x, p, train)``: random only in training mode with p > 0."""
    args = list(node.args) + [None] * 3
    p = node.kwargs.get("p", args[1])
    train = node.kwargs.get("train", args[2])
    return bool(train) and (p is None or float(p) > 0)


def _layer(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, cls = list(stack.values())[-1]
    cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    return f"{path or '<top>'} ({cls_name.split('.')[-1]})"


def _source(node: torch.fx.Node) -> str:
    trace = (node.meta.get("stack_trace") or "").strip().splitlines()
    files = [t.strip() for t in trace if t.strip().startswith("File ")]
    own = [f for f in files if "/torch/" not in f]  # the model's own line, not torch.nn's forward
    return (own or files or [""])[-1]


def export_graph(model: nn.Module, example: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """``torch.export`` in eval mode, as the converters do; a model that cannot be exported is one clear error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(model.eval(), example)
        except Exception as exc:  # torch.export raises many types; the user needs the first line
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise EdgekdError(f"torch.export could not capture the model's graph ({type(exc).__name__}: {first})") from None


def check_program(program: torch.export.ExportedProgram, target: str) -> list[Finding]:
    """Scan an exported program for ``target``; returns every finding (stops and notes)."""
    findings: list[Finding] = []
    seen_notes: set[str] = set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        base = _op_base(node.target)
        op = str(node.target)
        if base in ("dropout", "native_dropout", "feature_dropout", "alpha_dropout") and not _dropout_active(node):
            continue  # eval-mode dropout is the identity
        if base in RANDOM_OPS:
            findings.append(Finding(op, _layer(node), _source(node), "stop",
                                    f"random op: {target} export needs a deterministic graph (pass noise as an input; "
                                    "litert-torch has no lowering for it and parity against PyTorch is meaningless)"))
        elif base in DATA_DEPENDENT_SHAPE_OPS:
            findings.append(Finding(op, _layer(node), _source(node), "stop",
                                    f"output shape depends on the data; {target} models here have fixed shapes"))
        elif base in NOTE_OPS and base not in seen_notes:
            seen_notes.add(base)
            findings.append(Finding(op, _layer(node), _source(node), "note", NOTE_OPS[base]))
    return findings


def op_counts(program: torch.export.ExportedProgram) -> dict[str, int]:
    return dict(Counter(str(n.target) for n in program.graph.nodes if n.op == "call_function").most_common())


def check_graph(model: nn.Module, example: tuple[torch.Tensor, ...], target: str,
                program: torch.export.ExportedProgram | None = None) -> tuple[torch.export.ExportedProgram, list[Finding]]:
    """Export (unless ``program`` is given) and check; raises EdgekdError naming the first offending op and layer.
    ``target`` only names the target in messages (the driver has checked it is a known plug-in)."""
    program = program if program is not None else export_graph(model, example)
    findings = check_program(program, target)
    stops = [f for f in findings if f.action == "stop"]
    if stops:
        more = f" (and {len(stops) - 1} more)" if len(stops) > 1 else ""
        raise EdgekdError(f"cannot export to {target}: {stops[0].line()}{more}")
    return program, findings
