"""Table-driven bad inputs: every one ends in exactly one `edgekd: error: ...` line naming the problem, the right
exit code, no traceback, and nothing written that a later command would trust.

Each case builds its inputs in a fresh folder and returns the command line and a check of what is left behind.
Cases that need a finished run copy the session's tiny run (tests/reliability/conftest.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import Ctx
from edgekd_testing import needs_fmnist
from reliability_harness import assert_one_error, run_inprocess, tree

pytestmark = needs_fmnist
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], tuple[list, Callable[[], None] | None]]
    rc: int = 2
    needles: tuple[str, ...] = ()
    root_ok: bool = True  # False: file modes do not bind root, the case cannot fail as root, so it is skipped


def nothing_at(*paths: Path) -> Callable[[], None]:
    def check() -> None:
        for p in paths:
            assert not Path(p).exists(), f"{p} was created"
    return check


def unchanged(path: Path) -> Callable[[], None]:
    before = tree(path)

    def check() -> None:
        assert tree(path) == before, f"{path} was modified"
    return check


def both(*checks: Callable[[], None] | None) -> Callable[[], None]:
    def check() -> None:
        for c in checks:
            if c is not None:
                c()
    return check


# ----------------------------------------------------------------------------------------------- numbers (CLI)
def _argv(*argv: str) -> Callable[[Ctx], tuple[list, Callable[[], None]]]:
    """On a real finished run, so a number that slipped through would reach the code that uses it."""
    def build(ctx: Ctx) -> tuple[list, Callable[[], None]]:
        run = ctx.run_copy()
        return [str(run) if a == "RUN" else a for a in argv], unchanged(run)
    return build


CLI_NUMBERS = [
    Case("sample-n-negative", _argv("sample", "RUN", "-n", "-3"), needles=("-n/--num", "-3")),
    Case("sample-n-zero", _argv("sample", "RUN", "-n", "0"), needles=("-n/--num",)),
    Case("sample-n-text", _argv("sample", "RUN", "-n", "many"), needles=("integer",)),
    Case("sample-seed-negative", _argv("sample", "RUN", "--seed", "-1"), needles=("--seed",)),
    Case("sample-teacher-steps-0", _argv("sample", "RUN", "--teacher-steps", "0"), needles=("--teacher-steps",)),
    Case("profile-fid-samples-1", _argv("profile", "RUN", "--fid-samples", "1"), needles=("--fid-samples",)),
    Case("profile-teacher-steps-0", _argv("profile", "RUN", "--teacher-steps", "0"), needles=("--teacher-steps",)),
    Case("profile-teacher-steps-5000", _argv("profile", "RUN", "--teacher-steps", "5000"), needles=("5000",)),
    Case("profile-repeats-0", _argv("profile", "RUN", "--repeats", "0"), needles=("--repeats",)),
    Case("export-batch-0", _argv("export", "RUN", "--batch", "0"), needles=("--batch",)),
    Case("compress-prune-1.5", _argv("compress", "RUN", "--prune", "1.5"), needles=("--prune",)),
    Case("compress-recover-steps-negative", _argv("compress", "RUN", "--recover-steps", "-1"), needles=("--recover-steps",)),
]


# ----------------------------------------------------------------------------------------------- recipes
def _distill_recipe(run_name: str = "run", extra: list[str] | None = None, **sections: object):
    def build(ctx: Ctx) -> tuple[list, Callable[[], None]]:
        run = ctx.tmp / run_name
        return ["distill", ctx.recipe(run=run, **sections), *(extra or [])], nothing_at(run, ctx.tmp / "cache")
    return build


def _raw(mapping: object, extra: list[str] | None = None):
    def build(ctx: Ctx) -> tuple[list, Callable[[], None]]:
        return ["distill", ctx.raw_recipe(mapping), *(extra or [])], nothing_at(ctx.tmp / "run", ctx.tmp / "cache")
    return build


RECIPES = [
    Case("train-steps-true", _distill_recipe(train={"steps": True}), needles=("steps", "boolean")),
    Case("teacher-steps-negative", _distill_recipe(teacher={"steps": -3}), needles=("teacher.steps",)),
    Case("teacher-steps-5000", _distill_recipe(teacher={"steps": 5000}), needles=("teacher.steps",)),
    Case("profile-teacher-steps-negative", _distill_recipe(profile={"teacher_steps": [-3]}), needles=("profile.teacher_steps",)),
    Case("profile-teacher-steps-empty", _distill_recipe(profile={"teacher_steps": []}), needles=("profile.teacher_steps",)),
    Case("lr-nan", _distill_recipe(train={"lr": float("nan")}), needles=("train.lr", "finite")),
    Case("pad-value-inf", _distill_recipe(data={"pad_value": float("inf")}), needles=("pad_value", "finite")),
    Case("record-booleans", _distill_recipe(trajectory={"record": [True]}), needles=("record", "boolean")),
    Case("channels-true", _distill_recipe(data={"channels": True}), needles=("channels", "boolean")),
    Case("name-dotdot", _distill_recipe(name=".."), needles=("name", "'..'")),
    Case("name-dot", _distill_recipe(name="."), needles=("name",)),
    Case("top-level-list-with-set", _raw(["a", "b"], ["--set", "train.steps=3"]), needles=("mapping", "list")),
    Case("top-level-list", _raw([1, 2]), needles=("mapping",)),
    Case("top-level-scalar-with-set", _raw("hello", ["--set", "train.steps=3"]), needles=("mapping",)),
    Case("set-without-equals", _distill_recipe(extra=["--set", "train.steps"]), needles=("key.sub=value",)),
    Case("set-into-a-number", _distill_recipe(extra=["--set", "train.steps.x=1"]), needles=("not a section",)),
    Case("recipe-is-a-folder", lambda ctx: (["distill", ctx.tmp], None), needles=("not found",)),
    Case("recipe-bad-yaml", lambda ctx: (["distill", _write(ctx.tmp / "r.yaml", "name: [unclosed\n")], None),
         needles=("not valid YAML",)),
    Case("recipe-binary", lambda ctx: (["distill", _write(ctx.tmp / "r.yaml", b"\xff\xfe\x00garbage")], None)),
]


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# ----------------------------------------------------------------------------------------------- paths
def _run_dir_under_file(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    blocker = ctx.a_file()
    return ["distill", ctx.recipe(run=blocker / "run")], unchanged(blocker)


def _cache_under_file(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    blocker = ctx.a_file()
    return ["distill", ctx.recipe(trajectory={"cache_dir": str(blocker / "cache")})], unchanged(blocker)


def _run_dir_is_file(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    blocker = ctx.a_file()
    return ["distill", ctx.recipe(run=blocker)], unchanged(blocker)


def _user_folder(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    folder = ctx.tmp / "my-photos"
    folder.mkdir()
    (folder / "recipe.yaml").write_text("my own notes\n")
    (folder / "student").mkdir()
    (folder / "student" / "thesis.txt").write_text("precious\n")
    return ["distill", ctx.recipe(run=folder)], unchanged(folder)


def _user_folder_resume(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    argv, check = _user_folder(ctx)
    return [*argv, "--resume"], check


def _sample_out_under_file(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    run, blocker = ctx.run_copy(), ctx.a_file()
    return ["sample", run, "-n", "2", "--out", blocker / "grid.png"], unchanged(blocker)


def _exports_is_file(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    run = ctx.run_copy()
    import shutil

    shutil.rmtree(run / "exports")
    (run / "exports").write_text("not a folder\n")
    return ["export", run, "--exporter", "torchscript"], unchanged(run)


def _readonly(ctx: Ctx, kind: str) -> tuple[list, Callable[[], None]]:
    locked = ctx.tmp / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    if kind == "run":
        return ["distill", ctx.recipe(run=locked / "run")], nothing_at(locked / "run")
    if kind == "cache":
        return ["distill", ctx.recipe(trajectory={"cache_dir": str(locked / "cache")})], nothing_at(locked / "cache")
    if kind == "export":
        run = ctx.run_copy()
        os.chmod(run / "exports" / "onnx", 0o555)
        return ["export", run, "--exporter", "torchscript"], unchanged(run / "exports")
    run = ctx.run_copy()
    return ["sample", run, "-n", "2", "--out", locked / "grid.png"], nothing_at(locked / "grid.png")


PATHS = [
    Case("run-dir-under-a-file", _run_dir_under_file, needles=("plain-file",)),
    Case("cache-dir-under-a-file", _cache_under_file, needles=("plain-file",)),
    Case("run-dir-is-a-file", _run_dir_is_file, needles=("plain-file", "file")),
    Case("run-dir-is-a-user-folder", _user_folder, needles=("did not create",)),
    Case("run-dir-is-a-user-folder-resume", _user_folder_resume, needles=("did not create",)),
    Case("sample-out-under-a-file", _sample_out_under_file, needles=("plain-file",)),
    Case("exports-is-a-file", _exports_is_file, needles=("exports",)),
    Case("unwritable-run-dir", lambda ctx: _readonly(ctx, "run"), needles=("permission",), root_ok=False),
    Case("unwritable-cache-dir", lambda ctx: _readonly(ctx, "cache"), needles=("permission",), root_ok=False),
    Case("unwritable-export-folder", lambda ctx: _readonly(ctx, "export"), needles=("permission",), root_ok=False),
    Case("unwritable-sample-out", lambda ctx: _readonly(ctx, "sample"), needles=("permission",), root_ok=False),
]


# ----------------------------------------------------------------------------------------------- run contents
def _corrupt_run_recipe(command: str, content: bytes):
    def build(ctx: Ctx) -> tuple[list, Callable[[], None]]:
        run = ctx.run_copy()
        (run / "recipe.yaml").write_bytes(content)
        argv = {"sample": ["sample", run, "-n", "2"], "export": ["export", run, "--exporter", "torchscript"],
                "profile": ["profile", run]}[command]
        return argv, unchanged(run)
    return build


def _garbage_scheduler(content: str):
    def build(ctx: Ctx) -> tuple[list, Callable[[], None]]:
        teacher = ctx.teacher_copy()
        (teacher / "scheduler" / "scheduler_config.json").write_text(content)
        recipe = ctx.recipe(teacher={"path": str(teacher)})
        return ["distill", recipe], nothing_at(ctx.tmp / "cache" / "trajectories")
    return build


def _damaged_student(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    run = ctx.run_copy()
    weights = next((run / "student").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    return ["export", run, "--exporter", "torchscript"], unchanged(run / "exports")


def _onnx_replaced(content: Callable[[bytes], bytes], which: str = "student.onnx"):
    def build(ctx: Ctx) -> tuple[list, Callable[[], None]]:
        run = ctx.run_copy()
        model = run / "exports" / "onnx" / which
        model.write_bytes(content(model.read_bytes()))
        return ["profile", run, "--fid-samples", "2"], nothing_at(run / "report")
    return build


def _manifest_garbled(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    """(A missing manifest is not an error: profile re-exports the current student, as on a fresh run.)"""
    run = ctx.run_copy()
    (run / "exports" / "onnx" / "student.manifest.json").write_text('{"format_version": 3, "models": [')
    return ["profile", run, "--fid-samples", "2"], nothing_at(run / "report")


def _student_changed_after_export(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    """What a --resume or a hand copy does: the student on disk is no longer the one exported."""
    from safetensors.torch import load_file, save_file

    run = ctx.run_copy()
    weights = next((run / "student").glob("*.safetensors"))
    state = load_file(str(weights))
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, str(weights))
    return ["profile", run, "--fid-samples", "2"], nothing_at(run / "report")


def _old_manifest_without_fingerprint(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    run = ctx.run_copy()
    path = run / "exports" / "onnx" / "student.manifest.json"
    manifest = json.loads(path.read_text())
    manifest["source"].pop("student_sha256")
    path.write_text(json.dumps(manifest))
    return ["profile", run, "--fid-samples", "2"], nothing_at(run / "report")


RUNS = [
    Case("run-recipe-corrupt-sample", _corrupt_run_recipe("sample", b"name: [oops\n"), needles=("corrupt",)),
    Case("run-recipe-corrupt-export", _corrupt_run_recipe("export", b"\x00\xff\xfe"), needles=("corrupt",)),
    Case("run-recipe-corrupt-profile", _corrupt_run_recipe("profile", b"teacher: {path: [\n"), needles=("corrupt",)),
    Case("run-recipe-is-a-list", _corrupt_run_recipe("export", b"- 1\n- 2\n"), needles=("mapping",)),
    Case("scheduler-config-garbage", _garbage_scheduler("{not json"), needles=("scheduler",)),
    Case("scheduler-config-bad-values", _garbage_scheduler(json.dumps({"_class_name": "DDPMScheduler",
                                                                       "beta_schedule": "wobbly"})),
         needles=("scheduler",)),
    Case("student-weights-truncated", _damaged_student, needles=("safetensors",)),
    Case("profile-random-onnx", _onnx_replaced(lambda b: os.urandom(len(b))), needles=("sha256", "edgekd export")),
    Case("profile-truncated-onnx", _onnx_replaced(lambda b: b[: len(b) // 2]), needles=("sha256",)),
    Case("profile-truncated-teacher-onnx", _onnx_replaced(lambda b: b[:1000], "teacher_step.onnx"),
         needles=("teacher_step.onnx", "--teacher")),
    Case("profile-manifest-garbled", _manifest_garbled, needles=("manifest", "not valid JSON")),
    Case("profile-stale-export", _student_changed_after_export, needles=("stale", "edgekd export")),
    Case("profile-export-without-fingerprint", _old_manifest_without_fingerprint, needles=("fingerprint", "edgekd export")),
]


# ----------------------------------------------------------------------------------------------- data
def _npz_teacher_train(array: np.ndarray):
    def build(ctx: Ctx) -> tuple[list, Callable[[], None]]:
        np.savez(ctx.tmp / "images.npz", images=array)
        recipe = ctx.raw_recipe({
            "name": "t", "run_dir": str(ctx.tmp / "trun"), "device": "cpu",
            "data": {"kind": "npz", "path": str(ctx.tmp / "images.npz"), "resolution": 8},
            "unet": {"block_out_channels": [8, 8], "norm_num_groups": 4},
            "train": {"steps": 2, "batch_size": 2, "eval_every": 1, "sample_every": 2, "checkpoint_every": 2},
            "sample_steps": 2})
        return ["teacher", "train", recipe], nothing_at(ctx.tmp / "trun" / "checkpoints", ctx.tmp / "trun" / "teacher")
    return build


rng = np.random.default_rng(0)
DATA = [
    Case("npz-float-minus-one-to-one", _npz_teacher_train(rng.uniform(-1, 1, (4, 8, 8)).astype(np.float32)),
         needles=("neither uint8",)),
    Case("npz-nan", _npz_teacher_train(np.where(rng.uniform(size=(4, 8, 8)) > 0.5, np.nan, 0.5).astype(np.float32)),
         needles=("NaN",)),
    Case("npz-uint16-range", _npz_teacher_train(rng.integers(0, 65535, (4, 8, 8)).astype(np.uint16)),
         needles=("65", "uint8")),
    Case("npz-bool", _npz_teacher_train(rng.uniform(size=(4, 8, 8)) > 0.5), needles=("bool",)),
    Case("npz-empty", _npz_teacher_train(np.zeros((0, 8, 8), np.uint8)), needles=("N >= 1",)),
]


def _nan_teacher(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    from safetensors.torch import load_file, save_file

    teacher = ctx.teacher_copy()
    weights = teacher / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    name = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(weights))
    recipe = ctx.recipe(teacher={"path": str(teacher)})

    def check() -> None:
        assert not list((ctx.tmp / "cache").rglob("shard_*")), "non-finite trajectories were cached"
        assert not (ctx.tmp / "run" / "checkpoints").exists()
    return ["distill", recipe], check


TEACHERS = [Case("teacher-weights-nan", _nan_teacher, needles=("NaN", "teacher"))]


# ----------------------------------------------------------------------------------------------- resume
def _resume_with(**sections: object):
    def build(ctx: Ctx) -> tuple[list, Callable[[], None]]:
        run = ctx.run_copy()
        recipe = ctx.recipe(run=run, **sections)
        return ["distill", recipe, "--resume"], unchanged(run)
    return build


def _resume_other_teacher_files(ctx: Ctx) -> tuple[list, Callable[[], None]]:
    """Same teacher.path, other weights (retrained in place): the recorded fingerprint catches it."""
    from safetensors.torch import load_file, save_file

    run = ctx.run_copy()
    recipe_text = (run / "recipe.yaml").read_text()
    teacher = Path(__import__("yaml").safe_load(recipe_text)["teacher"]["path"])
    record = json.loads((run / "teacher.json").read_text())
    record["fingerprint"] = "0" * 16  # as if the teacher had other weights when the run was trained
    (run / "teacher.json").write_text(json.dumps(record))
    return ["distill", ctx.recipe(run=run, teacher={"path": str(teacher)}), "--resume"], unchanged(run / "recipe.yaml")


RESUME = [
    Case("resume-other-student-width", _resume_with(student={"block_out_channels": [16, 16]}),
         needles=("student.block_out_channels", "new run_dir")),
    Case("resume-other-teacher-path", lambda ctx: _resume_with(teacher={"path": str(ctx.teacher_copy("t2"))})(ctx),
         needles=("teacher.path",)),
    Case("resume-other-lr", _resume_with(train={"lr": 0.5}), needles=("train.lr",)),
    Case("resume-other-seed", _resume_with(seed=7), needles=("seed",)),
    Case("resume-other-method-loss", _resume_with(method={"loss": "l2"}), needles=("method.loss",)),
    Case("resume-teacher-changed-in-place", _resume_other_teacher_files, needles=("teacher", "fingerprint")),
]

CASES = CLI_NUMBERS + RECIPES + PATHS + RUNS + DATA + TEACHERS + RESUME


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_error(case: Case, ctx: Ctx) -> None:
    if IS_ROOT and not case.root_ok:
        pytest.skip("root ignores file modes: the same mapping is covered by the *-under-a-file cases")
    argv, check = case.build(ctx)
    res = run_inprocess(argv)
    assert_one_error(res, case.rc, *case.needles)
    if check is not None:
        check()
    assert "diverged" not in res.err  # a broken input must be named as such, not blamed on the learning rate
