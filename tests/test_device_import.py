"""`edgekd profile RUN --import FILE.json`: the device-benchmark schema, the merge, and refusals (exit 2, nothing
written). The browser test (test_web_app.py) imports JSON the web app itself produced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd.cli import main
from edgekd.profile.device_import import MD_BEGIN, read_benchmark

from apps_testing import benchmark_doc, fake_export


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    fake_export(tmp_path / "run", "tflite")
    report = tmp_path / "run" / "report"
    report.mkdir()
    (report / "profile.json").write_text(json.dumps({"rows": [{"name": "student"}], "runtimes": ["torch"]}))
    (report / "profile.md").write_text("# edgekd profile: fake\n\n| generator |\n|---|\n| student |\n")
    return tmp_path / "run"


def _write(tmp_path: Path, doc: dict | str, name: str = "bench.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _manifest(run: Path) -> Path:
    return run / "exports" / "tflite" / "student.manifest.json"


def test_a_valid_benchmark_merges_as_a_labelled_row_and_a_reimport_replaces_it(run: Path, tmp_path: Path, capsys):
    path = _write(tmp_path, benchmark_doc(_manifest(run)))
    assert main(["profile", str(run), "--import", str(path)]) == 0
    assert "imported Pixel 8 · litert 1.4.0 (xnnpack, 4t): median 5.00 ms" in capsys.readouterr().out
    report = json.loads((run / "report" / "profile.json").read_text())
    assert report["rows"] == [{"name": "student"}]  # the host rows are kept
    [row] = report["device_rows"]
    assert row["label"] == "Pixel 8 · litert 1.4.0 (xnnpack, 4t)"
    assert row["latency_ms"] == {"median": 5.0, "p90": 6.0} and row["first_run_ms"] == 120.5
    assert row["device"]["platform"] == "android" and row["peak_memory_mb"] == 41.2
    md = (run / "report" / "profile.md").read_text()
    assert md.startswith("# edgekd profile: fake\n\n| generator |")  # the rest of the report is untouched
    assert md.count(MD_BEGIN) == 1
    assert "| Pixel 8 · litert 1.4.0 (xnnpack, 4t) | fake-student tflite fp32 | 5 | 5.00 | 6.00 | 120.5 | 41.2 |" in md

    again = benchmark_doc(_manifest(run), latency_ms={"median": 4.0, "p90": 4.5, "samples": [4.0, 4.5, 3.5, 4.0, 4.2]})
    other = benchmark_doc(_manifest(run), device={"name": "iPhone 15", "platform": "ios", "os": "iOS 18"},
                          runtime={"name": "coreml", "version": "9", "backend": "all", "threads": 0})
    assert main(["profile", str(run), "--import", str(_write(tmp_path, again, "b2.json"))]) == 0
    assert main(["profile", str(run), "--import", str(_write(tmp_path, other, "b3.json"))]) == 0
    rows = json.loads((run / "report" / "profile.json").read_text())["device_rows"]
    assert [(r["device"]["name"], r["latency_ms"]["median"]) for r in rows] == [("Pixel 8", 4.0), ("iPhone 15", 5.0)]
    md = (run / "report" / "profile.md").read_text()
    assert md.count(MD_BEGIN) == 1 and "| 4.00 |" in md and "iPhone 15" in md and "| 5.00 | 6.00 | 120.5" in md


def test_import_without_a_profile_yet_starts_the_report(tmp_path: Path):
    manifest = fake_export(tmp_path / "run", "onnx")
    path = _write(tmp_path, benchmark_doc(manifest, device={"name": "laptop", "platform": "web", "os": "Linux",
                                                            "user_agent": "Mozilla/5.0"}))
    assert main(["profile", str(tmp_path / "run"), "--import", str(path)]) == 0
    assert json.loads((tmp_path / "run" / "report" / "profile.json").read_text())["device_rows"][0]["label"].startswith("laptop")


BAD = {
    "not JSON": ("{nope", "is not valid JSON"),
    "other schema": ({"schema": "something-else", "version": 1}, 'its "schema" field must be "edgekd.device-benchmark"'),
    "future version": ({"schema": "edgekd.device-benchmark", "version": 2}, "has version 2; this edgekd reads version 1"),
    "missing field": ("drop:first_run_ms", "field 'first_run_ms': Field required"),
    "unknown platform": ({"device": {"name": "x", "platform": "windows", "os": "11"}}, "field 'device.platform'"),
    "unknown runtime": ({"runtime": {"name": "tfjs", "version": "4", "backend": "wasm", "threads": 1}}, "field 'runtime.name'"),
    "samples vs runs": ({"runs": 7}, "latency_ms.samples has 5 values but runs is 7"),
    "median outside samples": ({"latency_ms": {"median": 50.0, "p90": 60.0, "samples": [4.0, 5.0, 6.0, 5.5, 4.5]}},
                               "median and p90 must lie within the samples"),
    "bad hash": ({"model": {"manifest": "m", "name": "n", "target": "tflite", "precision": "fp32", "sha256": ["abc"]}},
                 "is not a lowercase hex sha256"),
    "unknown key": ({"extra": 1}, "field 'extra': Extra inputs are not permitted"),
    "foreign model": ({"model": {"manifest": "m", "name": "n", "target": "tflite", "precision": "fp32",
                                 "sha256": ["0" * 64]}}, "measured a model this run did not export"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_benchmark_is_one_line_exit_2_and_nothing_merged(run: Path, tmp_path: Path, capsys, case: str):
    change, expected = BAD[case]
    if isinstance(change, str) and change.startswith("drop:"):
        doc = benchmark_doc(_manifest(run))
        del doc[change[5:]]
    elif isinstance(change, dict) and "schema" in change:
        doc = change
    elif isinstance(change, dict):
        doc = benchmark_doc(_manifest(run), **change)
    else:
        doc = change
    before = {p.name: p.read_bytes() for p in (run / "report").iterdir()}
    assert main(["profile", str(run), "--import", str(_write(tmp_path, doc))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgekd: error: ") and "\n" not in err and expected in err, err
    assert {p.name: p.read_bytes() for p in (run / "report").iterdir()} == before


def test_missing_file_is_one_line(tmp_path: Path):
    from edgekd.errors import EdgekdError

    with pytest.raises(EdgekdError, match="not found"):
        read_benchmark(tmp_path / "nope.json")
