"""``edgekd profile RUN --import FILE.json``: merge a benchmark measured on a device (web, Android, iOS app) into
the run's report, labelled with the device and runtime.

The JSON schema (``edgekd.device-benchmark`` version 1) is docs/device-benchmark.md; every app's benchmark mode
writes it. A file that is not valid JSON, not this schema, internally inconsistent (samples vs runs, median/p90
outside the samples) or of a model this run did not export is refused with one line, and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.errors import EdgekdError
from edgekd.rundir import RunDir
from edgekd.train.checkpoint import atomic_write_json, atomic_write_text

SCHEMA = "edgekd.device-benchmark"
SCHEMA_VERSION = 1
ROWS_KEY = "device_rows"  # in report/profile.json
MD_BEGIN, MD_END = "<!-- edgekd:device-benchmarks -->", "<!-- /edgekd:device-benchmarks -->"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Device(_M):
    name: str = Field(min_length=1)
    platform: Literal["web", "android", "ios"]
    os: str
    user_agent: str | None = None


class Runtime(_M):
    name: Literal["onnxruntime-web", "litert.js", "litert", "onnxruntime-mobile", "coreml"]
    version: str
    backend: str = Field(description="wasm, xnnpack, nnapi, gpu, cpu, all (CoreML compute units)...")
    threads: int = Field(ge=0, description="0: the runtime decides")


class ModelRef(_M):
    manifest: str
    name: str
    target: Literal["onnx", "tflite", "coreml"]
    precision: str
    sha256: list[str] = Field(min_length=1, description="one per model file, in the manifest's order")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, values: list[str]) -> list[str]:
        for v in values:
            if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
                raise ValueError(f"'{v[:20]}' is not a lowercase hex sha256")
        return values


class Latency(_M):
    median: float = Field(gt=0)
    p90: float = Field(gt=0)
    samples: list[float] = Field(min_length=1)


class DeviceBenchmark(_M):
    schema_: Literal["edgekd.device-benchmark"] = Field(alias="schema")
    version: Literal[1]
    device: Device
    runtime: Runtime
    model: ModelRef
    warmup: int = Field(ge=0)
    runs: int = Field(ge=1)
    first_run_ms: float = Field(gt=0)
    latency_ms: Latency
    peak_memory_mb: float | None = Field(None, ge=0)
    created: dt.datetime

    @model_validator(mode="after")
    def _consistent(self) -> "DeviceBenchmark":
        s = self.latency_ms.samples
        if len(s) != self.runs:
            raise ValueError(f"latency_ms.samples has {len(s)} values but runs is {self.runs}")
        if not all(math.isfinite(v) and v > 0 for v in s):
            raise ValueError("latency_ms.samples must be positive finite numbers")
        lo, hi = min(s), max(s)
        tol = 1e-6 * hi
        if not (lo - tol <= self.latency_ms.median <= self.latency_ms.p90 + tol <= hi + 2 * tol):
            raise ValueError("median and p90 must lie within the samples, median <= p90")
        return self

    def label(self) -> str:
        r = self.runtime
        return f"{self.device.name} · {r.name} {r.version} ({r.backend}, {r.threads}t)"

    def key(self) -> tuple:
        """Same device, runtime and model file(s): a re-import replaces the row instead of adding a second one."""
        r = self.runtime
        return (self.device.name, self.device.platform, r.name, r.version, r.backend, r.threads,
                self.model.target, self.model.precision, tuple(self.model.sha256))


def read_benchmark(path: Path) -> DeviceBenchmark:
    """Validate a device-benchmark JSON file; every problem is one EdgekdError line naming the field."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EdgekdError(f"benchmark file {path} not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise EdgekdError(f"benchmark file {path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise EdgekdError(f"benchmark file {path} is not an {SCHEMA} file (its \"schema\" field must be \"{SCHEMA}\"; "
                          "see docs/device-benchmark.md)")
    if raw.get("version") != SCHEMA_VERSION:
        raise EdgekdError(f"benchmark file {path} has version {raw.get('version')!r}; this edgekd reads version "
                          f"{SCHEMA_VERSION}")
    try:
        return DeviceBenchmark.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(file)"
        raise EdgekdError(f"benchmark file {path}: field '{where}': {first['msg']} (see docs/device-benchmark.md)") from None


def exported_hashes(run: RunDir) -> set[str]:
    """sha256 of every model file any manifest under exports/ describes (v3 models[], v1/v2 model, router)."""
    hashes: set[str] = set()
    for path in run.exports.rglob("*.manifest.json") if run.exports.is_dir() else []:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        entries = [*raw.get("models", []), raw.get("model") or {}, *[s.get("model", {}) for s in raw.get("students", [])]]
        hashes.update(e["sha256"] for e in entries if isinstance(e, dict) and e.get("sha256"))
    return hashes


def benchmark_row(b: DeviceBenchmark, source: Path) -> dict[str, Any]:
    return {
        "label": b.label(), "device": b.device.model_dump(), "runtime": b.runtime.model_dump(),
        "model": b.model.model_dump(), "warmup": b.warmup, "runs": b.runs, "first_run_ms": b.first_run_ms,
        "latency_ms": {"median": b.latency_ms.median, "p90": b.latency_ms.p90},
        "samples_ms": b.latency_ms.samples, "peak_memory_mb": b.peak_memory_mb,
        "created": b.created.isoformat(), "imported_from": source.name,
    }


def render_device_section(rows: list[dict[str, Any]]) -> str:
    """The profile.md section (between markers, so a re-import rewrites it and nothing else)."""
    lines = [MD_BEGIN, "## Measured on devices", "",
             "Imported with `edgekd profile RUN --import FILE.json` from the sample apps' benchmark mode "
             "(docs/device-benchmark.md): batch 1, one image per run, after warm-up.", "",
             "| device · runtime | model | runs | median ms | p90 ms | first run ms (incl. load) | peak memory MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.1f}"
        m = r["model"]
        lines.append(f"| {r['label']} | {m['name']} {m['target']} {m['precision']} | {r['runs']} | "
                     f"{r['latency_ms']['median']:.2f} | {r['latency_ms']['p90']:.2f} | {r['first_run_ms']:.1f} | {mem} |")
    lines.append(MD_END)
    return "\n".join(lines) + "\n"


def with_device_section(markdown: str, rows: list[dict[str, Any]]) -> str:
    """``markdown`` with its device section replaced (or appended); no rows: the section removed."""
    if MD_BEGIN in markdown and MD_END in markdown:
        head, rest = markdown.split(MD_BEGIN, 1)
        markdown = head.rstrip("\n") + "\n" + rest.split(MD_END, 1)[1].lstrip("\n")
    if not rows:
        return markdown
    return markdown.rstrip("\n") + "\n\n" + render_device_section(rows)


def carry_over(report_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """For ``edgekd profile``: keep the device rows of the previous profile.json when the report is rebuilt."""
    try:
        old = json.loads((report_dir / "profile.json").read_text())
    except (OSError, ValueError):
        return report
    if old.get(ROWS_KEY):
        report[ROWS_KEY] = old[ROWS_KEY]
    return report


def import_benchmark(run_path: Path, file: Path) -> dict[str, Any]:
    """Validate ``file`` and merge it into RUN/report/profile.json and profile.md; returns the merged row."""
    run = RunDir.open(run_path, need_student=False)
    bench = read_benchmark(Path(file))
    known = exported_hashes(run)
    foreign = [h for h in bench.model.sha256 if h not in known]
    if foreign:
        raise EdgekdError(f"benchmark file {file} measured a model this run did not export (sha256 {foreign[0][:12]}... "
                          f"not in {run.exports}): import it into the run it came from, or re-export and re-measure")
    report_json, report_md = run.report_dir / "profile.json", run.report_dir / "profile.md"
    try:
        report = json.loads(report_json.read_text()) if report_json.is_file() else {"run": str(run.path)}
    except ValueError as exc:
        raise EdgekdError(f"{report_json} is not valid JSON ({exc}); re-run `edgekd profile {run.path}`") from None
    row = benchmark_row(bench, Path(file))
    rows = [r for r in report.get(ROWS_KEY, []) if _row_key(r) != bench.key()] + [row]
    report[ROWS_KEY] = rows
    markdown = report_md.read_text() if report_md.is_file() else f"# edgekd profile: {run.path.name}\n"
    run.report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_json, report)
    atomic_write_text(report_md, with_device_section(markdown, rows))
    return row


def _row_key(row: dict[str, Any]) -> tuple:
    d, r, m = row["device"], row["runtime"], row["model"]
    return (d["name"], d["platform"], r["name"], r["version"], r["backend"], r["threads"], m["target"],
            m["precision"], tuple(m["sha256"]))
