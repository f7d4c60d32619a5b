"""One Android build per test session, shared by test_android.py and test_contract.py (kotlinc is the slow part).

Not a conftest fixture, so that tests/apps keeps no conftest.py of its own (other app tests live here too).
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANDROID = ROOT / "apps" / "android"

_spec = importlib.util.spec_from_file_location("edgekd_android_check", ANDROID / "tools" / "check.py")
android_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(android_check)

MISSING = android_check.missing_tools()
SKIP_REASON = "Android check tools missing (bash scripts/setup.sh installs them): " + "; ".join(MISSING)


@lru_cache(maxsize=1)
def build() -> tuple[Path, dict]:
    """apps/android checked once: (work folder with the compiled classes, the check's summary). Raises CheckFailed."""
    work = Path(tempfile.mkdtemp(prefix="edgekd-android-"))
    atexit.register(shutil.rmtree, work, True)
    summary: dict = {}
    android_check.check(ANDROID, work, summary)
    return work, summary
