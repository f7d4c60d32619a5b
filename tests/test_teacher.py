"""Teachers: trained with `edgekd teacher train`, loaded like any diffusers checkpoint, hub ids fail fast offline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from edgekd.cli import main
from edgekd.errors import MissingResourceError
from edgekd.noise import make_noise
from edgekd.paths import ASSETS
from edgekd.teachers.diffusers_teacher import load_teacher
from edgekd_testing import FMNIST, SHARED_TEACHER, needs_fmnist, needs_shared_teacher, write_recipe

BUILTIN = ASSETS / "teachers" / "fmnist-tiny"


@needs_fmnist
def test_teacher_train_writes_a_diffusers_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from diffusers import DDIMScheduler, UNet2DModel

    recipe = {
        "name": "t", "run_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"path": str(FMNIST), "limit": 96},
        "unet": {"block_out_channels": [8, 16], "norm_num_groups": 4},
        "train": {"steps": 6, "batch_size": 8, "eval_every": 3, "sample_every": 6, "checkpoint_every": 3},
        "sample_steps": 2,
    }
    path = write_recipe(tmp_path / "t.yaml", recipe)
    assert main(["teacher", "train", str(path)]) == 0
    folder = tmp_path / "run" / "teacher"
    unet = UNet2DModel.from_pretrained(str(folder / "unet"))
    sched = DDIMScheduler.from_pretrained(str(folder / "scheduler"))
    assert unet.config.block_out_channels == (8, 16) or list(unet.config.block_out_channels) == [8, 16]
    assert sched.config.num_train_timesteps == 1000
    assert json.loads((folder / "train.json").read_text())["steps"] == 6
    assert (tmp_path / "run" / "samples" / "step_00000006.png").is_file()
    # more steps through --resume continue the same run
    assert main(["teacher", "train", str(path), "--resume", "--set", "train.steps=8"]) == 0
    assert json.loads((folder / "train.json").read_text())["steps"] == 8
    captured = capsys.readouterr()
    assert "resumed from" in captured.out + captured.err


def test_bad_teacher_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_recipe(tmp_path / "t.yaml", {"name": "t", "data": {"path": str(FMNIST)},
                                               "unet": {"block_out_channels": [8, 16], "attention_levels": [3]}})
    assert main(["teacher", "train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    expected = "unet.attention_levels" if (FMNIST / "train-images-idx3-ubyte.gz").is_file() else "data.path"
    assert len(err.splitlines()) == 1 and expected in err, err


@needs_shared_teacher
def test_shared_teacher_loads_like_a_user_checkpoint() -> None:
    teacher = load_teacher(str(SHARED_TEACHER))
    assert teacher.sample_shape == (1, 32, 32)
    x0, states = teacher.sample(make_noise(0, 0, 2, (1, 32, 32)), 2, record=[1])
    assert x0.shape == (2, 1, 32, 32) and torch.isfinite(x0).all() and states.shape == (2, 1, 1, 32, 32)
    assert load_teacher(str(SHARED_TEACHER)).fingerprint == teacher.fingerprint


def test_hub_id_offline_fails_fast_with_the_fix() -> None:
    start = time.time()
    with pytest.raises(MissingResourceError, match="huggingface-cli download someorg/some-ddpm"):
        load_teacher("someorg/some-ddpm")
    assert time.time() - start < 30


def test_missing_teacher_folder() -> None:
    with pytest.raises(MissingResourceError, match="does not exist"):
        load_teacher("/nonexistent/teacher")


def test_builtin_teacher_ships_with_the_package() -> None:
    teacher = load_teacher("builtin:teachers/fmnist-tiny")
    assert teacher.sample_shape == (1, 32, 32)
    assert (BUILTIN / "README.md").is_file()
    size = sum(p.stat().st_size for p in BUILTIN.rglob("*") if p.is_file())
    assert size < 8_000_000


@needs_fmnist
def test_builtin_teacher_samples_look_like_fashion_mnist() -> None:
    """Its DDIM samples are classified as varied garments and score a FID far below noise."""
    from edgekd.data import load_dataset
    from edgekd.profile.classifier import FeatureNet, load_classifier
    from edgekd.profile.quality import class_histogram, fid
    from edgekd.recipe import DataConfig

    teacher = load_teacher("builtin:teachers/fmnist-tiny")
    samples = teacher.sample(make_noise(99, 0, 200, (1, 32, 32)), 20)[0].clamp(-1, 1)
    hist = class_histogram(load_classifier("builtin:fid/fmnist-classifier"), samples)
    assert int((hist > 0.02).sum()) >= 6, hist
    real = load_dataset(DataConfig(path=str(FMNIST), split="test", limit=2000))
    noise_fid = fid(real, torch.randn(200, 1, 32, 32).clamp(-1, 1), FeatureNet(load_classifier()))
    teacher_fid = fid(real, samples, FeatureNet(load_classifier()))
    assert teacher_fid < 0.25 * noise_fid, (teacher_fid, noise_fid)
