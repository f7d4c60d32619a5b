"""Optional backends: check they are installed before a long job starts, and name the pip extra that brings them.

A user who installed plain ``edgekd`` and asks for a TFLite export or pruning gets one line with the fix instead
of an ImportError from deep inside a converter.
"""

from __future__ import annotations

import importlib.util

from edgekd.errors import EdgekdError

# what each job needs: (importable module, pip distribution) and the edgekd extra that installs them
NEEDS: dict[str, tuple[list[tuple[str, str]], str]] = {
    "onnx": ([("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("onnxscript", "onnxscript")], "onnx"),
    "tflite": ([("litert_torch", "litert-torch"), ("ai_edge_litert", "ai-edge-litert")], "tflite"),
    "tflite-int8": ([("ai_edge_quantizer", "ai-edge-quantizer")], "tflite"),
    "coreml": ([("coremltools", "coremltools")], "coreml"),
    "executorch": ([("executorch", "executorch")], "executorch"),
    "coreml-palettize": ([("sklearn", "scikit-learn")], "coreml"),
    "prune": ([("torch_pruning", "torch-pruning")], "compress"),
    "onnx-int8": ([("nncf", "nncf")], "compress"),
}


def require(job: str, what: str) -> None:
    """Raise one EdgekdError naming every missing package of ``job`` and the install command."""
    modules, extra = NEEDS[job]
    missing = [dist for module, dist in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise EdgekdError(f"{what} needs {', '.join(missing)}, which is not installed: "
                          f"pip install 'edgekd[{extra}]' (or bash scripts/setup.sh, which installs every backend)")


def require_export(target: str, precision: str) -> None:
    """The backends an ``edgekd export --target T --precision P`` uses (ONNX is also the parity runtime)."""
    what = f"export to {target} ({precision})"
    require(target, what)
    if target == "tflite" and precision.startswith("int8"):
        require("tflite-int8", what)
    if target == "coreml" and precision.startswith("palettize"):
        require("coreml-palettize", what)
    if target == "onnx" and precision == "int8":
        require("onnx-int8", what)
