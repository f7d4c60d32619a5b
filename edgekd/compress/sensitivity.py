"""Per-layer quantization sensitivity and the mixed-precision fallback.

Sensitivity of a layer = the output PSNR against the fp32 model when ONLY that layer is int8 (every other layer
kept in fp32), on held-out inputs drawn like the calibration set. Lower PSNR = more sensitive. The fallback then
keeps the most sensitive layers in fp32, greedily, one more at a time, re-measuring the whole model's output after
each, until the PSNR clears ``psnr_min`` (errors of layers add up, so the per-layer table alone cannot tell how
many to keep). Both work on one NNCF-quantized QDQ model by graph surgery (``quantize.keep_float``), so the
analysis costs one onnxruntime session per layer, not one quantization per layer.

The PSNR is 10 log10(2^2 / MSE) on the model's raw outputs (images in [-1, 1] for a student; epsilon for a step
model, where it is a relative measure), the convention of edgekd's parity gate.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd.compress.calibration import CalibrationSet
from edgekd.compress.quantize import Layer, keep_float, model_bytes, quantized_layers, run_model

PSNR_CAP = 999.0


def psnr_np(ref: np.ndarray, out: np.ndarray, data_range: float = 2.0) -> float:
    mse = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    if not math.isfinite(mse):
        return -PSNR_CAP
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10.0 * math.log10(data_range**2 / mse))


@dataclass
class LayerRow:
    name: str
    op_type: str
    params: int
    psnr_only_this: float | None = None
    kept_fp32: bool = False


@dataclass
class SensitivityReport:
    psnr_min: float
    n_layers: int
    psnr_all_int8: float
    psnr_final: float
    reached: bool
    kept_fp32: list[str] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)  # {"fp32_layers": k, "psnr": dB, "bytes": n}
    heldout: dict[str, Any] = field(default_factory=dict)
    criterion: str = ""
    model: Any = None  # the chosen ONNX model (not serialised)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("model", None)
        return data

    def markdown(self, title: str) -> str:
        lines = [f"# Quantization sensitivity: {title}", "",
                 f"Held-out inputs: {self.heldout.get('samples')} ({self.heldout.get('source')}). PSNR of the output "
                 f"against the fp32 model, data range 2. Whole model judged by: {self.criterion}.", "",
                 f"- all {self.n_layers} layers int8: **{self.psnr_all_int8:.2f} dB** (bar {self.psnr_min:.1f} dB)",
                 f"- kept in fp32: {len(self.kept_fp32)} layer(s){': ' + ', '.join(self.kept_fp32) if self.kept_fp32 else ''}",
                 f"- final: **{self.psnr_final:.2f} dB**, {'reaches' if self.reached else 'does NOT reach'} the bar", ""]
        if self.curve:
            lines += ["Fallback (most sensitive layers kept in fp32, one more at a time):", "",
                      "| fp32 layers | PSNR dB | model bytes |", "|---|---|---|"]
            lines += [f"| {c['fp32_layers']} | {c['psnr']:.2f} | {c['bytes']} |" for c in self.curve]
            lines.append("")
        if any(r.psnr_only_this is not None for r in self.layers):
            lines += ["Per layer, most sensitive first (PSNR when only that layer is int8):", "",
                      "| rank | layer | op | params | PSNR dB | kept fp32 |", "|---|---|---|---|---|---|"]
            ranked = sorted(self.layers, key=lambda r: (r.psnr_only_this if r.psnr_only_this is not None else PSNR_CAP))
            for i, r in enumerate(ranked, 1):
                value = "-" if r.psnr_only_this is None else f"{r.psnr_only_this:.2f}"
                lines.append(f"| {i} | {r.name} | {r.op_type} | {r.params} | {value} | {'yes' if r.kept_fp32 else ''} |")
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, stem: str, title: str) -> tuple[Path, Path]:
        from edgekd.train.checkpoint import atomic_write_json, atomic_write_text

        folder.mkdir(parents=True, exist_ok=True)
        js, md = folder / f"{stem}.json", folder / f"{stem}.md"
        atomic_write_json(js, self.to_json())
        atomic_write_text(md, self.markdown(title))
        return js, md


class OutputJudge:
    """Whole-model quality: output PSNR against the fp32 model on the held-out inputs (one-step students)."""

    def __init__(self, fp32: Any, heldout: CalibrationSet):
        self.heldout = heldout
        self.reference = run_model(fp32, heldout)
        self.criterion = f"output PSNR on {len(heldout)} held-out inputs"

    def __call__(self, model: Any) -> float:
        return psnr_np(self.reference, run_model(model, self.heldout))


def analyse(qmodel: Any, fp32: Any, heldout: CalibrationSet, psnr_min: float, per_layer: bool = True,
            progress: bool = False, judge: Callable[[Any], float] | None = None) -> SensitivityReport:
    """Measure the all-int8 model; with ``per_layer``, the per-layer table and the fp32 fallback until the bar.

    Layers are ranked by their own output PSNR on ``heldout``; the whole model is judged by ``judge`` (default:
    the same output PSNR; a step model passes a DDIM-loop judge, since its errors compound over the steps). The
    number of fp32 layers is searched by doubling then bisection (k = 1, 2, 4, ... until the bar is cleared,
    then the smallest passing k between), so a model with hundreds of layers costs a dozen evaluations.
    """
    from tqdm.auto import tqdm

    judge = judge or OutputJudge(fp32, heldout)
    reference = run_model(fp32, heldout)
    layers: list[Layer] = quantized_layers(qmodel)
    names = [l.name for l in layers]
    rows = [LayerRow(l.name, l.op_type, l.params) for l in layers]
    full = judge(qmodel)
    report = SensitivityReport(psnr_min, len(layers), full, full, full >= psnr_min, heldout=heldout.describe(),
                               model=qmodel, criterion=getattr(judge, "criterion", "custom"))
    report.layers = rows
    report.curve.append({"fp32_layers": 0, "psnr": full, "bytes": model_bytes(qmodel)})
    if not per_layer or not layers:
        return report
    for row in tqdm(rows, desc="sensitivity", unit="layer", disable=not progress, leave=False):
        only = keep_float(qmodel, fp32, [n for n in names if n != row.name])
        row.psnr_only_this = psnr_np(reference, run_model(only, heldout))
    if full >= psnr_min:
        return report
    order = [r.name for r in sorted(rows, key=lambda r: r.psnr_only_this)]  # most sensitive first
    tried: dict[int, tuple[float, Any]] = {}

    def attempt(k: int) -> bool:
        model = keep_float(qmodel, fp32, order[:k])
        value = judge(model)
        tried[k] = (value, model)
        report.curve.append({"fp32_layers": k, "psnr": value, "bytes": model_bytes(model)})
        return value >= psnr_min

    lo, hi = 0, 1  # lo fails; find a passing hi
    while not attempt(hi):
        lo = hi
        if hi == len(order):
            break
        hi = min(2 * hi, len(order))
    if tried[hi][0] >= psnr_min:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if attempt(mid):
                hi = mid
            else:
                lo = mid
    value, model = tried[hi]
    report.model, report.psnr_final, report.reached, report.kept_fp32 = model, value, value >= psnr_min, order[:hi]
    report.curve.sort(key=lambda c: c["fp32_layers"])
    kept = set(report.kept_fp32)
    for row in rows:
        row.kept_fp32 = row.name in kept
    return report
