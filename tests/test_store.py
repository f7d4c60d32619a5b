"""The trajectory store: recorded once, memory-mapped, reused, resumable, faithful to the noise convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.noise import make_noise
from edgekd.teachers.diffusers_teacher import load_teacher
from edgekd.teachers.store import TrajectorySpec, TrajectoryStore
from edgekd_testing import sample_as_recorded


def make_store(root: Path, teacher, record=(0, 2), seed: int = 11) -> TrajectoryStore:
    return TrajectoryStore(root, TrajectorySpec(teacher.fingerprint, 3, "trailing", 0.0, seed, record, teacher.sample_shape))


def test_records_noise_states_and_x0(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    store = make_store(tmp_path, teacher)
    store.ensure(teacher, 10, shard_size=4, batch_size=3)
    assert [(s.start, s.count) for s in store.shards()] == [(0, 4), (4, 4), (8, 2)]
    view = store.read(2, 9)
    assert len(view) == 7
    noise = view["noise"][:]
    assert np.array_equal(noise, make_noise(11, 2, 7, teacher.sample_shape).numpy())
    # the teacher's outputs for that noise, recomputed in the batches the store used (3 + 1 per shard of 4, then
    # 2): the recorder's own computation, so the same bits on any CPU (another batch size rounds differently)
    whole = make_noise(11, 0, 10, teacher.sample_shape)
    x0, states = sample_as_recorded(teacher, whole, 3, [3, 1, 3, 1, 2], record=[0, 2])
    np.testing.assert_array_equal(view["x0"][:], x0[2:9])
    assert view["states"][:].shape == (7, 2, 1, 32, 32) and view["states"][:].dtype == np.float16
    np.testing.assert_array_equal(view["states"][:], states[2:9])
    assert np.allclose(view["states"][:][:, 0], noise, atol=2e-3)  # state before step 0 is the noise itself
    assert isinstance(np.load(store.shards()[0].path / "x0.npy", mmap_mode="r"), np.memmap)


def test_reused_and_extended_without_regenerating(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    store = make_store(tmp_path, teacher, record=())
    store.ensure(teacher, 6, shard_size=6, batch_size=6)
    first = store.shards()[0].path / "x0.npy"
    mtime = first.stat().st_mtime_ns
    calls = []
    original = teacher.predict
    teacher.predict = lambda *a, **k: calls.append(1) or original(*a, **k)  # count network calls
    store.ensure(teacher, 6, shard_size=6, batch_size=6)
    assert calls == [] and first.stat().st_mtime_ns == mtime
    store.ensure(teacher, 9, shard_size=6, batch_size=6)
    assert len(calls) == 3 and store.available() == 9  # only the 3 new samples, one batch of 3 steps


def test_interrupted_shard_is_ignored_and_redone(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    store = make_store(tmp_path, teacher, record=())
    store.ensure(teacher, 4, shard_size=4, batch_size=4)
    partial = store.dir / ".shard_00000004_00000004.partial"
    partial.mkdir()
    (partial / "noise.npy").write_bytes(b"garbage")
    assert store.available() == 4
    store.ensure(teacher, 8, shard_size=4, batch_size=4)
    assert store.available() == 8 and not partial.exists()


def test_key_separates_teachers_and_settings(tiny_teacher_dir: Path) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    base = TrajectorySpec(teacher.fingerprint, 3, "trailing", 0.0, 1, (), (1, 32, 32))
    assert base.key == TrajectorySpec(teacher.fingerprint, 3, "trailing", 0.0, 1, (), (1, 32, 32)).key
    for other in (TrajectorySpec("other", 3, "trailing", 0.0, 1, (), (1, 32, 32)),
                  TrajectorySpec(teacher.fingerprint, 4, "trailing", 0.0, 1, (), (1, 32, 32)),
                  TrajectorySpec(teacher.fingerprint, 3, "leading", 0.0, 1, (), (1, 32, 32)),
                  TrajectorySpec(teacher.fingerprint, 3, "trailing", 0.0, 2, (), (1, 32, 32)),
                  TrajectorySpec(teacher.fingerprint, 3, "trailing", 0.0, 1, (1,), (1, 32, 32))):
        assert other.key != base.key


def test_read_beyond_recorded_range_fails(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    store = make_store(tmp_path, teacher, record=())
    store.ensure(teacher, 4, shard_size=4, batch_size=4)
    with pytest.raises(EdgekdError, match="holds 4 of samples"):
        store.read(0, 8)
