"""Cost measurements: latency (median and p90 of repeats after warm-up), first run, peak memory, params, MACs, size.

Memory is measured by running each generator in a FRESH subprocess (``python -m edgekd.profile.measure``): the
kernel's RSS high-water mark (``VmHWM``, what ``resource.getrusage`` reports as ``ru_maxrss``) can only grow in a
process, so in one long profiling process every generator after the biggest one would report the biggest one's
peak. A fresh process also makes "first run" honest: it includes importing nothing but the runtime's model load,
session/interpreter creation and the first call, like an app's first generation. A sampling thread would miss
short peaks and still share the process with everything loaded before. The baseline (RSS after imports, before
the model is loaded) is reported too, so ``peak - baseline`` is what the model and its runtime added.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

DEFAULT_THREADS = (1, 2, 4)
REPEAT_BUDGET_S = 4.0  # per generator and thread count: a 50-step teacher gets 5 repeats, a student all of them


@dataclass
class LatencyStats:
    """Per-image wall time of ``repeats`` calls after ``warmup`` calls (the warm-up calls are not counted)."""

    median_ms: float
    p90_ms: float
    repeats: int
    warmup: int
    samples_ms: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1, per: int = 1, budget_s: float | None = None,
               min_repeats: int = 5) -> LatencyStats:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; statistics per ``per`` images.

    With ``budget_s``, a slow generator (a 50-step teacher) gets fewer repeats: as many as fit the budget by the
    warm-up call's time, never fewer than ``min_repeats`` nor more than ``repeats``, so a profile stays short.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    warm_s = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        warm_s = time.perf_counter() - t0
    if budget_s is not None and warmup and warm_s > 0:
        repeats = min(repeats, max(min_repeats, math.ceil(budget_s / warm_s)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0 / per)
    return LatencyStats(statistics.median(times), percentile(times, 90), repeats, warmup, times)


def latency_stats(gen: Any, noise: torch.Tensor, repeats: int, warmup: int = 1,
                  budget_s: float | None = None) -> LatencyStats:
    """Latency of ``gen.generate(noise)`` per image (one image by default)."""
    return time_calls(lambda: gen.generate(noise), repeats, warmup, per=len(noise), budget_s=budget_s)


def latency_ms(gen: Any, noise: torch.Tensor, repeats: int, warmup: int = 1) -> float:
    """Median wall time (ms) per image of generating ``noise`` over ``repeats`` runs after ``warmup`` runs."""
    return latency_stats(gen, noise, repeats, warmup).median_ms


def machine_threads() -> int:
    """CPU cores this process may use (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def thread_counts(requested: list[int] | tuple[int, ...] | None = None) -> list[int]:
    """1, 2 and 4 threads (or ``requested``), capped by the machine: a count above the cores measures contention."""
    cores = machine_threads()
    wanted = sorted({int(t) for t in (requested or DEFAULT_THREADS) if int(t) >= 1})
    kept = [t for t in wanted if t <= cores]
    return kept or [min(wanted[0] if wanted else 1, cores)]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, *inputs: object) -> int:
    """Multiply-accumulates of one forward pass (torch's FLOP counter / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return int(counter.get_total_flops() // 2)


def file_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# ------------------------------------------------------------------------------------------ process memory


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """Resident set size of this process now (Linux /proc; None elsewhere)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def peak_rss_bytes() -> int:
    """RSS high-water mark of this process (VmHWM; ru_maxrss where /proc is missing: KiB on Linux, bytes on macOS)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class Measurement:
    """What one fresh process measured for one generator."""

    load_ms: float
    first_run_ms: float
    latency_ms: dict[str, float]
    latency_p90_ms: dict[str, float]
    repeats: dict[str, int]
    warmup: int
    baseline_rss_bytes: int | None
    peak_rss_bytes: int
    arena_bytes: int | None = None
    arena_note: str | None = None


def measure_generator(spec: dict[str, Any], noise: torch.Tensor, threads: list[int], repeats: int,
                      warmup: int = 1, budget_s: float | None = REPEAT_BUDGET_S) -> Measurement:
    """Load the generator described by ``spec`` (see ``profile/inventory.open_spec``), time its load and first
    run at the largest thread count, then medians/p90 of up to ``repeats`` calls after ``warmup`` at each thread
    count (fewer, but at least 5, when the calls would take more than ``budget_s``).

    Runs in the calling process: use ``measure_in_subprocess`` to get its own memory high-water mark.
    """
    from edgekd.profile.inventory import open_spec, preimport

    preimport(spec)  # libraries are imported before the baseline: "load" is the model, not Python modules
    baseline = rss_bytes()
    torch.set_num_threads(max(threads))
    t0 = time.perf_counter()
    gen = open_spec(spec, threads=max(threads))
    load_ms = (time.perf_counter() - t0) * 1000.0
    gen.generate(noise)
    first_ms = (time.perf_counter() - t0) * 1000.0  # load + the first call: what a user waits for the first image
    med: dict[str, float] = {}
    p90: dict[str, float] = {}
    counts: dict[str, int] = {}
    for t in threads:
        torch.set_num_threads(t)
        g = gen if t == max(threads) else open_spec(spec, threads=t)
        stats = latency_stats(g, noise, repeats, warmup, budget_s)
        med[f"{t}t"], p90[f"{t}t"], counts[f"{t}t"] = stats.median_ms, stats.p90_ms, stats.repeats
    arena, note = getattr(gen, "arena_bytes", None), getattr(gen, "arena_note", None)
    return Measurement(load_ms, first_ms, med, p90, counts, warmup, baseline, peak_rss_bytes(), arena, note)


def measure_in_subprocess(spec: dict[str, Any], seed: int, shape: tuple[int, ...], threads: list[int],
                          repeats: int, warmup: int = 1, timeout: float = 1800) -> Measurement:
    """``measure_generator`` in a fresh Python process, so its peak RSS is this generator's alone."""
    from edgekd.errors import EdgekdError

    job = {"spec": spec, "seed": seed, "shape": list(shape), "threads": threads, "repeats": repeats, "warmup": warmup}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "edgekd.profile.measure"], input=json.dumps(job), text=True,
                          capture_output=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgekdError(f"measuring {spec.get('label', spec)} failed in its subprocess: {tail}")
    return Measurement(**json.loads(lines[-1]))


def _worker() -> int:
    """Subprocess entry: read a job as JSON on stdin, print one JSON Measurement line."""
    import logging

    from edgekd.noise import make_noise

    os.environ.setdefault("NNCF_CI", "1")
    logging.disable(logging.WARNING)  # library chatter goes to stderr anyway; stdout carries one JSON line
    job = json.loads(sys.stdin.read())
    noise = make_noise(job["seed"], 0, 1, tuple(job["shape"]))
    m = measure_generator(job["spec"], noise, job["threads"], job["repeats"], job["warmup"])
    print(json.dumps(asdict(m)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
