"""GDD / GDD-I: the generator's parametrisation, the freezing rule, the discriminators, the GAN step, recipes, and
the whole distill -> ONNX path."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.methods.discriminators import ConvDiscriminator, ProjectedDiscriminator
from edgekd.methods.gdd import (GDDMethod, HeldoutFID, RealNoiseSource, build_gdd_generator, freeze_by_patterns,
                                straight_through_clamp, top_alpha_bar)
from edgekd.recipe import GDD_FREEZE_DEFAULT, GDDConfig, TrainConfig, load_recipe
from edgekd.students import load_student, save_student
from edgekd.teachers.diffusers_teacher import DiffusionTeacher, load_teacher

from edgekd_testing import ROOT, SHARED_TEACHER, needs_fmnist, needs_shared_teacher

TINY = ROOT / "recipes" / "gdd-tiny.yaml"
TINY_I = ROOT / "recipes" / "gddi-tiny.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def attn_unet(size: int = 16):
    """A small diffusers UNet with attention, so every kind of layer the freeze rule names is present."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, attention_head_dim=8)


def small_teacher(size: int = 16) -> DiffusionTeacher:
    from diffusers import DDPMScheduler

    config = dict(DDPMScheduler(num_train_timesteps=1000, clip_sample=True).config)
    return DiffusionTeacher(attn_unet(size).eval().requires_grad_(False), config, "test", "test")


def small_method(innate: bool = False, disc: str = "conv", lr: float = 1e-3, **cfg) -> GDDMethod:
    teacher = small_teacher()
    generator = build_gdd_generator(teacher)
    config = GDDConfig(innate=innate, discriminator=disc, disc_channels=4, **cfg)
    if disc == "conv":
        d = ConvDiscriminator(1, 16, 4)
    else:
        d = ProjectedDiscriminator.from_path(config.feature_net, 1, 16, 4)
    return GDDMethod(generator, d, config, TrainConfig(lr=lr, betas=(0.0, 0.99), grad_clip=None))


def fake_batch(n: int = 4, size: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"real": torch.rand(n, 1, size, size, generator=g) * 2 - 1, "noise": torch.randn(n, 1, size, size, generator=g)}


# --------------------------------------------------------------------------------------------- generator


def test_generator_is_the_teachers_x0_prediction_at_T_minus_1(tiny_teacher_dir: Path):
    teacher = load_teacher(str(tiny_teacher_dir))
    t, abar = top_alpha_bar(teacher.scheduler_config)
    assert t == 999 and 3e-5 < abar < 5e-5  # linear betas 1e-4..0.02: 1/sqrt(abar) ~ 157
    gen = build_gdd_generator(teacher)
    z = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = teacher.unet(z, 999).sample
        raw = gen.train()(z)
        clamped = gen.eval()(z)
    expected = (z - (1 - abar) ** 0.5 * eps) / abar ** 0.5
    assert torch.allclose(raw, expected, rtol=1e-5, atol=1e-3)
    assert float(raw.abs().max()) > 1.5  # raw in training: out-of-range pixels are what D sees
    assert torch.equal(clamped, raw.clamp(-1, 1))
    # a copy: training the generator never touches the teacher
    assert all(not p.requires_grad for p in teacher.unet.parameters())
    assert all(p.requires_grad for p in gen.parameters())
    assert gen.unet is not teacher.unet


@needs_shared_teacher
def test_generator_init_equals_the_teachers_one_step_ddim():
    """DDIM with 1 trailing step from t = 999 (clip_sample) is exactly the clamped x0 prediction."""
    teacher = load_teacher(str(SHARED_TEACHER))
    gen = build_gdd_generator(teacher).eval()
    z = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ddim1, _ = teacher.sample(z, steps=1)
        out = gen(z)
    inside = (out.abs() < 0.99).float().mean()
    assert inside > 0.1  # a real comparison: not every pixel is clamped
    assert float((out - ddim1).abs().max()) < 1e-3  # fp32 round-off of eps, times 1/sqrt(abar) ~ 157


def test_generator_timestep_option(tiny_teacher_dir: Path):
    teacher = load_teacher(str(tiny_teacher_dir))
    gen = build_gdd_generator(teacher, 500)
    assert gen.timestep == 500 and gen.alpha_bar == pytest.approx(top_alpha_bar(teacher.scheduler_config, 500)[1])
    assert 0.05 < gen.alpha_bar < 0.1
    with pytest.raises(EdgekdError, match="outside the teacher's 0..999"):
        build_gdd_generator(teacher, 1000)


def test_generator_ignores_bf16_autocast_and_round_trips_through_save(tmp_path: Path):
    gen = build_gdd_generator(small_teacher()).train()
    z = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        ref = gen(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = gen(z)
    assert amp.dtype == torch.float32 and torch.allclose(amp, ref, atol=1e-3)  # bf16 eps x 157 would be ~1 off
    save_student(gen.eval(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["timestep"] == 999 and config["alpha_bar"] == pytest.approx(top_alpha_bar(small_teacher().scheduler_config)[1])
    loaded = load_student(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(z), gen(z))


# --------------------------------------------------------------------------------------------- GDD-I freezing


def test_default_freeze_rule_on_diffusers_names():
    unet = attn_unet()
    report = freeze_by_patterns(unet, GDD_FREEZE_DEFAULT)
    frozen = set(report.frozen)
    names = [n for n, _ in unet.named_parameters()]
    expect_frozen = {n for n in names if any(k in n for k in (".conv1.", ".conv2.", "samplers.0.conv.", ".to_out.0."))}
    assert frozen == expect_frozen
    for must_train in ("conv_in.weight", "conv_out.weight", "time_embedding.linear_1.weight",
                       "down_blocks.0.resnets.0.time_emb_proj.weight", "down_blocks.0.resnets.0.norm1.weight",
                       "down_blocks.1.resnets.0.conv_shortcut.weight", "down_blocks.1.attentions.0.to_q.weight",
                       "down_blocks.1.attentions.0.group_norm.weight", "conv_norm_out.weight"):
        assert must_train in names and must_train not in frozen, must_train
    params = dict(unet.named_parameters())
    assert all(not params[n].requires_grad for n in frozen)
    assert all(params[n].requires_grad for n in names if n not in frozen)
    trainable = sum(p.numel() for n, p in params.items() if n not in frozen)
    assert report.trainable_params == trainable and report.total_params == sum(p.numel() for p in params.values())
    assert 0.05 < report.fraction < 0.5


@needs_shared_teacher
def test_default_freeze_rule_on_the_shared_teacher_leaves_a_quarter_training():
    report = freeze_by_patterns(load_teacher(str(SHARED_TEACHER)).unet, GDD_FREEZE_DEFAULT)
    # 11 resnets x (conv1, conv2), 4 resampling convs, 4 attention output projections; weight + bias each
    assert len(report.frozen) == 2 * (11 * 2 + 4 + 4)
    assert 0.15 < report.fraction < 0.3


def test_custom_freeze_patterns_and_mistakes():
    unet = attn_unet()
    report = freeze_by_patterns(unet, [r"^conv_in\."])
    assert report.frozen == ["conv_in.weight", "conv_in.bias"]
    assert freeze_by_patterns(unet, []).fraction == 1.0 and all(p.requires_grad for p in unet.parameters())
    with pytest.raises(EdgekdError, match="match no parameter"):
        freeze_by_patterns(unet, [r"encoder\.layers"])
    with pytest.raises(EdgekdError, match="freeze every parameter"):
        freeze_by_patterns(unet, [r"."])
    assert GDDConfig().freeze_patterns() == [] and GDDConfig(innate=True).freeze_patterns() == GDD_FREEZE_DEFAULT
    assert GDDConfig(innate=True, freeze=["x"]).freeze_patterns() == ["x"]


def test_gddi_steps_change_only_the_trainable_parameters():
    m = small_method(innate=True)
    g = m.generator
    before = {n: p.detach().clone() for n, p in g.unet.named_parameters()}
    frozen = set(m.freeze.frozen)
    assert frozen and m.describe().startswith("GDD-I:")
    for step in range(3):
        logs = m.train_step(fake_batch(seed=step), step, nullcontext)
        assert all(np.isfinite(v) for v in logs.values())
        if step == 0:
            assert logs["g_trainable_fraction"] == pytest.approx(m.freeze.fraction) and m.freeze.fraction < 0.5
    after = dict(g.unet.named_parameters())
    assert all(torch.equal(after[n], before[n]) and after[n].grad is None for n in frozen)
    changed = [n for n in before if n not in frozen and not torch.equal(after[n], before[n])]
    assert "conv_in.weight" in changed and "down_blocks.1.attentions.0.to_q.weight" in changed
    assert len(changed) > 0.8 * (len(before) - len(frozen))  # almost every trainable tensor moved
    assert {id(p) for p in m.g_params} == {id(p) for n, p in after.items() if n not in frozen}  # optimiser


# --------------------------------------------------------------------------------------------- discriminators


def test_conv_discriminator_shapes():
    for c, size in ((1, 32), (3, 28), (1, 16)):
        d = ConvDiscriminator(c, size, 4)
        out = d(torch.randn(5, c, size, size))
        assert len(out) == 1 and out[0].shape == (5, 1)


def test_projected_discriminator_trains_only_its_heads():
    d = ProjectedDiscriminator.from_path("builtin:fid/fmnist-classifier", 1, 32, 8)
    assert d.feature_shapes == [(16, 16, 16), (32, 8, 8), (64, 4, 4), (128,)]
    out = d(torch.randn(3, 1, 32, 32))
    assert [tuple(o.shape) for o in out] == [(3, 16), (3, 16), (3, 16), (3, 1)]
    head_ids = {id(p) for p in d.trainable_parameters()}
    assert head_ids == {id(p) for p in d.heads.parameters()}
    assert all(not p.requires_grad for p in d.features.parameters())
    d.train()
    assert not d.features.training  # BatchNorm of the frozen net keeps its running statistics

    m = small_method(disc="projected")
    feats = {n: t.clone() for n, t in m.discriminator.features.state_dict().items()}
    heads = {n: p.detach().clone() for n, p in m.discriminator.heads.named_parameters()}
    g_before = m.generator.unet.conv_in.weight.detach().clone()
    for step in range(2):
        logs = m.train_step(fake_batch(seed=step), step, nullcontext)
    assert all(np.isfinite(v) for v in logs.values())
    assert all(torch.equal(t, feats[n]) for n, t in m.discriminator.features.state_dict().items())  # incl. BN stats
    assert all(p.grad is None for p in m.discriminator.features.parameters())
    assert all(not torch.equal(p, heads[n]) for n, p in m.discriminator.heads.named_parameters() if p.dim() > 1)
    assert not torch.equal(m.generator.unet.conv_in.weight, g_before)  # G's gradient flows through frozen features


# --------------------------------------------------------------------------------------------- the GAN step


class LinearD(torch.nn.Module):
    """logit = <w, x>: its input gradient is w, so R1 = ||w||^2 exactly."""

    def __init__(self, shape):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape))

    def trainable_parameters(self):
        return [self.w]

    def forward(self, x):
        return [(x * self.w).flatten(1).sum(1, keepdim=True)]


def test_r1_penalty_is_the_squared_input_gradient_and_runs_lazily():
    m = small_method(r1_every=3)
    m.discriminator = LinearD((1, 16, 16))
    m.d_params = m.discriminator.trainable_parameters()
    m.d_opt = torch.optim.Adam(m.d_params, lr=1e-3, betas=(0.0, 0.99))
    real = torch.randn(4, 1, 16, 16)
    assert float(m.r1_penalty(real).detach()) == pytest.approx(float(m.discriminator.w.detach().square().sum()), rel=1e-5)
    steps_with_r1 = [s for s in range(7) if "r1" in m.train_step(fake_batch(seed=s), s, nullcontext)]
    assert steps_with_r1 == [0, 3, 6]
    assert "r1" not in small_method(r1_gamma=0.0).train_step(fake_batch(), 0, nullcontext)
    # lazy regularisation: D's Adam is rescaled by c = 16/17 (StyleGAN2, GDD's code)
    d_group = small_method(lr=1e-4).d_opt.param_groups[0]
    assert d_group["lr"] == pytest.approx(1e-4 * 16 / 17) and d_group["betas"][1] == pytest.approx(0.99 ** (16 / 17))


def test_generator_learns_to_fool_a_fixed_discriminator():
    """With D frozen (lr 0), G's non-saturating loss must fall: the G step moves the generator the right way."""
    m = small_method(lr=1e-4, d_lr=1e-12)
    batch = fake_batch(8)
    losses = [m.train_step(batch, s, nullcontext)["loss_g"] for s in range(6)]
    assert losses[-1] < losses[0], losses


def test_gan_step_learns_a_two_mode_toy_distribution():
    """The whole D/R1/G step on a toy problem: an MLP generator must move its samples onto two 4x4 patterns and
    cover both (a check that the losses, signs and optimiser wiring are right, independent of the UNet)."""
    from torch import nn

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.LeakyReLU(0.2), nn.Linear(64, 16),
                                      nn.Unflatten(1, (1, 4, 4)))

        def forward(self, z):
            return self.unet(z)

    torch.manual_seed(0)
    ramp = torch.linspace(-1, 1, 16).view(1, 4, 4)
    patterns = torch.stack([ramp, -ramp])
    g = Toy()
    m = GDDMethod(g, ConvDiscriminator(1, 4, 16), GDDConfig(r1_gamma=0.1, r1_every=4),
                  TrainConfig(lr=1e-3, betas=(0.0, 0.99), grad_clip=None))

    def distance() -> tuple[float, list[int]]:
        with torch.no_grad():
            d = torch.cdist(g(torch.randn(256, 1, 4, 4)).flatten(1), patterns.flatten(1))
        return float(d.min(1).values.mean()), torch.bincount(d.argmin(1), minlength=2).tolist()

    start, _ = distance()
    rng = np.random.default_rng(0)
    for step in range(450):
        idx = torch.from_numpy(rng.integers(0, 2, 32))
        m.train_step({"real": patterns[idx], "noise": torch.randn(32, 1, 4, 4)}, step, nullcontext)
    end, counts = distance()
    assert end < 0.6 * start, (start, end)  # measured: 2.36 -> 1.28 (raw outputs, what D sees by default)
    assert min(counts) > 40, counts  # both modes, no collapse


def test_straight_through_clamp():
    x = torch.tensor([-3.0, -0.5, 0.2, 2.0], requires_grad=True)
    y = straight_through_clamp(x)
    assert torch.equal(y.detach(), x.detach().clamp(-1, 1))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(4))  # saturated pixels keep their gradient
    m = small_method(clamp_fakes=True)
    assert all(np.isfinite(v) for v in m.train_step(fake_batch(), 0, nullcontext).values())


def test_real_noise_source_is_reproducible_and_flips():
    images = torch.arange(6 * 4, dtype=torch.float32).view(6, 1, 2, 2) / 24
    a = RealNoiseSource(images, hflip=True).batch(5, np.random.default_rng(0))
    b = RealNoiseSource(images, hflip=True).batch(5, np.random.default_rng(0))
    assert torch.equal(a["real"], b["real"]) and torch.equal(a["noise"], b["noise"])
    assert a["noise"].shape == (5, 1, 2, 2) and abs(float(a["noise"].mean())) < 2
    plain = RealNoiseSource(images, hflip=False).batch(40, np.random.default_rng(1))["real"]
    flipped = RealNoiseSource(images, hflip=True).batch(40, np.random.default_rng(1))["real"]
    assert not torch.equal(plain, flipped)
    originals = {tuple(x.flatten().tolist()) for x in images}
    assert all(tuple(x.flatten().tolist()) in originals or tuple(x.flip(-1).flatten().tolist()) in originals for x in flipped)


def test_heldout_fid_ranks_closer_distributions_lower():
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(64, 1, 32, 32, generator=g) * 2 - 1).clamp(-1, 1)
    fid = HeldoutFID(real[:32], "builtin:fid/fmnist-classifier")
    same, other = fid(real[32:]), fid(torch.full((32, 1, 32, 32), -1.0) + 0.01 * torch.randn(32, 1, 32, 32, generator=g))
    assert same < other and fid(real[32:]) == pytest.approx(same)  # real features kept across calls


# --------------------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["method"].update(innate=False, freeze=["conv"]), "key 'method': freeze patterns are used only by GDD-I"),
    (lambda r: r["method"].update(innate=True, freeze=["conv[12"]), "is not a valid regular expression"),
    (lambda r: r["method"].update(r1_every=0), "key 'method.r1_every'"),
    (lambda r: r["method"].update(discriminator="stylegan"), "key 'method.discriminator'"),
    (lambda r: r["method"].update(timestep=-1), "key 'method.timestep'"),
    (lambda r: r.__setitem__("student", {"init": "scratch", "block_out_channels": [8, 8]}),
     "key 'student.init': method gdd starts from the teacher's weights"),
    (lambda r: r["method"].update(r1_gama=1.0), "unknown key 'method.r1_gama' (did you mean 'r1_gamma'?)"),
])
def test_bad_gdd_recipe_is_one_line_and_exit_2(tmp_path: Path, capsys, change, expected):
    raw = yaml.safe_load(TINY.read_text())
    raw["run_dir"] = str(tmp_path / "run")
    change(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["distill", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err, err
    assert not (tmp_path / "run").exists()


def test_gdd_recipe_defaults(tmp_path: Path):
    raw = yaml.safe_load(TINY.read_text())
    for key in ("lr", "betas", "grad_clip"):
        del raw["train"][key]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path, check_files=False)
    assert recipe.train.lr == 1e-4 and recipe.train.betas == (0.0, 0.99) and recipe.train.grad_clip is None
    assert load_recipe(path, ["train.lr=3e-4"], check_files=False).train.lr == 3e-4
    gpu = load_recipe(ROOT / "recipes" / "gdd-fmnist-gpu.yaml", check_files=False)
    assert gpu.method.name == "gdd" and gpu.student.kind == "unet" and gpu.student.init == "teacher"
    gddi = load_recipe(ROOT / "recipes" / "gdd-fmnist-gpu.yaml", ["method.innate=true"], check_files=False)
    assert gddi.method.freeze_patterns() == GDD_FREEZE_DEFAULT
    assert load_recipe(TINY_I, check_files=False).method.innate


# --------------------------------------------------------------------------------------------- end to end


@needs_shared_teacher
@needs_fmnist
def test_tiny_gdd_distill_and_onnx_export_with_parity(tmp_path: Path, monkeypatch):
    import onnx

    monkeypatch.chdir(ROOT)  # the recipe names the teacher relative to the checkout
    run = tmp_path / "run"
    sets = ["--set", f"run_dir={run}", "--set", f"trajectory.cache_dir={tmp_path / 'cache'}"]
    assert main(["distill", str(TINY_I), *sets]) == 0
    config = json.loads((run / "student" / "config.json").read_text())
    assert config["kind"] == "one_step_unet" and config["timestep"] == 999 and config["alpha_bar"] < 1e-4
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and 0.15 < metrics[0]["g_trainable_fraction"] < 0.3
    assert all(np.isfinite(m["loss_d"]) and np.isfinite(m["loss_g"]) for m in metrics)
    assert [m["step"] for m in metrics if "eval_loss" in m] == [2, 4] and "r1" in metrics[0]
    assert (run / "samples" / "step_00000004.png").is_file()

    # torchscript keeps the test fast; the default dynamo exporter passes the same gate (docs/gdd.md)
    assert main(["export", str(run), "--target", "onnx", "--exporter", "torchscript"]) == 0
    manifest = json.loads((run / "exports" / "onnx" / "student.manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["psnr_db"] >= 35
    graph = onnx.load(str(run / "exports" / "onnx" / "student.onnx")).graph
    assert [i.name for i in graph.input] == ["noise"]  # noise only: the timestep is a constant
    assert "Clip" in {n.op_type for n in graph.node}  # the [-1, 1] clamp is part of the exported generator


@needs_shared_teacher
@needs_fmnist
def test_tiny_gdd_with_conv_discriminator_distills(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    assert main(["distill", str(TINY), "--set", f"run_dir={run}", "--set",
                 f"trajectory.cache_dir={tmp_path / 'cache'}"]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["g_trainable_fraction"] == 1.0
    assert (run / "student" / "model.safetensors").is_file()
