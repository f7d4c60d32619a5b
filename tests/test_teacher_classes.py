"""`edgekd teacher train` with classes: (a class-conditional UNet2DModel with a null label) and init: (warm start).

The layout is the teacher adapter's convention: num_class_embeds = K + 1, ids 0..K-1, id K = "no class", and
id2label.json (K names) in the folder root.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from edgekd.cli import main
from edgekd.data.fashion_mnist import CLASSES
from edgekd.paths import ASSETS
from edgekd.teachers.diffusers_teacher import load_teacher
from edgekd.teachers.train_ddpm import DDPMMethod, warm_start
from edgekd_testing import FMNIST, needs_fmnist, write_recipe

BUILTIN = ASSETS / "teachers" / "fmnist-tiny"
K = len(CLASSES)


class RecordingNet(nn.Module):
    """Stands in for the UNet: remembers the class_labels it was called with (one weight, so AdamW has work)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.seen: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> SimpleNamespace:
        self.seen.append(None if class_labels is None else class_labels.clone())
        return SimpleNamespace(sample=x * self.w)


def _method(net: nn.Module, drop_prob: float) -> DDPMMethod:
    from diffusers import DDPMScheduler

    return DDPMMethod(net, dict(DDPMScheduler().config), 1e-3, (0.9, 0.999), 0.0, 1.0, hflip=False,
                      null_label=K, drop_prob=drop_prob)


def test_labels_reach_the_net_and_dropout_replaces_them_by_the_null_label_at_the_asked_rate() -> None:
    torch.manual_seed(0)
    n, p = 40_000, 0.1
    labels = torch.arange(n) % K
    batch = {"images": torch.zeros(n, 1, 1, 1), "labels": labels}
    net = RecordingNet()
    _method(net, p).train_step(batch, 0, nullcontext)
    seen = net.seen[-1]
    assert seen is not None and seen.shape == labels.shape
    dropped = seen == K
    assert torch.equal(seen[~dropped], labels[~dropped])  # a kept label is the image's own label
    # the share dropped is Binomial(n, p) / n: 5 standard deviations (sqrt(p(1-p)/n) = 0.0015) either side
    assert abs(float(dropped.double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    # ... and independent of the class: every class loses about p of its n/K images (5 sigma on n/K draws)
    per_class = torch.stack([dropped[labels == c].double().mean() for c in range(K)])
    assert (per_class - p).abs().max() < 5 * math.sqrt(p * (1 - p) / (n / K))
    # the held-out loss conditions on the true labels, never dropped
    with torch.no_grad():
        _method(net, p).eval_loss(net, {**batch, "noise": torch.zeros(n, 1, 1, 1), "t": torch.zeros(n, dtype=torch.long)})
    assert torch.equal(net.seen[-1], labels)
    # drop_prob 0: every label reaches the net
    _method(net, 0.0).train_step(batch, 0, nullcontext)
    assert torch.equal(net.seen[-1], labels)


def test_warm_start_equals_the_unconditional_teacher_at_step_0() -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    source = UNet2DModel.from_pretrained(str(BUILTIN / "unet")).eval()
    unet, sched = warm_start("builtin:teachers/fmnist-tiny", 32, 1, K + 1)
    unet.eval()
    assert unet.config.num_class_embeds == K + 1 and unet.class_embedding.weight.shape[0] == K + 1
    assert sched == dict(DDPMScheduler.from_pretrained(str(BUILTIN / "scheduler")).config)
    torch.manual_seed(1)
    x, t = torch.randn(2 * (K + 1), 1, 32, 32), torch.randint(0, 1000, (2 * (K + 1),))
    labels = torch.arange(2 * (K + 1)) % (K + 1)  # every class and the null label
    with torch.no_grad():
        want = source(x, t).sample
        got = unet(x, t, class_labels=labels).sample
    # the class embedding is zero, so emb + 0 is bit-for-bit the unconditional embedding: exact equality
    assert torch.equal(got, want)
    # and every other weight is the init teacher's
    src = source.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in unet.state_dict().items() if k != "class_embedding.weight")


def test_warm_start_refuses_a_mismatch_in_one_line() -> None:
    from edgekd.errors import EdgekdError

    with pytest.raises(EdgekdError, match="1x32x32 images; data gives 1x28x28"):
        warm_start("builtin:teachers/fmnist-tiny", 28, 1, K + 1)
    with pytest.raises(EdgekdError, match="does not exist"):
        warm_start("/nonexistent/teacher", 32, 1, K + 1)


@needs_fmnist
def test_class_teacher_trains_saves_id2label_loads_as_class_conditional_and_resumes(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe = {
        "name": "c", "run_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"path": str(FMNIST), "limit": 96},
        "unet": {"block_out_channels": [8, 16], "norm_num_groups": 4},
        "classes": {"drop_prob": 0.2},
        "train": {"steps": 4, "batch_size": 8, "eval_every": 2, "sample_every": 4, "checkpoint_every": 2},
        "sample_steps": 2,
    }
    path = write_recipe(tmp_path / "c.yaml", recipe)
    assert main(["teacher", "train", str(path)]) == 0
    folder = tmp_path / "run" / "teacher"
    assert json.loads((folder / "id2label.json").read_text()) == {str(i): name for i, name in enumerate(CLASSES)}
    assert json.loads((folder / "unet" / "config.json").read_text())["num_class_embeds"] == K + 1
    info = json.loads((folder / "train.json").read_text())
    assert info["classes"] == {"drop_prob": 0.2, "embed_lr": None, "num_classes": K, "null_label": K}
    teacher = load_teacher(str(folder), guidance_scale=2.0)  # the adapter reads it: K classes, null label K
    assert teacher.condition.kind == "class" and teacher.condition.num_classes == K and teacher.condition.null == K
    assert teacher.condition.parse("Ankle boot") == 9
    x, _ = teacher.sample(torch.randn(2, 1, 32, 32), 2, condition=torch.tensor([0, 9]))
    assert x.shape == (2, 1, 32, 32) and torch.isfinite(x).all()
    assert main(["teacher", "train", str(path), "--resume", "--set", "train.steps=6"]) == 0
    assert json.loads((folder / "train.json").read_text())["steps"] == 6
    assert "resumed from" in "".join(capsys.readouterr())


@needs_fmnist
@pytest.mark.parametrize("extra, expected", [
    ({"init": "builtin:teachers/fmnist-tiny", "unet": {"block_out_channels": [8, 16]}},
     "init: takes the architecture and noise schedule"),
    ({"classes": {"drop_prob": 0.1}, "data": {"kind": "npz", "path": "x.npz"}}, "classes: needs the dataset's labels"),
    ({"classes": {"drop_prob": 1.0}}, "classes.drop_prob"),
])
def test_bad_classes_or_init_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, extra: dict,
                                         expected: str) -> None:
    recipe = {"name": "c", "run_dir": str(tmp_path / "run"), "data": {"path": str(FMNIST)}, **extra}
    assert main(["teacher", "train", str(write_recipe(tmp_path / "c.yaml", recipe))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_embed_lr_gives_the_class_embedding_its_own_learning_rate() -> None:
    from diffusers import DDPMScheduler

    from edgekd.recipe import UNetArchConfig
    from edgekd.teachers.train_ddpm import build_unet

    unet = build_unet(UNetArchConfig(block_out_channels=[8, 16], norm_num_groups=4), 8, 1, K + 1)
    method = DDPMMethod(unet, dict(DDPMScheduler().config), 1e-4, (0.9, 0.999), 0.0, 1.0, hflip=False,
                        null_label=K, drop_prob=0.1, embed_lr=5e-3)
    rest, emb = method.opt.param_groups
    assert emb["lr"] == 5e-3 and rest["lr"] == 1e-4
    assert [id(p) for p in emb["params"]] == [id(unet.class_embedding.weight)]
    assert len(rest["params"]) + 1 == len(list(unet.parameters()))


def test_builtin_fmnist_cond_is_a_ten_class_teacher_with_a_null_label() -> None:
    teacher = load_teacher("builtin:teachers/fmnist-cond", guidance_scale=2.0)
    cond = teacher.condition
    assert cond.kind == "class" and cond.num_classes == K and cond.null == K
    assert [cond.name(i) for i in range(K)] == list(CLASSES) and cond.parse("sneaker") == 7
    assert teacher.plain is False and teacher.prediction_type == "epsilon" and teacher.sample_shape == (1, 32, 32)
    weights = ASSETS / "teachers" / "fmnist-cond" / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 3_000_000  # fp32, 620k parameters: small enough to ship in the wheel
    # the label changes the prediction on the same input (a trained class embedding; a zero one, as at the warm
    # start, gives bit-equal outputs), and so does the null label
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)).expand(3, -1, -1, -1)
    t = torch.tensor([500] * 3)
    with torch.no_grad():
        eps = teacher.unet(x, t, class_labels=torch.tensor([1, 8, K])).sample
    assert (eps[0] - eps[1]).abs().max() > 1e-3 and (eps[0] - eps[2]).abs().max() > 1e-3
