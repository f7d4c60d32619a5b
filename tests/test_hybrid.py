"""Quality options of the one-step students: the regression + adversarial hybrid, the teacher's ODE solvers
(and their trajectory-store keys), GDD's unit-gain parametrisation and regression warm start."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from edgekd.errors import RecipeError
from edgekd.methods.adversarial import AdversarialSettings, AdversarialTerm, PairsAndRealSource, translate
from edgekd.methods.denoising_student import DenoisingStudentMethod
from edgekd.methods.gdd import GDDMethod, RealNoiseSource, build_gdd_generator
from edgekd.methods.discriminators import ConvDiscriminator
from edgekd.recipe import DenoisingStudentConfig, GDDConfig, TrainConfig, load_recipe
from edgekd.students.unet_student import OneStepUNetStudent
from edgekd.teachers.diffusers_teacher import SOLVERS, load_teacher, make_solver
from edgekd.teachers.store import TrajectorySpec, TrajectoryStore
from edgekd.train.loop import TensorSource

from edgekd_testing import needs_fmnist, tiny_recipe, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def small_student(size: int = 16) -> OneStepUNetStudent:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    return OneStepUNetStudent(unet, 999)


def batch(n: int = 4, size: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"noise": torch.randn(n, 1, size, size, generator=g), "x0": torch.rand(n, 1, size, size, generator=g) * 2 - 1,
            "real": torch.rand(n, 1, size, size, generator=g) * 2 - 1}


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before))


def hybrid(**cfg) -> DenoisingStudentMethod:
    config = DenoisingStudentConfig(adv_weight=cfg.pop("adv_weight", 0.5), disc_channels=4, r1_every=1, **cfg)
    return DenoisingStudentMethod(small_student(), config, TrainConfig(lr=1e-3), (1, 16, 16))


# --------------------------------------------------------------------------------------------- the hybrid


def test_d_step_moves_only_the_discriminator():
    m = hybrid()
    g0, d0 = snapshot(m.generator), snapshot(m.adversarial.discriminator)
    b = batch()
    pred = m.generator(b["noise"])
    logs = m.adversarial.d_step(pred, b["real"], step=0, autocast=nullcontext)
    assert changed(m.adversarial.discriminator, d0)
    assert not changed(m.generator, g0)
    assert {"loss_d", "d_real", "d_fake", "r1"} <= set(logs)  # r1_every 1: the lazy R1 step ran


def test_generator_loss_gives_no_gradient_to_the_discriminator():
    m = hybrid()
    b = batch()
    pred = m.generator(b["noise"])
    m.adversarial.generator_loss(pred, nullcontext).backward()
    assert all(p.grad is None for p in m.adversarial.discriminator.parameters())
    assert all(p.requires_grad for p in m.adversarial.discriminator.parameters())  # restored for the next D step
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.generator.parameters())


def test_hybrid_step_trains_both_and_warm_start_trains_only_the_student():
    m = hybrid(adv_start_step=5)
    g0, d0 = snapshot(m.generator), snapshot(m.adversarial.discriminator)
    logs = m.train_step(batch(), step=0, autocast=nullcontext)  # before adv_start_step: pure regression
    assert set(logs) == {"loss"} and changed(m.generator, g0) and not changed(m.adversarial.discriminator, d0)
    g1 = snapshot(m.generator)
    logs = m.train_step(batch(), step=5, autocast=nullcontext)
    assert {"loss", "loss_g", "loss_d"} <= set(logs)
    assert changed(m.generator, g1) and changed(m.adversarial.discriminator, d0)
    assert not m.select_best and set(m.modules()) == {"student", "discriminator"}
    assert set(m.optimizers()) == {"student", "student_adv", "discriminator"}
    assert m.adv_opt.state and m.opt.state  # warm start stepped the regression Adam, the GAN phase its own


def test_pure_regression_is_unchanged_by_default():
    m = DenoisingStudentMethod(small_student(), DenoisingStudentConfig(), TrainConfig(), (1, 16, 16))
    assert m.adversarial is None and m.select_best and set(m.optimizers()) == {"student"}
    with pytest.raises(ValueError, match="nothing trains"):
        DenoisingStudentConfig(regression_weight=0)


def test_adversarial_gradient_changes_the_generator_update():
    """The same batch with and without the GAN term gives different student weights (the term is wired in)."""
    a, b = hybrid(adv_weight=1.0), hybrid(adv_weight=1e-9)
    a.train_step(batch(), 0, nullcontext), b.train_step(batch(), 0, nullcontext)
    assert any(not torch.allclose(p, q) for p, q in zip(a.generator.parameters(), b.generator.parameters()))


def test_translate_shifts_with_background_fill_and_keeps_gradients():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(16, 1, 1, 1).requires_grad_(True)
    y = translate(x, fraction=0.25, fill=-1.0, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    shifted = [not torch.equal(y[i], x[i].detach()) for i in range(16)]
    assert any(shifted)
    for i in range(16):  # every output is the input moved by (dy, dx) in [-2, 2], the border -1
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.full((8, 8), -1.0)
                src = x[i, 0].detach()
                ys, xs = slice(max(0, dy), 8 + min(0, dy)), slice(max(0, dx), 8 + min(0, dx))
                yd, xd = slice(max(0, -dy), 8 + min(0, -dy)), slice(max(0, -dx), 8 + min(0, -dx))
                ref[yd, xd] = src[ys, xs]
                found |= torch.equal(y[i, 0].detach(), ref)
        assert found
    y.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0


def test_pairs_and_real_source_draws_both():
    import numpy as np

    pairs = TensorSource({"noise": torch.randn(10, 1, 4, 4), "x0": torch.randn(10, 1, 4, 4)})
    src = PairsAndRealSource(pairs, torch.rand(30, 1, 4, 4), hflip=True)
    out = src.batch(6, np.random.default_rng(0))
    assert set(out) == {"noise", "x0", "real"} and all(v.shape == (6, 1, 4, 4) for v in out.values())


# --------------------------------------------------------------------------------------------- solvers


def test_solvers_sample_in_range_and_keys_never_mix(tiny_teacher_dir: Path):
    teacher = load_teacher(str(tiny_teacher_dir))
    z = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    outs = {}
    for solver in SOLVERS:
        x, states = teacher.sample(z, 4, record=[1], solver=solver)
        assert x.shape == z.shape and float(x.abs().max()) <= 1.0 and states.shape == (2, 1, 1, 32, 32)
        assert len(make_solver(teacher.scheduler_config, solver, 4).timesteps) == 4  # 4 network calls
        outs[solver] = x
    assert not torch.allclose(outs["ddim"], outs["dpmsolver++"])
    keys = {s: TrajectorySpec(teacher.fingerprint, 4, "trailing", 0.0, 1, (), (1, 32, 32), s).key for s in SOLVERS}
    assert len(set(keys.values())) == 3 and keys["dpmsolver++"].startswith("dpmsolver++4-")
    # DDIM keys are the ones stored before solvers existed (old caches stay valid)
    legacy = TrajectorySpec(teacher.fingerprint, 4, "trailing", 0.0, 1, (), (1, 32, 32))
    assert keys["ddim"] == legacy.key


def test_store_records_with_the_chosen_solver(tmp_path: Path, tiny_teacher_dir: Path):
    teacher = load_teacher(str(tiny_teacher_dir))
    spec = TrajectorySpec(teacher.fingerprint, 3, "trailing", 0.0, 7, (), teacher.sample_shape, "unipc")
    store = TrajectoryStore(tmp_path, spec)
    store.ensure(teacher, 3, shard_size=3, batch_size=3)
    got = store.read(0, 3)
    x, _ = teacher.sample(torch.from_numpy(got["noise"][:]), 3, solver="unipc")
    assert torch.allclose(torch.from_numpy(got["x0"][:]), x, atol=1e-5)
    import json

    assert json.loads((store.dir / "meta.json").read_text())["spec"]["solver_config"]["scheduler"] == "UniPCMultistepScheduler"


def test_recipe_solver_keys(tmp_path: Path, tiny_teacher_dir: Path):
    r = tiny_recipe(tiny_teacher_dir, tmp_path / "run")
    r["teacher"]["solver"] = "dpmsolver++"
    assert load_recipe(write_recipe(tmp_path / "a.yaml", r), check_files=False).teacher.solver == "dpmsolver++"
    r["teacher"].update({"solver": "dpm"})
    with pytest.raises(RecipeError, match="teacher.solver"):
        load_recipe(write_recipe(tmp_path / "b.yaml", r), check_files=False)
    r["teacher"].update({"solver": "unipc", "eta": 0.5})
    with pytest.raises(RecipeError, match="eta"):
        load_recipe(write_recipe(tmp_path / "c.yaml", r), check_files=False)


# --------------------------------------------------------------------------------------------- GDD


def gdd_teacher():
    from diffusers import DDPMScheduler

    from edgekd.teachers.diffusers_teacher import DiffusionTeacher

    unet = small_student().unet.eval().requires_grad_(False)
    return DiffusionTeacher(unet, dict(DDPMScheduler(num_train_timesteps=1000).config), "t", "t")


def test_unit_parametrisation_equals_its_formula():
    teacher = gdd_teacher()
    gen = build_gdd_generator(teacher, parametrisation="unit")
    z = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = z - teacher.unet(z, 999).sample
        assert torch.allclose(gen.train()(z), expected, atol=1e-6)
        assert torch.allclose(gen.eval()(z), expected, atol=1e-6)
    assert gen.export_config()["parametrisation"] == "x0 = noise - unet(noise, timestep)"
    assert build_gdd_generator(teacher).alpha_bar is not None  # the default stays GDD's x0 prediction


def test_gdd_warm_start_regresses_pairs_without_touching_d():
    teacher = gdd_teacher()
    gen = build_gdd_generator(teacher, parametrisation="unit")
    m = GDDMethod(gen, ConvDiscriminator(1, 16, 4), GDDConfig(warm_start_steps=2, parametrisation="unit",
                                                               diffaug=True, select_best=False),
                  TrainConfig(lr=1e-3, betas=(0.0, 0.99), grad_clip=None))
    import numpy as np

    pairs = TensorSource({"noise": torch.randn(8, 1, 16, 16), "x0": torch.rand(8, 1, 16, 16) * 2 - 1})
    src = RealNoiseSource(torch.rand(20, 1, 16, 16) * 2 - 1, True, pairs)
    b = src.batch(4, np.random.default_rng(0))
    assert {"real", "noise", "pair_noise", "pair_x0"} <= set(b)
    g0, d0 = snapshot(m.generator), snapshot(m.discriminator)
    assert set(m.train_step(b, 0, nullcontext)) == {"loss_warm"}
    assert changed(m.generator, g0) and not changed(m.discriminator, d0)
    logs = m.train_step(b, 2, nullcontext)  # the GAN phase, DiffAugment on
    assert "loss_g" in logs and changed(m.discriminator, d0) and m.select_best is False


# --------------------------------------------------------------------------------------------- tiny runs


@needs_fmnist
def test_tiny_hybrid_run_with_dpm_solver_pairs(tmp_path: Path, tiny_teacher_dir: Path):
    import json

    from edgekd.distill import distill

    r = tiny_recipe(tiny_teacher_dir, tmp_path / "run",
                    method={"name": "denoising_student", "adv_weight": 0.5, "adv_start_step": 4, "disc_channels": 4,
                            "r1_every": 2, "diffaug": True}, data={"limit": 64})
    r["teacher"]["solver"] = "dpmsolver++"
    run = distill(load_recipe(write_recipe(tmp_path / "r.yaml", r)))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "loss_d" not in lines[3] and "loss_d" in lines[4] and "r1" in lines[4]
    assert (run / "student").is_dir() and "dpmsolver++3-" in json.loads((run / "summary.json").read_text())["trajectory_store"]


@needs_fmnist
def test_tiny_gdd_run_unit_with_warm_start(tmp_path: Path, tiny_teacher_dir: Path):
    import json

    from edgekd.distill import distill

    r = tiny_recipe(tiny_teacher_dir, tmp_path / "run",
                    method={"name": "gdd", "parametrisation": "unit", "warm_start_steps": 4, "disc_channels": 4,
                            "eval_samples": 8, "eval_real": 32, "select_best": False},
                    data={"limit": 64}, student={})
    r["student"] = {"kind": "unet", "init": "teacher"}
    run = distill(load_recipe(write_recipe(tmp_path / "r.yaml", r)))
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "loss_warm" in lines[0] and "loss_g" in lines[-1]
    cfg = json.loads((run / "student" / "config.json").read_text())
    assert "alpha_bar" not in cfg and cfg["parametrisation"] == "x0 = noise - unet(noise, timestep)"


@needs_fmnist
def test_tiny_run_with_a_pruned_teacher_student_reloads_pruned(tmp_path: Path, tiny_teacher_dir: Path):
    """init: prune copies the teacher and channel-prunes it; the run's student reloads with the pruned shapes."""
    from edgekd.distill import distill
    from edgekd.profile.measure import count_params
    from edgekd.rundir import RunDir

    r = tiny_recipe(tiny_teacher_dir, tmp_path / "run", method={"name": "denoising_student"}, data={"limit": 64})
    r["student"] = {"kind": "unet", "init": "prune", "width": 0.5}
    run = distill(load_recipe(write_recipe(tmp_path / "r.yaml", r)))
    student = RunDir.open(run).student().eval()
    teacher = load_teacher(tiny_teacher_dir)
    assert count_params(student) < 0.5 * count_params(teacher.unet)
    assert student.unet.conv_in.out_channels == teacher.unet.conv_in.out_channels // 2
    z = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(student(z)).all()


def test_prune_init_needs_a_width(tmp_path: Path, tiny_teacher_dir: Path):
    r = tiny_recipe(tiny_teacher_dir, tmp_path / "run")
    r["student"] = {"kind": "unet", "init": "prune"}
    with pytest.raises(RecipeError, match="init: prune needs width"):
        load_recipe(write_recipe(tmp_path / "r.yaml", r))
    r["student"] = {"kind": "unet", "init": "teacher", "width": 0.5}
    with pytest.raises(RecipeError, match="width is only used with init: prune"):
        load_recipe(write_recipe(tmp_path / "r.yaml", r))


@needs_fmnist
def test_time_budget_stops_with_an_eval_and_a_checkpoint_and_resume_continues(tmp_path: Path, tiny_teacher_dir: Path,
                                                                              capsys):
    """train.max_minutes: the step that crosses the budget is treated as the last one (eval, student, checkpoint)."""
    import json

    from edgekd.distill import distill

    r = tiny_recipe(tiny_teacher_dir, tmp_path / "run", method={"name": "denoising_student"}, data={"limit": 64})
    r["train"]["max_minutes"] = 1e-6  # spent after the first step
    run = distill(load_recipe(write_recipe(tmp_path / "r.yaml", r)))
    summary = json.loads((run / "summary.json").read_text())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 1 and lines[-1]["step"] == 1 and "eval_loss" in lines[-1]
    assert "train.max_minutes (1e-06) reached at step 1 of 12" in capsys.readouterr().out
    assert (run / "student").is_dir() and (run / "samples" / "step_00000001.png").is_file()
    r["train"]["max_minutes"] = None  # the rest of the steps, from the checkpoint at step 1
    run = distill(load_recipe(write_recipe(tmp_path / "r.yaml", r)), resume=True)
    assert json.loads((run / "summary.json").read_text())["steps"] == 12
