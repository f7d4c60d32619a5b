"""O2MKD: routing by timestep, recipe checks, training per range, save/load, the routed loop, export + router."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from edgekd.cli import main
from edgekd.errors import RecipeError
from edgekd.methods.o2mkd import (O2MKDMethod, RangeSource, diffuse, heldout_batch, loss_weights,
                                  student_kd_losses)
from edgekd.recipe import O2MKDConfig, O2MKDStudentConfig, Recipe, TrainConfig, load_recipe, validate_mapping
from edgekd.students import load_student, save_student
from edgekd.students.o2mkd import O2MKDStudent, build_o2mkd_student, route_timestep
from edgekd.teachers.diffusers_teacher import load_teacher, make_ddim

from edgekd_testing import ROOT, SHARED_TEACHER, needs_fmnist, needs_shared_teacher, tiny_recipe, write_recipe

TINY = ROOT / "recipes" / "o2mkd-tiny.yaml"
GPU = ROOT / "recipes" / "o2mkd-fmnist-gpu.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(seed: int, channels: tuple[int, ...] = (8, 8)):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=channels, layers_per_block=1,
                       down_block_types=("DownBlock2D",) * len(channels), up_block_types=("UpBlock2D",) * len(channels),
                       norm_num_groups=4)


def scheduler() -> dict:
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler(num_train_timesteps=1000, clip_sample=True).config)


def three_students(steps: int = 10) -> O2MKDStudent:
    return O2MKDStudent([tiny_unet(i) for i in range(3)], [300, 700], scheduler(), steps, "trailing").eval()


def o2mkd_recipe(teacher: Path, run_dir: Path, **student) -> dict:
    raw = tiny_recipe(teacher, run_dir)
    raw["student"] = {"kind": "o2mkd", "boundaries": [500], "init": "scratch", "block_out_channels": [8, 8],
                      "norm_num_groups": 4, **student}
    raw["method"] = {"name": "o2mkd", "heldout_images": 8, "feature_weight": 0.1, "denoise_weight": 0.1}
    raw["data"]["limit"] = 64
    raw["train"]["batch_size"] = 3
    return raw


# --------------------------------------------------------------------------------------------- routing


def test_every_ddim_timestep_goes_to_the_student_whose_range_holds_it():
    s = three_students(10)
    assert s.ranges() == [(0, 299), (300, 699), (700, 999)]
    assert s.timesteps() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]  # trailing spacing
    for t, i in s.schedule():
        lo, hi = s.ranges()[i]
        assert lo <= t <= hi
    assert [i for _, i in s.schedule()] == [2, 2, 2, 1, 1, 1, 1, 0, 0, 0]
    # the edges: a boundary belongs to the student above it
    assert [s.route(t) for t in (0, 299, 300, 699, 700, 999)] == [0, 0, 1, 1, 2, 2]
    every = torch.arange(1000)
    assert s.route_batch(every).tolist() == [route_timestep([300, 700], int(t)) for t in every]
    # eps(x, t) is the owner's network
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        for t, i in ((999, 2), (500, 1), (10, 0)):
            assert torch.equal(s.eps(x, t), s.unets[i](x, t).sample)


def test_boundaries_must_leave_every_student_a_ddim_step():
    with pytest.raises(ValueError, match=r"student\(s\) \[0, 1\] .*own none of the 4 DDIM timesteps"):
        O2MKDStudent([tiny_unet(0), tiny_unet(1), tiny_unet(2)], [100, 200], scheduler(), 4)
    with pytest.raises(ValueError, match="must lie inside 1..999"):
        O2MKDStudent([tiny_unet(0), tiny_unet(1)], [1000], scheduler(), 4)
    with pytest.raises(ValueError, match="2 boundaries make 3 ranges"):
        O2MKDStudent([tiny_unet(0)], [300, 700], scheduler(), 10)


def test_routed_forward_equals_a_ddim_loop_written_from_the_manifest_formula():
    """forward(noise) is DDIM with each step's epsilon from its owner, as export/multi.DDIM_UPDATE tells apps."""
    s = three_students(10)
    sched = make_ddim(s.scheduler_config, 10)
    alphas, final = sched.alphas_cumprod, float(sched.final_alpha_cumprod)
    noise = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    x = noise.clone()
    ts = s.timesteps()
    with torch.no_grad():
        for t in ts:
            eps = s.unets[route_timestep([300, 700], t)](x, torch.tensor([t] * 3)).sample
            a = alphas[t]
            a_next = alphas[t - 100] if t >= 100 else torch.tensor(final)  # diffusers: t - T // steps
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        routed = s(noise)
    assert torch.allclose(routed, x, atol=1e-5), (routed - x).abs().max()


def test_students_that_copy_the_teacher_sample_exactly_like_the_teacher(tiny_teacher_dir: Path):
    teacher = load_teacher(str(tiny_teacher_dir))
    student = build_o2mkd_student(O2MKDStudentConfig(boundaries=[400, 800], init="teacher"), teacher, 5, "trailing")
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(student.eval()(noise), teacher.sample(noise, 5)[0], atol=1e-6)


# --------------------------------------------------------------------------------------------- recipes


def _recipe_with(tmp_path: Path, teacher: Path, **student) -> Path:
    return write_recipe(tmp_path / "r.yaml", o2mkd_recipe(teacher, tmp_path / "run", **student))


@pytest.mark.parametrize("student, expected", [
    ({"boundaries": [600, 400]}, "key 'student': boundaries [600, 400] must be strictly increasing"),
    ({"boundaries": [0]}, "must be strictly increasing timesteps >= 1"),
    ({"boundaries": [1000]}, "key 'student.boundaries': boundaries [1000] must lie inside 1..999"),
    ({"boundaries": [100, 200]}, "key 'student.boundaries': boundaries [100, 200]: student(s) [0, 1]"),
    ({"block_out_channels": None}, "init: scratch needs exactly one of width"),
    ({"init": "prune", "block_out_channels": None, "width": 1.0}, "init: prune needs width below 1"),
    ({"init": "teacher"}, "init: teacher copies the teacher"),
    ({"init": "prune", "block_out_channels": None, "width": [0.5]}, "width has 1 entries for 2 students"),
    ({"init": "prune", "block_out_channels": None, "width": [0.5, 1.0]}, "init: prune needs width below 1"),
])
def test_bad_o2mkd_recipe_is_one_recipe_error(tmp_path: Path, tiny_teacher_dir: Path, student: dict, expected: str):
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe_with(tmp_path, tiny_teacher_dir, **student), check_files=False)
    assert expected in str(err.value) and len(str(err.value).splitlines()) == 1, err.value


def test_o2mkd_student_and_method_go_together(tmp_path: Path, tiny_teacher_dir: Path):
    raw = o2mkd_recipe(tiny_teacher_dir, tmp_path / "run")
    raw["method"] = {"name": "denoising_student"}
    with pytest.raises(RecipeError, match="an o2mkd student is trained by method o2mkd"):
        load_recipe(write_recipe(tmp_path / "a.yaml", raw), check_files=False)
    raw = tiny_recipe(tiny_teacher_dir, tmp_path / "run", method={"name": "o2mkd"}, student={"kind": "unet"})
    with pytest.raises(RecipeError, match="method o2mkd trains an o2mkd student"):
        load_recipe(write_recipe(tmp_path / "b.yaml", raw), check_files=False)
    # student.kind defaults to o2mkd when the method is o2mkd
    raw = o2mkd_recipe(tiny_teacher_dir, tmp_path / "run")
    del raw["student"]["kind"]
    assert load_recipe(write_recipe(tmp_path / "c.yaml", raw), check_files=False).student.kind == "o2mkd"
    with pytest.raises(RecipeError, match="kd_weight and denoise_weight are both 0"):
        load_recipe(write_recipe(tmp_path / "d.yaml", {**raw, "method": {"name": "o2mkd", "kd_weight": 0}}),
                    check_files=False)


@needs_fmnist
def test_bad_boundaries_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path, tiny_teacher_dir: Path, capsys):
    path = _recipe_with(tmp_path, tiny_teacher_dir, boundaries=[50])  # DDIM-3: 999, 666, 332: student 0 owns none
    assert main(["distill", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "key 'student.boundaries'" in err and "own none" in err, err
    assert not (tmp_path / "run").exists()


def test_shipped_recipes_validate():
    gpu = load_recipe(GPU, check_files=False)
    assert gpu.student.kind == "o2mkd" and gpu.method.name == "o2mkd" and len(gpu.student.boundaries) >= 1
    tiny = load_recipe(TINY, check_files=False)
    assert tiny.student.kind == "o2mkd" and tiny.train.threads == 1


# --------------------------------------------------------------------------------------------- training


def _method(teacher_unet, student: O2MKDStudent, **cfg) -> O2MKDMethod:
    config = O2MKDConfig(**{"feature_weight": 0.1, "denoise_weight": 0.1, **cfg})
    alphas = make_ddim(student.scheduler_config, student.steps).alphas_cumprod
    return O2MKDMethod(student, teacher_unet, config, TrainConfig(lr=1e-3, grad_clip=1.0), alphas)


def _batch(t: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(t)
    return {"x0": torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, "t": torch.tensor(t), "noise": torch.randn(n, 1, 32, 32, generator=g)}


def test_a_batch_in_one_range_trains_only_that_student():
    student = three_students(10).train()
    method = _method(tiny_unet(9, (8, 16)).eval(), student)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    proj_before = {k: v.clone() for k, v in method.projections.state_dict().items()}
    logs = method.train_step(_batch([310, 450, 699, 500]), 0, nullcontext)  # all inside student 1's range
    assert set(k for k in logs if k.startswith("kd_")) == {"kd_1"} and np.isfinite(logs["loss"])
    changed = {i: any(not torch.equal(v, before[k]) for k, v in student.state_dict().items() if k.startswith(f"unets.{i}."))
               for i in range(3)}
    assert changed == {0: False, 1: True, 2: False}
    proj_changed = {i: any(not torch.equal(v, proj_before[k]) for k, v in method.projections.state_dict().items()
                           if k.startswith(f"{i}.")) for i in range(3)}
    assert proj_changed == {0: False, 1: True, 2: False}
    # a batch over every range trains every student
    method.train_step(_batch([5, 400, 900]), 1, nullcontext)
    assert all(any(not torch.equal(v, before[k]) for k, v in student.state_dict().items() if k.startswith(f"unets.{i}."))
               for i in range(3))


def test_a_few_steps_lower_the_kd_loss_of_every_student():
    student = O2MKDStudent([tiny_unet(1), tiny_unet(2)], [500], scheduler(), 4).train()
    teacher = tiny_unet(9, (8, 16)).eval()
    method = _method(teacher, student, feature_weight=0.0, denoise_weight=0.0, weighting="eps")
    batch = _batch([100, 300, 450, 600, 800, 990] * 2, seed=1)
    x_t = diffuse(method.alphas_cumprod, batch["x0"], batch["t"], batch["noise"])
    with torch.no_grad():
        held = {"x_t": x_t, "t": batch["t"], "eps": teacher(x_t, batch["t"]).sample}
    first = student_kd_losses(student, held)
    for step in range(15):
        logs = method.train_step(batch, step, nullcontext)
        assert np.isfinite(logs["loss"])
    last = student_kd_losses(student, held)
    assert len(first) == 2 and all(b < 0.7 * a for a, b in zip(first, last)), (first, last)
    assert abs(method.eval_loss(student, held) - np.mean(last)) < 1e-6


def test_training_timesteps_stay_inside_each_students_range():
    images = torch.rand(20, 1, 32, 32) * 2 - 1
    ddim = [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    rng = np.random.default_rng(0)
    for mode in ("uniform", "ddim", "mixed"):
        source = RangeSource(images, [0, 300, 700, 1000], ddim, mode, hflip=True)
        b = source.batch(64, rng)
        assert b["x0"].shape == (192, 1, 32, 32) and b["noise"].shape == (192, 1, 32, 32)
        for i, (lo, hi) in enumerate(((0, 299), (300, 699), (700, 999))):
            t = b["t"][i * 64:(i + 1) * 64]
            assert int(t.min()) >= lo and int(t.max()) <= hi
            if mode == "ddim":
                assert set(t.tolist()) <= set(ddim)
        if mode == "uniform":
            assert not set(b["t"].tolist()) <= set(ddim)


def test_heldout_batch_uses_each_students_ddim_timesteps():
    s = three_students(10)
    teacher = tiny_unet(9, (8, 16)).eval()
    alphas = make_ddim(s.scheduler_config, 10).alphas_cumprod
    held = heldout_batch(s, teacher, torch.zeros(5, 1, 32, 32), alphas, 0, torch.device("cpu"), weighting="x0_trunc")
    assert held["t"].tolist() == [299, 199, 99, 299, 199] + [699, 599, 499, 399, 699] + [999, 899, 799, 999, 899]
    with torch.no_grad():
        assert torch.allclose(held["eps"], teacher(held["x_t"], held["t"]).sample, atol=1e-6)
    # x0_trunc: weight 1 where the signal dominates, (1 - a) / a (the x_0 error scale) where the noise does
    a = alphas[held["t"]]
    assert torch.allclose(held["w"], torch.maximum((1 - a) / a, torch.ones(15)))
    assert float(held["w"][2]) == 1.0 and float(held["w"][10]) > 1000  # t = 99 and t = 999
    assert torch.equal(loss_weights(alphas, held["t"], "eps"), torch.ones(15))


# --------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_scratch_and_pruned(tmp_path: Path, tiny_teacher_dir: Path):
    teacher = load_teacher(str(tiny_teacher_dir))
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for init, extra in (("scratch", {"width": 0.5}), ("prune", {"width": 0.5}), ("teacher", {})):
        cfg = O2MKDStudentConfig(boundaries=[500], init=init, **extra)
        student = build_o2mkd_student(cfg, teacher, 4, "trailing").eval()
        folder = tmp_path / init
        save_student(student, folder)
        config = json.loads((folder / "config.json").read_text())
        assert config["kind"] == "o2mkd" and config["boundaries"] == [500]
        assert [s["range"] for s in config["students"]] == [[0, 499], [500, 999]]
        assert [s["timesteps"] for s in config["students"]] == [[499, 249], [999, 749]]
        loaded = load_student(folder)
        assert isinstance(loaded, O2MKDStudent) and loaded.schedule() == student.schedule()
        with torch.no_grad():
            assert torch.equal(loaded(noise), student(noise))
        widths = [sum(p.numel() for p in u.parameters()) for u in student.unets]
        full = sum(p.numel() for p in teacher.unet.parameters())
        if init == "teacher":
            assert widths == [full, full]
        else:
            assert all(w < 0.5 * full for w in widths), (init, widths, full)
        # pruning and copying start from the teacher's weights (conv_out keeps its image channels when pruned)
        same = torch.equal(student.unets[1].conv_out.bias, teacher.unet.conv_out.bias)
        assert same == (init != "scratch"), init
        if init == "prune":
            assert config["students"][0]["arch"]["type"] == "pruned"


def test_students_of_different_widths_per_range_round_trip(tmp_path: Path, tiny_teacher_dir: Path):
    """width as a list: each student pruned to its own width; saved and reloaded with those shapes."""
    teacher = load_teacher(str(tiny_teacher_dir))
    cfg = O2MKDStudentConfig(boundaries=[500], init="prune", width=[0.75, 0.25])
    student = build_o2mkd_student(cfg, teacher, 4, "trailing").eval()
    sizes = [sum(p.numel() for p in u.parameters()) for u in student.unets]
    assert sizes[0] > 2 * sizes[1], sizes  # the low-t student keeps three times the channels
    save_student(student, tmp_path / "s")
    loaded = load_student(tmp_path / "s")
    assert [sum(p.numel() for p in u.parameters()) for u in loaded.unets] == sizes
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(noise), student(noise))


# --------------------------------------------------------------------------------------------- export + router


@pytest.fixture(scope="module")
def router_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    """A run directory holding an (untrained) O2MKD student of the tiny teacher: export needs nothing else."""
    from edgekd.rundir import RunDir

    base = tmp_path_factory.mktemp("o2mkd")
    raw = o2mkd_recipe(tiny_teacher_dir, base / "run")
    raw["teacher"]["steps"] = 6
    raw["student"]["boundaries"] = [300, 700]
    recipe = validate_mapping(raw, Recipe, "test")
    run = RunDir(base / "run")
    run.path.mkdir(parents=True)
    run.save_recipe(recipe)
    torch.manual_seed(0)
    student = build_o2mkd_student(recipe.student, load_teacher(str(tiny_teacher_dir)), 6, "trailing")
    save_student(student.eval(), run.student_dir)
    return run.path


def test_onnx_export_of_every_student_with_a_v3_manifest(router_run: Path):
    from edgekd.export import export_run
    from edgekd.export.multi import read_router_manifest
    from edgekd.manifest import read_manifest
    from edgekd.noise import make_noise
    from edgekd.rundir import RunDir
    from edgekd.runtime import open_generator

    path = export_run(router_run, "onnx", exporter="torchscript")
    assert path.name == "student.manifest.json"
    m = read_manifest(path)
    assert m.format_version == 3 and m.role == "student" and m.target == "onnx"
    assert [(g.name, g.file) for g in m.models] == [("student_0", "student_0.onnx"), ("student_1", "student_1.onnx"),
                                                    ("student_2", "student_2.onnx")]
    s = m.sampling
    assert s.kind == "ddim" and s.steps == 6 and s.timesteps == [999, 832, 666, 499, 332, 166]
    assert s.graph_per_step == ["student_2", "student_2", "student_1", "student_1", "student_1", "student_0"]
    assert m.parity is not None and m.parity.passed and m.parity.psnr_db >= 35
    assert all(g.parity is not None and g.parity.passed for g in m.models)
    assert m.total_bytes == sum((path.parent / g.file).stat().st_size for g in m.models)
    assert [i.name for i in m.inputs] == ["sample", "timestep"] and m.output.name == "epsilon"
    assert m.noise.portable == "mulberry32-boxmuller-v1" and m.noise.shape == [1, 32, 32]
    assert m.image.channels == 1 and m.image.crop == (2, 2, 28, 28)

    # the router manifest (router format 1) is still written for one release, and reads as the same v3 model
    router = read_router_manifest(path.with_name("router.manifest.json"))
    assert [s.model.file for s in router.students] == ["student_0.onnx", "student_1.onnx", "student_2.onnx"]
    assert [s.range for s in router.students] == [(0, 299), (300, 699), (700, 999)]
    assert [(x.timestep, x.student) for x in router.schedule] == [(999, 2), (832, 2), (666, 1), (499, 1), (332, 1),
                                                                   (166, 0)]
    assert len(router.sampling.alphas_cumprod) == 1000
    assert router.schedule[0].alpha_cumprod == pytest.approx(router.sampling.alphas_cumprod[999])
    upgraded = read_manifest(path.with_name("router.manifest.json"))
    assert upgraded.sampling.graph_per_step == s.graph_per_step and upgraded.sampling.timesteps == s.timesteps

    student = RunDir.open(router_run).student()
    noise = make_noise(11, 0, 3, (1, 32, 32))
    with torch.no_grad():
        ref = student(noise)
    gen = open_generator(path, threads=1)
    assert gen.calls_per_image == 6
    assert torch.allclose(gen.generate(noise), ref, atol=1e-4)

    # what an app does with the manifest alone: onnxruntime sessions, graph_per_step, both alphas lists, the update
    sessions = {g.name: ort.InferenceSession(str(path.parent / g.file), providers=["CPUExecutionProvider"])
                for g in m.models}
    assert s.alphas_cumprod_prev[-1] == pytest.approx(router.sampling.alphas_cumprod[0])  # 166 - 1000 // 6 = 0
    x = noise.numpy().astype(np.float64)
    for t, graph, a, a_next in zip(s.timesteps, s.graph_per_step, s.alphas_cumprod, s.alphas_cumprod_prev):
        eps = sessions[graph].run(None, {"sample": x.astype(np.float32), "timestep": np.full((3,), t, np.int64)})[0]
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        x0 = np.clip(x0, -s.clip_sample_range, s.clip_sample_range) if s.clip_sample else x0
        x = np.sqrt(a_next) * x0 + np.sqrt(1 - a_next) * eps
    assert np.abs(x - ref.numpy()).max() < 1e-4


def test_a_wrong_student_file_fails_the_router_gate(router_run: Path, tmp_path: Path):
    """The routed-loop gate can fail: swapping two students' files must be caught."""
    from edgekd.errors import ParityError
    from edgekd.export.multi import router_generator
    from edgekd.export.parity import check_parity
    from edgekd.noise import make_noise
    from edgekd.profile.generators import TorchRouter
    from edgekd.rundir import RunDir

    path = router_run / "exports" / "onnx" / "router.manifest.json"
    if not path.is_file():
        pytest.skip("needs the ONNX export of the test above")
    raw = json.loads(path.read_text())
    raw["students"][0]["model"], raw["students"][2]["model"] = raw["students"][2]["model"], raw["students"][0]["model"]
    bad = path.with_name("swapped.manifest.json")
    bad.write_text(json.dumps(raw))
    student = RunDir.open(router_run).student()
    with pytest.raises(ParityError, match="parity check failed"):
        check_parity(TorchRouter(student), router_generator(bad, threads=1), make_noise(1, 0, 2, (1, 32, 32)), 1,
                     35.0, "test")


# --------------------------------------------------------------------------------------------- end to end


@needs_fmnist
def test_distill_resume_and_profile_a_tiny_o2mkd_run(tmp_path: Path, tiny_teacher_dir: Path, capsys):
    """distill (tiny teacher, 2 students, DDIM-3) -> resume -> export (torchscript) -> profile with per-step rows."""
    from edgekd.profile.run import profile_run

    raw = o2mkd_recipe(tiny_teacher_dir, tmp_path / "run")
    raw["train"].update({"steps": 4, "eval_every": 2, "sample_every": 4, "checkpoint_every": 2})
    path = write_recipe(tmp_path / "r.yaml", raw)
    assert main(["distill", str(path), "--set", "train.steps=2"]) == 0
    assert main(["distill", str(path), "--resume"]) == 0
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in lines)
    assert {"kd_0", "kd_1", "loss_kd", "loss_feature", "loss_denoise"} <= set(lines[-1])
    assert json.loads((run / "student" / "config.json").read_text())["kind"] == "o2mkd"
    assert (run / "samples" / "step_00000004.png").is_file()
    assert main(["export", str(run), "--exporter", "torchscript"]) == 0
    assert main(["export", str(run), "--teacher", "--exporter", "torchscript"]) == 0
    capsys.readouterr()
    report = profile_run(run, fid_samples=8, repeats=1)
    names = [r["name"] for r in report["rows"]]
    assert names == ["teacher DDIM-3 torch", "teacher DDIM-3 onnxruntime", "student torch", "student onnxruntime"]
    for router in report["rows"][2:]:  # the routed loop in torch and over the v3 manifest's ONNX files
        assert router["steps"] == 3 and router["latency_ms"]["1t"] > 0 and router["fid"] is not None
    assert [e["name"] for e in report["per_step"]["rows"]] == ["teacher", "student 0", "student 1"]
    assert [e["steps"] for e in report["per_step"]["rows"]] == [3, 1, 2]
    text = (run / "report" / "profile.md").read_text()
    assert "Per step (o2mkd 2 students DDIM-3)" in text and "| student 1 | 500..999 | 2 |" in text


@needs_shared_teacher
@needs_fmnist
def test_tiny_recipe_distills_on_the_shared_teacher(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe names the teacher relative to the checkout
    run = tmp_path / "run"
    sets = ["--set", f"run_dir={run}", "--set", f"trajectory.cache_dir={tmp_path / 'cache'}", "--set", "train.steps=4",
            "--set", "train.eval_every=2", "--set", "train.checkpoint_every=2"]
    assert main(["distill", str(TINY), *sets]) == 0
    student = load_student(run / "student")
    assert student.schedule() == [(999, 1), (749, 1), (499, 0), (249, 0)]
    assert SHARED_TEACHER.is_dir()
