"""The trajectory store: teacher runs recorded once, on disk, reused by every method and every later run.

Layout (one folder per key = a hash of everything that changes the stored numbers: the teacher's weights and its
whole sampler configuration (the teacher fingerprint), sampler, steps, spacing, eta, seed, recorded steps, shape,
dtypes and this store's format):

    <cache>/trajectories/<key>.lock                 held while a process records or repairs this key
    <cache>/trajectories/<key>/meta.json            the full spec (checked against the reader's) and shard_size
    <cache>/trajectories/<key>/shard_<start>_<count>/noise.npy    float32 [n, C, H, W]  (the convention of
                                                                     edgekd.noise: index i uses seed + i)
                                                 .../x0.npy       float32 [n, C, H, W]  the teacher's DDIM output
                                                 .../states.npy   float16 [n, K, C, H, W] x_t before recorded steps
                                                 .../cond.npy     int64 [n] the condition ids (conditional teachers:
                                                                     class ids or prompt indices, sample i: i mod K)
                                                 .../shard.json   sha256, shape and dtype of each array

Shards start at multiples of the key's shard_size (fixed by the first recording, whoever asks later), so two
callers can never write overlapping shards; a short last shard is extended in place when more samples are asked
for. Shards are written to a temp folder and renamed when complete, so an interrupted generation loses at most the
shard in progress. A per-key file lock (filelock) makes a second process wait for the first and then reuse its
work. Recorded arrays are checked to be finite (never cached otherwise) and verified against shard.json before
use; a damaged shard is recorded again. ``.npy`` files are memory-mapped when read.
"""

from __future__ import annotations

from collections.abc import Iterable

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from edgekd.errors import EdgekdError
from edgekd.integrity import check_finite_array, check_finite_weights
from edgekd.noise import make_noise
from edgekd.teachers.diffusers_teacher import DiffusionTeacher
from edgekd.teachers.diffusers_teacher import make_solver, solver_config as _solver_config
from edgekd.train.checkpoint import AtomicDir, atomic_write_json

STORE_FORMAT = 2
DTYPES = {"noise": "float32", "x0": "float32", "states": "float16"}


@dataclass(frozen=True)
class TrajectorySpec:
    """What identifies a set of teacher runs: everything that changes the numbers."""

    teacher_fingerprint: str
    steps: int
    spacing: str
    eta: float
    seed: int
    record: tuple[int, ...]
    shape: tuple[int, int, int]
    solver: str = "ddim"
    condition: str | None = None  # JSON of the teacher's condition (kind, classes or the prompt list)
    guidance: float = 1.0

    def identity(self) -> dict:
        """Everything that changes the stored arrays: the key hashes it and meta.json records it (an unconditional
        teacher's identity, and so its key, is what it was before conditions existed)."""
        solver = {} if self.solver == "ddim" else {"solver_config": _solver_config(self.solver)}
        out = {k: v for k, v in self.__dict__.items() if k not in ("condition", "guidance")}
        if self.condition is not None:
            out.update(condition=json.loads(self.condition), guidance=self.guidance)
        return {**out, "record": list(self.record), "shape": list(self.shape), "sampler": self.solver,
                **solver, "dtypes": DTYPES, "format": STORE_FORMAT}

    @property
    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=list)
        return f"{self.solver}{self.steps}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass
class Shard:
    path: Path
    start: int
    count: int


def _warn(message: str) -> None:
    print(f"edgekd: warning: {message}", file=sys.stderr)


class TrajectoryStore:
    """Record and read teacher trajectories for one ``TrajectorySpec``."""

    def __init__(self, root: Path, spec: TrajectorySpec):
        self.spec = spec
        self.dir = Path(root) / "trajectories" / spec.key
        self.lock_path = self.dir.parent / f"{spec.key}.lock"

    # ------------------------------------------------------------------ layout
    def shards(self) -> list[Shard]:
        """A chain of shards from index 0 without overlaps (the longest shard at each start wins)."""
        found: dict[int, Shard] = {}
        for path in self.dir.glob("shard_*"):
            parts = path.name.split("_")
            if not path.is_dir() or len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
                continue
            shard = Shard(path, int(parts[1]), int(parts[2]))
            if shard.count > 0 and (shard.start not in found or shard.count > found[shard.start].count):
                found[shard.start] = shard
        chain, n = [], 0
        while n in found:
            chain.append(found[n])
            n += found[n].count
        return chain

    def available(self) -> int:
        """How many consecutive samples from index 0 are recorded."""
        chain = self.shards()
        return chain[-1].start + chain[-1].count if chain else 0

    def _meta(self, shard_size: int) -> dict:
        """meta.json: created by the first recorder; later readers check it describes their spec."""
        path = self.dir / "meta.json"
        identity = json.loads(json.dumps(self.spec.identity(), default=list))
        if path.is_file():
            try:
                meta = json.loads(path.read_text())
                recorded = meta["spec"]
                size = int(meta["shard_size"])
            except (ValueError, KeyError, TypeError):
                _warn(f"{path} is damaged; the trajectory store {self.dir.name} is rebuilt")
                shutil.rmtree(self.dir)
                return self._meta(shard_size)
            if recorded != identity:
                diff = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
                raise EdgekdError(f"trajectory store {self.dir} holds other recordings than its key says "
                                  f"({', '.join(diff)} differ); delete that folder")
            return meta
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = {"spec": identity, "key": self.spec.key, "shard_size": int(shard_size)}
        atomic_write_json(path, meta)
        return meta

    # ------------------------------------------------------------------ recording
    def ensure(self, teacher: DiffusionTeacher, count: int, shard_size: int, batch_size: int,
               device: torch.device | str = "cpu") -> None:
        """Record samples 0..count-1 that are not on disk yet (resumes an interrupted generation).

        Holds the key's lock: a second process waits, then finds the first one's shards and records only the rest."""
        from filelock import FileLock, Timeout

        self.dir.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _warn(f"another edgekd process is recording trajectory store {self.spec.key}; waiting for it")
            lock.acquire()
        try:
            size = int(self._meta(shard_size)["shard_size"])
            solver = make_solver(teacher.scheduler_config, self.spec.solver, self.spec.steps, self.spec.spacing)
            extra = {"teacher": teacher.source, "timesteps": [int(t) for t in solver.timesteps]}
            self._verify_all()
            have = self.available()
            if have >= count:
                return
            check_finite_weights(teacher.unet, f"teacher {teacher.source}")
            bar = tqdm(total=count - have, desc=f"teacher {self.spec.solver}-{self.spec.steps} trajectories", unit="img",
                       dynamic_ncols=True)
            self.record_shards(teacher, range((have // size) * size, count, size), count, size, batch_size, device, bar)
            bar.close()
            atomic_write_json(self.dir / "meta.json", {**json.loads((self.dir / "meta.json").read_text()), **extra})
        finally:
            lock.release()

    def record_shards(self, teacher: DiffusionTeacher, starts: Iterable[int], count: int, size: int, batch_size: int,
                      device: torch.device | str, bar: tqdm) -> None:
        """Record the shards beginning at ``starts`` (store boundaries, ending at ``count``) not complete yet."""
        for start in starts:
            want = min(size, count - start)
            existing = next((s for s in self.shards() if s.start == start), None)
            if existing is not None and existing.count >= want:
                continue
            self._write_shard(teacher, start, want, existing, batch_size, device, bar)

    def _write_shard(self, teacher: DiffusionTeacher, start: int, n: int, existing: Shard | None, batch_size: int,
                     device: torch.device | str, bar: tqdm) -> None:
        """Record shard [start, start+n); a shorter existing shard at ``start`` is kept and extended."""
        spec = self.spec
        have = existing.count if existing is not None else 0
        noise = make_noise(spec.seed, start, n, spec.shape)
        cond = teacher.condition.draw(start, n) if teacher.condition is not None else None
        x0 = np.empty((n, *spec.shape), dtype=np.float32)
        states = np.empty((n, len(spec.record), *spec.shape), dtype=np.float16) if spec.record else None
        if existing is not None:
            old = _load_arrays(existing.path)
            x0[:have] = old["x0"]
            if states is not None:
                states[:have] = old["states"]
        for b in range(have, n, batch_size):
            z = noise[b : b + batch_size].to(device)
            c = cond[b : b + batch_size] if cond is not None else None
            out, st = teacher.sample(z, spec.steps, spec.spacing, spec.eta, list(spec.record), solver=spec.solver,
                                     condition=c, guidance=spec.guidance)
            out = out.float().cpu().numpy()
            fix = ("nothing was cached; the teacher's weights or scheduler config are broken (check them, e.g. by "
                   "sampling it with diffusers)")
            check_finite_array(out, f"teacher {teacher.source} output ({spec.solver}-{spec.steps}, samples "
                                    f"{start + b}..{start + b + len(z) - 1})", fix)
            x0[b : b + len(z)] = out
            if states is not None and st is not None:
                st16 = st.float().cpu().numpy().astype(np.float16)
                check_finite_array(st16, f"teacher {teacher.source} intermediate states (float16)", fix)
                states[b : b + len(z)] = st16
            bar.update(len(z))
        arrays = {"noise": noise.numpy(), "x0": x0, **({"states": states} if states is not None else {}),
                  **({"cond": cond.numpy()} if cond is not None else {})}
        with AtomicDir(self.dir / f"shard_{start:08d}_{n:08d}") as tmp:
            files = {}
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array)
                files[name] = {"sha256": _sha256(tmp / f"{name}.npy"), "shape": list(array.shape),
                               "dtype": str(array.dtype)}
            atomic_write_json(tmp / "shard.json", {"start": start, "count": n, "files": files})
        if existing is not None and existing.count != n:
            shutil.rmtree(existing.path, ignore_errors=True)

    # ------------------------------------------------------------------ verification
    def _expected(self, shard: Shard) -> dict[str, tuple[list[int], str]]:
        c, h, w = self.spec.shape
        out = {"noise": ([shard.count, c, h, w], "float32"), "x0": ([shard.count, c, h, w], "float32")}
        if self.spec.record:
            out["states"] = ([shard.count, len(self.spec.record), c, h, w], "float16")
        if self.spec.condition is not None:
            out["cond"] = ([shard.count], "int64")
        return out

    def shard_problem(self, shard: Shard, full: bool = False) -> str | None:
        """Why a shard cannot be trusted (None when it can): missing/torn files, wrong shape or dtype, and with
        ``full`` a checksum different from the one written with it."""
        try:
            info = json.loads((shard.path / "shard.json").read_text())
            files = info["files"]
        except FileNotFoundError:
            return "no shard.json (written by an older edgekd or incomplete)"
        except (ValueError, KeyError, TypeError):
            return "shard.json is damaged"
        for name, (shape, dtype) in self._expected(shard).items():
            path = shard.path / f"{name}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except FileNotFoundError:
                return f"{name}.npy is missing"
            except (ValueError, OSError, EOFError) as exc:
                return f"{name}.npy is truncated or damaged ({exc})"
            if list(array.shape) != shape or str(array.dtype) != dtype:
                return f"{name}.npy is {array.dtype} {list(array.shape)}, expected {dtype} {shape}"
            del array
            if full and files.get(name, {}).get("sha256") != _sha256(path):
                return f"{name}.npy does not match its checksum"
        return None

    def _verify_all(self) -> None:
        """Under the lock: remove shards that are damaged (they are recorded again) and leftovers of kills."""
        for leftover in self.dir.glob(".shard_*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for shard in self.shards():
            problem = self.shard_problem(shard, full=True)
            if problem is not None:
                _warn(f"trajectory shard {shard.path} is damaged ({problem}); recording it again")
                shutil.rmtree(shard.path, ignore_errors=True)

    def read(self, start: int, stop: int) -> "TrajectorySet":
        """Memory-mapped view of samples start..stop-1 (shapes and dtypes checked)."""
        chain = [s for s in self.shards() if s.start < stop and s.start + s.count > start]
        for shard in chain:
            problem = self.shard_problem(shard)
            if problem is not None:
                raise EdgekdError(f"trajectory shard {shard.path} is damaged ({problem}); run `edgekd distill` "
                                  "again to record it again, or delete that folder")
        return TrajectorySet(chain, start, stop)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in folder.glob("*.npy")}


class TrajectorySet:
    """A range of recorded samples spread over shards, read lazily through memory maps."""

    def __init__(self, shards: list[Shard], start: int, stop: int):
        self.start, self.stop = start, stop
        self._maps: list[tuple[Shard, dict[str, np.ndarray]]] = []
        for shard in shards:
            arrays = {p.stem: np.load(p, mmap_mode="r") for p in shard.path.glob("*.npy")}
            self._maps.append((shard, arrays))
        covered = sum(min(s.start + s.count, stop) - max(s.start, start) for s, _ in self._maps)
        if covered != stop - start:
            raise EdgekdError(f"the trajectory store holds {covered} of samples {start}..{stop - 1}; run `edgekd distill` "
                              "to record the rest")

    def __len__(self) -> int:
        return self.stop - self.start

    def keys(self) -> list[str]:
        return sorted(self._maps[0][1]) if self._maps else []

    def __getitem__(self, key: str) -> "_Column":
        return _Column(self, key)

    def gather(self, key: str, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index) + self.start
        out = None
        for shard, arrays in self._maps:
            mask = (index >= shard.start) & (index < shard.start + shard.count)
            if not mask.any():
                continue
            part = arrays[key][index[mask] - shard.start]
            if out is None:
                out = np.empty((len(index), *part.shape[1:]), dtype=part.dtype)
            out[mask] = part
        assert out is not None
        return out


class _Column:
    """Array-like access to one field of a TrajectorySet (what TensorSource indexes)."""

    def __init__(self, parent: TrajectorySet, key: str):
        self.parent, self.key = parent, key

    def __len__(self) -> int:
        return len(self.parent)

    def __getitem__(self, idx: object) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(len(self.parent))[idx]
        return self.parent.gather(self.key, np.asarray(idx))


def record_rank_share(store: TrajectoryStore, teacher: DiffusionTeacher, have: int, count: int, shard_size: int,
                      batch_size: int, device: torch.device | str, rank: int, world_size: int) -> list[int]:
    """Under torchrun: record this rank's share of samples ``have``..``count``-1 into the shared store.

    The missing range is cut into shards of ``shard_size`` and shard i goes to rank i % world_size, so the ranks
    write disjoint shard folders (each atomically) side by side. ``have`` must be the same on every rank (rank 0
    measures it and broadcasts it before anyone writes). The caller puts a barrier after this; then every rank
    reads the whole store. Returns the start indices this rank wrote.
    """
    size = int(store._meta(shard_size)["shard_size"])  # the store's own boundaries (fixed by its first recorder)
    starts = list(range((have // size) * size, count, size))[rank::world_size]
    if not starts:
        return []
    todo = sum(min(size, count - s) for s in starts)
    bar = tqdm(total=todo, desc=f"teacher DDIM-{store.spec.steps} trajectories (rank {rank})", unit="img",
               dynamic_ncols=True, disable=None if rank == 0 else True)
    store.record_shards(teacher, starts, count, size, batch_size, device, bar)
    bar.close()
    return starts
