"""Export targets as plug-ins: one module per target, discovered here; the driver (edgekd/export/__init__.py) does
placement, the manifest and the parity gate for all of them.

A target module provides:

    NAME: str                     # "onnx"
    ORDER: int                    # position in `--target all`
    SUFFIX: str                   # ".onnx" (a directory such as ".mlpackage" works too)
    PRECISIONS: tuple[str, ...]   # what --precision accepts for it
    QUANTIZATION: dict[str, str]  # the manifest's quantization line per reduced precision
    EXTRA: str                    # the key of edgekd.extras.NEEDS that installs it
    def check_options(precision: str, options: ExportOptions) -> None      # one-line EdgekdError on bad options
    def convert(job: GraphJob, path: Path, precision: str, options: ExportOptions,
                quantizer: Quantizer) -> Converted                          # write ONE graph at ``path``
    def stepper(path: Path, threads: int | None, compute_units: str) -> Stepper   # run a file (edgekd.runtime)
    def parity_unavailable() -> str | None      # why numerical parity cannot run on this machine (None: it can)
    def parity_runtime(stepper) -> str          # the runtime named in the manifest's parity entry

Adding a target is one file here (+ its optional dependency in edgekd/extras.py and, for a new runtime, a stepper
in edgekd/runtime/steppers.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from edgekd.manifest import DelegationSpec, TensorSpec


@dataclass
class ExportOptions:
    """What the user chose on the command line (each target reads what concerns it)."""

    batch: int | None = None
    exporter: str = "dynamo"
    compute_units: str = "ALL"
    deployment_target: str = "iOS17"
    psnr_min: float | None = None  # an explicit bar (also the int8 fallback's target)


@dataclass
class Converted:
    """What a target reports about one converted graph (the driver writes it into the manifest)."""

    dims: list[int | str]
    inputs: list[TensorSpec]
    checks: dict[str, Any] = field(default_factory=dict)
    runtime_options: dict[str, Any] = field(default_factory=dict)
    delegation: DelegationSpec | None = None  # ops in the runtime's delegate vs outside, where the target counts them


def tensor_inputs(job: Any, batch: int | str, int_dtype: str = "int64") -> list[TensorSpec]:
    """The manifest's input specs of a graph: float inputs [B, *shape]; integer inputs (timestep, class ids, token
    ids) [B, *shape] in ``int_dtype`` (what the target's signature takes: int32 where int64 is not available)."""
    out = []
    for spec in job.graph.inputs:
        integer = spec.name == "timestep" or not spec.dtype.is_floating_point
        out.append(TensorSpec(name=spec.name, shape=[batch, *spec.shape], dtype=int_dtype if integer else "float32",
                              layout="NCHW" if len(spec.shape) == 3 or spec.name == "timestep" else "-"))
    return out


class Quantizer(Protocol):
    """The calibration source quantized conversions hang off (edgekd.compress.quantize.RecipeQuantizer)."""

    def onnx(self, job: Any, path: Any, precision: str, target_psnr: float | None) -> Any:
        """Replace the fp32 ONNX file at ``path`` with its ``precision`` version; returns a result with
        ``manifest_checks()`` and ``sensitivity``."""

    def calibration(self, job: Any, batch: int, dtypes: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Calibration feeds for a static-int8 converter, and their description for the manifest."""


def _discover() -> dict[str, ModuleType]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "convert") and hasattr(module, "NAME"):
            found.append(module)
    return {m.NAME: m for m in sorted(found, key=lambda m: m.ORDER)}


TARGETS: dict[str, ModuleType] = _discover()


def get_target(name: str) -> ModuleType:
    from edgekd.errors import EdgekdError

    if name not in TARGETS:
        raise EdgekdError(f"unknown export target '{name}' (available: {', '.join(TARGETS)}, all)")
    return TARGETS[name]


def all_precisions() -> list[str]:
    return sorted({p for t in TARGETS.values() for p in t.PRECISIONS})
