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
