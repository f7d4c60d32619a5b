"""Missing optional backends: one line naming the package and the pip extra, before any work starts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from edgekd.cli import main
from edgekd.extras import NEEDS, require_export


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_every_job_names_installed_modules_here():
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for modules, extra in NEEDS.values():
        assert extra in extras and extra in extras["all"][0]  # the extra exists and `edgekd[all]` brings it
        for module, _ in modules:  # setup.sh installs every backend: the checks must pass on this machine
            assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize("target, precision, hidden, dist, extra", [
    ("tflite", "fp32", "litert_torch", "litert-torch", "tflite"),
    ("tflite", "int8", "ai_edge_quantizer", "ai-edge-quantizer", "tflite"),
    ("coreml", "palettize4", "sklearn", "scikit-learn", "coreml"),
    ("onnx", "int8", "nncf", "nncf", "compress"),
])
def test_export_without_its_backend_is_one_line(monkeypatch, capsys, tmp_path: Path, target, precision, hidden,
                                                dist, extra):
    _hide(monkeypatch, hidden)
    with pytest.raises(Exception) as info:
        require_export(target, precision)
    assert dist in str(info.value) and f"pip install 'edgekd[{extra}]'" in str(info.value)
    # the CLI checks before it opens the run: a user sees the fix, not a missing-run or import error
    assert main(["export", str(tmp_path / "no-run"), "--target", target, "--precision", precision]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"edgekd[{extra}]" in err[0] and dist in err[0]


def test_fp32_onnx_export_does_not_need_nncf(monkeypatch):
    _hide(monkeypatch, "nncf", "torch_pruning")
    require_export("onnx", "fp32")  # no error
