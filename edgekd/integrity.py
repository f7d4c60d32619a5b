"""What ties outputs to their inputs: finiteness of weights and data, and exports to the student they came from.

An export is a copy of a student at one moment. After a --resume or a compress the student changes, and a profile
that ran the old file would report the old model's FID and latency beside the new one's parameter count. The
export's manifest records the student's fingerprint (``source.student_sha256``) and the model file's sha256;
readers check both and refuse a stale or damaged file with the command that re-exports.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.errors import EdgekdError


def check_finite_weights(module: nn.Module, what: str) -> None:
    """Refuse weights holding NaN/inf: they make every output NaN, and training would report 'diverged'."""
    bad = [name for name, t in module.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise EdgekdError(f"{what}: the weights hold NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}); "
                          "the checkpoint is damaged: retrain or re-download it")


def check_finite_array(array: Any, what: str, fix: str) -> None:
    """Refuse arrays with NaN/inf (data, teacher outputs) before they reach a cache or a loss."""
    values = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        count = int((~np.isfinite(values)).sum())
        raise EdgekdError(f"{what} holds {count} NaN or infinite value(s); {fix}")


def sha256(path: Path) -> str:
    """Hash of a file, or of a directory (an .mlpackage) as its sorted relative paths and contents."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def directory_sha256(folder: Path) -> str:
    """sha256 over a folder's files (relative names and contents, sorted), e.g. a saved student."""
    return sha256(Path(folder))


def student_fingerprint(run_dir: Path) -> str:
    """The fingerprint of a run's current student (its weights and config files)."""
    folder = Path(run_dir) / "student"
    if not folder.is_dir():
        raise EdgekdError(f"{run_dir} has no trained student yet (run or resume `edgekd distill`)")
    return directory_sha256(folder)


def file_sha256(path: Path) -> str:
    return sha256(Path(path))


def check_export_fresh(manifest: Any, manifest_file: Path, run_dir: Path,
                       teacher_fingerprint: str | None = None) -> None:
    """Refuse an export that is damaged (a graph file's sha256 differs from the manifest's) or stale (made from
    another student, or another teacher for a teacher step, than the run holds now). Works on every graph of a
    manifest v3 (older versions are read into v3 by edgekd.manifest)."""
    manifest_file, run_dir = Path(manifest_file), Path(run_dir)
    flag = " --teacher" if manifest.role == "teacher_step" else ""
    redo = f"re-export with `edgekd export {run_dir} --target {manifest.target}{flag}`"
    for graph in manifest.models:
        model_path = manifest_file.parent / graph.file
        if not model_path.exists():
            raise EdgekdError(f"{model_path} is missing (listed by {manifest_file.name}); {redo}")
        if file_sha256(model_path) != graph.sha256:
            raise EdgekdError(f"{model_path} does not match its manifest's sha256 (damaged or replaced after export); "
                              f"{redo}")
    source = manifest.source or {}
    if manifest.role == "student":
        recorded, current, what = source.get("student_sha256"), student_fingerprint(run_dir), "student"
    else:
        recorded, current, what = source.get("teacher_fingerprint"), teacher_fingerprint, "teacher"
    if current is None:
        return
    shown = manifest_file.parent / manifest.models[0].file if len(manifest.models) == 1 else manifest_file
    if recorded is None:
        raise EdgekdError(f"{shown} was exported by an older edgekd without the {what}'s fingerprint, so it "
                          f"cannot be tied to the run's current {what}; {redo}")
    if recorded != current:
        raise EdgekdError(f"{shown} is stale: it was exported from another {what} than {run_dir} holds now "
                          f"(the {what} changed after the export, e.g. by --resume); {redo}")


def check_export(path: Path, run_dir: Path, teacher_fingerprint: str | None = None) -> None:
    """Check the export at ``path`` (a model file or its manifest) is intact and current (check_export_fresh)."""
    from edgekd.manifest import manifest_path, read_manifest

    path = Path(path)
    manifest_file = path if path.name.endswith(".manifest.json") else manifest_path(path)
    check_export_fresh(read_manifest(manifest_file), manifest_file, run_dir, teacher_fingerprint)


def export_identity(run_dir: Path, teacher_step: bool, teacher_fingerprint: str) -> dict[str, str]:
    """What the manifest's ``source`` records so readers can tell a stale export (see check_export_fresh)."""
    if teacher_step:
        return {"teacher_fingerprint": teacher_fingerprint}
    return {"student_sha256": student_fingerprint(run_dir), "teacher_fingerprint": teacher_fingerprint}
