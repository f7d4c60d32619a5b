"""What the method-comparison benchmarks share: training a recipe once, the FID setup, cached teacher samples.

Imported by benchmarks/adv_kd_compare.py and benchmarks/methods_compare.py (run as scripts, so this folder is on
sys.path).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT.parent / "shared" / "teachers" / "fmnist-ddpm-s"
FID_SEED = 5_000_000  # edgekd profile's default: teacher samples share its cache layout


def train(recipe: dict, out: Path) -> tuple[Path, float]:
    """Distill (or reuse a finished run, or resume an interrupted one); returns the run directory and wall time."""
    from edgekd.distill import distill
    from edgekd.recipe import load_recipe

    run = Path(recipe["run_dir"])
    summary = run / "summary.json"
    if summary.is_file():
        return run, float(json.loads(summary.read_text()).get("train_seconds", float("nan")))
    path = out / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    print(f"== training {recipe['name']} ({recipe['train']['steps']} steps)", flush=True)
    t0 = time.time()
    distill(load_recipe(path), resume=(run / "checkpoints" / "latest.json").is_file())
    seconds = time.time() - t0
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "train_seconds": round(seconds, 1)}, indent=2))
    return run, seconds


@dataclass
class FidSetup:
    """The same N noises for every generator, the feature net, the real test images (and their features, computed
    once: re-extracting the 10k real images for every row was most of a benchmark's scoring time) and the
    real-data floor."""

    noise: torch.Tensor
    feature_net: Any
    real: torch.Tensor
    floor: float
    real_features: torch.Tensor | None = None

    def score(self, images: torch.Tensor) -> float:
        """FID of ``images`` against the real set: edgekd.profile.quality.fid's number, from cached features."""
        from edgekd.profile.quality import features, fid_from_features

        if self.real_features is None:
            self.real_features = features(self.real, self.feature_net)
        return fid_from_features(self.real_features, features(images, self.feature_net))


def fid_setup(sample_shape: tuple[int, int, int], n: int) -> FidSetup:
    from edgekd.data import load_dataset
    from edgekd.noise import make_noise
    from edgekd.profile.classifier import FeatureNet
    from edgekd.recipe import DataConfig

    feature_net = FeatureNet.from_path("builtin:fid/fmnist-classifier")
    real = load_dataset(DataConfig(split="test"))
    setup = FidSetup(make_noise(FID_SEED, 0, n, sample_shape), feature_net, real, float("nan"))
    setup.floor = setup.score(load_dataset(DataConfig(split="train", limit=n)))
    return setup


def teacher_samples(teacher: Any, cache: Path, n: int, steps_list: tuple[int, ...] = (10, 50)) -> dict[int, torch.Tensor]:
    """The teacher's DDIM-S images on the FID noise, recorded once in the trajectory-store layout."""
    from edgekd.teachers.store import TrajectorySpec, TrajectoryStore

    out = {}
    for steps in steps_list:
        spec = TrajectorySpec(teacher.fingerprint, steps, "trailing", 0.0, FID_SEED, (), teacher.sample_shape)
        store = TrajectoryStore(cache, spec)
        store.ensure(teacher, n, shard_size=64, batch_size=64)
        out[steps] = torch.from_numpy(store.read(0, n)["x0"][:]).clamp(-1, 1)
    return out


def fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)
