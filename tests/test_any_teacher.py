"""Bring your own diffusers model: every layout edgekd takes (tests/layouts.py, diffusers' own save_pretrained)
distills, exports with parity and samples by condition, with tiny budgets. The text teacher runs the whole
quickstart (distill, ONNX pipeline of three graphs, profile with the cost per stage, report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd_testing import cli, tiny_recipe, write_recipe
from layouts import build

TINY = {"train": {"steps": 4, "eval_every": 2, "sample_every": 4, "checkpoint_every": 2},
        "trajectory": {"num_samples": 20, "heldout": 4, "shard_size": 20, "batch_size": 10}}


def recipe_for(folder: Path, run: Path, **teacher: object) -> dict:
    recipe = tiny_recipe(folder, run, **TINY)
    recipe["teacher"].update(steps=3, **teacher)
    return recipe


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("any_teacher")


def _distill(root: Path, kind: str, **teacher: object) -> Path:
    folder = root / kind if (root / kind).is_dir() else build(kind, root)
    recipe = recipe_for(folder, root / f"run-{kind}", **teacher)
    recipe["student"] = {"init": "teacher"}
    rc, out = cli("distill", write_recipe(root / f"{kind}.yaml", recipe))
    assert rc == 0, out
    return root / f"run-{kind}"


def _manifest(run: Path, target: str = "onnx") -> dict:
    return json.loads((run / "exports" / target / "student.manifest.json").read_text())


@pytest.mark.parametrize("kind", ["class", "vpred", "ldm", "dit"])
def test_layout_distills_exports_and_samples(root: Path, kind: str) -> None:
    run = _distill(root, kind, **({"guidance_scale": 2.0} if kind == "dit" else {}))
    rc, out = cli("export", run, "--target", "onnx")
    assert rc == 0, out
    m = _manifest(run)
    graphs = [g["name"] for g in m["models"]]
    student = next(g for g in m["models"] if g["name"] == "student")
    assert all(g["parity"]["passed"] and g["parity"]["psnr_db"] >= 35 for g in m["models"])
    assert m["parity"]["passed"]
    inputs = {i["name"]: i for i in student["inputs"]}
    if kind in ("class", "dit"):
        assert m["format_version"] == 4 and m["condition"]["kind"] == "class"
        assert inputs["class_labels"]["dtype"] == "int64" and inputs["class_labels"]["shape"] == ["batch"]
    if kind in ("ldm", "dit"):
        assert graphs[-1] == "decoder" and m["decode"]["graph"] == "decoder"
        assert student["output"]["name"] == "latents" and m["image"]["channels"] == 3
    if kind == "vpred":
        assert m["format_version"] == 3 and graphs == ["student"]  # a one-graph model stays version 3
        config = json.loads((run / "student" / "config.json").read_text())
        assert config["prediction_type"] == "v_prediction" and config["parametrisation"].startswith("x0 = sqrt(a)")
    if kind in ("class", "dit"):
        name = "Sneaker" if kind == "class" else "goldfish"
        rc, out = cli("sample", run, "--class", name, "-n", "2")
        assert rc == 0 and Path(out.strip().splitlines()[-1]).is_file(), out


def test_student_follows_its_condition_and_exports_keep_it(root: Path) -> None:
    """The condition is a real graph input: another class is another picture, in torch and in the export."""
    from edgekd.rundir import RunDir
    from edgekd.runtime import open_generator

    run = root / "run-class" if (root / "run-class" / "student").is_dir() else _distill(root, "class")
    if not (run / "exports/onnx/student.manifest.json").is_file():
        assert cli("export", run, "--target", "onnx")[0] == 0
    student = RunDir.open(run).student()
    noise = torch.randn(2, 1, 32, 32)
    a, b = student(noise, torch.tensor([1, 2])), student(noise, torch.tensor([3, 4]))
    assert (a - b).abs().max() > 1e-3
    onnx = open_generator(run / "exports/onnx/student.manifest.json")
    np.testing.assert_allclose(onnx.generate(noise, torch.tensor([3, 4])).numpy(), b.detach().numpy(), atol=1e-4)
    for target in ("tflite", "coreml"):
        rc, out = cli("export", run, "--target", target)
        assert rc == 0, out
        names = {i["name"]: i["dtype"] for i in _manifest(run, target)["models"][0]["inputs"]}
        assert names == {"noise": "float32", "class_labels": "int32"}
    # int8 calibrates on noise with conditions drawn i mod K (compress/calibration.py pipeline_set)
    rc, out = cli("export", run, "--target", "onnx", "--precision", "int8")
    assert rc == 0, out
    m = json.loads((run / "exports/onnx/student_int8.manifest.json").read_text())
    assert m["parity"]["passed"] and m["models"][0]["checks"]["quantization"]["calibration"]["source"].startswith(
        "standard-normal noise with class conditions")


def test_text_teacher_quickstart_end_to_end(root: Path) -> None:
    folder = build("sd", root)
    run = root / "qs-sd"
    sets = ["teacher.steps=3", "teacher.guidance_scale=3", "train.steps=4", "train.max_minutes=1",
            "train.eval_every=2", "train.checkpoint_every=2", "train.sample_every=4", "train.batch_size=8",
            "trajectory.num_samples=20", "trajectory.heldout=4", "trajectory.batch_size=10",
            f"trajectory.cache_dir={root / 'cache'}", "profile.fid_samples=8", "profile.latency_repeats=2",
            "profile.threads=[1]", "profile.teacher_steps=[3]", "device=cpu", "student.init=teacher",
            "teacher.prompts=['a red bag','two shoes']"]
    rc, out = cli("quickstart", "--run-dir", run, "--set", f"teacher.path={folder}",
                  *[x for s in sets for x in ("--set", s)])
    assert rc == 0, out
    m = _manifest(run)
    assert [g["name"] for g in m["models"]] == ["text_encoder", "student", "decoder"]
    assert m["condition"]["kind"] == "text" and m["condition"]["encoder_graph"] == "text_encoder"
    assert m["condition"]["example_prompts"] == ["a red bag", "two shoes"] and m["guidance_scale"] == 3.0
    assert [g["stage"] for g in m["models"]] == ["condition", "denoise", "decode"]
    # the teacher's guided step graph takes the embeddings too, with the same text encoder and decoder
    t = json.loads((run / "exports/onnx/teacher_step.manifest.json").read_text())
    assert [g["name"] for g in t["models"]] == ["text_encoder", "teacher_step", "decoder"] and t["parity"]["passed"]
    step_inputs = [i["name"] for i in t["models"][1]["inputs"]]
    assert step_inputs == ["sample", "timestep", "encoder_hidden_states"] and t["sampling"]["kind"] == "ddim"
    assert all(g["parity"]["passed"] for g in m["models"]) and m["parity"]["passed"]
    # the exported vocab.json + merges.txt tokenize as the teacher's tokenizer does (what the apps implement)
    from edgekd.manifest import read_manifest
    from edgekd.models.stages import token_ids
    from edgekd.runtime import open_generator
    from edgekd.runtime.open import exported_tokenizer
    from edgekd.teachers.diffusers_teacher import load_teacher

    folder_out = run / "exports/onnx"
    teacher = load_teacher(str(folder), prompts=["a red bag"])
    prompts = ["a red bag", "the red cat sat", "  Two   SHOES!  ", "ok"]
    np.testing.assert_array_equal(token_ids(exported_tokenizer(read_manifest(folder_out / "student.manifest.json"),
                                                               folder_out), prompts),
                                  token_ids(teacher.tokenizer, prompts))
    # the manifest alone runs the pipeline (prompt i mod P by default), as torch does
    from edgekd.profile.inventory import staged_student
    from edgekd.rundir import RunDir
    from edgekd.runtime import torch_generator

    noise = torch.randn(2, 4, 8, 8)
    ref = torch_generator(staged_student(RunDir.open(run))).generate(noise)
    np.testing.assert_allclose(open_generator(folder_out / "student.manifest.json").generate(noise).numpy(),
                               ref.numpy(), atol=1e-4)
    profile = json.loads((run / "report/profile.json").read_text())
    assert any(r["name"] == "teacher DDIM-3 onnxruntime" and r.get("psnr_vs_teacher", 0) > 35 for r in profile["rows"])
    stages = {(r["model"], r["stage"].split(" ")[0]) for r in profile["stages"]}
    assert {("student", "text_encoder"), ("student", "decoder"), ("teacher", "denoiser")} <= stages
    assert "3x16x16" in profile["quality"]["fid_skipped"]
    assert all(r.get("fid") is None for r in profile["rows"])
    rc, out = cli("sample", run, "--prompt", "a red bag", "-n", "2")
    assert rc == 0, out
    rc, out = cli("sample", run, "--class", "3")
    assert rc == 2 and "text-conditional" in out and "Traceback" not in out


def test_vq_decoder_graph_equals_the_pipeline_decode(root: Path) -> None:
    """The decoder graph's matmul nearest-code lookup (exportable) is diffusers' cdist quantization."""
    from edgekd.models.stages import DecoderGraph
    from edgekd.teachers.diffusers_teacher import load_teacher

    folder = root / "ldm" if (root / "ldm").is_dir() else build("ldm", root)
    teacher = load_teacher(str(folder))
    latents = torch.randn(3, 3, 8, 8) * 2
    graph = DecoderGraph(teacher.decoder, teacher.scaling_factor)
    np.testing.assert_allclose(graph(latents).detach().numpy(), teacher.decode(latents).numpy(), atol=1e-5)


def test_bad_conditions_are_one_line(root: Path, tiny_teacher_dir: Path) -> None:
    run = root / "run-class" if (root / "run-class" / "student").is_dir() else _distill(root, "class")
    for argv, text in [(["--class", "12"], "out of range"), (["--class", "spaceship"], "unknown class name"),
                       (["--prompt", "hi"], "class-conditional"), (["--guidance", "3"], "no unconditional branch")]:
        rc, out = cli("sample", run, *argv)
        assert rc == 2 and text in out and "Traceback" not in out, out
    recipe = recipe_for(root / "class", root / "run-adv")
    recipe["student"] = {"kind": "layerwise", "input_size": 4, "channels": [8, 8, 8], "up_blocks": [0, 1, 2]}
    recipe["method"] = {"name": "adv_kd"}
    recipe["trajectory"]["record"] = [1, 2]
    rc, out = cli("distill", write_recipe(root / "adv.yaml", recipe))
    assert rc == 2 and "use method: denoising_student" in out, out
