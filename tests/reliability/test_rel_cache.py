"""Cache identity and integrity, checkpoints, resume rules and paths: the classes of silent wrong results.

A store key must change with everything that changes the stored numbers; what is read must be what was written;
a resume must be the same experiment; a path must mean what the user wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.teachers.diffusers_teacher import load_teacher
from edgekd.teachers.store import TrajectorySpec, TrajectoryStore
from edgekd_testing import sample_as_recorded


def _store(root: Path, teacher, steps: int = 3, record: tuple[int, ...] = (1,)) -> TrajectoryStore:  # noqa: ANN001
    return TrajectoryStore(root, TrajectorySpec(teacher.fingerprint, steps, "trailing", 0.0, 11, record,
                                                teacher.sample_shape))


def _teacher_variant(src: Path, dst: Path, **scheduler: object) -> Path:
    shutil.copytree(src, dst)
    path = dst / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **scheduler}))
    return dst


# ------------------------------------------------------------------------------------------- identity
SAMPLER_SETTINGS = [
    {"clip_sample_range": 0.5},
    {"clip_sample": False},
    {"thresholding": True},
    {"steps_offset": 1},
    {"beta_end": 0.021},
    {"set_alpha_to_one": False},
]


@pytest.mark.parametrize("change", SAMPLER_SETTINGS, ids=[next(iter(c)) for c in SAMPLER_SETTINGS])
def test_every_sampler_setting_is_in_the_store_key(change: dict, tiny_teacher_dir: Path, tmp_path: Path) -> None:
    """Two teachers with the same weights but another sampler setting never share recorded trajectories."""
    base = load_teacher(str(tiny_teacher_dir))
    other = load_teacher(str(_teacher_variant(tiny_teacher_dir, tmp_path / "t", **change)))
    assert base.fingerprint != other.fingerprint
    assert _store(tmp_path, base).spec.key != _store(tmp_path, other).spec.key


def test_clip_sample_range_changes_the_stored_numbers(tiny_teacher_dir: Path, tmp_path: Path, one_thread: None) -> None:
    """The setting the probe found shared a key really changes the samples: sharing would have been wrong."""
    from edgekd.noise import make_noise

    base = load_teacher(str(tiny_teacher_dir))
    other = load_teacher(str(_teacher_variant(tiny_teacher_dir, tmp_path / "t", clip_sample_range=0.05)))
    z = make_noise(0, 0, 2, base.sample_shape)
    assert not torch.allclose(base.sample(z, 3)[0], other.sample(z, 3)[0])


def test_weights_are_in_the_key(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    base = load_teacher(str(tiny_teacher_dir))
    other = load_teacher(str(tiny_teacher_dir))
    with torch.no_grad():
        next(iter(other.unet.parameters())).add_(1e-6)
    from edgekd.teachers.diffusers_teacher import _fingerprint

    assert _fingerprint(other.unet, other.scheduler_config) != base.fingerprint


def test_meta_of_another_spec_is_refused(tiny_teacher_dir: Path, tmp_path: Path, one_thread: None) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    store = _store(tmp_path, teacher)
    store.ensure(teacher, 4, shard_size=4, batch_size=4)
    meta = json.loads((store.dir / "meta.json").read_text())
    meta["spec"]["eta"] = 0.5
    (store.dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(EdgekdError, match="eta"):
        store.ensure(teacher, 4, shard_size=4, batch_size=4)


# ------------------------------------------------------------------------------------------- integrity
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-64])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_meta(path: Path) -> None:
    (path.parent / "shard.json").unlink()


DAMAGE = [("truncated-x0", "x0.npy", _truncate), ("bitflip-x0", "x0.npy", _flip_byte),
          ("truncated-states", "states.npy", _truncate), ("missing-noise", "noise.npy", lambda p: p.unlink()),
          ("no-shard-json", "x0.npy", _drop_meta)]


@pytest.mark.parametrize("name,file,damage", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_shard_is_recorded_again(name: str, file: str, damage, tiny_teacher_dir: Path, tmp_path: Path,  # noqa: ANN001
                                         one_thread: None, capsys: pytest.CaptureFixture) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    store = _store(tmp_path, teacher)
    store.ensure(teacher, 8, shard_size=4, batch_size=4)
    good = store.read(0, 8)["x0"][:].copy()
    shard = store.shards()[1].path
    damage(shard / file)
    if name != "bitflip-x0":  # reads check files, shapes and dtypes; checksums are verified by ensure()
        with pytest.raises(EdgekdError, match="damaged"):
            store.read(0, 8)
    store.ensure(teacher, 8, shard_size=4, batch_size=4)
    assert "damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(store.read(0, 8)["x0"][:], good)


def test_non_finite_teacher_output_is_never_cached(tiny_teacher_dir: Path, tmp_path: Path, one_thread: None) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    real = teacher.sample

    def broken(noise, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        x, states = real(noise, *args, **kwargs)
        x[0, 0, 0, 0] = float("nan")
        return x, states

    teacher.sample = broken  # type: ignore[method-assign]
    store = _store(tmp_path, teacher)
    with pytest.raises(EdgekdError, match="NaN"):
        store.ensure(teacher, 8, shard_size=4, batch_size=4)
    assert store.shards() == []


def test_shard_boundaries_do_not_depend_on_the_caller(tiny_teacher_dir: Path, tmp_path: Path, one_thread: None) -> None:
    """A second caller with another shard size extends the first one's shards: no overlap, same numbers as one
    recording in one go."""
    teacher = load_teacher(str(tiny_teacher_dir))
    store = _store(tmp_path / "a", teacher)
    store.ensure(teacher, 6, shard_size=4, batch_size=3)
    store.ensure(teacher, 13, shard_size=7, batch_size=5)
    shards = store.shards()
    assert [(s.start, s.count) for s in shards] == [(0, 4), (4, 4), (8, 4), (12, 1)]
    assert sorted(p.name for p in store.dir.glob("shard_*")) == [s.path.name for s in shards]
    once = _store(tmp_path / "b", teacher)
    once.ensure(teacher, 13, shard_size=13, batch_size=13)
    got, ref = store.read(0, 13), once.read(0, 13)
    np.testing.assert_array_equal(got["noise"][:], ref["noise"][:])  # sample i is noise index i, whoever records it
    # each holds the teacher's outputs for that noise, as computed in the batches it was recorded in: [3, 1] for
    # shard 0, [2] then the extension's [2] for shard 4, [4] and [1] (batch 5 capped by the shard) after; one [13]
    # for `once`. Across batch sizes the bits differ (the kernels' rounding), so each is recomputed in its own.
    for view, batches in ((got, [3, 1, 2, 2, 4, 1]), (ref, [13])):
        x0, states = sample_as_recorded(teacher, view["noise"][:], 3, batches, record=[1])
        np.testing.assert_array_equal(view["x0"][:], x0)
        np.testing.assert_array_equal(view["states"][:], states)


def test_overlapping_shards_of_older_versions_are_read_as_one_chain(tiny_teacher_dir: Path, tmp_path: Path,
                                                                    one_thread: None) -> None:
    teacher = load_teacher(str(tiny_teacher_dir))
    store = _store(tmp_path, teacher)
    store.ensure(teacher, 8, shard_size=4, batch_size=4)
    first = store.shards()[0].path
    shutil.copytree(first, store.dir / "shard_00000002_00000004")  # what two racing recorders used to leave
    assert [(s.start, s.count) for s in store.shards()] == [(0, 4), (4, 4)]
    assert len(store.read(0, 8)) == 8


# ------------------------------------------------------------------------------------------- checkpoints
def _fake_checkpoint(folder: Path, step: int) -> Path:
    from edgekd.train.checkpoint import save_state

    path = folder / f"step_{step:08d}"
    path.mkdir(parents=True)
    for name in ("modules", "ema", "optim", "loop"):
        save_state(path, name, {"w": torch.full((4,), float(step)), "step": step})
    return path


def _pointer(folder: Path, text: str) -> None:
    (folder / "latest.json").write_text(text)


CKPT_FAULTS = [
    ("pointer-to-missing-folder", lambda d: _pointer(d, json.dumps({"name": "step_00000012", "step": 12})), 8),
    ("pointer-torn", lambda d: _pointer(d, '{"name": "step_0000'), 8),
    ("pointer-not-json", lambda d: _pointer(d, "\x00\x01"), 8),
    ("pointer-escapes", lambda d: _pointer(d, json.dumps({"name": "../../etc", "step": 1})), 8),
    ("newest-truncated", lambda d: (_fake_checkpoint(d, 12), _pointer(d, json.dumps({"name": "step_00000012"})),
                                    _truncate(d / "step_00000012" / "optim.safetensors")), 8),
    ("newest-missing-file", lambda d: (_fake_checkpoint(d, 12), _pointer(d, json.dumps({"name": "step_00000012"})),
                                       (d / "step_00000012" / "loop.json").unlink()), 8),
    ("no-pointer", lambda d: (d / "latest.json").unlink(), 8),
]


@pytest.mark.parametrize("name,fault,expected", CKPT_FAULTS, ids=[c[0] for c in CKPT_FAULTS])
def test_resume_falls_back_to_newest_complete_checkpoint(name: str, fault, expected: int, tmp_path: Path) -> None:  # noqa: ANN001
    from edgekd.train.checkpoint import find_resume_checkpoint

    ckpt = tmp_path / "checkpoints"
    _fake_checkpoint(ckpt, 4)
    _fake_checkpoint(ckpt, 8)
    _pointer(ckpt, json.dumps({"name": "step_00000008", "step": 8}))
    fault(ckpt)
    warnings: list[str] = []
    found = find_resume_checkpoint(ckpt, warn=warnings.append)
    assert found == ckpt / f"step_{expected:08d}"
    assert bool(warnings) == (name != "no-pointer")


def test_trim_metrics_survives_a_torn_last_line(tmp_path: Path) -> None:
    from edgekd.train.checkpoint import read_metrics, trim_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in range(1, 9)) + '{"step": 9, "lo')
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 9))
    trim_metrics(path, 6)
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 7))
    assert path.read_text().endswith("\n")


# ------------------------------------------------------------------------------------------- resume rules
MAY = [("train", {"steps": 99}), ("train", {"eval_every": 3}), ("profile", {"fid_samples": 4}),
       ("export", {"psnr_min": 20.0}), ("trajectory", {"batch_size": 3})]
MAY_NOT = [("train", {"lr": 0.5}, "train.lr"), ("student", {"block_out_channels": [16, 16]}, "student.block_out_channels"),
           ("teacher", {"steps": 4}, "teacher.steps"), ("trajectory", {"seed": 3}, "trajectory.seed"),
           ("data", {"hflip": False}, "data.hflip"), ("method", {"loss": "l2"}, "method.loss"),
           ("train", {"batch_size": 4}, "train.batch_size")]


def _recipe(teacher: Path, tmp: Path, section: str | None = None, values: dict | None = None):  # noqa: ANN202
    from edgekd.recipe import Recipe, validate_mapping
    from edgekd_testing import tiny_recipe

    raw = tiny_recipe(teacher, tmp / "run")
    if section:
        raw[section] = {**raw.get(section, {}), **values}
    return validate_mapping(raw, Recipe, "r.yaml")


@pytest.mark.parametrize("section,values", MAY, ids=[f"{s}.{next(iter(v))}" for s, v in MAY])
def test_resume_may_change(section: str, values: dict, tiny_teacher_dir: Path, tmp_path: Path) -> None:
    from edgekd.resume import recipe_changes

    assert recipe_changes(_recipe(tiny_teacher_dir, tmp_path), _recipe(tiny_teacher_dir, tmp_path, section, values)) == []


@pytest.mark.parametrize("section,values,key", MAY_NOT, ids=[m[2] for m in MAY_NOT])
def test_resume_may_not_change(section: str, values: dict, key: str, tiny_teacher_dir: Path, tmp_path: Path) -> None:
    from edgekd.resume import recipe_changes

    changes = recipe_changes(_recipe(tiny_teacher_dir, tmp_path), _recipe(tiny_teacher_dir, tmp_path, section, values))
    assert key in [c[0] for c in changes]


# ------------------------------------------------------------------------------------------- paths
def test_tilde_is_expanded_in_run_dir_and_cache_dir(tiny_teacher_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekd.distill import store_root
    from edgekd.paths import default_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    recipe = _recipe(tiny_teacher_dir, tmp_path)
    recipe = recipe.model_copy(update={"run_dir": "~/runs/x",
                                       "trajectory": recipe.trajectory.model_copy(update={"cache_dir": "~/c"})})
    assert recipe.resolved_run_dir() == tmp_path / "home" / "runs" / "x"
    assert store_root(recipe) == tmp_path / "home" / "c"
    monkeypatch.setenv("EDGEKD_CACHE", "~/env-cache")
    assert default_cache_dir() == tmp_path / "home" / "env-cache"


@pytest.mark.parametrize("name", ["..", ".", "...", "a/b", "-rf", ""])
def test_unsafe_names_are_refused(name: str) -> None:
    from edgekd.paths import check_safe_name

    with pytest.raises(ValueError):
        check_safe_name(name)


@pytest.mark.parametrize("array,expected", [
    (np.array([[[0.0, 1.0]]], np.float32), [[[0, 255]]]),
    (np.array([[[0.0, 255.0]]], np.float64), [[[0, 255]]]),
    (np.array([[[3, 200]]], np.int64), [[[3, 200]]]),
])
def test_unambiguous_non_uint8_images_are_converted(array: np.ndarray, expected: list) -> None:
    from edgekd.data.images import as_uint8

    out = as_uint8(array, "x")
    assert out.dtype == np.uint8 and out.tolist() == expected


def test_kill_between_the_renames_of_a_folder_is_repaired(tmp_path: Path) -> None:
    """AtomicDir replaces student/ by two renames; a kill between them leaves only .student.old: put it back."""
    from edgekd.rundir import RunDir

    run = tmp_path / "run"
    (run / ".student.old").mkdir(parents=True)
    (run / ".student.old" / "config.json").write_text("{}")
    (run / "recipe.yaml").write_text("name: x\n")
    opened = RunDir.open(run)
    assert (opened.student_dir / "config.json").read_text() == "{}"
    assert not (run / ".student.old").exists()
