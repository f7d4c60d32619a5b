"""Fixtures of the reliability suite: one tiny finished run (distilled and exported once per session) that each
case copies, and helpers to write recipes and teachers with one thing wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from edgekd_testing import needs_fmnist, tiny_recipe, write_recipe


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    """A tiny distilled run with ONNX exports of the student and the teacher step (~20 s on 2 cores)."""
    import torch

    from reliability_harness import assert_clean_success, run_inprocess

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("reliability")
    recipe = write_recipe(base / "tiny.yaml", tiny_recipe(tiny_teacher_dir, base / "run"))
    for argv in (["distill", recipe], ["export", base / "run", "--exporter", "torchscript"],
                 ["export", base / "run", "--teacher", "--exporter", "torchscript"]):
        assert_clean_success(run_inprocess(argv))
    return base / "run"


class Ctx:
    """What a case builds on: a fresh folder, the tiny teacher and (lazily) a copy of the finished run."""

    def __init__(self, tmp: Path, teacher: Path, request: pytest.FixtureRequest):
        self.tmp, self.teacher, self._request = tmp, teacher, request

    @property
    def base_cache(self) -> Path:
        """The finished run's trajectory cache (a resumed copy reads it instead of recording again)."""
        return self._request.getfixturevalue("finished_run").parent / "cache"

    def run_copy(self, name: str = "run") -> Path:
        src = self._request.getfixturevalue("finished_run")
        dst = self.tmp / name
        shutil.copytree(src, dst, symlinks=True)
        return dst

    def recipe(self, filename: str = "r.yaml", run: Path | None = None, **sections: object) -> Path:
        recipe = tiny_recipe(self.teacher, run or self.tmp / "run")
        for key, value in sections.items():  # sections merge into the tiny recipe's; scalars replace
            if isinstance(value, dict) and isinstance(recipe.get(key), dict):
                recipe[key] = {**recipe[key], **value}
            else:
                recipe[key] = value
        return write_recipe(self.tmp / filename, recipe)

    def raw_recipe(self, mapping: object, name: str = "r.yaml") -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(mapping, sort_keys=False))
        return path

    def teacher_copy(self, name: str = "teacher") -> Path:
        dst = self.tmp / name
        shutil.copytree(self.teacher, dst)
        return dst

    def a_file(self, name: str = "plain-file") -> Path:
        path = self.tmp / name
        path.write_text("a user's file\n")
        return path


@pytest.fixture()
def ctx(tmp_path: Path, tiny_teacher_dir: Path, request: pytest.FixtureRequest, one_thread: None) -> Ctx:
    return Ctx(tmp_path, tiny_teacher_dir, request)


__all__ = ["Ctx", "needs_fmnist"]
