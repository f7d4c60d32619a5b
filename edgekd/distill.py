"""``edgekd distill``: teacher -> trajectory store -> method -> student, in a run directory."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.grid import labelled_rows
from edgekd.paths import default_cache_dir, user_path
from edgekd.recipe import Recipe
from edgekd.resume import prepare_run, start_run
from edgekd.rundir import RunDir
from edgekd.students import save_student
from edgekd.teachers.diffusers_teacher import DiffusionTeacher, load_recipe_teacher
from edgekd.methods import setup_method
from edgekd.teachers.store import TrajectorySpec, TrajectoryStore, record_rank_share
from edgekd.train import distributed as dist
from edgekd.train.checkpoint import AtomicDir, atomic_write_json
from edgekd.train.loop import Trainer, pick_device, seed_everything


def store_root(recipe: Recipe) -> Path:
    """Where this recipe's trajectory store lives (trajectory.cache_dir, else EDGEKD_CACHE / ~/.cache/edgekd)."""
    return user_path(recipe.trajectory.cache_dir) if recipe.trajectory.cache_dir else default_cache_dir()


def teacher_precision(recipe: Recipe, device: torch.device | None = None) -> str:
    """fp32 or bf16: trajectory.precision, where auto means bf16 on CUDA (``device``, else any visible GPU)."""
    chosen = recipe.trajectory.precision
    if chosen != "auto":
        return chosen
    on_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    return "bf16" if on_cuda else "fp32"


def teacher_autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The teacher's arithmetic while recording: bf16 autocast (tensor cores, large batches) or plain float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def open_store(recipe: Recipe, teacher: DiffusionTeacher, device: torch.device | None = None) -> TrajectoryStore:
    steps = recipe.teacher.steps
    record = tuple(range(steps)) if recipe.trajectory.record == "all" else tuple(sorted(set(recipe.trajectory.record)))
    bad = [r for r in record if not 0 <= r < steps]
    if bad:
        raise EdgekdError(f"trajectory.record: step indices {bad} are outside 0..{steps - 1} (teacher.steps is {steps})")
    # bf16 trajectories are other numbers: they get their own store (float32 keys are unchanged)
    fingerprint = teacher.fingerprint + ("-bf16" if teacher_precision(recipe, device) == "bf16" else "")
    condition = None
    if teacher.condition is not None:
        condition = json.dumps(teacher.condition.describe(), sort_keys=True)
    spec = TrajectorySpec(fingerprint, steps, recipe.teacher.timestep_spacing, recipe.teacher.eta,
                          recipe.trajectory.seed, record, teacher.sample_shape, recipe.teacher.solver,
                          condition, float(teacher.guidance_scale))
    return TrajectoryStore(store_root(recipe), spec)


def check_teacher_matches_data(recipe: Recipe, teacher: DiffusionTeacher) -> None:
    """Real images must have the teacher's image shape when the method trains on them (a method that learns from
    the teacher alone never reads the data section; the profile says when FID cannot be computed)."""
    from edgekd.methods import method_reads_data

    if not method_reads_data(recipe):
        return
    c, h, _ = teacher.image_shape
    if (c, h) != (recipe.data.channels, recipe.data.resolution):
        raise EdgekdError(
            f"teacher {recipe.teacher.path} makes {c}x{h}x{h} images but data is {recipe.data.channels}x"
            f"{recipe.data.resolution}x{recipe.data.resolution}: set data.channels / data.resolution to match"
        )


def distill(recipe: Recipe, resume: bool = False) -> Path:
    """Run the whole distillation; returns the run directory (its ``student/`` holds the best EMA student).

    Under torchrun every process runs this; they join one process group (edgekd.train.distributed), split the
    teacher's recording, train through DDP, and rank 0 alone writes the run directory.
    """
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    env, rank_device = dist.init_distributed(recipe.device)
    try:
        return _distill(recipe, resume, env, rank_device)
    finally:
        dist.shutdown()


def _distill(recipe: Recipe, resume: bool, env: dist.DistEnv, rank_device: torch.device | None) -> Path:
    seed_everything(recipe.seed)
    device = rank_device or pick_device(recipe.device)
    run = prepare_run(recipe, resume) if env.is_main else None  # edgekd.resume: folder ownership, what a resume may change
    dist.barrier(env)  # rank 0 has checked and claimed the folder before any rank reads it
    if run is None:
        run = RunDir(recipe.resolved_run_dir())
    started = time.time()

    if not env.is_main:
        dist.barrier(env)  # rank 0 loads (downloads) the teacher first
    teacher = load_recipe_teacher(recipe, device)
    if env.is_main:
        dist.barrier(env)
    check_teacher_matches_data(recipe, teacher)
    if env.is_main:
        start_run(run, recipe, teacher, resume)  # edgekd.resume: finite weights, same teacher on resume, recipe.yaml
    store = open_store(recipe, teacher, device)
    traj = recipe.trajectory
    precision = teacher_precision(recipe, device)
    with teacher_autocast(precision, device):
        if env.enabled:
            have = dist.broadcast_object(env, store.available() if env.is_main else None)
            if env.is_main:
                store.ensure(teacher, have, traj.shard_size, traj.batch_size, device)  # meta.json; records nothing
            record_rank_share(store, teacher, have, traj.num_samples, traj.shard_size, traj.batch_size, device,
                              env.rank, env.world_size)
            dist.barrier(env)
            if store.available() < traj.num_samples:
                raise EdgekdError(f"{store.dir} holds {store.available()} of {traj.num_samples} samples after every "
                                  "rank recorded its share: is trajectory.cache_dir on a file system all ranks share?")
        else:
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
                      sample_fn=sample_fn, save_generator=save_best, dist=env)
    result = trainer.run(resume=resume)
    if env.is_main:
        best = run.path / "best"
        if not best.is_dir():
            raise EdgekdError(f"{run.path}: training finished without an evaluated student (train.eval_every too large?)")
        with AtomicDir(run.student_dir) as tmp:
            for f in best.iterdir():
                shutil.copy2(f, tmp / f.name)
        atomic_write_json(run.path / "summary.json", {
            "recipe": recipe.name, "method": recipe.method.name, "steps": result.step,
            "best_eval_loss": result.best_eval, "resumed_from": result.resumed_from, "teacher": teacher.source,
            "teacher_fingerprint": teacher.fingerprint, "trajectory_store": str(store.dir),
            "trajectory_precision": precision, "seconds_this_session": round(time.time() - started, 1),
            "device": str(device), "world_size": env.world_size, "batch_per_rank": recipe.train.batch_size,
            "effective_batch": trainer.effective_batch, "lr": recipe.train.lr,
        })
    dist.barrier(env)
    return run.path


def _cpu_copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net).cpu().eval()
