"""A run directory: the plain files each stage reads and writes, so any stage can be re-run alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from edgekd.errors import EdgekdError, RecipeError
from edgekd.recipe import Recipe, validate_mapping

# Written into every run folder edgekd creates: edgekd only ever writes into, or replaces files of, a folder that
# carries it (or a run made before the marker existed: recipe.yaml + checkpoints/), never a folder of the user's.
MARKER = ".edgekd-run"


def is_edgekd_folder(path: Path) -> bool:
    """Made by edgekd: the marker, or (older runs) a recipe.yaml/recipe.json beside a checkpoints/ folder."""
    path = Path(path)
    legacy = ((path / "recipe.yaml").is_file() or (path / "recipe.json").is_file()) and (path / "checkpoints").is_dir()
    return (path / MARKER).is_file() or legacy


def claim_folder(path: Path, kind: str) -> Path:
    """Make ``path`` an edgekd output folder: a new or empty folder, or one edgekd made before.

    Refuses a file, or a non-empty folder edgekd did not write (a user's folder would get recipe.yaml overwritten
    and student/ replaced), before anything is written."""
    from edgekd import __version__
    from edgekd.train.checkpoint import atomic_write_json

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgekdError(f"run_dir {path} is a file, not a folder: set run_dir to a new folder")
    if path.is_dir() and not is_edgekd_folder(path):
        entries = sorted(p.name for p in path.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise EdgekdError(f"run_dir {path} is an existing folder that edgekd did not create ({shown}); "
                              "edgekd will not write into it: set run_dir to a new or empty folder")
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).is_file():
        atomic_write_json(path / MARKER, {"edgekd_version": __version__, "kind": kind})
    return path


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
