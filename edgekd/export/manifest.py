"""The manifest: a small versioned JSON next to every exported model saying what a runtime needs.

Apps, the web demo and the profiler read it; nothing is hard-coded twice. Validated when read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekd.errors import EdgekdError

MANIFEST_VERSION = 2
# Version 2 added tflite/coreml fields (quantization, parity_skipped, checks, runtime_options); every one is
# optional, so a version-1 file (ONNX only) still reads as it was written.
READABLE_VERSIONS = (1, 2)


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_M):
    name: str
    shape: list[int | str]
    dtype: Literal["float32", "float16", "int64", "int32", "uint8"] = "float32"
    layout: str = "NCHW"


class OutputSpec(TensorSpec):
    range: tuple[float, float] = (-1.0, 1.0)
    to_pixels: str = "pixel = round((clip(x, -1, 1) + 1) * 127.5), uint8"
    crop: tuple[int, int, int, int] | None = Field(None, description="(top, left, height, width) of the real image")


class NoiseSpec(_M):
    distribution: Literal["standard_normal"] = "standard_normal"
    seed_convention: str = "image i of seed s: torch.randn(shape, generator=torch.Generator().manual_seed(s + i))"
    scale: float = 1.0


class SamplingSpec(_M):
    """How to run the model: one call for a one-step student, a DDIM loop for a teacher step."""

    kind: Literal["one_step", "ddim_loop"]
    steps: int
    timesteps: list[int]
    scheduler: dict[str, Any] | None = None
    alphas_cumprod: list[float] | None = None


class ParitySpec(_M):
    runtime: str
    samples: int
    seed: int
    max_abs_error: float
    psnr_db: float
    psnr_min: float
    passed: bool


class ModelFile(_M):
    file: str
    target: Literal["onnx", "tflite", "coreml"]
    bytes: int
    sha256: str


class Manifest(_M):
    format_version: int = MANIFEST_VERSION
    edgekd_version: str
    role: Literal["student", "teacher_step"]
    name: str
    model: ModelFile
    inputs: list[TensorSpec]
    output: OutputSpec
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    sampling: SamplingSpec
    precision: Literal["fp32", "fp16", "int8", "int8_static", "palettize4", "palettize6", "palettize8"] = "fp32"
    quantization: str | None = Field(None, description="how the weights/activations were reduced, when not fp32")
    parity: ParitySpec | None = None
    parity_skipped: str | None = Field(None, description="why parity is null (e.g. CoreML cannot predict on Linux)")
    checks: dict[str, Any] = Field(default_factory=dict, description="structural/accelerator checks run at export")
    runtime_options: dict[str, Any] = Field(default_factory=dict, description="what the runtime must be told")
    source: dict[str, Any] = Field(default_factory=dict)
    created: str

    @model_validator(mode="after")
    def _parity_or_reason(self) -> "Manifest":
        if self.format_version >= 2 and self.parity is None and not self.parity_skipped:
            raise ValueError("parity is null but parity_skipped gives no reason")
        return self


def manifest_path(model_path: Path) -> Path:
    """``student.onnx`` -> ``student.manifest.json`` (also for a ``student.mlpackage`` directory)."""
    return model_path.with_name(model_path.stem + ".manifest.json")


def read_versioned(path: Path, model: type[BaseModel], label: str, hint: str, readable: tuple[int, ...],
                   readable_text: str) -> Any:
    """Read a JSON manifest and validate it into ``model``; a missing file, bad JSON, an unknown format_version
    or an invalid field is one clear error naming ``label`` and ``path``."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgekdError(f"{label} {path} not found ({hint})") from None
    except ValueError as exc:
        raise EdgekdError(f"{label} {path} is not valid JSON ({exc})") from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version not in readable:
        raise EdgekdError(f"{label} {path} has format_version {version!r}; this edgekd reads {readable_text}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise EdgekdError(f"{label} {path}: field '{'.'.join(map(str, first['loc']))}': {first['msg']}") from None


def read_manifest(path: Path) -> Manifest:
    """Read and validate; an unknown version or a malformed file is one clear error."""
    return read_versioned(path, Manifest, "manifest", "export the model with `edgekd export`", READABLE_VERSIONS,
                          f"versions {', '.join(map(str, READABLE_VERSIONS))}")