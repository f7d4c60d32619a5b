"""Where edgekd finds packaged assets and default data."""

from __future__ import annotations

import os
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN_PREFIX = "builtin:"
DEFAULT_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def resolve_builtin(path: str | os.PathLike) -> Path:
    """Turn ``builtin:NAME`` into the packaged asset path; leave other paths as they are."""
    text = str(path)
    if text.startswith(BUILTIN_PREFIX):
        return ASSETS / text[len(BUILTIN_PREFIX):]
    return Path(text).expanduser()


def default_cache_dir() -> Path:
    """Cache for trajectory stores shared between runs (``EDGEKD_CACHE`` overrides)."""
    env = os.environ.get("EDGEKD_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "edgekd"
