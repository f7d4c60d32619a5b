"""Every model through the same paths: a multi-graph (O2MKD) run quantizes, exports to every target and profiles
exactly as a one-step student does (issue 10: graphs + sampling, one driver, one runtime layer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgekd.cli import main
from edgekd.manifest import read_manifest
from edgekd.recipe import Recipe, validate_mapping
from edgekd.rundir import RunDir
from edgekd.runtime import open_generator, torch_generator

from edgekd_testing import needs_fmnist, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def o2mkd_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    """An (untrained) O2MKD student of two tiny UNets sampled with DDIM-3: export needs nothing else."""
    from edgekd.students import save_student
    from edgekd.students.o2mkd import build_o2mkd_student
    from edgekd.teachers.diffusers_teacher import load_teacher

    base = tmp_path_factory.mktemp("every")
    raw = tiny_recipe(tiny_teacher_dir, base / "run")
    raw["student"] = {"kind": "o2mkd", "boundaries": [500], "init": "scratch", "block_out_channels": [8, 8],
                      "norm_num_groups": 4}
    raw["method"] = {"name": "o2mkd", "heldout_images": 8}
    raw["teacher"]["steps"] = 3
    raw["data"]["limit"] = 64
    raw["export"] = {"parity_samples": 2}
    raw["trajectory"]["cache_dir"] = str(base / "cache")
    # int8 of random tiny UNets needs the mixed-precision fallback (sensitivity) to clear the int8 bar through DDIM
    raw["compress"] = {"quantize": {"targets": ["onnx"], "precisions": ["int8"], "calibration_samples": 8,
                                    "heldout_samples": 4}}
    recipe = validate_mapping(raw, Recipe, "test")
    run = RunDir(base / "run")
    run.path.mkdir(parents=True)
    run.save_recipe(recipe)
    torch.manual_seed(0)
    save_student(build_o2mkd_student(recipe.student, load_teacher(str(tiny_teacher_dir)), 3, "trailing").eval(),
                 run.student_dir)
    return run.path


@needs_fmnist
def test_compress_quantize_works_on_a_multi_graph_run(o2mkd_run: Path, capsys) -> None:
    """`edgekd compress RUN --quantize` used to fail inside torch.export on O2MKD (no multi-student path)."""
    assert main(["compress", str(o2mkd_run), "--quantize", "--exporter", "torchscript"]) == 0  # (dynamo: 3x slower)
    folder = o2mkd_run / "exports" / "onnx"
    m = read_manifest(folder / "student_int8.manifest.json")
    assert m.precision == "int8" and [g.file for g in m.models] == ["student_0_int8.onnx", "student_1_int8.onnx"]
    assert m.parity is not None and m.parity.passed  # the whole routed loop in onnxruntime, int8 bar
    assert all(g.parity is not None and g.checks["quantization"]["layers"] > 0 for g in m.models)
    report = json.loads((o2mkd_run / "report" / "quantization.json").read_text())
    assert [(e["target"], e["precision"]) for e in report["exports"]] == [("onnx", "fp32"), ("onnx", "int8")]
    # 8-channel UNets: QDQ nodes and per-channel scales cost about what int8 weights save (the torchscript fp32
    # file carries no dynamo metadata), so only "not larger" holds here; real students shrink ~4x (docs/quantization.md)
    assert 0 < report["exports"][1]["size_vs_fp32"] < 1.05
    assert (folder / "router_int8.manifest.json").is_file()  # the router format, kept for one release


def test_export_all_targets_fp16_on_a_multi_graph_run(o2mkd_run: Path, capsys) -> None:
    assert main(["export", str(o2mkd_run), "--target", "all", "--precision", "fp16", "--exporter", "torchscript"]) == 0
    table = capsys.readouterr().out
    assert "onnx" in table and "tflite" in table and "coreml" in table
    for target, suffix in (("onnx", ".onnx"), ("tflite", ".tflite"), ("coreml", ".mlpackage")):
        path = o2mkd_run / "exports" / target / "student_fp16.manifest.json"
        m = read_manifest(path)
        assert m.target == target and m.precision == "fp16" and m.sampling.kind == "ddim"
        assert [g.file for g in m.models] == [f"student_0_fp16{suffix}", f"student_1_fp16{suffix}"]
        assert all((path.parent / g.file).exists() for g in m.models)
        if target == "coreml" and m.parity is None:
            assert "macOS" in (m.parity_skipped or "")
            continue
        assert m.parity is not None and m.parity.passed
        student = torch_generator(RunDir.open(o2mkd_run).student())
        noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
        out = open_generator(path, threads=1).generate(noise)
        assert out.shape == noise.shape and (out - student.generate(noise)).abs().max() < 0.05


@needs_fmnist
def test_profile_reads_the_multi_graph_manifest(o2mkd_run: Path, capsys) -> None:
    from edgekd.profile.run import profile_run

    report = profile_run(o2mkd_run, fid_samples=4, repeats=1, threads=[1])
    names = [r["name"] for r in report["rows"]]
    assert names[0] == "teacher DDIM-3 torch" and {"student torch", "student onnxruntime"} <= set(names)
    row = report["rows"][names.index("student onnxruntime")]  # the routed loop over the v3 manifest's files
    m = read_manifest(o2mkd_run / "exports" / "onnx" / "student.manifest.json")
    assert row["model_bytes"] == m.total_bytes and row["latency_ms"]["1t"] > 0 and row["steps"] == 3
    assert [e["name"] for e in report["per_step"]["rows"]] == ["teacher", "student 0", "student 1"]
