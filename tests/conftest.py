"""Shared fixtures: a tiny diffusers teacher made on the fly, tiny recipes, the shared teacher when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("NNCF_CI", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

from edgekd_testing import *  # noqa: F401,F403  (constants and helpers shared by tests)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 1x32x32 diffusers UNet + DDPM scheduler saved the way users save checkpoints."""
    from diffusers import DDPMScheduler, UNet2DModel

    from edgekd.teachers.diffusers_teacher import save_teacher

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    folder = tmp_path_factory.mktemp("teacher")
    save_teacher(unet, dict(DDPMScheduler(num_train_timesteps=1000, clip_sample=True).config), folder)
    return folder


@pytest.fixture()
def one_thread():
    """One torch thread for the test: on a 2-core machine shared with other jobs, oversubscription is far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("EDGEKD_CACHE", str(path))
    return path


