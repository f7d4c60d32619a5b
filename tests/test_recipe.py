"""Bad recipes give one clear line and exit code 2; good ones validate, with overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.cli import main
from edgekd.errors import RecipeError
from edgekd.recipe import load_recipe
from edgekd_testing import FMNIST, needs_fmnist, tiny_recipe, write_recipe


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture()
def good(tmp_path: Path, tiny_teacher_dir: Path) -> dict:
    return tiny_recipe(tiny_teacher_dir, tmp_path / "run")


@needs_fmnist
def test_good_recipe_validates_with_overrides(tmp_path: Path, good: dict) -> None:
    path = write_recipe(tmp_path / "r.yaml", good)
    recipe = load_recipe(path, ["train.steps=7", "student.block_out_channels=[8, 16]", "method.loss=l2"])
    assert recipe.train.steps == 7
    assert recipe.student.block_out_channels == [8, 16]
    assert recipe.method.name == "denoising_student" and recipe.method.loss == "l2"
    assert recipe.student.kind == "unet"


CASES = [
    # (mutation, expected fragments of the one error line)
    (lambda r: r["train"].update(stepz=5), ["unknown key 'train.stepz'", "did you mean 'steps'"]),
    (lambda r: r.update(colour="red"), ["unknown key 'colour'"]),
    (lambda r: r["train"].update(steps="many"), ["key 'train.steps'", "integer", "'many'"]),
    (lambda r: r["teacher"].update(path="/nonexistent/teacher"), ["key 'teacher.path'", "does not exist"]),
    (lambda r: r["data"].update(path="/nonexistent/fmnist"), ["key 'data.path'", "not found", "dataset-fashion-mnist"]),
    (lambda r: r["trajectory"].update(heldout=100), ["key 'trajectory'", "heldout (100) must be smaller"]),
    (lambda r: r["student"].pop("block_out_channels"), ["key 'student'", "init: scratch needs block_out_channels"]),
    (lambda r: r["student"].update(block_out_channels=[6, 8]), ["not divisible by norm_num_groups"]),
    (lambda r: r["method"].update(name="magic") if "method" in r else r.update(method={"name": "magic"}),
     ["key 'method'", "magic"]),
    (lambda r: r.pop("teacher"), ["missing required key 'teacher'"]),
]


@needs_fmnist
@pytest.mark.parametrize("mutate,fragments", CASES)
def test_bad_recipe_one_line_exit_2(tmp_path: Path, good: dict, capsys: pytest.CaptureFixture, mutate, fragments) -> None:
    mutate(good)
    path = write_recipe(tmp_path / "bad.yaml", good)
    code, err = run_cli(["distill", str(path)], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edgekd: error: ") and str(path) in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_invalid_yaml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nteacher: [unclosed\n")
    code, err = run_cli(["distill", str(bad)], capsys)
    assert code == 2 and "is not valid YAML" in err and len(err.splitlines()) == 1
    code, err = run_cli(["distill", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "recipe file not found" in err


def test_bad_override(tmp_path: Path, good: dict) -> None:
    path = write_recipe(tmp_path / "r.yaml", good)
    with pytest.raises(RecipeError, match="must look like key.sub=value"):
        load_recipe(path, ["train.steps"], check_files=False)
    with pytest.raises(RecipeError, match="unknown key 'train.nope'"):
        load_recipe(path, ["train.nope=1"], check_files=False)


def test_packaged_quickstart_recipe_is_valid() -> None:
    from edgekd.pipeline import QUICKSTART_RECIPE

    recipe = load_recipe(QUICKSTART_RECIPE, check_files=False)
    assert recipe.teacher.path.startswith("builtin:")
    assert Path(FMNIST) == Path(recipe.data.path)
