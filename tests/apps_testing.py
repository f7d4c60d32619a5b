"""Helpers for the sample-app tests: a tiny hand-made manifest v3 export and a device-benchmark document."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml


def fake_export(run: Path, target: str = "onnx", payload: bytes = b"not a real model") -> Path:
    """A run folder with recipe.yaml and exports/<target>/student.manifest.json (v3) over a dummy model file:
    enough for the serving and copying code, which never runs the model."""
    folder = run / "exports" / target
    folder.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "fake"}))
    model = folder / f"student.{target}"
    model.write_bytes(payload)
    manifest = {
        "format_version": 3, "edgekd_version": "0.1.0", "role": "student", "name": "fake-student",
        "target": target, "precision": "fp32", "quantization": None,
        "models": [{"name": "student", "file": model.name, "bytes": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest(),
                    "inputs": [{"name": "noise", "shape": [1, 1, 32, 32], "dtype": "float32", "layout": "NCHW"}],
                    "output": {"name": "image", "shape": [1, 1, 32, 32], "dtype": "float32", "layout": "NCHW"},
                    "parity": None, "parity_skipped": "test fixture", "checks": {}, "runtime_options": {}}],
        "sampling": {"kind": "one_step", "graph": "student"},
        "noise": {"distribution": "standard_normal", "shape": [1, 32, 32], "seed_convention": "-",
                  "portable": "mulberry32-boxmuller-v1"},
        "image": {"range": [-1.0, 1.0], "to_pixels": "-", "crop": [2, 2, 28, 28], "channels": 1},
        "source": {}, "created": "2026-11-29T01:00:00Z",
    }
    path = folder / "student.manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def benchmark_doc(manifest: Path, **changes) -> dict:
    """A valid edgekd.device-benchmark v1 document for the model ``manifest`` describes."""
    m = json.loads(manifest.read_text())
    samples = [4.0, 5.0, 6.0, 5.5, 4.5]
    doc = {
        "schema": "edgekd.device-benchmark", "version": 1,
        "device": {"name": "Pixel 8", "platform": "android", "os": "Android 15"},
        "runtime": {"name": "litert", "version": "1.4.0", "backend": "xnnpack", "threads": 4},
        "model": {"manifest": manifest.name, "name": m["name"], "target": m["target"], "precision": m["precision"],
                  "sha256": [g["sha256"] for g in m["models"]]},
        "warmup": 3, "runs": len(samples), "first_run_ms": 120.5,
        "latency_ms": {"median": 5.0, "p90": 6.0, "samples": samples},
        "peak_memory_mb": 41.2, "created": "2026-11-29T01:30:00Z",
    }
    for key, value in changes.items():
        doc[key] = value
    return doc
