"""Starting or continuing a run: which folder may be written, and what a --resume may change.

A resumed run must be the same experiment: the checkpoint's weights, optimizer state and trajectory store were
made with the run's recipe. Settings that only say how long or how often (train.steps, eval/sample/checkpoint
intervals, threads, export/profile/compress sections) may change; anything that changes what is trained (teacher,
student, method, data, seed, optimizer, trajectories) may not. The run's recipe.yaml is rewritten only after
every check has passed.
"""

from __future__ import annotations

from typing import Any

from edgekd.errors import EdgekdError
from edgekd.recipe import Recipe
from edgekd.rundir import RunDir
from edgekd.train.checkpoint import atomic_write_json, find_resume_checkpoint

# keys (dotted, prefix match) a --resume may change
MAY_CHANGE = (
    "name", "run_dir", "device",
    "train.steps", "train.max_minutes", "train.eval_every", "train.sample_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.threads",
    "trajectory.cache_dir", "trajectory.batch_size", "trajectory.shard_size",
    "export", "profile", "compress",
)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: obj}


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)


def recipe_changes(old: Recipe, new: Recipe) -> list[tuple[str, Any, Any]]:
    """(key, run's value, new value) for every setting a resume may not change."""
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not _may_change(k)]


def check_resume(run: RunDir, recipe: Recipe) -> None:
    """Refuse a --resume whose recipe would train something else than the run's checkpoints hold."""
    if not run.recipe_file.is_file():
        return  # nothing recorded yet: a resume of nothing starts the run
    changes = recipe_changes(run.recipe(), recipe)
    if changes:
        key, was, now = changes[0]
        more = f" (and {len(changes) - 1} more: {', '.join(k for k, _, _ in changes[1:4])})" if len(changes) > 1 else ""
        raise EdgekdError(
            f"--resume: the recipe changes {key} from {was!r} to {now!r}{more}, but {run.path} was trained with the "
            f"old value; a resume may change only train.steps and max_minutes, the eval/sample/checkpoint intervals, threads, "
            "device and the export/profile/compress sections. Undo the change, or distill into a new run_dir"
        )


def prepare_run(recipe: Recipe, resume: bool) -> RunDir:
    """Check the recipe against the run (resume) and claim the folder; recipe.yaml is written by start_run."""
    run = RunDir(recipe.resolved_run_dir())
    if run.path.is_dir() and run.is_edgekd_run():
        if resume:
            check_resume(run, recipe)
        elif find_resume_checkpoint(run.path / "checkpoints", warn=lambda _: None) is not None \
                or (run.path / "checkpoints" / "latest.json").exists():
            raise EdgekdError(f"{run.path} already holds a run; pass --resume to continue it or set run_dir to a "
                              "new folder")
    return RunDir.create(run.path)


def start_run(run: RunDir, recipe: Recipe, teacher: Any, resume: bool) -> None:
    """After the teacher loaded: its weights are finite and (on resume) the run's own; only then is the run's
    recipe.yaml written."""
    from edgekd.integrity import check_finite_weights

    check_finite_weights(teacher.unet, f"teacher {recipe.teacher.path}")
    check_teacher_identity(run, teacher.fingerprint, teacher.source, resume)
    run.save_recipe(recipe)


def check_teacher_identity(run: RunDir, fingerprint: str, source: str, resume: bool) -> None:
    """The teacher's content hash is recorded in the run; a resume with another teacher's weights (same path,
    retrained or replaced files) is refused instead of training on its trajectories."""
    import json

    path = run.path / "teacher.json"
    if resume and path.is_file():
        try:
            recorded = json.loads(path.read_text()).get("fingerprint")
        except (ValueError, AttributeError):
            recorded = None
        if recorded and recorded != fingerprint:
            raise EdgekdError(
                f"--resume: the teacher at {source} is not the one {run.path} was trained with (weights or scheduler "
                f"changed: fingerprint {fingerprint}, run has {recorded}); restore that teacher, or distill into a "
                "new run_dir"
            )
    atomic_write_json(path, {"fingerprint": fingerprint, "source": source})
