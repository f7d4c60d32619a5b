"""A run directory: the plain files each stage reads and writes, so any stage can be re-run alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.recipe import Recipe, validate_mapping


@dataclass
class RunDir:
    path: Path

    @property
    def recipe_file(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def student_dir(self) -> Path:
        return self.path / "student"

    @property
    def exports(self) -> Path:
        return self.path / "exports"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @classmethod
    def open(cls, path: Path, need_student: bool = True) -> "RunDir":
        """Open an existing run; fails with one line when it is missing or has no student yet."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise EdgekdError(f"run directory {run.path} does not exist (create one with `edgekd distill RECIPE`)")
        if not run.recipe_file.is_file():
            raise EdgekdError(f"{run.path} is not an edgekd run (no recipe.yaml)")
        if need_student and not (run.student_dir / "config.json").is_file():
            raise EdgekdError(f"{run.path} has no trained student yet (run or resume `edgekd distill`)")
        return run

    def recipe(self) -> Recipe:
        raw = yaml.safe_load(self.recipe_file.read_text())
        return validate_mapping(raw, Recipe, str(self.recipe_file))

    def save_recipe(self, recipe: Recipe) -> None:
        from edgekd.train.checkpoint import atomic_write_text

        atomic_write_text(self.recipe_file, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))

    def student(self) -> nn.Module:
        from edgekd.students import load_student

        return load_student(self.student_dir)
