"""The numerics-sensitive tests pass under other CPU kernels too, not only under this machine's.

The same code rounds floats differently on another CPU (an AMD EPYC failed two tests an Intel Xeon passed: a golden
compared at 1e-7, a recording compared across batch sizes). oneDNN and MKL can be told to take another kernel path
on this very machine (../shared/STACK.md, "CPU-portable numerics"): ONEDNN_MAX_CPU_ISA=SSE41 changes conv results,
MKL_CBWR=COMPATIBLE changes matmul results. This re-runs the tests whose tolerances encode a claim about rounding in
a subprocess with both set, so a tolerance fitted to one CPU's bits fails here instead of on someone else's CI."""

from __future__ import annotations

import os
import subprocess
import sys

from edgekd_testing import ROOT

OTHER_KERNELS = {"ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}

# tests whose float comparisons are about rounding: a golden vs a fresh computation, recorded teacher samples vs a
# recomputation (the store's batching), shards recorded by several callers or ranks
SENSITIVE = [
    "tests/apps/test_golden.py",
    "tests/reliability/test_rel_faults.py::test_kill_during_recording_leaves_only_verified_shards",
    "tests/reliability/test_rel_cache.py::test_shard_boundaries_do_not_depend_on_the_caller",
    "tests/test_store.py::test_records_noise_states_and_x0",
    "tests/test_scale.py::test_each_rank_records_its_own_shards",
]

PROBE = """
import torch
torch.set_num_threads(1)
x = torch.ones(2, 8, 16, 16)
torch.nn.functional.conv2d(x, torch.ones(8, 8, 3, 3), padding=1)
torch.ones(64, 64) @ torch.ones(64, 64)
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **extra}


def test_the_other_kernel_path_is_really_taken() -> None:
    """oneDNN and MKL report the ISA cap and the conditional-reproducibility mode they run under: without this the
    test below could pass because the variables were ignored (a renamed variable, a torch built without them)."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=str(ROOT),
                          env=_env(**OTHER_KERNELS, ONEDNN_VERBOSE="1", MKL_VERBOSE="1"))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-2000:]
    assert "isa:Intel SSE4.1" in out, [line for line in out.splitlines() if "isa" in line][:3]
    if "MKL_VERBOSE" in out:  # a torch built with MKL (x86 wheels); others do not read MKL_CBWR at all
        assert "CNR:COMPATIBLE" in out, [line for line in out.splitlines() if "MKL_VERBOSE" in line][:3]


def test_sensitive_tests_pass_under_other_cpu_kernels() -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", *SENSITIVE]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=str(ROOT), env=_env(**OTHER_KERNELS))
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, f"under {OTHER_KERNELS}:\n{tail}"
    assert " passed" in tail and " failed" not in tail, tail
