"""benchmarks/quality.py at its tiny scale: every one-step row trains, exports and lands in one table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd_testing import ROOT, needs_fmnist


@needs_fmnist
@pytest.mark.slow
def test_quality_benchmark_tiny_scale(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(ROOT), "EDGEKD_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--scale", "tiny", "--teacher",
                           str(tiny_teacher_dir), "--out", str(out), "--cache", str(tmp_path / "cache"),
                           # the dynamo exporter's ~25 s a model was 3/4 of this test; its ONNX gate is tested on
                           # the same student kinds in test_export_targets.py, test_adv_kd.py and test_prune.py
                           "--exporter", "torchscript"],
                          capture_output=True, text=True, env=env, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "quality.json").read_text())
    names = [r["name"] for r in data["rows"]]
    assert names[:3] == ["teacher DDIM-4", "teacher dpmsolver++-3", "teacher DDIM-3"]  # pair solver, then DDIM
    rows = {r["key"]: r for r in data["rows"]}
    assert {"ds", "ds-teacher", "ds-prune", "ds-adv", "gdd-u", "gddi-u", "o2mkd", "adv-kd", "quickstart"} <= set(rows)
    for row in data["rows"]:
        assert row["fid"] >= 0 and (row.get("onnx_ms") is None or row["onnx_ms"] > 0)
        assert abs(row["ratio"] - row["fid"] / data["teacher_fid"]) < 1e-9
        if row["images_seen"]:  # a student row
            assert row["speedup"] > 0 and row["images_seen"] > 0 and row["params"] > 0 and row["macs"] > 0
    assert rows["o2mkd"]["calls"] == 4 and rows["ds"]["calls"] == 1  # O2MKD runs its own DDIM-4 loop
    assert rows["ds-prune"]["params"] < 0.5 * rows["ds-teacher"]["params"]  # half the channels: ~a quarter
    assert rows["ds-adv"]["params"] == rows["ds-teacher"]["params"] == rows["gdd-u"]["params"]
    table = (out / "quality.md").read_text()
    assert "x teacher DDIM-4 FID" in table and "Denoising Student + adversarial, teacher init" in table and "Rows that failed" not in table
    assert (out / "samples.png").is_file()


def test_readme_table_is_replaced_between_markers_only(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from quality import END, START, update_readme
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold table\n{END}\noutro\n")
    update_readme(readme, "| new | table |")
    assert readme.read_text() == f"intro\n{START}\n| new | table |\n{END}\noutro\n"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="quality-table:start"):
        update_readme(readme, "| new |")
    assert readme.read_text() == "no markers here\n"
