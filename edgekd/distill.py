"""``edgekd distill``: teacher -> trajectory store -> method -> student, in a run directory."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.grid import labelled_rows
from edgekd.paths import default_cache_dir
from edgekd.recipe import Recipe
from edgekd.rundir import RunDir
from edgekd.students import save_student
from edgekd.teachers.diffusers_teacher import DiffusionTeacher, load_teacher
from edgekd.methods import setup_method
from edgekd.teachers.store import TrajectorySpec, TrajectoryStore
from edgekd.train.checkpoint import AtomicDir, atomic_write_json
from edgekd.train.loop import Trainer, pick_device, seed_everything


def store_root(recipe: Recipe) -> Path:
    """Where this recipe's trajectory store lives (trajectory.cache_dir, else EDGEKD_CACHE / ~/.cache/edgekd)."""
    return Path(recipe.trajectory.cache_dir) if recipe.trajectory.cache_dir else default_cache_dir()


def open_store(recipe: Recipe, teacher: DiffusionTeacher) -> TrajectoryStore:
    steps = recipe.teacher.steps
    record = tuple(range(steps)) if recipe.trajectory.record == "all" else tuple(sorted(set(recipe.trajectory.record)))
    bad = [r for r in record if not 0 <= r < steps]
    if bad:
        raise EdgekdError(f"trajectory.record: step indices {bad} are outside 0..{steps - 1} (teacher.steps is {steps})")
    spec = TrajectorySpec(teacher.fingerprint, steps, recipe.teacher.timestep_spacing, recipe.teacher.eta,
                          recipe.trajectory.seed, record, teacher.sample_shape, recipe.teacher.solver)
    return TrajectoryStore(store_root(recipe), spec)


def check_teacher_matches_data(recipe: Recipe, teacher: DiffusionTeacher) -> None:
    c, h, _ = teacher.sample_shape
    if (c, h) != (recipe.data.channels, recipe.data.resolution):
        raise EdgekdError(
            f"teacher {recipe.teacher.path} makes {c}x{h}x{h} images but data is {recipe.data.channels}x"
            f"{recipe.data.resolution}x{recipe.data.resolution}: set data.channels / data.resolution to match"
        )


def distill(recipe: Recipe, resume: bool = False) -> Path:
    """Run the whole distillation; returns the run directory (its ``student/`` holds the best EMA student)."""
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.seed)
    device = pick_device(recipe.device)
    run = RunDir(recipe.resolved_run_dir())
    if run.path.exists() and not resume and (run.path / "checkpoints" / "latest.json").exists():
        raise EdgekdError(f"{run.path} already holds a run; pass --resume to continue it or set run_dir to a new folder")
    run.path.mkdir(parents=True, exist_ok=True)
    run.save_recipe(recipe)
    started = time.time()

    teacher = load_teacher(recipe.teacher.path, device)
    check_teacher_matches_data(recipe, teacher)
    store = open_store(recipe, teacher)
    traj = recipe.trajectory
    store.ensure(teacher, traj.num_samples, traj.shard_size, traj.batch_size, device)
    n_train = traj.num_samples - traj.heldout
    setup = setup_method(recipe, teacher, store.read(0, n_train), store.read(n_train, traj.num_samples), device)

    def sample_fn(net: nn.Module, step: int) -> None:
        rows = setup.preview(net)
        rows = {(f"{k}, step {step}" if k.startswith("student") else k): v for k, v in rows.items()}
        labelled_rows(rows, run.path / "samples" / f"step_{step:08d}.png")

    def save_best(net: nn.Module, folder: Path) -> None:
        with AtomicDir(folder) as tmp:
            save_student(_cpu_copy(net), tmp)

    trainer = Trainer(run.path, recipe.train, setup.method, setup.source, setup.heldout, device, recipe.seed,
                      sample_fn=sample_fn, save_generator=save_best)
    result = trainer.run(resume=resume)
    best = run.path / "best"
    if not best.is_dir():
        raise EdgekdError(f"{run.path}: training finished without an evaluated student (train.eval_every too large?)")
    with AtomicDir(run.student_dir) as tmp:
        for f in best.iterdir():
            shutil.copy2(f, tmp / f.name)
    atomic_write_json(run.path / "summary.json", {
        "recipe": recipe.name, "method": recipe.method.name, "steps": result.step, "best_eval_loss": result.best_eval,
        "resumed_from": result.resumed_from, "teacher": teacher.source, "teacher_fingerprint": teacher.fingerprint,
        "trajectory_store": str(store.dir), "seconds_this_session": round(time.time() - started, 1),
        "device": str(device),
    })
    return run.path


def _cpu_copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net).cpu().eval()
