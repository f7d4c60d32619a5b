"""``edgekd report RUN``: report/index.html (self-contained: images inlined as base64, no CDN, no script) and
report/report.md (plots beside it in report/plots/) from report/profile.json and the sample grid.

The profile is the single source of figures; the report only arranges them, so a report can be re-rendered after
``edgekd profile --import`` adds device rows without profiling again.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.report import plots
from edgekd.rundir import RunDir
from edgekd.train.checkpoint import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#666;font-size:.9rem}table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0;display:block;
overflow-x:auto}th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.teacher td{background:#fdf0f0}
tr.skipped td{color:#999}figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.85rem}.note{color:#555;font-size:.85rem}code{background:#f5f5f5;padding:0 .2rem}
"""


def load_profile(run: RunDir) -> dict[str, Any]:
    """report/profile.json, checked to be the format this renderer reads."""
    path = run.report_dir / "profile.json"
    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgekdError(f"{path} not found: profile the run first (`edgekd profile {run.path}`, or "
                          f"`edgekd report {run.path} --profile`)") from None
    except ValueError as exc:
        raise EdgekdError(f"{path} is not valid JSON ({exc}); re-run `edgekd profile {run.path}`") from None
    from edgekd.profile.run import PROFILE_FORMAT, PROFILE_VERSION

    if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT or \
            profile.get("format_version") != PROFILE_VERSION:
        raise EdgekdError(f"{path} was written by another edgekd version (expected {PROFILE_FORMAT} "
                          f"{PROFILE_VERSION}); re-run `edgekd profile {run.path}`")
    return profile


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float | None, digits: int = 2, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _img_tag(path: Path, alt: str, test_id: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img data-testid="{_e(test_id)}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _table(head: list[str], rows: list[tuple[str, list[str]]]) -> str:
    out = ["<table><thead><tr>", *[f"<th>{_e(h)}</th>" for h in head], "</tr></thead><tbody>"]
    for cls, cells in rows:
        out.append(f'<tr class="{cls}">' + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def generator_table(profile: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The main table's header and rows (CSS class, cells): every generator with its costs and quality."""
    threads = profile["threads"]
    top = f"{max(threads)}t"
    q = profile["quality"]
    head = ["generator", "runtime", "precision", "steps", "params", "MACs/img", "model MB", "first run ms",
            *[f"{t}t median ms" for t in threads], f"{top} p90 ms", "peak RSS MB", "added MB",
            f"FID ({q['samples']})", "KID ×1e3", "PSNR dB", "speed-up"]
    ref = next((r for r in profile["rows"] if r.get("reference") and r["group"] == "teacher"
                and r.get("steps") == max((x.get("steps") or 0) for x in profile["rows"] if x.get("reference"))), None)
    rows = []
    for r in profile["rows"]:
        lat, p90 = r.get("latency_ms") or {}, r.get("latency_p90_ms") or {}
        peak, base = r.get("peak_rss_bytes"), r.get("baseline_rss_bytes")
        speed = (r.get("speedup") or {}).get(ref["name"], {}).get(top) if ref else None
        cells = [r["name"], r["runtime"], r["precision"], str(r.get("steps") or 1),
                 "-" if r.get("params") is None else f"{r['params'] / 1e6:.3f}M",
                 "-" if r.get("macs_per_image") is None else f"{r['macs_per_image'] / 1e6:.1f}M",
                 _num(r.get("model_bytes"), 2, 1e-6), _num(r.get("first_run_ms"), 0),
                 *[_num(lat.get(f"{t}t")) for t in threads], _num(p90.get(top)), _num(peak, 1, 1e-6),
                 _num(None if peak is None or base is None else peak - base, 1, 1e-6), _num(r.get("fid")),
                 _num(r.get("kid"), 2, 1e3), _num(r.get("psnr_vs_teacher"), 1),
                 "-" if speed is None else f"{speed:.1f}x"]
        if r.get("skipped"):
            cells = cells[:7] + [f"not run: {r['skipped']}"] + [""] * (len(cells) - 8)
        cls = "teacher" if r["group"] == "teacher" else ""
        rows.append((f"{cls} skipped" if r.get("skipped") else cls, cells))
    return head, rows


def export_table(profile: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    from edgekd.profile.run import parity_text

    head = ["generator", "manifest", "target", "precision", "quantization", "parity (at export)"]
    rows = []
    for r in profile["rows"]:
        m = r.get("manifest")
        if m:
            rows.append(("", [r["name"], m["path"], m["target"], r["precision"], m.get("quantization") or "-",
                              parity_text(m)]))
    return head, rows


def device_table(profile: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Imported device rows, each beside the host row of the same export (``edgekd profile --import``)."""
    top = f"{max(profile['threads'])}t"
    head = ["where", "model", "precision", "runs (warm-up)", "first run ms", "median ms", "p90 ms", "peak MB"]
    rows = []
    for d in profile.get("device_rows") or []:
        model = d.get("model") or {}
        rows.append(("", [d["label"], model.get("name", "-"), model.get("precision", "-"),
                          f"{d.get('runs', '-')} ({d.get('warmup', '-')})", _num(d.get("first_run_ms"), 0),
                          _num(d["latency_ms"]["median"]), _num(d["latency_ms"]["p90"]),
                          _num(d.get("peak_memory_mb"), 1)]))
        host = plots.host_row_for(profile, d)
        if host is not None:
            rows.append(("teacher" if host["group"] == "teacher" else "",
                         [f"this host · {host['runtime']} ({top})", host["name"], host["precision"],
                          f"{(host.get('repeats') or {}).get(top, profile['repeats'])} ({profile['warmup']})",
                          _num(host.get("first_run_ms"), 0),
                          _num(host["latency_ms"].get(top)), _num(host["latency_p90_ms"].get(top)),
                          _num(host.get("peak_rss_bytes"), 1, 1e-6)]))
    return head, rows


def _md_table(head: list[str], rows: list[tuple[str, list[str]]]) -> str:
    def cell(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in cells) + " |" for _, cells in rows]
    return "\n".join(lines)


def notes(profile: dict[str, Any]) -> list[str]:
    q = profile["quality"]
    return [
        f"Quality: {q['samples']} images per generator on the same noise (seed {q['seed']}) against {q['real']} real "
        f"test images. Feature network: {q['feature_net']}. FID of {q['samples']} real train images against the "
        f"same test images: {_num(q.get('fid_data_floor'))} (the floor at this sample count). KID: torchmetrics, "
        f"{q['kid_subsets']} subsets of {q['kid_subset_size']}. PSNR: against {q['psnr_reference']}.",
        f"Latency: per image at batch 1; median and p90 of up to {profile['repeats']} calls (at least 5: fewer for "
        f"slow generators, about {profile.get('repeat_budget_s', 4.0):.0f} s per thread count; the count per row is in "
        f"profile.json) after {profile['warmup']} warm-up call(s) at {', '.join(map(str, profile['threads']))} thread(s). First run: model load + first call "
        f"in a fresh process. Memory: each generator runs alone in a fresh process; peak = its RSS high-water mark "
        f"(VmHWM), added = peak minus the process before loading the model. Runtime arenas: "
        f"{_arena_text(profile)}.",
        f"Machine: {profile['machine']}. Profiled {profile['created']} with edgekd {profile['edgekd_version']}.",
    ]


def _arena_text(profile: dict[str, Any]) -> str:
    reported = [r for r in profile["rows"] if r.get("arena_bytes")]
    if reported:
        return "; ".join(f"{r['name']} {r['arena_bytes'] / 1e6:.1f} MB" for r in reported)
    return "not reported by torch, onnxruntime or ai-edge-litert through their Python APIs (device rows carry the app's figure)"


def render_report(run_path: Path) -> tuple[Path, Path]:
    """Write report/index.html and report/report.md for a profiled run; returns their paths."""
    run = RunDir.open(run_path, need_student=False)
    profile = load_profile(run)
    out = run.report_dir
    plot_dir = out / "plots"
    figures = [
        ("latency-vs-fid", "Latency against FID", plots.latency_vs_fid(profile, plot_dir / "latency_vs_fid.png"),
         "Every generator; teacher rows are red stars. Lower left is faster and better."),
        ("size-memory", "Size and memory", plots.size_and_memory(profile, plot_dir / "size_memory.png"),
         "Model file size; peak RSS of a fresh process generating with it, and what the model and runtime added."),
        ("latency-threads", "Latency per thread count",
         plots.latency_per_thread(profile, plot_dir / "latency_threads.png"),
         "Median per image with the p90 as a whisker, per thread count."),
        ("device-latency", "Devices", plots.device_latency(profile, plot_dir / "device_latency.png"),
         "Imported device benchmarks beside this host's row of the same export."),
    ]
    grid = out / profile.get("grid", "samples.png")
    title = f"edgekd report: {profile['recipe']}"
    head, rows = generator_table(profile)
    ehead, erows = export_table(profile)
    dhead, drows = device_table(profile)

    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">run <code>{_e(profile["run"])}</code> · teacher <code>{_e(profile["teacher"])}</code> · '
            f'{_e(profile["machine"])} · {_e(profile["created"])}</p>',
            "<h2>Every generator</h2>", _table(head, rows),
            '<p class="note">Speed-up: over the torch teacher with the most steps, same thread count. '
            "Teacher rows are shaded.</p>"]
    for test_id, caption, path, text in figures[:3]:
        if path is not None:
            body.append(f"<h2>{_e(caption)}</h2><figure>{_img_tag(path, caption, test_id)}"
                        f"<figcaption>{_e(text)}</figcaption></figure>")
    if grid.is_file():
        body.append("<h2>Samples on the same noise</h2><figure>" + _img_tag(grid, "sample grid", "sample-grid") +
                    "<figcaption>Each block is one generator; column i is the same noise for every block.</figcaption>"
                    "</figure>")
    if erows:
        body += ["<h2>Exports</h2>", _table(ehead, erows)]
    body.append("<h2>Devices</h2>")
    if drows:
        body.append(_table(dhead, drows))
        test_id, caption, path, text = figures[3]
        if path is not None:
            body.append(f"<figure>{_img_tag(path, caption, test_id)}<figcaption>{_e(text)}</figcaption></figure>")
    else:
        body.append('<p class="note">No device rows yet: run an app\'s benchmark mode and merge its JSON with '
                    f"<code>edgekd profile {_e(profile['run'])} --import FILE.json</code>.</p>")
    body += ["<h2>How these figures were measured</h2>", *[f'<p class="note">{_e(n)}</p>' for n in notes(profile)]]
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    html_path, md_path = out / "index.html", out / "report.md"
    atomic_write_text(html_path, page)

    md = [f"# {title}", "", f"Run `{profile['run']}`, teacher `{profile['teacher']}`, {profile['machine']}, "
          f"{profile['created']}.", "", "## Every generator", "", _md_table(head, rows), ""]
    for _, caption, path, text in figures[:3]:
        if path is not None:
            md += [f"## {caption}", "", f"![{caption}](plots/{path.name})", "", text, ""]
    if grid.is_file():
        md += ["## Samples on the same noise", "", f"![sample grid]({grid.name})", ""]
    if erows:
        md += ["## Exports", "", _md_table(ehead, erows), ""]
    md += ["## Devices", ""]
    if drows:
        md += [_md_table(dhead, drows), ""]
        if figures[3][2] is not None:
            md += [f"![devices](plots/{figures[3][2].name})", ""]
    else:
        md += [f"No device rows yet (`edgekd profile {profile['run']} --import FILE.json`).", ""]
    md += ["## How these figures were measured", "", *[f"- {n}" for n in notes(profile)], ""]
    atomic_write_text(md_path, "\n".join(md))
    return html_path, md_path
