"""Structured pruning (torch-pruning DepGraph), its save/rebuild, recovery by distillation and `edgekd compress`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.cli import main
from edgekd.compress.prune import (
    IMPORTANCES,
    is_pruned,
    load_pruned_unet,
    prune_student,
    prune_unet,
    save_pruned_unet,
)
from edgekd.errors import EdgekdError
from edgekd_testing import needs_fmnist, tiny_recipe, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(attention: bool = True) -> nn.Module:
    """1x16x16, channels (16, 32), 4 groups (4 and 8 channels per group), one attention level."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                       layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
                       up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D")).eval()


def tiny_student() -> nn.Module:
    from edgekd.students.unet_student import OneStepUNetStudent

    return OneStepUNetStudent(tiny_unet(attention=False), 999).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_prune_unet_shrinks_channels_keeps_io_and_runs():
    unet = tiny_unet()
    before = {n: tuple(m.weight.shape) for n, m in convs(unet).items()}
    pruned = prune_unet(unet, 0.5)
    assert {n: tuple(m.weight.shape) for n, m in convs(unet).items()} == before  # the original is untouched
    after = {n: tuple(m.weight.shape) for n, m in convs(pruned).items()}
    assert after["conv_in"] == (8, 1, 3, 3)  # 16 -> 8 output channels, still one input channel
    assert after["conv_out"][0] == 1 and after["conv_out"][1] == 8  # image channels kept
    halved = [n for n in after if before[n][0] > 1 and after[n][0] == before[n][0] // 2]
    assert len(halved) >= len(after) - 1  # every conv but conv_out lost half its filters
    assert 0.2 < n_params(pruned) / n_params(unet) < 0.4  # ~(1 - 0.5)^2 of the weights, plus kept attention q/k/v
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 900])
    with torch.no_grad():
        out = pruned(x, t).sample
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()
    assert is_pruned(pruned) and not is_pruned(unet)
    for m in pruned.modules():  # diffusers' own channel bookkeeping follows the weights
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
        if type(m).__name__ == "Downsample2D":
            assert m.channels == m.conv.in_channels


@pytest.mark.parametrize("importance", IMPORTANCES)
def test_every_importance_prunes_to_the_same_widths(importance: str):
    pruned = prune_unet(tiny_unet(attention=False), 0.5, importance=importance)
    assert pruned.conv_in.out_channels == 8
    with torch.no_grad():
        assert pruned(torch.randn(1, 1, 16, 16), 500).sample.shape == (1, 1, 16, 16)


@pytest.mark.parametrize("importance", ["l1", "l2", "lamp"])
def test_magnitude_importance_keeps_the_largest_filters(importance: str):
    from edgekd.compress.prune import prune_module

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 1, 3))
    with torch.no_grad():  # channels 2, 3, 5, 7 carry by far the largest weights, in and out
        big = torch.tensor([2, 3, 5, 7])
        net[0].weight[big] *= 100
        net[2].weight[:, big] *= 100
    kept = net[0].weight[big].clone()
    prune_module(net, torch.randn(1, 1, 8, 8), 0.5, importance, ignored_layers=[net[2]])
    assert net[0].out_channels == 4 and net[2].in_channels == 4
    assert torch.equal(net[0].weight, kept)


def test_ignore_keeps_named_modules_and_bad_ratio_is_an_error():
    pruned = prune_unet(tiny_unet(attention=False), 0.5, ignore=["mid_block"])
    assert pruned.mid_block.resnets[0].conv1.out_channels == 32
    assert pruned.conv_in.out_channels == 8
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(EdgekdError, match="strictly between 0 and 1"):
            prune_unet(tiny_unet(attention=False), bad)
    with pytest.raises(EdgekdError, match="unknown pruning importance"):
        prune_unet(tiny_unet(attention=False), 0.5, importance="l3")


def test_pruned_student_saves_and_loads_with_equal_outputs(tmp_path: Path):
    from edgekd.students import load_student, save_student

    student = tiny_student()
    pruned = prune_student(student, 0.5)
    save_student(pruned, tmp_path / "s")
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["unet"]["block_out_channels"] == [16, 32]  # the unpruned build ...
    assert config["pruned"]["shapes"]["conv_in.weight"] == [8, 1, 3, 3]  # ... plus what pruning changed
    loaded = load_student(tmp_path / "s")
    noise = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(noise), pruned.eval()(noise))
    again = prune_student(loaded, 0.5)  # pruning a pruned student prunes further and still round-trips
    assert again.unet.conv_in.out_channels == 4
    save_student(again, tmp_path / "s2")
    with torch.no_grad():
        assert torch.equal(load_student(tmp_path / "s2")(noise), again.eval()(noise))


def test_pruned_unet_folder_round_trip_and_plain_diffusers_refuses_it(tmp_path: Path):
    from diffusers import UNet2DModel

    pruned = prune_unet(tiny_unet(), 0.5)
    save_pruned_unet(pruned, tmp_path / "unet")
    loaded = load_pruned_unet(tmp_path / "unet")
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(loaded(x, t).sample, pruned(x, t).sample)
    with pytest.raises(Exception):  # a plain diffusers loader must not silently load other shapes
        UNet2DModel.from_pretrained(str(tmp_path / "unet"))


def test_pruned_student_exports_to_onnx_with_parity(tmp_path: Path):
    from edgekd.export.onnx import export_onnx
    from edgekd.export.parity import check_parity
    from edgekd.noise import make_noise
    from edgekd.profile.generators import OnnxStudent, TorchStudent

    pruned = prune_student(tiny_student(), 0.5)
    path = export_onnx(pruned, (torch.randn(2, 1, 16, 16),), tmp_path / "p.onnx", ["noise"], "image")  # dynamo
    parity = check_parity(TorchStudent(pruned), OnnxStudent(path), make_noise(1, 0, 4, (1, 16, 16)), 1, 35.0, "test")
    assert parity.passed and parity.psnr_db > 60


def test_layerwise_student_prunes_every_block_and_head(tmp_path: Path):
    from edgekd.students import load_student, save_student
    from edgekd.students.layerwise import LayerwiseStudent

    torch.manual_seed(0)
    student = LayerwiseStudent(1, 16, 4, [16, 16, 8, 8], [0, 2]).eval()
    pruned = prune_student(student, 0.5)
    assert [b[0].weight.shape[1 if isinstance(b[0], nn.ConvTranspose2d) else 0] for b in pruned.blocks] == [8, 8, 4, 4]
    assert all(h.net[-2].out_channels == 1 for h in pruned.head_modules)  # heads still make images
    assert n_params(pruned) < 0.4 * n_params(student)
    noise = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        heads = pruned.heads(noise)
        assert [h.shape[-1] for h in heads] == [8, 8, 16, 16]
        assert torch.equal(pruned(noise), heads[-1])
    save_student(pruned, tmp_path / "lw")
    with torch.no_grad():
        assert torch.equal(load_student(tmp_path / "lw")(noise), pruned(noise))


def test_recovery_moves_the_pruned_student_toward_the_unpruned_one(tmp_path: Path):
    from edgekd.compress.recover import recover
    from edgekd.recipe import PruneConfig, TrainConfig
    from edgekd.students import load_student, save_student

    student = tiny_student()
    pruned = prune_student(student, 0.5)
    noise = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(3))

    def distance(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model.eval()(noise) - student(noise)).square().mean())

    before = distance(pruned)

    def save(net: nn.Module, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_student(net, folder)

    cfg = PruneConfig(recover_steps=25, recover_lr=2e-3, batch_size=8)
    recover(pruned, student, cfg, TrainConfig(ema_decay=0.5, warmup_steps=0), tmp_path / "rec",
            torch.device("cpu"), 0, save)
    best = load_student(tmp_path / "rec" / "best")
    assert distance(best) < 0.7 * before
    assert (tmp_path / "rec" / "checkpoints" / "latest.json").is_file()


def test_eps_recovery_of_a_pruned_teacher_unet(tmp_path: Path):
    from edgekd.compress.recover import EpsDistill, alphas_cumprod_of, recover
    from edgekd.recipe import PruneConfig, TrainConfig

    from diffusers import DDPMScheduler

    unet = tiny_unet(attention=False)
    pruned = prune_unet(unet, 0.5)
    alphas = alphas_cumprod_of(dict(DDPMScheduler(num_train_timesteps=1000).config))
    images = torch.rand(64, 1, 16, 16) * 2 - 1
    cfg = PruneConfig(recover_steps=20, recover_lr=2e-3, batch_size=8)
    probe = EpsDistill(prune_unet(unet, 0.5), unet, cfg, TrainConfig(), alphas).fixed_batch(images[:16], 5)

    def eps_distance(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model(probe["xt0"], probe["t0"]).sample - unet(probe["xt0"], probe["t0"]).sample).square().mean())

    before = eps_distance(pruned)
    recovered = recover(pruned, unet, cfg, TrainConfig(ema_decay=0.5, warmup_steps=0), tmp_path / "rec",
                        torch.device("cpu"), 0, lambda net, folder: save_pruned_unet(net, folder), images=images,
                        alphas_cumprod=alphas)
    assert eps_distance(recovered) < 0.8 * before
    assert load_pruned_unet(tmp_path / "rec" / "best").conv_in.out_channels == 8


def test_o2mkd_student_prunes_every_unet_round_trips_and_recovers(tmp_path: Path):
    from diffusers import DDPMScheduler

    from edgekd.compress.recover import alphas_cumprod_of, recover
    from edgekd.recipe import PruneConfig, TrainConfig
    from edgekd.students import load_student, save_student
    from edgekd.students.o2mkd import O2MKDStudent

    sched = dict(DDPMScheduler(num_train_timesteps=1000).config)
    student = O2MKDStudent([tiny_unet(attention=False), tiny_unet(attention=False)], [500], sched, 4).eval()
    pruned = prune_student(student, 0.5)
    assert [u.conv_in.out_channels for u in pruned.unets] == [8, 8]
    assert n_params(pruned) < 0.4 * n_params(student)
    save_student(pruned, tmp_path / "o")
    loaded = load_student(tmp_path / "o")
    noise = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(noise), pruned(noise))  # the whole routed DDIM loop
    images = torch.rand(48, 1, 16, 16) * 2 - 1
    cfg = PruneConfig(recover_steps=4, recover_lr=1e-3, batch_size=4)
    recovered = recover(pruned, student, cfg, TrainConfig(warmup_steps=0), tmp_path / "rec", torch.device("cpu"), 0,
                        lambda net, folder: (folder.mkdir(parents=True, exist_ok=True), save_student(net, folder)),
                        images=images, alphas_cumprod=alphas_cumprod_of(sched))
    assert [u.conv_in.out_channels for u in recovered.unets] == [8, 8]
    assert load_student(tmp_path / "rec" / "best").num_students == 2


def test_recipe_compress_section(tmp_path: Path, tiny_teacher_dir: Path):
    from edgekd.errors import RecipeError
    from edgekd.recipe import load_recipe

    base = tiny_recipe(tiny_teacher_dir, tmp_path / "run")
    recipe = load_recipe(write_recipe(tmp_path / "a.yaml", base), check_files=False)
    assert recipe.compress.prune is None and recipe.compress.quantize is None
    recipe = load_recipe(write_recipe(tmp_path / "b.yaml", {**base, "compress": {"prune": {"ratio": 0.3}, "quantize": {}}}),
                         check_files=False)
    assert recipe.compress.prune.ratio == 0.3 and recipe.compress.prune.importance == "l2"
    assert recipe.compress.prune.recover_steps == 500 and recipe.compress.quantize.precisions == ["fp16", "int8"]
    from edgekd.compress.recover import recovery_lr

    assert recipe.compress.prune.recover_lr is None and recovery_lr(recipe.compress.prune, recipe.train) == 1e-3
    assert recovery_lr(recipe.compress.prune.model_copy(update={"recover_lr": 5e-5}), recipe.train) == 5e-5
    with pytest.raises(RecipeError, match=r"key 'compress.prune.ratio'"):
        load_recipe(write_recipe(tmp_path / "c.yaml", {**base, "compress": {"prune": {"ratio": 1.0}}}), check_files=False)
    with pytest.raises(RecipeError, match=r"unknown key 'compress.prune.ration' \(did you mean 'ratio'\?\)"):
        load_recipe(write_recipe(tmp_path / "d.yaml", {**base, "compress": {"prune": {"ration": 0.5}}}), check_files=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    from edgekd.distill import distill
    from edgekd.recipe import load_recipe

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("compress")
    recipe = tiny_recipe(tiny_teacher_dir, base / "run", train={"threads": 1},
                         profile={"fid_samples": 8, "latency_repeats": 1})
    try:
        return distill(load_recipe(write_recipe(base / "tiny.yaml", recipe)))
    finally:
        torch.set_num_threads(before)


@needs_fmnist
def test_compress_command_end_to_end(tiny_run: Path, capsys: pytest.CaptureFixture):
    from edgekd.export.manifest import read_manifest
    from edgekd.rundir import RunDir

    assert main(["compress", str(tiny_run), "--prune", "0.5", "--recover-steps", "3", "--exporter", "torchscript",
                 "--set", "compress.prune.batch_size=4", "--set", "compress.prune.teacher_weight=0.5"]) == 0
    out = capsys.readouterr().out
    derived = tiny_run / "compressed" / "pruned-50"
    assert "| unpruned |" in out and "| pruned 50% + recovered (3 steps) |" in out
    report = json.loads((derived / "report" / "compress.json").read_text())
    unpruned, pruned, recovered = report["rows"]
    assert report["prune"]["teacher_weight"] == 0.5  # recovery also regressed the run's recorded teacher x_0
    assert pruned["params"] < 0.5 * unpruned["params"] and pruned["macs_per_image"] < unpruned["macs_per_image"]
    assert recovered["params"] == pruned["params"]
    for row in report["rows"]:
        assert row["fid"] > 0 and row["onnx_ms_1t"] > 0 and row["onnx_bytes"] > 0
    assert unpruned["psnr_vs_unpruned"] is None and pruned["psnr_vs_unpruned"] > 0
    assert (derived / "report" / "compress.md").read_text().count("|") > 20
    # a derived run like any other: recipe, student, parity-checked export, the recovery's loop files
    run = RunDir.open(derived)
    assert run.recipe().compress.prune.ratio == 0.5 and run.recipe().name == "tiny-pruned-50"
    assert n_params(run.student()) == pruned["params"]
    manifest = read_manifest(derived / "exports" / "onnx" / "student.manifest.json")
    assert manifest.parity is not None and manifest.parity.passed
    assert (derived / "checkpoints" / "latest.json").is_file() and (derived / "metrics.jsonl").is_file()
    assert not list(derived.glob(".compress-*"))  # temp exports cleaned up
    # again without --resume: refused in one line; with --resume the finished recovery is picked up, not redone
    assert main(["compress", str(tiny_run), "--prune", "0.5"]) == 2
    assert "--resume" in capsys.readouterr().err
    metrics = (derived / "metrics.jsonl").read_text()
    assert main(["compress", str(tiny_run), "--prune", "0.5", "--recover-steps", "3", "--exporter", "torchscript",
                 "--set", "compress.prune.batch_size=4", "--resume"]) == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.out + captured.err and (derived / "metrics.jsonl").read_text() == metrics
    assert main(["export", str(derived), "--target", "onnx", "--exporter", "torchscript"]) == 0


@needs_fmnist
def test_compress_teacher_writes_a_pruned_teacher_folder(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "t"
    assert main(["compress", str(tiny_run), "--teacher", "--prune", "0.5", "--recover-steps", "0",
                 "--out", str(out), "--exporter", "torchscript"]) == 0
    unet = load_pruned_unet(out / "teacher" / "unet")
    assert unet.conv_in.out_channels == 4  # the tiny teacher's 8 channels, halved
    assert (out / "teacher" / "scheduler" / "scheduler_config.json").is_file()
    report = json.loads((out / "report" / "compress.json").read_text())
    assert report["teacher"] and len(report["rows"]) == 2
    assert report["rows"][1]["macs_per_image"] < report["rows"][0]["macs_per_image"]
    # the pruned teacher folder is a teacher edgekd loads like any other (distill, export --teacher, profile)
    from edgekd.teachers.diffusers_teacher import load_teacher

    teacher = load_teacher(str(out / "teacher"))
    assert teacher.unet.conv_in.out_channels == 4
    assert torch.allclose(teacher.unet(torch.ones(1, 1, 32, 32), 500).sample, unet(torch.ones(1, 1, 32, 32), 500).sample)


@needs_fmnist
@pytest.mark.parametrize("argv, message", [
    (["--prune", "1.5"], "--prune 1.5 is out of range"),
    (["--prune", "0"], "--prune 0.0 is out of range"),
    (["--prune", "0.5", "--recover-steps", "-1"], "--recover-steps -1 must be >= 0"),
    (["--prune", "0.5", "--importance", "l7"], "--importance l7 is unknown"),
    ([], "nothing to compress"),
    (["--prune", "0.5", "--set", "compress.prune.lossy=l1"], "unknown key 'compress.prune.lossy'"),
])
def test_bad_compress_input_is_one_line_and_exit_2(tiny_run: Path, capsys: pytest.CaptureFixture, argv, message):
    assert main(["compress", str(tiny_run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


@needs_fmnist
def test_compress_quantize_hands_the_run_to_quantize_run(tiny_run: Path, monkeypatch: pytest.MonkeyPatch):
    import edgekd.compress.quantize as quantize

    calls = []
    monkeypatch.setattr(quantize, "quantize_run", lambda run_dir, cfg=None, teacher=False, exporter="dynamo":
                        calls.append((run_dir, cfg, exporter)))
    assert main(["compress", str(tiny_run), "--quantize", "--set", "compress.quantize.psnr_min=21"]) == 0
    assert calls[0][0] == tiny_run and calls[0][1].psnr_min == 21.0
    assert main(["compress", str(tiny_run), "--quantize"]) == 0
    assert calls[1][1].precisions == ["fp16", "int8"]  # no compress.quantize section: its defaults
    assert main(["compress", str(tiny_run), "--quantize", "--exporter", "torchscript"]) == 0
    assert [c[2] for c in calls] == ["dynamo", "dynamo", "torchscript"]  # --exporter reaches the quantized exports


def test_compress_missing_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["compress", str(tmp_path / "nope"), "--prune", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not exist" in err
