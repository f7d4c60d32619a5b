"""Adv-KD: the layerwise student, its discriminators, the progressive schedule, recipes, and the whole path."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import yaml

from edgekd.cli import main
from edgekd.methods.adv_kd import AdvKDMethod, StageDiscriminator, stage_boundaries
from edgekd.recipe import AdvKDConfig, TrainConfig
from edgekd.students import load_student, save_student
from edgekd.students.layerwise import LayerwiseStudent, default_up_blocks

from edgekd_testing import FMNIST, ROOT, SHARED_TEACHER

TINY = ROOT / "recipes" / "adv-kd-tiny.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


def small_student(**kw) -> LayerwiseStudent:
    args = dict(image_channels=1, image_size=32, input_size=4, channels=[8, 8, 6, 6, 4, 4], up_blocks=[0, 2, 4])
    args.update(kw)
    torch.manual_seed(0)
    return LayerwiseStudent(**args)


def small_method(student: LayerwiseStudent, steps: int = 60, **cfg) -> AdvKDMethod:
    config = AdvKDConfig(disc_channels=4, disc_hidden=16, **cfg)
    return AdvKDMethod(student, config, TrainConfig(steps=steps, lr=1e-3, betas=(0.5, 0.999)),
                       list(range(student.num_blocks - 1)))


def fake_batch(n: int, k: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"noise": torch.randn(n, 1, 32, 32, generator=g), "x0": torch.rand(n, 1, 32, 32, generator=g) * 2 - 1,
            "states": torch.randn(n, k, 1, 32, 32, generator=g)}


# --------------------------------------------------------------------------------------------- the student


def test_block_and_head_shapes_follow_the_configured_resolutions():
    s = small_student()
    assert s.resolutions == [8, 8, 16, 16, 32, 32]
    noise = torch.randn(3, 1, 32, 32)
    heads = s.heads(noise)
    assert [tuple(h.shape) for h in heads] == [(3, 1, r, r) for r in (8, 8, 16, 16, 32, 32)]
    assert [tuple(h.shape) for h in s.heads(noise, upto=2)] == [(3, 1, 8, 8), (3, 1, 8, 8), (3, 1, 16, 16)]
    assert s(noise).shape == (3, 1, 32, 32)
    # the official layout: up-blocks at 0, 2, 4, ... from a 4x4 input
    assert default_up_blocks(4, 32) == [0, 2, 4] and default_up_blocks(8, 32) == [0, 2]
    # another layout: 8x8 input, up-blocks at the end, 3 channels
    s2 = LayerwiseStudent(3, 32, 8, [4, 4, 4], [1, 2])
    assert s2.resolutions == [8, 16, 32] and s2(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="ends at 16px"):
        LayerwiseStudent(1, 32, 4, [4, 4], [0, 1])


def test_forward_is_the_last_head_and_input_pooling_keeps_unit_variance():
    s = small_student(out_scales=[1.5, 1, 1, 1, 1, 1])
    noise = torch.randn(256, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    s.train()
    assert torch.equal(s(noise), s.heads(noise)[-1])
    s.eval()
    assert torch.equal(s(noise), s.heads(noise)[-1])
    z = s.downsample(noise)
    assert z.shape == (256, 1, 4, 4)
    assert abs(float(z.std()) - 1.0) < 0.05
    with torch.no_grad():
        assert float(s.heads(noise)[0].abs().max()) <= 1.5  # the scaled Tanh of head 0


def test_student_saves_and_loads_by_kind(tmp_path: Path):
    s = small_student(out_scales=[1.25, 1, 1, 1, 1, 1]).eval()
    with torch.no_grad():
        s.heads(torch.randn(4, 1, 32, 32))
    save_student(s, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["kind"] == "layerwise"
    loaded = load_student(tmp_path)
    noise = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(noise), s(noise))


# --------------------------------------------------------------------------------------------- the method


def test_discriminator_is_conditioned_on_the_noise():
    torch.manual_seed(0)
    d = StageDiscriminator(1, 16, 1, 4, width=4, hidden=16).eval()
    image = torch.randn(2, 1, 16, 16)
    z1, z2 = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    out1, out2 = d(image, z1), d(image, z2)
    assert out1.shape == (2,)
    assert not torch.allclose(out1, out2)
    # an 8x8 student input gets its own conv branch
    d8 = StageDiscriminator(1, 32, 1, 8, width=4, hidden=16).eval()
    assert not torch.allclose(d8(torch.zeros(1, 1, 32, 32), torch.randn(1, 1, 8, 8)),
                              d8(torch.zeros(1, 1, 32, 32), torch.randn(1, 1, 8, 8)))


def test_progressive_stages_freeze_later_blocks():
    assert stage_boundaries(60, 3) == [10, 30, 60]  # lengths 10:20:30 = 10*(k+1)
    s = small_student(channels=[4, 4, 4], up_blocks=[0, 1, 2])
    m = small_method(s, steps=60)
    assert [m.stage_of(i) for i in (0, 9, 10, 29, 30, 59)] == [0, 0, 1, 1, 2, 2]
    before = {k: v.clone() for k, v in s.state_dict().items()}
    d_before = [{k: v.clone() for k, v in d.state_dict().items()} for d in m.discriminators]
    logs = m.train_step(fake_batch(4, 2), step=15, autocast=nullcontext)  # stage 1: blocks 0, 1 train
    assert logs["stage"] == 1.0
    for k in (0, 1):
        assert any(not torch.equal(p, before[f"blocks.{k}.{n}"]) for n, p in s.blocks[k].state_dict().items())
        assert any(not torch.equal(p, d_before[k][n]) for n, p in m.discriminators[k].state_dict().items())
    frozen = {n: p for n, p in s.state_dict().items() if n.startswith(("blocks.2.", "head_modules.2."))}
    assert frozen and all(torch.equal(p, before[n]) for n, p in frozen.items())  # weights and BN statistics
    assert all(p.grad is None and not p.requires_grad for p in s.stage_parameters(2))
    assert all(torch.equal(p, d_before[2][n]) for n, p in m.discriminators[2].state_dict().items())
    # the joint schedule trains everything from the first step
    assert small_method(s, schedule="joint").stage_of(0) == 2


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    s = small_student(channels=[8, 8, 8], up_blocks=[0, 1, 2])
    m = small_method(s, steps=30, schedule="joint", regression_weight=1.0)
    batch = fake_batch(8, 2)
    pattern = torch.linspace(-1, 1, 32)
    batch["x0"] = (pattern[None, :] * pattern[:, None]).expand(8, 1, 32, 32).contiguous()  # a learnable target
    losses = [m.train_step(batch, step, nullcontext)["loss_final_l1"] for step in range(30)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5, losses


# --------------------------------------------------------------------------------------------- recipes


def _set(**changes):
    def apply(raw: dict) -> None:
        for dotted, value in changes.items():
            section, key = dotted.split("__")
            raw[section][key] = value
    return apply


def _method_denoising_student(raw: dict) -> None:
    raw["method"] = {"name": "denoising_student"}


@pytest.mark.parametrize("change, expected", [
    (_set(student__up_blocks=[0, 1]), "key 'student.up_blocks': 2 up-blocks take 4px to 16px"),
    (_set(trajectory__record=[1, 2, 3]), "key 'trajectory.record': adv_kd needs 2 DDIM step indices"),
    (_set(student__input_size=5), "key 'student.input_size': 5 must divide data.resolution"),
    (_set(student__channels=[8, 8], student__up_blocks="auto", trajectory__record=[2]), "key 'student.channels'"),
    (_set(student__up_blocks=[0, 0, 7]), "key 'student': up_blocks [0, 0, 7] must be distinct"),
    (_method_denoising_student, "key 'method.name': a layerwise student is trained by method adv_kd"),
])
def test_bad_layerwise_recipe_is_one_line_and_exit_2(tmp_path: Path, capsys, change, expected):
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


def test_adv_kd_recipe_defaults(tmp_path: Path):
    from edgekd.recipe import load_recipe

    raw = yaml.safe_load(TINY.read_text())
    del raw["train"]["lr"], raw["train"]["betas"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path, check_files=False)
    assert recipe.train.lr == 1e-4 and recipe.train.betas == (0.5, 0.999)  # the paper's Adam
    assert load_recipe(path, ["train.lr=3e-4"], check_files=False).train.lr == 3e-4
    unet = {"name": "x", "teacher": {"path": "t"}, "method": {"name": "adv_kd"}}
    path.write_text(yaml.safe_dump(unet))
    with pytest.raises(Exception, match="method adv_kd trains a layerwise student"):
        load_recipe(path, check_files=False)
    gpu = load_recipe(ROOT / "recipes" / "adv-kd-fmnist-gpu.yaml", check_files=False)
    assert gpu.student.kind == "layerwise" and gpu.method.name == "adv_kd"


# --------------------------------------------------------------------------------------------- end to end


@pytest.mark.skipif(not (SHARED_TEACHER / "unet" / "config.json").is_file(),
                    reason="the shared teacher ../shared/teachers/fmnist-ddpm-s is not beside this checkout")
@pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST idx files not installed (apt-get install dataset-fashion-mnist)")
def test_tiny_distill_export_onnx_with_parity_and_previews(tmp_path: Path, monkeypatch):
    import onnx

    monkeypatch.chdir(ROOT)  # the recipe names the teacher relative to the checkout
    run = tmp_path / "run"
    sets = ["--set", f"run_dir={run}", "--set", f"trajectory.cache_dir={tmp_path / 'cache'}"]
    assert main(["distill", str(TINY), *sets]) == 0
    config = json.loads((run / "student" / "config.json").read_text())
    assert config["kind"] == "layerwise" and config["resolutions"] == [8, 16, 32]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["stage"] for m in metrics][::4] == [0.0, 1.0, 2.0]  # 12 steps: stages of 2, 4, 6 steps
    assert (run / "samples" / "step_00000012.png").is_file()

    assert main(["export", str(run), "--target", "onnx"]) == 0
    manifest = json.loads((run / "exports" / "onnx" / "student.manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["psnr_db"] >= 35
    ops = {n.op_type for n in onnx.load(str(run / "exports" / "onnx" / "student.onnx")).graph.node}
    assert ops <= {"AveragePool", "Mul", "Conv", "ConvTranspose", "BatchNormalization", "LeakyRelu", "Tanh"}, ops

    out = tmp_path / "previews.png"
    assert main(["sample", str(run), "--previews", "-n", "4", "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 1000
