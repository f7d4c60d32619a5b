"""apps/golden/sampler.json is what apps/golden/make_sampler_golden.py computes now (diffusers, torch, numpy):
the apps' tests compare against it, so it must not drift from the Python reference or be edited by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _compare(a, b, path: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _compare(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and a and isinstance(a[0], float):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7, err_msg=path)
    else:
        assert a == b, path


def test_sampler_golden_is_current() -> None:
    spec = importlib.util.spec_from_file_location("make_sampler_golden", ROOT / "apps/golden/make_sampler_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = json.loads(json.dumps(module.build()))
    stored = json.loads((ROOT / "apps/golden/sampler.json").read_text())
    _compare(fresh, stored)
    ddim = stored["ddim"]["manifest"]["sampling"]
    assert len(set(ddim["graph_per_step"])) == 2 and ddim["clip_sample"]  # both graphs and clipping exercised
    assert min(stored["one_step"]["pixels"]) == 0 and max(stored["one_step"]["pixels"]) == 255  # clipping exercised
