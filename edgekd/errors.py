"""User-facing errors: one clear line and exit code 2, never a deep traceback."""

from __future__ import annotations


class EdgekdError(Exception):
    """A problem the user can fix (bad recipe, missing file, failed gate).

    The CLI prints ``str(error)`` on one line and exits with ``exit_code``.
    """

    exit_code = 2


class RecipeError(EdgekdError):
    """The recipe file is invalid: names the file, the key and what was expected."""


class ParityError(EdgekdError):
    """An exported model disagrees with PyTorch beyond the allowed bar."""

    exit_code = 3


class MissingResourceError(EdgekdError):
    """A file, directory or download that is needed is not there (offline, wrong path)."""
