"""One-GPU speed features, checked on the CPU: fused EMA, prefetched batches, device-side loss logging, optional
torch.compile, bf16 trajectory keys, the rank split of the recording, the CIFAR-10 hub recipe."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from edgekd_testing import ROOT, needs_fmnist, sample_as_recorded, tiny_recipe, write_recipe


def test_fused_ema_matches_averaged_model_with_warmup() -> None:
    """Same numbers as torch's AveragedModel + warmup_ema (params and BatchNorm buffers), same state dict."""
    from edgekd.train.loop import FusedEMA, warmup_ema

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3))
    fused = FusedEMA(net, 0.99)
    ref = AveragedModel(net, multi_avg_fn=warmup_ema(0.99), use_buffers=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(6):
        net(torch.randn(4, 1, 8, 8)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        fused.update(net)
        ref.update_parameters(net)
    got, want = fused.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-7)
    assert fused.count == 6
    again = FusedEMA(net, 0.99)
    again.load_state_dict(want)
    assert again.count == 6  # the host counter follows a loaded checkpoint


def test_prefetcher_draws_the_same_batches_and_states_as_in_line() -> None:
    """The thread runs ahead, but each batch carries the RNG state right after it: what a checkpoint must save."""
    from edgekd.train.loop import TensorSource
    from edgekd.train.prefetch import Prefetcher

    source = TensorSource({"x": np.arange(200, dtype=np.float32).reshape(100, 2)})
    runs = []
    for depth in (0, 3):
        fetch = Prefetcher(source, 8, np.random.default_rng(5), torch.device("cpu"), depth=depth)
        items = [fetch.next() for _ in range(6)]
        fetch.close()
        runs.append(items)
    for a, b in zip(*runs):
        torch.testing.assert_close(a.batch["x"], b.batch["x"])
        assert a.rng_state == b.rng_state
    resumed = np.random.default_rng()
    resumed.bit_generator.state = runs[1][2].rng_state  # a checkpoint after the third batch
    fetch = Prefetcher(source, 8, resumed, torch.device("cpu"), depth=2)
    torch.testing.assert_close(fetch.next().batch["x"], runs[0][3].batch["x"])
    fetch.close()


def test_prefetcher_reraises_errors_of_the_source() -> None:
    from edgekd.train.prefetch import Prefetcher

    class Broken:
        def __len__(self) -> int:
            return 1

        def batch(self, size: int, rng: np.random.Generator) -> dict:
            raise ValueError("shard unreadable")

    fetch = Prefetcher(Broken(), 2, np.random.default_rng(0), torch.device("cpu"), depth=2)
    with pytest.raises(ValueError, match="shard unreadable"):
        fetch.next()
    fetch.close()


def test_metric_window_averages_device_tensors_and_floats() -> None:
    from edgekd.train.loop import MetricWindow

    window = MetricWindow()
    window.add({"loss": torch.tensor(1.0), "stage": 2.0})
    window.add({"loss": torch.tensor(3.0), "stage": 2.0})
    assert window.means() == {"loss": 2.0, "stage": 2.0}
    assert window.means() == {}  # emptied by the read


@needs_fmnist
def test_compiled_student_with_sparse_logging(tiny_teacher_dir: Path, tmp_path: Path, monkeypatch,
                                              one_thread) -> None:
    """train.compile routes the student through torch.compile (the eager backend here: inductor needs minutes on
    a CPU); train.log_every 5 writes a line every 5 steps plus at evaluations, samples and checkpoints."""
    from edgekd.distill import distill
    from edgekd.recipe import load_recipe

    monkeypatch.setenv("EDGEKD_COMPILE_BACKEND", "eager")
    compiled = []
    real_compile = torch.compile

    def spy(fn, **kwargs):
        compiled.append(kwargs.get("backend"))
        return real_compile(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    run = tmp_path / "run"
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_teacher_dir, run, train={"compile": True, "log_every": 5}))
    distill(load_recipe(path))
    assert compiled == ["eager"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 5, 6, 8, 10, 12]  # eval 4, 8, 12; samples 6, 12; checkpoints 4, 8, 12; logs 5, 10
    assert "loss" in json.loads((run / "metrics.jsonl").read_text().splitlines()[1])
    from edgekd.students import load_student

    student = load_student(run / "student")
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_bf16_recording_has_its_own_store_key(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    """bf16 teacher runs are other numbers: another store; float32 keys stay what they were (old caches valid)."""
    from edgekd.distill import open_store, teacher_precision
    from edgekd.recipe import Recipe
    from edgekd.teachers.diffusers_teacher import load_teacher
    from edgekd.teachers.store import TrajectorySpec

    teacher = load_teacher(str(tiny_teacher_dir))
    raw = tiny_recipe(tiny_teacher_dir, tmp_path / "run")
    fp32 = Recipe.model_validate({**raw, "trajectory": {**raw["trajectory"], "precision": "fp32"}})
    bf16 = Recipe.model_validate({**raw, "trajectory": {**raw["trajectory"], "precision": "bf16"}})
    auto = Recipe.model_validate(raw)
    cpu = torch.device("cpu")
    assert teacher_precision(auto, cpu) == "fp32" and teacher_precision(auto, torch.device("cuda")) == "bf16"
    old_key = TrajectorySpec(teacher.fingerprint, 3, "trailing", 0.0, 1000, (), teacher.sample_shape).key
    assert open_store(fp32, teacher, cpu).spec.key == open_store(auto, teacher, cpu).spec.key == old_key
    assert open_store(bf16, teacher, cpu).spec.key != old_key


def test_each_rank_records_its_own_shards(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    """Rank 1 of 2 writes the 2nd and 4th missing shards and nothing else; rank 0 then fills the rest."""
    from edgekd.teachers.diffusers_teacher import load_teacher
    from edgekd.teachers.store import TrajectorySpec, TrajectoryStore, record_rank_share

    teacher = load_teacher(str(tiny_teacher_dir))
    store = TrajectoryStore(tmp_path, TrajectorySpec(teacher.fingerprint, 2, "trailing", 0.0, 7, (), teacher.sample_shape))
    store.ensure(teacher, 4, 4, 4)  # 4 samples already there
    wrote = record_rank_share(store, teacher, 4, 20, 4, 4, "cpu", rank=1, world_size=2)
    assert wrote == [8, 16]
    assert sorted(p.name for p in store.dir.glob("shard_*")) == [  # the chain from 0 stops at the gap at 4
        "shard_00000000_00000004", "shard_00000008_00000004", "shard_00000016_00000004"]
    assert record_rank_share(store, teacher, 4, 20, 4, 4, "cpu", rank=0, world_size=2) == [4, 12]
    assert store.available() == 20
    # what the ranks wrote is the teacher's output for noise indices 0..19, each shard recorded in one batch of 4:
    # recomputed in those batches it is the same computation, so the same bits (another batch size would round
    # differently, on some CPUs beyond any fixed tolerance)
    from edgekd.noise import make_noise

    got = store.read(0, 20)
    noise = make_noise(7, 0, 20, teacher.sample_shape)
    np.testing.assert_array_equal(got["noise"][:], noise.numpy())
    np.testing.assert_array_equal(got["x0"][:], sample_as_recorded(teacher, noise, 2, [4] * 5)[0])


def test_cifar10_hub_recipe_validates_and_fails_fast_offline(tmp_path: Path, monkeypatch, capsys) -> None:
    """recipes/cifar10-ddpm-gpu.yaml validates without any download; offline, distill stops within seconds with
    the command that fetches google/ddpm-cifar10-32."""
    from edgekd.cli import main
    from edgekd.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "cifar10-ddpm-gpu.yaml")
    assert recipe.teacher.path == "google/ddpm-cifar10-32" and recipe.data.channels == 3
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    start = time.time()
    code = main(["distill", str(ROOT / "recipes" / "cifar10-ddpm-gpu.yaml"), "--set", f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and time.time() - start < 30
    assert err.startswith("edgekd: error: ") and "huggingface-cli download google/ddpm-cifar10-32" in err


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "recipes").glob("*-gpu.yaml")))
def test_gpu_recipes_validate(name: str) -> None:
    from edgekd.recipe import load_recipe
    from edgekd_testing import SHARED_TEACHER

    text = (ROOT / "recipes" / name).read_text()
    if "../shared/teachers" in text and not SHARED_TEACHER.is_dir():
        pytest.skip("the shared teacher is not beside this checkout")
    recipe = load_recipe(ROOT / "recipes" / name)
    assert recipe.device == "auto" and recipe.train.steps >= 10000


@needs_fmnist
def test_throughput_benchmark_prints_the_trainer_to_bare_ratio(tmp_path: Path, capsys, one_thread) -> None:
    """benchmarks/throughput.py --scale tiny, shrunk further: the table and the JSON carry both speeds and the ratio."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "t.json"
    bench.main(["--scale", "tiny", "--methods", "denoising_student", "--repeats", "2", "--window", "2",
                "--warmup", "1", "--gen-steps", "1", "--work", str(tmp_path / "w"), "--out", str(out),
                "--set", "teacher.steps=2", "--set", "trajectory.num_samples=40", "--set", "trajectory.heldout=8",
                "--set", "trajectory.shard_size=40", "--set", "trajectory.batch_size=20", "--set", "train.batch_size=8"])
    table = capsys.readouterr().out
    assert "| workload | images/step | trainer img/s | bare loop img/s | trainer / bare |" in table
    rows = json.loads(out.read_text())["rows"]
    gen, ds = rows
    assert gen["method"].startswith("teacher DDIM-1 trajectories") and gen["trainer_images_per_s"] > 0
    assert ds["method"] == "denoising_student" and ds["images_per_step"] == 8
    assert ds["trainer_images_per_s"] > 0 and ds["bare_images_per_s"] > 0
    assert abs(ds["ratio"] - ds["trainer_images_per_s"] / ds["bare_images_per_s"]) < 1e-9
    assert f"| denoising_student | 8 | {ds['trainer_images_per_s']:.1f} |" in table
