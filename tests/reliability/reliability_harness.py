"""Run edgekd commands the way a user does and check how they end: one error line, the exit code, no traceback,
and nothing left behind that a later command would trust."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekd_testing import ROOT

ERROR_PREFIX = "edgekd: error: "


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith(ERROR_PREFIX)]


def run_inprocess(argv: list[str]) -> Result:
    """``edgekd ARGV`` in this process (fast: torch is imported once). An exception escaping main() is a
    traceback the user would see: it fails the test as it is."""
    from edgekd.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            rc = int(exc.code or 0)
    return Result(rc, out.getvalue(), err.getvalue())


def cli_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "edgekd.cli", *[str(a) for a in argv]]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "EDGEKD_DEBUG": ""}
    env.update(extra)
    return env


def run_subprocess(argv: list[str], timeout: float = 600, **env: str) -> Result:
    """``python -m edgekd.cli ARGV`` as a separate process: what a shell user sees, tracebacks included."""
    done = subprocess.run(cli_command(argv), capture_output=True, text=True, env=cli_env(**env), timeout=timeout,
                          cwd=str(ROOT))
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_error(res: Result, rc: int, *needles: str) -> str:
    """Exit code ``rc``, exactly one ``edgekd: error:`` line holding every needle, and no traceback."""
    assert "Traceback (most recent call last)" not in res.err, res.err[-3000:]
    lines = res.error_lines
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{res.err[-3000:]}"
    assert res.rc == rc, f"exit code {res.rc}, expected {rc}: {lines[0]}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_clean_success(res: Result) -> None:
    assert res.rc == 0, res.err[-3000:]
    assert not res.error_lines and "Traceback" not in res.err, res.err[-3000:]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: compared before/after to prove a refused command wrote nothing."""
    path = Path(path)
    if not path.exists():
        return {}
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


Check = Callable[[], None]
