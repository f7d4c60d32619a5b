"""Turn an exception that is not an EdgekdError into one line a user can act on.

Most are about a path the user gave (unwritable folder, a file where a folder should be, a full disk): those are
named with the path and the fix, exit 2. Anything else is a bug in edgekd or a library: one line with its type,
exit 1, and the hint to rerun with --debug for the traceback (so the reliability suite, which expects 2, notices).
"""

from __future__ import annotations

import errno

INTERNAL_EXIT = 1

_OS_FIX = {
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOSPC: "no space left on the device: free some space or choose another folder",
    errno.EDQUOT: "disk quota exceeded: free some space or choose another folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.EISDIR: "this is a folder where a file was expected: choose a file path",
    errno.ENOENT: "no such file or folder: check the path",
    errno.EEXIST: "already exists: remove it or choose another path",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
}


def describe_unexpected(exc: BaseException) -> tuple[str, int]:
    """(message, exit code) for an exception the code did not turn into an EdgekdError itself."""
    if isinstance(exc, OSError) and exc.errno is not None:
        where = exc.filename if exc.filename is not None else ""
        if exc.filename2 is not None:
            where = f"{exc.filename} -> {exc.filename2}"
        fix = _OS_FIX.get(exc.errno, exc.strerror or str(exc))
        return (f"{where}: {fix}" if where else f"{exc.strerror or exc}: {fix}"), 2
    if isinstance(exc, MemoryError):
        return "out of memory: lower the batch sizes in the recipe (train.batch_size, trajectory.batch_size)", 2
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"unexpected {type(exc).__name__}: {text[:300]} (this is a bug in edgekd or a library; rerun with "
            "--debug for the traceback and report it)"), INTERNAL_EXIT
