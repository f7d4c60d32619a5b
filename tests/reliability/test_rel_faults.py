"""Faults from outside: kill -9 during recording, training and export, and two processes on one cache key.

Each kills or races real `python -m edgekd.cli` processes, then checks that what is left on disk is either
complete and verified or absent, and that the next command continues or refuses with one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import Ctx
from edgekd.errors import EdgekdError
from edgekd_testing import needs_fmnist
from reliability_harness import assert_clean_success, assert_one_error, cli_command, cli_env, run_inprocess

pytestmark = needs_fmnist


def _start(argv: list) -> subprocess.Popen:
    return subprocess.Popen(cli_command(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=cli_env())


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail(f"the process ended before it could be killed: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the moment to kill never came")


def _verify_store(cache: Path) -> tuple[int, list[tuple[int, int]]]:
    """Every shard on disk verifies against its checksums; returns (shard size, [(start, count)])."""
    from edgekd.teachers.store import TrajectorySpec, TrajectoryStore

    (key_dir,) = [d for d in (cache / "trajectories").iterdir() if d.is_dir()]
    meta = json.loads((key_dir / "meta.json").read_text())
    spec = meta["spec"]
    store = TrajectoryStore(cache, TrajectorySpec(spec["teacher_fingerprint"], spec["steps"], spec["spacing"],
                                                  spec["eta"], spec["seed"], tuple(spec["record"]), tuple(spec["shape"])))
    assert store.dir == key_dir
    shards = store.shards()
    on_disk = sorted(p.name for p in key_dir.glob("shard_*"))
    assert on_disk == sorted(s.path.name for s in shards), f"overlapping or stray shards: {on_disk}"
    for shard in shards:
        assert store.shard_problem(shard, full=True) is None, shard.path
        assert shard.start % meta["shard_size"] == 0
    return meta["shard_size"], [(s.start, s.count) for s in shards]


def test_kill_during_recording_leaves_only_verified_shards(ctx: Ctx) -> None:
    recipe = ctx.recipe(teacher={"steps": 20}, trajectory={"num_samples": 60, "shard_size": 10, "batch_size": 10},
                        train={"steps": 2, "eval_every": 2, "checkpoint_every": 2, "sample_every": 2})
    cache = ctx.tmp / "cache"
    proc = _start(["distill", recipe])
    _kill_when(proc, lambda: len(list((cache / "trajectories").glob("*/shard_*"))) >= 2)
    _, before = _verify_store(cache)
    assert before and sum(c for _, c in before) < 60
    res = run_inprocess(["distill", recipe])  # no checkpoint yet: a plain rerun continues the recording
    assert_clean_success(res)
    size, after = _verify_store(cache)
    assert after[: len(before)] == before and sum(c for _, c in after) == 60 and size == 10
    # the resumed recording holds the teacher's real outputs for its noise. The last shard was recorded by the
    # resumed run in this process (one thread, the `ctx` fixture) in batches of trajectory.batch_size = 10 from the
    # shard's start: recomputing it in those batches repeats the recorder's own computation, so the bits must be
    # equal on any CPU (a batch of 2 instead rounds differently: 4e-3 apart after 20 DDIM steps on an AMD EPYC).
    from edgekd.noise import make_noise
    from edgekd.teachers.diffusers_teacher import load_teacher
    from edgekd_testing import sample_as_recorded, store_batches

    teacher = load_teacher(str(ctx.teacher))
    (key_dir,) = [d for d in (cache / "trajectories").iterdir() if d.is_dir()]
    last = sorted(key_dir.glob("shard_*"))[-1]
    start, count = (int(part) for part in last.name.split("_")[1:])
    assert (start, count) == (50, 10) and (start, count) not in before  # recorded after the kill, in one go
    noise = make_noise(1000, start, count, teacher.sample_shape)
    np.testing.assert_array_equal(np.load(last / "noise.npy"), noise.numpy())
    stored = np.load(last / "x0.npy")
    batches = store_batches(start, count, 0, 10)
    expected, _ = sample_as_recorded(teacher, noise, 20, batches)
    np.testing.assert_array_equal(stored, expected)
    # and the check discriminates: the outputs for the neighbouring noise indices are O(1) away, not rounding
    wrong, _ = sample_as_recorded(teacher, make_noise(1000, start + 1, count, teacher.sample_shape), 20, batches)
    far = np.abs(wrong - stored).reshape(count, -1).max(axis=1)
    assert far.min() > 0.1, far  # 25x the 4e-3 a batch-size change gives; images in [-1, 1]


def test_kill_during_training_then_resume(ctx: Ctx) -> None:
    """kill -9 mid-training, a torn metrics line and a damaged newest checkpoint: --resume falls back to the
    previous checkpoint with a warning and ends with every step logged exactly once."""
    run = ctx.tmp / "run"
    recipe = ctx.recipe(train={"steps": 40, "checkpoint_every": 5, "eval_every": 20, "sample_every": 40,
                               "keep_checkpoints": 3, "threads": 1})
    latest = run / "checkpoints" / "latest.json"

    def far_enough() -> bool:
        try:
            return json.loads(latest.read_text())["step"] >= 15
        except (OSError, ValueError, KeyError):
            return False

    _kill_when(_start(["distill", recipe]), far_enough)
    pointer = json.loads(latest.read_text())
    newest = run / "checkpoints" / pointer["name"]
    (newest / "optim.safetensors").write_bytes((newest / "optim.safetensors").read_bytes()[:50])  # a bad copy
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 99999, "loss"')  # a write the kill tore
    res = run_inprocess(["distill", recipe, "--resume"])
    assert_clean_success(res)
    assert "edgekd: warning:" in res.err and pointer["name"] in res.err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))
    assert json.loads((run / "summary.json").read_text())["resumed_from"] == pointer["step"] - 5


def test_resume_with_pointer_to_missing_folder_does_not_restart(ctx: Ctx) -> None:
    run = ctx.run_copy()
    recipe = ctx.recipe(run=run, train={"steps": 16}, trajectory={"cache_dir": str(ctx.base_cache)})
    latest = run / "checkpoints" / "latest.json"
    latest.write_text(json.dumps({"name": "step_00000999", "step": 999}))
    res = run_inprocess(["distill", recipe, "--resume"])
    assert_clean_success(res)
    assert "step_00000999" in res.err and "(step 12)" in res.err + res.out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 17))


def test_kill_during_export_leaves_no_trusted_file(ctx: Ctx, delay: float = 0.5) -> None:
    """Whenever the kill lands, exports/ holds nothing or a model whose manifest checks; profile never runs a
    half-written or unchecked file."""
    from edgekd.integrity import check_export

    run = ctx.run_copy()
    shutil.rmtree(run / "exports")
    proc = _start(["export", run, "--exporter", "torchscript"])
    onnx = run / "exports" / "onnx"
    t0: list[float] = []

    def moment() -> bool:
        if not t0 and onnx.is_dir() and any(onnx.iterdir()):
            t0.append(time.time())
        return bool(t0) and time.time() - t0[0] >= delay

    _kill_when(proc, moment)
    model = onnx / "student.onnx"
    if model.exists():  # never half a file under the final name, and trusted only with its own manifest
        import onnxruntime

        onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        try:
            check_export(model, run)
        except EdgekdError as exc:  # killed between the model's rename and its manifest: refused, with the fix
            assert "edgekd export" in str(exc)
    # a new export replaces whatever the kill left
    assert_clean_success(run_inprocess(["export", run, "--exporter", "torchscript"]))
    check_export(model, run)
    assert not [p for p in onnx.iterdir() if p.name.startswith(".")], list(onnx.iterdir())


def test_two_processes_on_one_cache_key(ctx: Ctx) -> None:
    """Two distills of the same teacher trajectories at once, with different shard sizes: one records, the other
    waits and reuses; no overlapping shards, both succeed, later runs read the store."""
    recipes = [ctx.recipe(f"r{i}.yaml", run=ctx.tmp / f"run{i}", teacher={"steps": 8},
                          trajectory={"num_samples": 40, "shard_size": size, "batch_size": 8},
                          train={"steps": 4, "eval_every": 2, "checkpoint_every": 2, "sample_every": 4})
               for i, size in enumerate((16, 7))]
    procs = [_start(["distill", r]) for r in recipes]
    outputs = [p.communicate(timeout=600)[0].decode() for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]
    size, shards = _verify_store(ctx.tmp / "cache")
    assert size in (16, 7) and sum(c for _, c in shards) == 40
    stores = {json.loads((ctx.tmp / f"run{i}" / "summary.json").read_text())["trajectory_store"] for i in range(2)}
    assert len(stores) == 1
    # a third run with yet another shard size and more samples extends the same store without overlaps
    third = ctx.recipe("r3.yaml", run=ctx.tmp / "run3", teacher={"steps": 8},
                       trajectory={"num_samples": 48, "shard_size": 5, "batch_size": 8},
                       train={"steps": 2, "eval_every": 2, "checkpoint_every": 2, "sample_every": 2})
    assert_clean_success(run_inprocess(["distill", third]))
    assert _verify_store(ctx.tmp / "cache")[0] == size


def test_refused_resume_leaves_the_run_usable(ctx: Ctx) -> None:
    """A refused --resume (other student) changes nothing: the right recipe still resumes afterwards."""
    run = ctx.run_copy()
    bad = ctx.recipe("bad.yaml", run=run, student={"block_out_channels": [16, 16]})
    assert_one_error(run_inprocess(["distill", bad, "--resume"]), 2, "student.block_out_channels")
    good = ctx.recipe("good.yaml", run=run, train={"steps": 14}, trajectory={"cache_dir": str(ctx.base_cache)})
    assert_clean_success(run_inprocess(["distill", good, "--resume"]))


def test_subprocess_errors_have_no_traceback_and_debug_shows_it(ctx: Ctx) -> None:
    """The real entry point: one line without --debug; the traceback with EDGEKD_DEBUG=1."""
    from reliability_harness import run_subprocess

    blocker = ctx.a_file()
    recipe = ctx.recipe(run=blocker / "run")
    assert_one_error(run_subprocess(["distill", recipe]), 2, "plain-file")
    debug = run_subprocess(["distill", recipe], EDGEKD_DEBUG="1")
    assert debug.rc == 2 and "Traceback (most recent call last)" in debug.err
    assert len(debug.error_lines) == 1
