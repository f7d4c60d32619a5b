"""``edgekd export RUN --target T --into-app web|android|ios``: put the exported model where a sample app reads it.

Each app reads one folder that edgekd owns (below); the copy is built beside it and swapped in with renames, so an
app never sees half a model, and the folder holds exactly one ``*.manifest.json`` with the files it lists.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from edgekd.apps import app_dir
from edgekd.errors import EdgekdError

# where each app reads its model, relative to apps/<app>/
APP_MODEL_DIRS = {
    "web": Path("models"),
    "android": Path("app/src/main/assets/edgekd"),
    "ios": Path("EdgekdDemo/Resources/edgekd"),
}
APP_TARGETS = {"web": ("onnx", "tflite"), "android": ("tflite",), "ios": ("coreml",)}  # what each app runs


def _model_files(manifest: Path) -> tuple[dict, list[Path]]:
    try:
        raw = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise EdgekdError(f"manifest {manifest} not found (export the model first)") from None
    except ValueError as exc:
        raise EdgekdError(f"manifest {manifest} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format_version") != 3 or not raw.get("models"):
        version = raw.get("format_version") if isinstance(raw, dict) else None
        raise EdgekdError(f"manifest {manifest} has format_version {version!r}; the apps read version 3 "
                          "(re-export with this edgekd)")
    files = [manifest.parent / m["file"] for m in raw["models"]]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise EdgekdError(f"{manifest} lists {', '.join(missing)}, missing beside it: re-export the model")
    return raw, files


def _swap_in(tmp: Path, dest: Path) -> None:
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def copy_into_app(manifest: Path, app: str, apps_dir: str | Path | None = None) -> Path:
    """Copy ``manifest`` and its model files into ``app``'s model folder (replacing what was there); returns it."""
    if app not in APP_MODEL_DIRS:
        raise EdgekdError(f"unknown app '{app}' (available: {', '.join(APP_MODEL_DIRS)})")
    dest = app_dir(app, apps_dir) / APP_MODEL_DIRS[app]
    raw, files = _model_files(Path(manifest))
    if raw.get("target") not in APP_TARGETS[app]:
        raise EdgekdError(f"the {app} app runs {' or '.join(APP_TARGETS[app])} models, not {raw.get('target')}: "
                          f"export with --target {APP_TARGETS[app][0]}")
    from edgekd.export import sha256

    for entry, f in zip(raw["models"], files):
        if entry.get("sha256") and sha256(f) != entry["sha256"]:
            raise EdgekdError(f"{f} does not match its manifest's sha256 (a stale or partial export): re-export it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for f in files:
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
        shutil.copy2(manifest, tmp / Path(manifest).name)
        if (dest / ".gitkeep").is_file():  # the app's checkout keeps its (otherwise ignored) model folder
            shutil.copy2(dest / ".gitkeep", tmp / ".gitkeep")
        _swap_in(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
