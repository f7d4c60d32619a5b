"""Where edgekd finds packaged assets and default data, and how user paths and names are read."""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN_PREFIX = "builtin:"
DEFAULT_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def user_path(path: str | os.PathLike) -> Path:
    """A path as the user wrote it, with ``~`` expanded (a shell does that on the command line, YAML does not)."""
    return Path(os.fspath(path)).expanduser()


def resolve_builtin(path: str | os.PathLike) -> Path:
    """Turn ``builtin:NAME`` into the packaged asset path; leave other paths as they are (``~`` expanded)."""
    text = str(path)
    if text.startswith(BUILTIN_PREFIX):
        return ASSETS / text[len(BUILTIN_PREFIX):]
    return user_path(text)


def check_safe_name(name: str) -> str:
    """A name that becomes a folder (runs/NAME): refuse ones that point elsewhere ('.', '..', separators)."""
    if not name or name.strip(".") == "" or "/" in name or "\\" in name or name.startswith("-") or "\0" in name:
        raise ValueError(f"name {name!r} cannot be a folder name: use letters, digits, '_', '-' or '.' "
                         "(not only dots, no '/')")
    return name


def default_cache_dir() -> Path:
    """Cache for trajectory stores shared between runs (``EDGEKD_CACHE`` overrides)."""
    env = os.environ.get("EDGEKD_CACHE")
    if env:
        return user_path(env)
    return Path.home() / ".cache" / "edgekd"


# Written into every run folder edgekd creates: edgekd only ever writes into, or replaces files of, a folder that
# carries it (or a run made before the marker existed: recipe.yaml + checkpoints/), never a folder of the user's.
MARKER = ".edgekd-run"


def is_edgekd_folder(path: Path) -> bool:
    """Made by edgekd: the marker, or (older runs) a recipe.yaml/recipe.json beside a checkpoints/ folder."""
    path = Path(path)
    legacy = ((path / "recipe.yaml").is_file() or (path / "recipe.json").is_file()) and (path / "checkpoints").is_dir()
    return (path / MARKER).is_file() or legacy


def claim_folder(path: Path, kind: str) -> Path:
    """Make ``path`` an edgekd output folder: a new or empty folder, or one edgekd made before.

    Refuses a file, or a non-empty folder edgekd did not write (a user's folder would get recipe.yaml overwritten
    and student/ replaced), before anything is written."""
    import json
    import tempfile

    from edgekd import __version__
    from edgekd.errors import EdgekdError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgekdError(f"run_dir {path} is a file, not a folder: set run_dir to a new folder")
    if path.is_dir() and not is_edgekd_folder(path):
        entries = sorted(p.name for p in path.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise EdgekdError(f"run_dir {path} is an existing folder that edgekd did not create ({shown}); "
                              "edgekd will not write into it: set run_dir to a new or empty folder")
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).is_file():  # written atomically: a temp file renamed into place
        with tempfile.NamedTemporaryFile("w", dir=path, prefix=".marker-", delete=False) as fh:
            json.dump({"edgekd_version": __version__, "kind": kind}, fh)
        os.replace(fh.name, path / MARKER)
    return path
