"""``edgekd doctor``: what this machine can do for edgekd (Python, torch, backends, GPU, data, assets)."""

from __future__ import annotations

import importlib
import platform
import sys

from edgekd.paths import ASSETS, DEFAULT_FASHION_MNIST

BACKENDS = [
    ("torch", "torch", "required"),
    ("diffusers", "diffusers", "required"),
    ("torchmetrics", "torchmetrics", "required (FID)"),
    ("onnx", "onnx", "ONNX export (pip install 'edgekd[onnx]')"),
    ("onnxruntime", "onnxruntime", "ONNX parity and profiling"),
    ("onnxscript", "onnxscript", "torch.onnx dynamo exporter"),
    ("litert-torch", "litert_torch", "TFLite export (pip install 'edgekd[tflite]')"),
    ("ai-edge-litert", "ai_edge_litert", "TFLite runtime (LiteRT interpreter)"),
    ("coremltools", "coremltools", "CoreML export (pip install 'edgekd[coreml]')"),
    ("executorch", "executorch", "ExecuTorch export and runtime (pip install 'edgekd[executorch]')"),
    ("nncf", "nncf", "INT8 quantization (pip install 'edgekd[compress]')"),
    ("torch-pruning", "torch_pruning", "structured pruning"),
]


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # a broken install must not stop the report
        return None
    return str(getattr(mod, "__version__", "installed"))


def doctor() -> int:
    """Print a report; exit 1 only when a required piece is missing."""
    from edgekd import __version__

    rows = [("edgekd", __version__, ""), ("python", platform.python_version(), sys.executable),
            ("platform", f"{platform.system()} {platform.machine()}", "")]
    missing_required = False
    for name, module, purpose in BACKENDS:
        version = _version(module)
        missing_required |= version is None and purpose.startswith("required")
        rows.append((name, version or "MISSING", purpose))
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
        rows.append(("gpu", gpu, f"torch threads: {torch.get_num_threads()}"))
    except Exception:
        rows.append(("gpu", "unknown", "torch did not import"))
    fmnist = all((DEFAULT_FASHION_MNIST / f).is_file() for f in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"))
    rows.append(("fashion-mnist", "found" if fmnist else "MISSING",
                 str(DEFAULT_FASHION_MNIST) if fmnist else "apt-get install dataset-fashion-mnist"))
    for label, folder in (("quickstart teacher", ASSETS / "teachers" / "fmnist-tiny"),
                          ("FID classifier", ASSETS / "fid" / "fmnist-classifier")):
        rows.append((label, "found" if folder.is_dir() else "MISSING", str(folder)))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, version, note in rows:
        print(f"{name:<{width}}  {version:<{vwidth}}  {note}")
    return 1 if missing_required else 0
