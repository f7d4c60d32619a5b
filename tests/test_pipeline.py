"""The whole path on a tiny configuration: distill -> export (parity) -> profile -> sample, plus kill/resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.cli import main
from edgekd.distill import distill
from edgekd.errors import ParityError
from edgekd.export import export_run
from edgekd.export.manifest import read_manifest
from edgekd.recipe import load_recipe
from edgekd_testing import needs_fmnist, tiny_recipe, write_recipe

pytestmark = needs_fmnist


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    base = tmp_path_factory.mktemp("pipeline")
    path = write_recipe(base / "tiny.yaml", tiny_recipe(tiny_teacher_dir, base / "run"))
    return distill(load_recipe(path))


def test_distill_writes_the_run(finished_run: Path) -> None:
    for name in ("recipe.yaml", "student/model.safetensors", "student/config.json", "summary.json", "metrics.jsonl",
                 "checkpoints/latest.json", "samples/step_00000012.png"):
        assert (finished_run / name).exists(), name
    assert list((finished_run / "tb").glob("events.out.tfevents.*"))
    lines = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))
    assert sum("eval_loss" in r for r in lines) == 3
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["best_eval_loss"] == min(r["eval_loss"] for r in lines if "eval_loss" in r)


def test_export_onnx_passes_parity_and_writes_manifest(finished_run: Path) -> None:
    model = export_run(finished_run)
    manifest = read_manifest(model.with_name("student.manifest.json"))
    assert manifest.parity is not None and manifest.parity.passed and manifest.parity.psnr_db >= 35
    assert manifest.inputs[0].name == "noise" and manifest.inputs[0].shape == ["batch", 1, 32, 32]
    assert manifest.image.crop == (2, 2, 28, 28) and manifest.sampling.kind == "one_step"
    assert manifest.model.bytes == model.stat().st_size
    teacher = export_run(finished_run, teacher=True, exporter="torchscript")
    tm = read_manifest(teacher.with_name("teacher_step.manifest.json"))
    assert tm.sampling.kind == "ddim" and tm.sampling.timesteps == [999, 666, 332]  # diffusers trailing spacing
    assert [i.name for i in tm.inputs] == ["sample", "timestep"]


def test_parity_gate_rejects_a_wrong_model(finished_run: Path, tmp_path: Path) -> None:
    """An ONNX file of other weights must fail the gate (the check can fail)."""
    from edgekd.export.parity import check_parity
    from edgekd.noise import make_noise
    from edgekd.profile.generators import OnnxStudent, TorchStudent
    from edgekd.rundir import RunDir

    student = RunDir.open(finished_run).student()
    other = RunDir.open(finished_run).student()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    from edgekd.export.onnx import export_onnx

    path = export_onnx(other, (torch.randn(2, 1, 32, 32),), tmp_path / "other.onnx", ["noise"], "image", exporter="torchscript")
    noise = make_noise(1, 0, 2, (1, 32, 32))
    with pytest.raises(ParityError, match="parity check failed"):
        check_parity(TorchStudent(student), OnnxStudent(path), noise, 1, 35.0, "test")


def test_profile_prints_table_and_writes_reports(finished_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["profile", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "| teacher DDIM-3 torch |" in out and "| student onnxruntime |" in out and "Speed-up" in out
    report = json.loads((finished_run / "report" / "profile.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    teacher, student = rows["teacher DDIM-3 torch"], rows["student onnxruntime"]
    assert teacher["fid"] > 0 and student["fid"] > 0 and student["psnr_vs_teacher"] is not None
    from edgekd.profile.measure import count_macs
    from edgekd.teachers.diffusers_teacher import load_teacher

    unet = load_teacher(report["teacher"]).unet
    one_call = count_macs(unet, torch.zeros(1, 1, 32, 32), torch.tensor([999]))
    assert one_call > 0 and teacher["macs_per_image"] == 3 * one_call  # DDIM-3: three network calls per image
    assert 0 < student["macs_per_image"] < teacher["macs_per_image"]
    assert teacher["params"] == sum(p.numel() for p in unet.parameters())
    for key in (f"{t}t" for t in report["threads"]):
        assert teacher["latency_ms"][key] > 0 and student["latency_ms"][key] > 0
        assert student["speedup"]["teacher DDIM-3 torch"][key] == pytest.approx(
            teacher["latency_ms"][key] / student["latency_ms"][key])
    assert (finished_run / "report" / "profile.md").read_text().count("|") > 20
    assert (finished_run / "report" / "samples.png").stat().st_size > 1000


def test_sample_grid(finished_run: Path) -> None:
    from PIL import Image

    assert main(["sample", str(finished_run), "-n", "8", "--out", str(finished_run / "s.png")]) == 0
    img = Image.open(finished_run / "s.png")
    assert img.width > 8 * 28 and img.height > 2 * 28


def test_commands_on_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv in (["export", str(tmp_path / "nope")], ["profile", str(tmp_path / "nope")], ["sample", str(tmp_path / "nope")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "does not exist" in err


def test_rerun_without_resume_refuses(finished_run: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = finished_run.parent / "tiny.yaml"
    assert main(["distill", str(recipe)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_sigkill_then_resume_continues(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    """Kill -9 mid-training; --resume continues from the last checkpoint and ends at the same step count."""
    recipe = tiny_recipe(tiny_teacher_dir, tmp_path / "run", train={"steps": 400, "checkpoint_every": 5, "eval_every": 50,
                                                                    "sample_every": 400, "threads": 1})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    cmd = [sys.executable, "-m", "edgekd.cli", "distill", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    latest = tmp_path / "run" / "checkpoints" / "latest.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 10:
            break
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("no checkpoint within 240 s")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at < 400
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"(step {killed_at})" in done.stdout + done.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 401))  # lines past the checkpoint were trimmed, nothing repeated or lost
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == killed_at and summary["steps"] == 400
