"""The report's figures (matplotlib, Agg): latency vs FID, size and memory bars, latency per thread count, devices.

Each function takes the profile dict (``report/profile.json``) and writes one PNG, returning its path or None when
the profile has nothing to draw for it (e.g. no device rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUNTIME_COLORS = {"torch": "#4c72b0", "onnxruntime": "#dd8452", "litert": "#55a868", "coreml": "#8172b3"}
TEACHER_COLOR = "#c44e52"


def _measured(profile: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in profile["rows"] if not r.get("skipped") and r.get("latency_ms")]


def _top(profile: dict[str, Any]) -> str:
    return f"{max(profile['threads'])}t"


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _height(n: int) -> float:
    return max(2.6, 0.42 * n + 1.2)


def latency_vs_fid(profile: dict[str, Any], path: Path) -> Path | None:
    """Every generator at its median latency (largest thread count) against its FID; teacher rows are stars."""
    rows = [r for r in _measured(profile) if r.get("fid") is not None]
    if not rows:
        return None
    top = _top(profile)
    fig, ax = plt.subplots(figsize=(8, 5))
    seen: set[str] = set()
    offsets = [(6, 4), (6, -10), (-6, 8), (-6, -12)]  # alternate label placement so neighbours do not overprint
    for i, r in enumerate(rows):
        teacher = r["group"] == "teacher"
        label = "teacher" if teacher else r["runtime"]
        ax.scatter(r["latency_ms"][top], r["fid"], s=180 if teacher else 60, marker="*" if teacher else "o",
                   color=TEACHER_COLOR if teacher else RUNTIME_COLORS.get(r["runtime"], "#777777"),
                   edgecolors="black", linewidths=0.5, zorder=3, label=None if label in seen else label)
        seen.add(label)
        dx, dy = offsets[i % len(offsets)]
        ax.annotate(r["name"], (r["latency_ms"][top], r["fid"]), textcoords="offset points", xytext=(dx, dy),
                    fontsize=7, ha="left" if dx > 0 else "right")
    ax.set_xscale("log")
    ax.set_xlabel(f"latency per image, ms (median, batch 1, {top.removesuffix('t')} threads, log scale)")
    q = profile["quality"]
    ax.set_ylabel(f"FID ({q['samples']} images; {q['feature_net_kind']})")
    ax.set_title("Latency against quality: lower left is better")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def size_and_memory(profile: dict[str, Any], path: Path) -> Path | None:
    """Model size and peak process memory (with what the model and runtime added over the bare process)."""
    rows = [r for r in profile["rows"] if r.get("model_bytes") or r.get("peak_rss_bytes")]
    if not rows:
        return None
    names = [r["name"] for r in rows]
    y = range(len(rows))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, _height(len(rows))), sharey=True)
    colors = [TEACHER_COLOR if r["group"] == "teacher" else RUNTIME_COLORS.get(r["runtime"], "#777") for r in rows]
    a.barh(list(y), [(r.get("model_bytes") or 0) / 1e6 for r in rows], color=colors)
    a.set_yticks(list(y), names, fontsize=7)
    a.set_xlabel("model file size, MB")
    a.set_title("Size")
    a.invert_yaxis()
    peak = [(r.get("peak_rss_bytes") or 0) / 1e6 for r in rows]
    added = [((r.get("peak_rss_bytes") or 0) - (r.get("baseline_rss_bytes") or 0)) / 1e6
             if r.get("peak_rss_bytes") and r.get("baseline_rss_bytes") is not None else 0 for r in rows]
    b.barh(list(y), peak, color="#bbbbbb", label="peak RSS of the process")
    b.barh(list(y), added, color=colors, label="added by model load + generation")
    b.set_xlabel("memory, MB (fresh process per generator)")
    b.set_title("Peak memory while generating")
    b.legend(fontsize=7, loc="lower right")
    for ax in (a, b):
        ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def latency_per_thread(profile: dict[str, Any], path: Path) -> Path | None:
    """Median latency per thread count, with the p90 as a whisker: how each runtime scales with cores."""
    rows = _measured(profile)
    if not rows:
        return None
    threads = profile["threads"]
    fig, ax = plt.subplots(figsize=(9, _height(len(rows))))
    width = 0.8 / len(threads)
    for i, t in enumerate(threads):
        key = f"{t}t"
        med = [r["latency_ms"].get(key, 0) for r in rows]
        p90 = [max(0.0, r["latency_p90_ms"].get(key, 0) - r["latency_ms"].get(key, 0)) for r in rows]
        ax.barh([j + i * width for j in range(len(rows))], med, height=width, xerr=[[0] * len(rows), p90],
                label=f"{t} thread{'s' if t > 1 else ''}", capsize=2)
    ax.set_yticks([j + width * (len(threads) - 1) / 2 for j in range(len(rows))], [r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms per image (median of the repeats after warm-up; whisker: p90), log scale")
    ax.set_title("Latency per thread count")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def device_latency(profile: dict[str, Any], path: Path) -> Path | None:
    """Device rows (imported from the apps' benchmark mode) beside the host rows of the same export."""
    devices = profile.get("device_rows") or []
    if not devices:
        return None
    top = _top(profile)
    bars: list[tuple[str, float, float, str]] = []
    for d in devices:
        bars.append((d["label"] + f" · {d['model'].get('name', '')}", d["latency_ms"]["median"],
                     d["latency_ms"]["p90"], "#8c564b"))
        host = host_row_for(profile, d)
        if host is not None:
            bars.append((f"host · {host['name']}", host["latency_ms"][top], host["latency_p90_ms"].get(top, 0),
                         RUNTIME_COLORS.get(host["runtime"], "#777")))
    fig, ax = plt.subplots(figsize=(9, _height(len(bars))))
    ax.barh(range(len(bars)), [b[1] for b in bars], color=[b[3] for b in bars],
            xerr=[[0] * len(bars), [max(0.0, b[2] - b[1]) for b in bars]], capsize=2)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms per image (median; whisker: p90), log scale")
    ax.set_title("Devices beside this host (same export)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _save(fig, path)


def host_row_for(profile: dict[str, Any], device_row: dict[str, Any]) -> dict[str, Any] | None:
    """This host's row of the export a device ran: same target and manifest file name, in the run itself."""
    model = device_row.get("model") or {}
    name = Path(str(model.get("manifest", ""))).name
    for r in _measured(profile):
        m = r.get("manifest") or {}
        if m and r["run"] == "." and m.get("target") == model.get("target") and Path(m.get("path", "")).name == name:
            return r
    return None


__all__ = ["device_latency", "host_row_for", "latency_per_thread", "latency_vs_fid", "size_and_memory"]
