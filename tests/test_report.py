"""`edgekd profile` of every generator and `edgekd report`: a tiny run profiled for real, its HTML report opened in
headless Chromium (plots and grids present and non-blank, screenshot saved); latency statistics; KID; --inception."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.cli import main
from edgekd_testing import needs_fmnist, tiny_recipe, write_recipe

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    """A tiny distilled run with ONNX student + teacher step, profiled (4 generators) and rendered."""
    from edgekd.distill import distill
    from edgekd.export import export_run
    from edgekd.recipe import load_recipe

    base = tmp_path_factory.mktemp("report")
    recipe = tiny_recipe(tiny_teacher_dir, base / "run", trajectory={"num_samples": 24, "heldout": 4},
                         train={"steps": 4, "eval_every": 2, "sample_every": 4, "checkpoint_every": 4},
                         profile={"fid_samples": 12, "latency_repeats": 5, "threads": [1, 2, 4, 64]})
    run = distill(load_recipe(write_recipe(base / "tiny.yaml", recipe)))
    export_run(run, exporter="torchscript")
    export_run(run, teacher=True, exporter="torchscript")
    assert main(["report", str(run)]) == 0  # no profile yet: `report` profiles first, then renders
    return run


@pytest.mark.slow  # (with the module's other profiled_run tests) one tiny run distilled, exported, profiled
@needs_fmnist
def test_profile_covers_every_generator_with_complete_figures(profiled_run: Path) -> None:
    from edgekd.profile.measure import machine_threads

    profile = json.loads((profiled_run / "report" / "profile.json").read_text())
    names = [r["name"] for r in profile["rows"]]
    assert names == ["teacher DDIM-3 torch", "teacher DDIM-3 onnxruntime", "student torch", "student onnxruntime"]
    assert profile["threads"] == [t for t in (1, 2, 4) if t <= machine_threads()]  # 64 dropped: capped by the cores
    for row in profile["rows"]:
        assert set(row["latency_ms"]) == {f"{t}t" for t in profile["threads"]}
        assert all(5 <= n <= 5 for n in row["repeats"].values())  # latency_repeats 5: the floor and the cap
        for key, median in row["latency_ms"].items():
            assert 0 < median <= row["latency_p90_ms"][key]
        assert row["first_run_ms"] > row["load_ms"] > 0
        assert row["peak_rss_bytes"] > row["baseline_rss_bytes"] > 10e6  # a Python process with torch is > 10 MB
        assert row["model_bytes"] > 0 and row["params"] > 0 and row["macs_per_image"] > 0
        assert row["fid"] > 0 and row["kid"] is not None and row["kid_std"] >= 0
    teacher, teacher_onnx, student, student_onnx = profile["rows"]
    assert teacher["reference"] and teacher["psnr_vs_teacher"] is None
    assert teacher_onnx["psnr_vs_teacher"] > 60  # the same teacher in onnxruntime, on the same noise
    assert student_onnx["psnr_vs_teacher"] == pytest.approx(student["psnr_vs_teacher"], abs=0.5)
    assert student["speedup"]["teacher DDIM-3 torch"]["1t"] == pytest.approx(
        teacher["latency_ms"]["1t"] / student["latency_ms"]["1t"])
    assert student_onnx["manifest"]["parity"]["passed"] and student_onnx["manifest"]["path"].endswith(
        "student.manifest.json")
    assert "Fashion-MNIST classifier" in profile["quality"]["feature_net"]  # says which feature network was used
    md = (profiled_run / "report" / "report.md").read_text()
    assert md.count("| student onnxruntime |") == 2 and "plots/latency_vs_fid.png" in md  # table + exports table
    for png in ("latency_vs_fid.png", "size_memory.png", "latency_threads.png"):
        assert (profiled_run / "report" / "plots" / png).stat().st_size > 5000


@needs_fmnist
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium not installed (scripts/setup.sh installs it)")
def test_report_opens_in_chromium_with_non_blank_plots_and_grids(profiled_run: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    html = (profiled_run / "report" / "index.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained, no CDN
    shot = profiled_run / "report" / "screenshot.png"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                   headless=True, args=CHROMIUM_FLAGS,
                                                   viewport={"width": 1280, "height": 900})
        try:
            page = ctx.new_page()
            page.goto((profiled_run / "report" / "index.html").as_uri())
            page.wait_for_load_state("load")
            images = page.evaluate("""() => Array.from(document.images).map(img => {
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                const d = g.getImageData(0, 0, c.width, c.height).data;
                let n = 0, s = 0, s2 = 0;
                for (let i = 0; i < d.length; i += 4) { const v = d[i] + d[i + 1] + d[i + 2]; n++; s += v; s2 += v * v; }
                return {id: img.dataset.testid, w: img.naturalWidth, h: img.naturalHeight,
                        variance: n ? s2 / n - (s / n) ** 2 : 0};
            })""")
            rows = page.locator("table").first.locator("tbody tr").count()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            ctx.close()
    found = {i["id"]: i for i in images}
    assert set(found) == {"latency-vs-fid", "size-memory", "latency-threads", "sample-grid"}
    for info in images:
        assert info["w"] > 100 and info["h"] > 100 and info["variance"] > 10, info
    assert rows == 4
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape[0] > 900 and img.var() > 10


def test_latency_is_the_median_of_repeats_after_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted clock: a slow warm-up call (1000 ms) is not counted; median and p90 are those of the repeats."""
    from edgekd.profile import measure

    durations = iter([1000.0, 40.0, 10.0, 30.0, 20.0, 50.0])  # warm-up, then 5 repeats (ms)
    clock = {"now": 0.0, "pending": 0.0}

    def perf_counter() -> float:
        return clock["now"] / 1000.0

    def call() -> None:
        clock["now"] += next(durations)

    monkeypatch.setattr(measure.time, "perf_counter", perf_counter)
    stats = measure.time_calls(call, repeats=5, warmup=1)
    assert stats.samples_ms == pytest.approx([40.0, 10.0, 30.0, 20.0, 50.0])
    assert stats.median_ms == pytest.approx(30.0) and stats.p90_ms == pytest.approx(46.0)  # numpy's linear p90
    assert stats.p90_ms == pytest.approx(float(np.percentile(stats.samples_ms, 90)))

    class Gen:  # per image: a batch of 2 halves the figure
        def generate(self, noise: torch.Tensor) -> torch.Tensor:
            clock["now"] += 100.0
            return noise

    assert measure.latency_ms(Gen(), torch.zeros(2, 1, 4, 4), repeats=3) == pytest.approx(50.0)
    assert measure.thread_counts([1, 2, 4, 10_000]) == [t for t in (1, 2, 4) if t <= measure.machine_threads()]

    # a slow generator (warm-up 1 s) within a 4 s budget: 5 repeats (the floor), not the 15 asked for
    durations = iter([1000.0] + [900.0, 1100.0, 1000.0, 950.0, 1050.0] + [1.0] * 10)
    slow = measure.time_calls(call, repeats=15, warmup=1, budget_s=4.0)
    assert slow.repeats == 5 and slow.median_ms == pytest.approx(1000.0)
    durations = iter([10.0] + [10.0] * 15)  # a fast one keeps every repeat
    assert measure.time_calls(call, repeats=15, warmup=1, budget_s=4.0).repeats == 15


def test_kid_and_fid_from_shared_features() -> None:
    from edgekd.profile.quality import features, fid, fid_from_features, kid, kid_from_features

    class Net(torch.nn.Module):
        num_features = 8

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(x, (2, 4)).flatten(1)

    g = torch.Generator().manual_seed(0)
    a = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    b = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    shifted = (b * 0.5 + 0.4).clamp(-1, 1)
    fa, fb, fs = features(a, Net()), features(b, Net()), features(shifted, Net())
    assert fid_from_features(fa, fs) == pytest.approx(fid(a, shifted, Net()), rel=1e-4)
    same, _ = kid_from_features(fa, fb)
    far, far_std = kid_from_features(fa, fs)
    assert abs(same) < far and far > 0 and far_std >= 0
    assert kid(a, shifted, Net()) == kid(a, shifted, Net())  # fixed subset seed: reruns agree


def test_inception_path_torchscript_onnx_and_bad_file(tmp_path: Path) -> None:
    """--inception takes a whole network (TorchScript with the NVlabs convention, or ONNX); anything else is one line."""
    from edgekd.errors import EdgekdError
    from edgekd.profile.features import feature_network
    from edgekd.profile.quality import fid

    class Extractor(torch.nn.Module):  # uint8 RGB in, like NVlabs' inception-2015-12-05.pt
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            x = x.float() / 255.0
            return torch.nn.functional.adaptive_avg_pool2d(x, (2, 2)).flatten(1)

    ts = tmp_path / "inception.pt"
    torch.jit.script(Extractor()).save(str(ts))
    choice = feature_network(ts, "builtin:fid/fmnist-classifier")
    assert choice.kind == "inception-torchscript" and choice.net.num_features == 12 and "inception.pt" in choice.description
    g = torch.Generator().manual_seed(1)
    real = torch.rand(32, 1, 32, 32, generator=g) * 2 - 1
    assert fid(real, (real * 0.3).clamp(-1, 1), choice.net) > fid(real, real, choice.net)

    class Plain(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(x / 255.0, (2, 2)).flatten(1)

    onnx_path = tmp_path / "features.onnx"
    torch.onnx.export(Plain(), (torch.zeros(1, 3, 16, 16),), str(onnx_path), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "n"}})
    onnx_choice = feature_network(onnx_path, "builtin:fid/fmnist-classifier")
    assert onnx_choice.kind == "inception-onnx" and onnx_choice.net(real[:3]).shape == (3, 12)

    bad = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(EdgekdError, match="TorchScript"):
        feature_network(bad, "builtin:fid/fmnist-classifier")


@needs_fmnist
def test_bad_inception_file_is_one_line_before_any_work(profiled_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    before = (profiled_run / "report" / "profile.json").read_bytes()
    assert main(["profile", str(profiled_run), "--inception", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgekd: error: --inception") and "TorchScript" in err
    assert (profiled_run / "report" / "profile.json").read_bytes() == before


@needs_fmnist
def test_report_refuses_a_profile_of_another_format(tmp_path: Path, profiled_run: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(profiled_run, run, ignore=shutil.ignore_patterns("exports", "checkpoints", "tb", "samples"))
    (run / "report" / "profile.json").write_text(json.dumps({"rows": []}))  # the old single-table profile
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "re-run `edgekd profile" in err


def _benchmark(manifest: Path, **changes: object) -> dict:
    """A valid edgekd.device-benchmark v1 document (docs/device-benchmark.md) for the export ``manifest`` describes
    (manifest version 2 `model` or version 3 `models`)."""
    m = json.loads(manifest.read_text())
    models = m.get("models") or [m["model"]]
    doc = {
        "schema": "edgekd.device-benchmark", "version": 1,
        "device": {"name": "Pixel 8", "platform": "android", "os": "Android 15"},
        "runtime": {"name": "onnxruntime-mobile", "version": "1.20.0", "backend": "cpu", "threads": 4},
        "model": {"manifest": manifest.name, "name": m["name"], "target": m.get("target") or models[0]["target"],
                  "precision": m.get("precision", "fp32"), "sha256": [g["sha256"] for g in models]},
        "warmup": 3, "runs": 5, "first_run_ms": 120.5,
        "latency_ms": {"median": 5.0, "p90": 6.0, "samples": [4.0, 5.0, 6.0, 5.5, 4.5]},
        "peak_memory_mb": 41.2, "created": "2026-11-29T01:30:00Z",
    }
    doc.update(changes)
    return doc


@needs_fmnist
def test_device_rows_render_beside_the_host_row_and_a_bad_file_merges_nothing(
        profiled_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import base64
    import io
    import re

    from PIL import Image

    run = tmp_path / "run"
    shutil.copytree(profiled_run, run)
    manifest = run / "exports" / "onnx" / "student.manifest.json"
    good = tmp_path / "bench.json"
    good.write_text(json.dumps(_benchmark(manifest)))
    assert main(["profile", str(run), "--import", str(good)]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_benchmark(manifest), "runs": 7}))  # 5 samples but runs 7: inconsistent
    before = (run / "report" / "profile.json").read_bytes()
    capsys.readouterr()
    assert main(["profile", str(run), "--import", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgekd: error: benchmark file") and "runs" in err
    assert (run / "report" / "profile.json").read_bytes() == before  # nothing merged

    assert main(["report", str(run)]) == 0
    page = (run / "report" / "index.html").read_text()
    assert "Pixel 8 · onnxruntime-mobile 1.20.0 (cpu, 4t)" in page and "this host · onnxruntime" in page
    match = re.search(r'data-testid="device-latency" alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert match, "device plot missing"
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(match.group(1)))).convert("L"), dtype=np.float64)
    assert pixels.var() > 10
    md = (run / "report" / "report.md").read_text()
    assert "| Pixel 8 · onnxruntime-mobile 1.20.0 (cpu, 4t) | " in md and "plots/device_latency.png" in md


def test_inventory_lists_every_generator_of_a_run_and_its_compressed_runs(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    """Teacher rows per step count first, then the student in torch and every export (each target and precision),
    then each derived run under compressed/; CoreML is listed with the reason it cannot run off macOS."""
    import platform

    import yaml

    from apps_testing import fake_export
    from edgekd.profile.inventory import all_specs

    def make_run(path: Path, exports: list[tuple[str, str, str]]) -> None:
        path.mkdir(parents=True)
        (path / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe(tiny_teacher_dir, path)))
        (path / "student").mkdir()
        (path / "student" / "config.json").write_text("{}")
        for target, stem, role in exports:
            folder = tmp_path / "scratch" / f"{path.name}-{target}-{stem}"
            manifest = json.loads(fake_export(folder, target).read_text())
            manifest.update(role=role, precision="int8" if stem.endswith("_int8") else "fp32")
            (path / "exports" / target).mkdir(parents=True, exist_ok=True)
            (path / "exports" / target / f"{stem}.manifest.json").write_text(json.dumps(manifest))

    run = tmp_path / "run"
    make_run(run, [("onnx", "student", "student"), ("onnx", "student_int8", "student"),
                   ("tflite", "student", "student"), ("coreml", "student", "student"),
                   ("onnx", "teacher_step", "teacher_step")])
    make_run(run / "compressed" / "pruned-50", [("onnx", "student", "student")])
    specs = all_specs(run, [3, 10])
    assert [s["label"] for s in specs] == [
        "teacher DDIM-3 torch", "teacher DDIM-10 torch", "teacher DDIM-3 onnxruntime", "teacher DDIM-10 onnxruntime",
        "student torch", "student coreml", "student onnxruntime", "student onnxruntime int8", "student litert",
        "pruned-50: student torch", "pruned-50: student onnxruntime"]
    assert [s["reference"] for s in specs if s["group"] == "teacher"] == [True, True, False, False]
    coreml = next(s for s in specs if s["runtime"] == "coreml")
    assert (coreml["skip"] is None) == (platform.system() == "Darwin")
    assert all(s["skip"] is None for s in specs if s["runtime"] != "coreml")
