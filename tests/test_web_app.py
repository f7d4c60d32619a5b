"""The web app (apps/web) in real headless Chromium: for a one-step student and an O2MKD student (a DDIM loop over
several graphs), exported to ONNX and TFLite from tiny runs, the browser's output for a seed equals Python's
(edgekd.runtime over onnxruntime / the ai-edge-litert interpreter, from the same manifest v3 and the same portable
noise) within 1e-4; the canvas shows an image, a latency is shown, the benchmark JSON comes back and `edgekd profile --import`
takes it (and refuses a broken copy). One browser for the module; Debian's chromium, never a downloaded one.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edgekd.cli import main
from edgekd.portable_noise import portable_noise

from edgekd_testing import ROOT

CHROMIUM = Path("/usr/bin/chromium")
WEB = ROOT / "apps" / "web"
GOLDEN = ROOT / "apps" / "golden" / "portable-noise.json"
# shared/STACK.md: a headless Chromium that reaches nothing but the local server
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SEED = 7

_missing = [why for cond, why in (
    (CHROMIUM.is_file(), "Debian chromium is not installed (/usr/bin/chromium; scripts/setup.sh installs it)"),
    (importlib.util.find_spec("playwright") is not None, "PyPI playwright is not installed (the test extra)"),
    ((WEB / "node_modules" / "onnxruntime-web" / "package.json").is_file()
     and (WEB / "node_modules" / "@litertjs" / "core" / "package.json").is_file(),
     "apps/web/node_modules is missing (run `npm ci` in apps/web; scripts/setup.sh does)"),
) if not cond]
# slow: the four exports (litert-torch conversions dominate) take 1-3 min on a shared 2-core machine
pytestmark = [pytest.mark.skipif(bool(_missing), reason="; ".join(_missing)), pytest.mark.usefixtures("one_thread"),
              pytest.mark.slow]


# --------------------------------------------------------------------------------------------- runs and exports


def _tiny_teacher(folder: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from edgekd.teachers.diffusers_teacher import save_teacher

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 8), layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=4)
    save_teacher(unet.eval(), dict(DDPMScheduler(num_train_timesteps=1000, clip_sample=True).config), folder)


def _make_run(root: Path, student: dict, steps: int) -> Path:
    """A run whose (untrained) student is saved: export needs nothing more, and untrained weights still make a
    non-trivial image, which is all a same-input-same-output check needs."""
    from edgekd.recipe import Recipe, validate_mapping
    from edgekd.rundir import RunDir
    from edgekd.students import save_student
    from edgekd.teachers.diffusers_teacher import load_teacher

    raw = {"name": root.name, "run_dir": str(root / "run"), "teacher": {"path": str(root.parent / "teacher"), "steps": steps},
           "student": student, "export": {"parity_samples": 2}}
    if student.get("kind") == "o2mkd":
        raw["method"] = {"name": "o2mkd"}
    recipe = validate_mapping(raw, Recipe, "test")
    run = RunDir(root / "run")
    run.path.mkdir(parents=True)
    run.save_recipe(recipe)
    teacher = load_teacher(recipe.teacher.path)
    torch.manual_seed(1)
    if student.get("kind") == "o2mkd":
        from edgekd.students.o2mkd import build_o2mkd_student

        model = build_o2mkd_student(recipe.student, teacher, steps, recipe.teacher.timestep_spacing)
    else:
        from edgekd.students.unet_student import build_unet_student

        model = build_unet_student(recipe.student, teacher.unet, 999)
    save_student(model.eval(), run.student_dir)
    return run.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny runs, each exported to ONNX and TFLite with `edgekd export` (manifest v3)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("web")
    _tiny_teacher(base / "teacher")
    small = {"init": "scratch", "block_out_channels": [8, 8], "norm_num_groups": 4}
    out = {"one_step": _make_run(base / "one-step", small, 4),
           "o2mkd": _make_run(base / "o2mkd", {"kind": "o2mkd", "boundaries": [500], **small}, 3)}
    apps = base / "apps"
    for app in INTO_APP.values():
        (apps / app).mkdir(parents=True, exist_ok=True)
    for kind, run in out.items():
        for target in ("onnx", "tflite"):
            into = ["--into-app", INTO_APP[kind, target], "--apps-dir", str(apps)] if (kind, target) in INTO_APP else []
            assert main(["export", str(run), "--target", target, "--exporter", "torchscript", *into]) == 0
    out["apps"] = apps
    return out


# two of the four exports also go into an app (`export --into-app`), at no extra export cost
INTO_APP = {("o2mkd", "onnx"): "web", ("one_step", "tflite"): "android"}


# --------------------------------------------------------------------------------------------- Python reference


def python_reference(manifest_path: Path, seed: int) -> np.ndarray:
    """The export in Python through edgekd's runtime layer (onnxruntime for .onnx, the ai-edge-litert interpreter for
    .tflite), driven by the same manifest, on the same portable noise as the page."""
    from edgekd.runtime import open_generator

    m = json.loads(manifest_path.read_text())
    noise = torch.from_numpy(portable_noise(seed, 0, 1, tuple(m["noise"]["shape"])))
    with torch.no_grad():
        return open_generator(manifest_path, threads=1).generate(noise).numpy().reshape(-1)


# --------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield b
        b.close()


class Served:
    """`edgekd demo`'s server for one run and target, on a free port, in a thread."""

    def __init__(self, run: Path, target: str) -> None:
        from edgekd.apps.demo import make_server

        self.server, self.url = make_server(run, target, port=0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def _open(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.edgekd && (window.edgekd.ready || window.edgekd.error)")
    assert page.evaluate("window.edgekd.error") is None
    assert page.evaluate("crossOriginIsolated") is True  # the demo's COOP/COEP headers took effect
    return page, errors


CASES = [("one_step", "onnx"), ("one_step", "tflite"), ("o2mkd", "onnx"), ("o2mkd", "tflite")]


@pytest.mark.parametrize("kind,target", CASES)
def test_browser_output_equals_python_for_the_same_seed(browser, runs: dict[str, Path], tmp_path: Path, kind: str,
                                                        target: str):
    run = runs[kind]
    manifest = run / "exports" / target / "student.manifest.json"
    m = json.loads(manifest.read_text())
    assert m["format_version"] == 3 and m["sampling"]["kind"] == ("one_step" if kind == "one_step" else "ddim")
    if kind == "o2mkd":
        assert len(m["models"]) == 2 and len(set(m["sampling"]["graph_per_step"])) == 2
    with Served(run, target) as url:
        page, errors = _open(browser, url)
        # the UI path: seed field + Generate button
        page.fill("#seed", str(SEED))
        page.click("#generate")
        page.wait_for_function(f"window.edgekd.last && window.edgekd.last.seed === {SEED}")
        got = np.array(page.evaluate("window.edgekd.last.image"), dtype=np.float32)
        want = python_reference(manifest, SEED)
        assert got.shape == want.shape
        diff = float(np.abs(got - want).max())
        print(f"{kind} {target}: max |browser - python| = {diff:.2e}")
        assert diff < 1e-4, diff
        assert want.std() > 1e-3  # a real image, not a constant: the comparison means something

        crop = m["image"]["crop"]
        pixels = page.evaluate("""() => { const c = document.getElementById('canvas');
            return {w: c.width, h: c.height, data: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)}; }""")
        assert (pixels["h"], pixels["w"]) == tuple(crop[2:])
        gray = np.array(pixels["data"], dtype=np.uint8).reshape(pixels["h"], pixels["w"], 4)[..., 0]
        top, left, h, w = crop
        expected = np.round((np.clip(want.reshape(32, 32), -1, 1) + 1) * 127.5)[top:top + h, left:left + w]
        assert np.abs(gray.astype(int) - expected).max() <= 1 and gray.std() > 1  # the manifest's to_pixels + crop
        assert re.fullmatch(r"\d+\.\d\d ms", page.inner_text("#latency")), page.inner_text("#latency")
        assert re.fullmatch(r"\d+\.\d ms", page.inner_text("#first-run"))
        runtime = "onnxruntime-web" if target == "onnx" else "litert.js"
        assert page.inner_text("#runtime").startswith(runtime)
        shot = tmp_path / f"web-{kind}-{target}.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 5000
        assert errors == []
        page.close()


def test_portable_noise_in_the_browser_matches_the_golden_values(browser, runs: dict[str, Path]):
    golden = json.loads(GOLDEN.read_text())
    with Served(runs["one_step"], "onnx") as url:
        page, _ = _open(browser, url)
        for seed, values in golden["normals"].items():
            got = page.evaluate(f"Array.from(window.edgekd.portableNoise({seed}, [{len(values)}]))")
            assert np.array_equal(np.array(got, dtype=np.float32), np.array(values, dtype=np.float32)), seed
        page.close()


@pytest.mark.parametrize("kind,target", [("o2mkd", "onnx"), ("one_step", "tflite")])
def test_benchmark_json_comes_back_and_imports_into_the_profile(browser, runs: dict[str, Path], tmp_path: Path,
                                                                capsys, kind: str, target: str):
    run = runs[kind]
    with Served(run, target) as url:
        page, _ = _open(browser, url + "&device=headless-ci")
        bench = page.evaluate("window.edgekd.benchmark({runs: 5, warmup: 1})")
        assert page.evaluate("window.edgekd.lastBenchmark.runs") == 5
        with page.expect_download() as download:
            page.click("#download")
        saved = tmp_path / "downloaded.json"
        download.value.save_as(saved)
        page.close()
    assert json.loads(saved.read_text()) == bench  # the download button gives the same document
    assert bench["device"] == {**bench["device"], "name": "headless-ci", "platform": "web"}
    assert bench["runtime"]["name"] == ("onnxruntime-web" if target == "onnx" else "litert.js")
    assert bench["runtime"]["threads"] >= 1 and len(bench["latency_ms"]["samples"]) == 5

    assert main(["profile", str(run), "--import", str(saved)]) == 0
    rows = json.loads((run / "report" / "profile.json").read_text())["device_rows"]
    assert any(r["label"].startswith(f"headless-ci · {bench['runtime']['name']}") for r in rows)
    assert "headless-ci" in (run / "report" / "profile.md").read_text()

    broken = dict(bench, runs=6)  # samples no longer match runs
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps(broken))
    before = (run / "report" / "profile.json").read_bytes()
    capsys.readouterr()
    assert main(["profile", str(run), "--import", str(bad)]) == 2
    assert "latency_ms.samples has 5 values but runs is 6" in capsys.readouterr().err
    assert (run / "report" / "profile.json").read_bytes() == before


def test_export_into_app_copies_the_export_where_the_app_reads_it(runs: dict[str, Path]):
    from edgekd.apps.into_app import APP_MODEL_DIRS

    for (kind, target), app in INTO_APP.items():
        src = runs[kind] / "exports" / target
        dest = runs["apps"] / app / APP_MODEL_DIRS[app]
        manifest = json.loads((dest / "student.manifest.json").read_text())
        assert manifest == json.loads((src / "student.manifest.json").read_text())
        files = sorted(g["file"] for g in manifest["models"])
        assert sorted(p.name for p in dest.iterdir()) == sorted([*files, "student.manifest.json"])
        for f in files:
            assert (dest / f).read_bytes() == (src / f).read_bytes()


def test_noise_module_matches_golden_values_under_node():
    """The same JS module under Node (no browser needed): bit-exact float32 normals and the uint32 stream."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = f"""
      import {{readFileSync}} from "node:fs";
      import {{portableNormals, mulberry32}} from "{(WEB / 'lib' / 'noise.js').as_uri()}";
      const g = JSON.parse(readFileSync({json.dumps(str(GOLDEN))}));
      const next = mulberry32(42);
      const ok = [JSON.stringify(Array.from({{length: 8}}, () => next())) === JSON.stringify(g.uint32_seed42_first8)];
      for (const [seed, v] of Object.entries(g.normals)) {{
        const got = portableNormals(Number(seed), v.length);
        ok.push(v.every((x, i) => Math.fround(x) === got[i]));
      }}
      console.log(JSON.stringify(ok));
    """
    out = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [True] * (1 + len(json.loads(GOLDEN.read_text())["normals"]))
