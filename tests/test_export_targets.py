"""Export to TFLite and CoreML (and the shared gate/CLI behaviour) with the real converters and runtimes, no mocks.

The fixture builds a tiny run in a temp folder: a tiny diffusers teacher (UNet2DModel with one attention block,
so attention and GroupNorm go through every converter) saved as unet/ + scheduler/, a tiny one-step UNet student,
recipe.yaml. Conversions dominate the time (litert-torch ~15-25 s per model on this 2-core machine).
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("litert_torch", reason="litert-torch not installed (pip install -c constraints.txt litert-torch)")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed")
pytest.importorskip("coremltools", reason="coremltools not installed")

from edgekd.cli import main  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.export import INT8_PSNR_MIN, ExportResult, export_run, summary_table  # noqa: E402
from edgekd.export.graph_check import check_graph  # noqa: E402
from edgekd.export.manifest import read_manifest  # noqa: E402
from edgekd.noise import make_noise  # noqa: E402

IS_MAC = platform.system() == "Darwin"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffusers import DDPMScheduler, UNet2DModel

    from edgekd.recipe import Recipe, validate_mapping
    from edgekd.rundir import RunDir
    from edgekd.students import save_student
    from edgekd.students.unet_student import build_unet_student
    from edgekd.teachers.diffusers_teacher import save_teacher

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=8).eval()
    save_teacher(unet, dict(DDPMScheduler().config), root / "teacher")
    recipe = validate_mapping({
        "name": "tiny-export", "run_dir": str(root / "run"),
        "teacher": {"path": str(root / "teacher"), "steps": 4},
        "student": {"init": "scratch", "block_out_channels": [8, 16], "norm_num_groups": 4},
        "export": {"parity_samples": 3},
    }, Recipe, "test")
    run = RunDir(root / "run")
    run.path.mkdir()
    run.save_recipe(recipe)
    student = build_unet_student(recipe.student, unet, 999).eval()
    save_student(student, run.student_dir)
    return run.path


@pytest.fixture(scope="module")
def tflite_fp32(tiny_run: Path) -> Path:
    torch.set_num_threads(1)
    return export_run(tiny_run, target="tflite")


def _no_partials(run: Path) -> None:
    exports = run / "exports"
    leftovers = [p for p in exports.rglob("*") if ".partial" in p.name or p.name.endswith(".old")] if exports.exists() else []
    assert not leftovers, leftovers


def test_tflite_export_passes_parity(tiny_run: Path, tflite_fp32: Path) -> None:
    from edgekd.profile.generators import TFLiteStudent, TorchStudent
    from edgekd.rundir import RunDir

    assert tflite_fp32 == tiny_run / "exports" / "tflite" / "student.tflite" and tflite_fp32.is_file()
    m = read_manifest(tflite_fp32.with_name("student.manifest.json"))
    assert m.target == "tflite" and m.precision == "fp32" and m.format_version == 3
    assert m.parity is not None and m.parity.passed and m.parity.psnr_db > 60 and m.parity.max_abs_error < 1e-3
    assert m.parity.runtime.startswith("ai-edge-litert")
    assert [(i.name, i.shape) for i in m.inputs] == [("noise", [1, 1, 32, 32])] and m.output.name == "image"
    assert m.checks["outputs"] == {"image": {"shape": [1, 1, 32, 32], "dtype": "float32"}}
    assert m.checks["ops"].get("CONV_2D", 0) > 0
    # the fixed-batch model loops over any number of images and matches torch on each
    noise = make_noise(3, 0, 3, (1, 32, 32))
    ref = TorchStudent(RunDir(tiny_run).student()).generate(noise)
    out = TFLiteStudent(tflite_fp32, threads=1).generate(noise)
    assert out.shape == ref.shape and (out - ref).abs().max() < 1e-3
    _no_partials(tiny_run)


def test_tflite_int8_is_smaller_and_within_its_bar(tiny_run: Path, tflite_fp32: Path) -> None:
    # at batch 2: the 3 parity images run as 2 + (1 zero-padded), exercising the fixed-batch loop's padding
    path = export_run(tiny_run, target="tflite", precision="int8", batch=2)
    assert path.name == "student_int8.tflite"
    assert path.stat().st_size < tflite_fp32.stat().st_size
    m = read_manifest(path.with_name("student_int8.manifest.json"))
    assert m.inputs[0].shape == [2, 1, 32, 32] and m.runtime_options["fixed_batch"] == 2
    assert m.precision == "int8" and "dynamic_wi8_afp32" in (m.quantization or "")
    assert m.parity is not None and m.parity.passed and m.parity.psnr_min == INT8_PSNR_MIN
    assert m.parity.psnr_db >= INT8_PSNR_MIN
    # the fp32 model stays next to it, untouched
    assert read_manifest(tflite_fp32.with_name("student.manifest.json")).precision == "fp32"


def test_failed_parity_keeps_nothing_and_leaves_the_old_export(tiny_run: Path, tflite_fp32: Path) -> None:
    before = tflite_fp32.read_bytes()
    assert main(["export", str(tiny_run), "--target", "tflite", "--psnr-min", "1000"]) == 3  # ParityError
    assert tflite_fp32.read_bytes() == before
    _no_partials(tiny_run)


def test_teacher_step_tflite(tiny_run: Path) -> None:
    path = export_run(tiny_run, target="tflite", teacher=True)
    m = read_manifest(path.with_name("teacher_step.manifest.json"))
    assert m.role == "teacher_step" and m.sampling.kind == "ddim"
    assert [(i.name, i.shape, i.dtype) for i in m.inputs] == [("sample", [1, 1, 32, 32], "float32"),
                                                               ("timestep", [1], "int32")]
    assert m.parity is not None and m.parity.passed and m.parity.psnr_db > 60
    assert m.output.name == "epsilon"


def test_coreml_structure_and_fp16_weights(tiny_run: Path) -> None:
    import coremltools as ct

    path = export_run(tiny_run, target="coreml", precision="fp16")
    assert path.name == "student_fp16.mlpackage" and path.is_dir()
    m = read_manifest(path.with_name("student_fp16.manifest.json"))
    assert m.target == "coreml" and m.precision == "fp16" and m.model.bytes > 0
    assert m.runtime_options["compute_units"] == "ALL" and m.runtime_options["minimum_deployment_target"] == "iOS17"
    if not IS_MAC:
        assert m.parity is None and "macOS" in (m.parity_skipped or "")
    assert m.checks["inputs"] == {"noise": {"shape": [1, 1, 32, 32], "dtype": "FLOAT32"}}
    assert m.checks["outputs"] == {"image": {"shape": [1, 1, 32, 32], "dtype": "FLOAT32"}}
    assert set(m.checks["weight_dtypes"]) == {"FLOAT16"}
    assert {"conv", "silu"} <= set(m.checks["ops"])
    # read back independently of edgekd: the spec says the same
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert [i.name for i in spec.description.input] == ["noise"]
    assert [o.name for o in spec.description.output] == ["image"]
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 1, 32, 32]
    _no_partials(tiny_run)


@pytest.mark.skipif(not IS_MAC, reason="CoreML models run only on macOS (MLModel.predict); Linux checks structure")
def test_coreml_parity_on_macos(tiny_run: Path) -> None:
    path = export_run(tiny_run, target="coreml")
    m = read_manifest(path.with_name("student.manifest.json"))
    assert m.parity is not None and m.parity.passed and m.parity_skipped is None


def test_graph_check_names_the_offending_op_and_layer() -> None:
    class Jitter(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + 0.1 * torch.randn_like(x)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.GroupNorm(1, 1), torch.nn.Dropout(0.5))
            self.jitter = Jitter()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.jitter(self.body(x))

    for target in ("tflite", "coreml"):
        with pytest.raises(EdgekdError) as err:
            check_graph(Net(), (torch.randn(1, 1, 8, 8),), target)
        msg = str(err.value)
        assert "aten.randn_like" in msg and "jitter (Jitter)" in msg and target in msg and "\n" not in msg
    # eval-mode dropout and GroupNorm alone pass (GroupNorm is a note)
    _, findings = check_graph(torch.nn.Sequential(torch.nn.GroupNorm(1, 1), torch.nn.Dropout(0.5)),
                              (torch.randn(1, 1, 8, 8),), "tflite")
    assert [f.action for f in findings] == ["note"] and "group_norm" in findings[0].op


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    ours = [line for line in err if line.startswith("edgekd: error:")]
    assert len(ours) == 1, err
    return ours[0]


def test_bad_inputs_one_line_exit_2_nothing_written(tiny_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    line = _cli_error(capsys, ["export", str(tmp_path / "nope"), "--target", "tflite"])
    assert "does not exist" in line

    no_student = tmp_path / "no_student"
    no_student.mkdir()
    shutil.copy(tiny_run / "recipe.yaml", no_student / "recipe.yaml")
    assert "no trained student" in _cli_error(capsys, ["export", str(no_student), "--target", "coreml"])
    assert not (no_student / "exports").exists()

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    shutil.copy(tiny_run / "recipe.yaml", corrupt / "recipe.yaml")
    shutil.copytree(tiny_run / "student", corrupt / "student")
    weights = corrupt / "student" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for target in ("tflite", "coreml", "all"):
        assert "model.safetensors" in _cli_error(capsys, ["export", str(corrupt), "--target", target])
    assert not (corrupt / "exports").exists()

    assert "unknown export target 'tflight'" in _cli_error(capsys, ["export", str(tiny_run), "--target", "tflight"])
    assert "not supported for target onnx" in _cli_error(capsys, ["export", str(tiny_run), "--precision", "palettize4"])
    assert "unknown CoreML compute units" in _cli_error(
        capsys, ["export", str(tiny_run), "--target", "coreml", "--compute-units", "GPU_ONLY"])
    _no_partials(tiny_run)


def test_cli_process_prints_exactly_one_line(tiny_run: Path, tmp_path: Path) -> None:
    """The whole stderr of a real `edgekd export` process on a corrupt student: one line, exit 2, nothing written."""
    import subprocess
    import sys

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    shutil.copy(tiny_run / "recipe.yaml", corrupt / "recipe.yaml")
    shutil.copytree(tiny_run / "student", corrupt / "student")
    weights = corrupt / "student" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    proc = subprocess.run([sys.executable, "-m", "edgekd.cli", "export", str(corrupt), "--target", "tflite"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("edgekd: error: ")
    assert not (corrupt / "exports").exists()


def test_summary_table_lists_every_target() -> None:
    from edgekd.export.manifest import ParitySpec

    parity = ParitySpec(runtime="x", samples=2, seed=7, max_abs_error=1e-6, psnr_db=120.0, psnr_min=35.0, passed=True)
    table = summary_table([
        ExportResult("onnx", Path("e/onnx/student.onnx"), 600_000, parity),
        ExportResult("tflite", None, error=EdgekdError("boom")),
        ExportResult("coreml", Path("e/coreml/student.mlpackage"), 380_000, note="not run (macOS only)"),
    ])
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split(" | ")] == ["target", "file", "size", "parity"]
    assert "120.0 dB" in table and "FAILED: boom" in table and "not run (macOS only)" in table and len(lines) == 5


def test_manifest_reads_version_1_and_needs_a_reason_for_missing_parity(tflite_fp32: Path, tmp_path: Path) -> None:
    import json

    raw = json.loads(tflite_fp32.with_name("student.manifest.json").read_text())
    g = raw["models"][0]
    v1 = {"format_version": 1, "edgekd_version": "0.1.0", "role": "student", "name": "old",
          "model": {"file": "student.onnx", "target": "onnx", "bytes": g["bytes"], "sha256": g["sha256"]},
          "inputs": [{"name": "noise", "shape": ["batch", 1, 32, 32]}],
          "output": {"name": "image", "shape": ["batch", 1, 32, 32], "crop": [2, 2, 28, 28]},
          "sampling": {"kind": "one_step", "steps": 1, "timesteps": [0]}, "parity": g["parity"],
          "created": raw["created"]}
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    old = read_manifest(tmp_path / "v1.json")  # upgraded in memory to the version-3 shape
    assert old.format_version == 1
    assert old.models[0].file == "student.onnx" and old.sampling.kind == "one_step" and old.image.crop == (2, 2, 28, 28)
    (tmp_path / "v9.json").write_text(json.dumps({**raw, "format_version": 9}))
    with pytest.raises(EdgekdError, match="format_version 9"):
        read_manifest(tmp_path / "v9.json")
    (tmp_path / "noreason.json").write_text(json.dumps({**raw, "parity": None, "parity_skipped": None}))
    with pytest.raises(EdgekdError, match="parity_skipped"):
        read_manifest(tmp_path / "noreason.json")
    bad = {**raw, "sampling": {"kind": "one_step", "graph": "nope"}}
    (tmp_path / "badgraph.json").write_text(json.dumps(bad))
    with pytest.raises(EdgekdError, match="nope"):
        read_manifest(tmp_path / "badgraph.json")
