"""Constants and helpers shared by the tests (a module, not conftest, so test files can import them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import yaml

__all__ = ["ROOT", "SHARED_TEACHER", "FMNIST", "needs_fmnist", "needs_shared_teacher", "tiny_recipe", "write_recipe",
           "sample_as_recorded", "store_batches"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_TEACHER = ROOT.parent / "shared" / "teachers" / "fmnist-ddpm-s"
FMNIST = Path("/usr/share/datasets/fashion-mnist")

needs_fmnist = pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Fashion-MNIST idx files not installed (apt-get install dataset-fashion-mnist)")
needs_shared_teacher = pytest.mark.skipif(not (SHARED_TEACHER / "unet" / "config.json").is_file(),
                                          reason="../shared/teachers/fmnist-ddpm-s is not beside this checkout")


def tiny_recipe(teacher: Path, run_dir: Path, **sections: dict) -> dict:
    """A recipe that distills in seconds on a CPU."""
    recipe = {
        "name": "tiny",
        "run_dir": str(run_dir),
        "device": "cpu",
        "data": {"kind": "fashion_mnist", "path": str(FMNIST)},
        "teacher": {"path": str(teacher), "steps": 3},
        "trajectory": {"num_samples": 48, "heldout": 8, "shard_size": 20, "batch_size": 16,
                       "cache_dir": str(run_dir.parent / "cache")},
        "student": {"init": "scratch", "block_out_channels": [8, 8], "norm_num_groups": 4},
        "train": {"steps": 12, "batch_size": 8, "eval_every": 4, "sample_every": 6, "checkpoint_every": 4,
                  "warmup_steps": 2, "lr": 1e-3},
        "export": {"parity_samples": 2},
        "profile": {"fid_samples": 16, "teacher_steps": [3], "latency_repeats": 2, "threads": [1], "batch_size": 16},
    }
    for key, value in sections.items():
        recipe.setdefault(key, {}).update(value) if isinstance(value, dict) else recipe.__setitem__(key, value)
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def sample_as_recorded(teacher: Any, noise: Any, steps: int, batches: Sequence[int], record: Sequence[int] = (),
                       solver: str = "ddim") -> tuple[np.ndarray, np.ndarray | None]:
    """(x0, states as float16) of ``teacher`` for ``noise``, sampled in consecutive batches of the sizes in
    ``batches``, the way TrajectoryStore._write_shard records a shard (batches of trajectory.batch_size from the
    shard's start, or from where an interrupted shard stopped).

    Why: a conv kernel's float rounding depends on the batch size (and the thread count, and the CPU), and 20 DDIM
    steps amplify it to ~4e-3, so a recomputation in another batch size proves nothing portable. In the same
    batches, the same process and thread count, the computation is the recorder's own: the same bits."""
    import torch

    noise = torch.as_tensor(noise)
    assert sum(batches) == len(noise), (list(batches), len(noise))
    xs, states, at = [], [], 0
    for size in batches:
        x, st = teacher.sample(noise[at : at + size], steps, record=list(record) or None, solver=solver)
        xs.append(x.float().numpy())
        if st is not None:
            states.append(st.float().numpy().astype(np.float16))
        at += size
    return np.concatenate(xs), (np.concatenate(states) if states else None)


def store_batches(start: int, count: int, have: int, batch_size: int) -> list[int]:
    """The batch sizes TrajectoryStore._write_shard uses for a shard of ``count`` samples whose first ``have`` were
    already on disk (``have`` = 0 for a shard recorded in one go); ``start`` is only for the error message."""
    sizes = [min(batch_size, count - b) for b in range(have, count, batch_size)]
    assert sizes, f"shard {start} had nothing left to record"
    return sizes


def cli(*argv: object) -> tuple[int, str]:
    """``edgekd ARGV`` in this process: (exit code, stdout + stderr)."""
    import contextlib
    import io

    from edgekd.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, out.getvalue() + err.getvalue()
