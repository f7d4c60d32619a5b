"""The trajectory store: teacher runs recorded once, on disk, reused by every method and every later run.

Layout (one folder per key = teacher fingerprint + sampler + steps + spacing + eta + seed + recorded steps):

    <cache>/trajectories/<key>/meta.json
    <cache>/trajectories/<key>/shard_<start>_<count>/noise.npy    float32 [n, C, H, W]  (the convention of
                                                                     edgekd.noise: index i uses seed + i)
                                                 .../x0.npy       float32 [n, C, H, W]  the teacher's DDIM output
                                                 .../states.npy   float16 [n, K, C, H, W] x_t before recorded steps

Shards are written to a temp folder and renamed when complete, so an interrupted generation loses at most the
shard in progress and resumes from there. ``.npy`` files are memory-mapped when read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from edgekd.noise import make_noise
from edgekd.teachers.diffusers_teacher import DiffusionTeacher
from edgekd.teachers.diffusers_teacher import make_solver, solver_config as _solver_config
from edgekd.train.checkpoint import AtomicDir, atomic_write_json


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

    @property
    def key(self) -> str:
        """``<solver><steps>-<hash>``; the hash covers every field and, for solvers other than DDIM, the solver's
        fixed settings (DDIM keys are unchanged from before solvers existed, so old caches stay valid)."""
        fields = dict(self.__dict__)
        if self.solver == "ddim":
            fields.pop("solver")
        else:
            fields["solver_config"] = _solver_config(self.solver)
        text = json.dumps(fields, sort_keys=True, default=list)
        return f"{self.solver}{self.steps}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass
class Shard:
    path: Path
    start: int
    count: int


class TrajectoryStore:
    """Record and read teacher trajectories for one ``TrajectorySpec``."""

    def __init__(self, root: Path, spec: TrajectorySpec):
        self.spec = spec
        self.dir = Path(root) / "trajectories" / spec.key

    def shards(self) -> list[Shard]:
        found = []
        for path in self.dir.glob("shard_*"):
            if not path.is_dir() or path.name.startswith("."):
                continue
            _, start, count = path.name.split("_")
            found.append(Shard(path, int(start), int(count)))
        return sorted(found, key=lambda s: s.start)

    def available(self) -> int:
        """How many consecutive samples from index 0 are recorded."""
        n = 0
        for shard in self.shards():
            if shard.start > n:
                break
            n = max(n, shard.start + shard.count)
        return n

    def ensure(self, teacher: DiffusionTeacher, count: int, shard_size: int, batch_size: int,
               device: torch.device | str = "cpu") -> None:
        """Record samples 0..count-1 that are not on disk yet (resumes an interrupted generation)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / "meta.json", {**self.spec.__dict__, "key": self.spec.key, "teacher": teacher.source,
                                                   "timesteps": [int(t) for t in make_solver(teacher.scheduler_config, self.spec.solver,
                                                                                 self.spec.steps, self.spec.spacing).timesteps]}
                          | ({} if self.spec.solver == "ddim" else {"solver_config": _solver_config(self.spec.solver)}))
        have = self.available()
        if have >= count:
            return
        todo = count - have
        bar = tqdm(total=todo, desc=f"teacher {self.spec.solver}-{self.spec.steps} trajectories", unit="img", dynamic_ncols=True)
        start = have
        while start < count:
            n = min(shard_size, count - start)
            self._write_shard(teacher, start, n, batch_size, device, bar)
            start += n
        bar.close()

    def _write_shard(self, teacher: DiffusionTeacher, start: int, n: int, batch_size: int,
                     device: torch.device | str, bar: tqdm) -> None:
        spec = self.spec
        noise = make_noise(spec.seed, start, n, spec.shape)
        x0 = np.empty((n, *spec.shape), dtype=np.float32)
        states = np.empty((n, len(spec.record), *spec.shape), dtype=np.float16) if spec.record else None
        for b in range(0, n, batch_size):
            z = noise[b : b + batch_size].to(device)
            out, st = teacher.sample(z, spec.steps, spec.spacing, spec.eta, list(spec.record), solver=spec.solver)
            x0[b : b + len(z)] = out.float().cpu().numpy()
            if states is not None and st is not None:
                states[b : b + len(z)] = st.float().cpu().numpy().astype(np.float16)
            bar.update(len(z))
        with AtomicDir(self.dir / f"shard_{start:08d}_{n:08d}") as tmp:
            np.save(tmp / "noise.npy", noise.numpy())
            np.save(tmp / "x0.npy", x0)
            if states is not None:
                np.save(tmp / "states.npy", states)

    def read(self, start: int, stop: int) -> "TrajectorySet":
        """Memory-mapped view of samples start..stop-1."""
        return TrajectorySet([s for s in self.shards() if s.start < stop and s.start + s.count > start], start, stop)


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
            raise ValueError(f"trajectory store covers {covered} of samples {start}..{stop - 1}")

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
