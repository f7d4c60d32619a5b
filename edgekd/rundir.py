"""A run directory: the plain files each stage reads and writes, so any stage can be re-run alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from edgekd.errors import EdgekdError, RecipeError
from edgekd.recipe import Recipe, validate_mapping

from edgekd.paths import MARKER, claim_folder, is_edgekd_folder  # noqa: F401  (folder ownership lives in paths)


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

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def is_edgekd_run(self) -> bool:
        return is_edgekd_folder(self.path)

    @classmethod
    def create(cls, path: Path) -> "RunDir":
        """Claim ``path`` for a new (or continued) run (see claim_folder)."""
        return cls(claim_folder(Path(path), "run"))

    @classmethod
    def open(cls, path: Path, need_student: bool = True) -> "RunDir":
        """Open an existing run; fails with one line when it is missing or has no student yet."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise EdgekdError(f"run directory {run.path} does not exist (create one with `edgekd distill RECIPE`)")
        if not run.recipe_file.is_file():
            raise EdgekdError(f"{run.path} is not an edgekd run (no recipe.yaml)")
        from edgekd.train.checkpoint import AtomicDir

        AtomicDir.recover(run.student_dir)  # a kill while student/ was being replaced
        if need_student and not (run.student_dir / "config.json").is_file():
            raise EdgekdError(f"{run.path} has no trained student yet (run or resume `edgekd distill`)")
        return run

    def recipe(self) -> Recipe:
        """The run's own recipe; a damaged file is one line naming it (never a YAML traceback)."""
        try:
            raw = yaml.safe_load(self.recipe_file.read_text())
        except FileNotFoundError:
            raise EdgekdError(f"{self.path} is not an edgekd run (no recipe.yaml)") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{self.recipe_file} (the run's recipe) is corrupt and cannot be read as YAML "
                              f"({type(exc).__name__}); restore it, or distill again into a new run_dir") from None
        return validate_mapping(raw, Recipe, str(self.recipe_file))

    def save_recipe(self, recipe: Recipe) -> None:
        from edgekd.train.checkpoint import atomic_write_text

        atomic_write_text(self.recipe_file, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))

    def student(self) -> nn.Module:
        from edgekd.students import load_student

        return load_student(self.student_dir)
