"""The apps' contract with the exporter: what the Kotlin and Swift code feed and read (names, shapes, dtypes, layout,
signature, manifest keys) is what `edgekd export` writes, for a one-step student and a DDIM step graph.

A tiny run is exported for real to TFLite (ai-edge-litert reads the signature) and CoreML (coremltools reads the
.mlpackage spec with skip_model_load: no prediction on Linux), each with its manifest v3. Then:
- the constants the apps use (Contract.kt, Contract.swift) agree with each other and with the models and manifests;
- the Android app's own manifest parser (compiled by tests/apps/android_build.py) accepts every exported manifest
  and derives the same graphs, shapes and dtypes; the manifest keys the Swift decoder needs are present.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("litert_torch", reason="litert-torch not installed (pip install -e '.[tflite]')")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed (pip install -e '.[tflite]')")
pytest.importorskip("coremltools", reason="coremltools not installed (pip install -e '.[coreml]')")

from android_build import MISSING, SKIP_REASON, android_check, build  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
KOTLIN = ROOT / "apps/android/app/src/main/java/dev/edgekd/demo/core"
SWIFT = ROOT / "apps/ios/EdgekdDemo/Core"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).upper()


def _constants(text: str, scalar: str, collection: str) -> dict:
    out: dict = {}
    for name, value in re.findall(scalar, text):
        out[_snake(name)] = int(value) if value.isdigit() else value.strip('"')
    for name, items in re.findall(collection, text):
        out[_snake(name)] = set(re.findall(r'"([^"]+)"', items))
    return out


def kotlin_contract() -> dict:
    return _constants((KOTLIN / "Contract.kt").read_text(), r"const val (\w+) = (\"[^\"]*\"|\d+)",
                      r"val (\w+) = setOf\(([^)]*)\)")


def swift_contract() -> dict:
    return _constants((SWIFT / "Contract.swift").read_text(), r"static let (\w+) = (\"[^\"]*\"|\d+)\n",
                      r"static let (\w+): Set<String> = \[([^\]]*)\]")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Manifests of a tiny student (one step) and teacher step (DDIM), exported to TFLite and CoreML."""
    from diffusers import DDPMScheduler, UNet2DModel

    from edgekd.export import export_run
    from edgekd.recipe import Recipe, validate_mapping
    from edgekd.rundir import RunDir
    from edgekd.students import save_student
    from edgekd.students.unet_student import build_unet_student
    from edgekd.teachers.diffusers_teacher import save_teacher

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("contract")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()
    save_teacher(unet, dict(DDPMScheduler(clip_sample=True).config), root / "teacher")
    recipe = validate_mapping({
        "name": "tiny-apps", "run_dir": str(root / "run"), "teacher": {"path": str(root / "teacher"), "steps": 4},
        "student": {"init": "scratch", "block_out_channels": [8, 16], "norm_num_groups": 4},
        "export": {"parity_samples": 2},
    }, Recipe, "test")
    run = RunDir(root / "run")
    run.path.mkdir()
    run.save_recipe(recipe)
    save_student(build_unet_student(recipe.student, unet, 999).eval(), run.student_dir)
    out = {"run": run.path}
    for target in ("tflite", "coreml"):
        for teacher, label in ((False, "one_step"), (True, "ddim")):
            model = export_run(run.path, target=target, teacher=teacher)
            out[f"{target}/{label}"] = model.with_name(model.name.split(".")[0] + ".manifest.json")
    return out


def _manifest(path: Path) -> dict:
    m = json.loads(path.read_text())
    assert m["format_version"] == 3, f"{path}: the apps read manifest v3 (docs/manifest-v3.md)"
    return m


def _expected_io(m: dict, contract: dict) -> tuple[set[str], str]:
    if m["sampling"]["kind"] == "one_step":
        return {contract["NOISE_INPUT"]}, contract["IMAGE_OUTPUT"]
    return {contract["SAMPLE_INPUT"], contract["TIMESTEP_INPUT"]}, contract["EPSILON_OUTPUT"]


def test_kotlin_and_swift_constants_agree_with_edgekd() -> None:
    from edgekd.portable_noise import NAME

    k, s = kotlin_contract(), swift_contract()
    shared = ["MANIFEST_VERSION", "ASSET_DIR", "MANIFEST_FILE", "NOISE_INPUT", "IMAGE_OUTPUT", "SAMPLE_INPUT",
              "TIMESTEP_INPUT", "EPSILON_OUTPUT", "LAYOUT", "NOISE_GENERATOR", "PREDICTION", "IMAGE_DTYPES",
              "MANIFEST_SUFFIX"]
    assert {n: k[n] for n in shared} == {n: s[n] for n in shared}
    assert k["MANIFEST_VERSION"] == 3 and k["NOISE_GENERATOR"] == NAME and k["SIGNATURE_KEY"] == "serving_default"
    assert k["TIMESTEP_DTYPES"] >= s["TIMESTEP_DTYPES"]


def test_app_code_takes_every_io_name_from_its_contract() -> None:
    """The names live in Contract.kt / Contract.swift only: no other app source spells them as string literals
    (the manifest parsers are left out: "image" and "noise" are also the names of manifest sections there)."""
    k = kotlin_contract()
    names = {k[n] for n in ("NOISE_INPUT", "IMAGE_OUTPUT", "SAMPLE_INPUT", "TIMESTEP_INPUT", "EPSILON_OUTPUT",
                            "SIGNATURE_KEY")}
    sources = [p for p in (ROOT / "apps/android/app/src/main").rglob("*.kt") if p.stem not in ("Contract", "Manifest")]
    sources += [p for p in (ROOT / "apps/ios/EdgekdDemo").rglob("*.swift") if p.stem not in ("Contract", "Manifest")]
    assert len(sources) >= 12
    for path in sources:
        literals = set(re.findall(r'"([^"\\]*)"', path.read_text()))
        assert not literals & names, (path, literals & names)


def test_tflite_signatures_match_the_manifests_and_the_kotlin_contract(exported: dict[str, Path]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    k = kotlin_contract()
    for label in ("tflite/one_step", "tflite/ddim"):
        m = _manifest(exported[label])
        inputs, output = _expected_io(m, k)
        for graph in m["models"]:
            interp = Interpreter(model_path=str(exported[label].parent / graph["file"]), num_threads=1)
            assert k["SIGNATURE_KEY"] in interp.get_signature_list()
            runner = interp.get_signature_runner(k["SIGNATURE_KEY"])
            sig_in = {n: ([int(x) for x in d["shape"]], d["dtype"].__name__) for n, d in runner.get_input_details().items()}
            sig_out = {n: ([int(x) for x in d["shape"]], d["dtype"].__name__) for n, d in runner.get_output_details().items()}
            assert sig_in == {t["name"]: (t["shape"], t["dtype"]) for t in graph["inputs"]}, label
            assert sig_out == {graph["output"]["name"]: (graph["output"]["shape"], graph["output"]["dtype"])}, label
            assert set(sig_in) == inputs and list(sig_out) == [output]
            for t in [*graph["inputs"], graph["output"]]:
                if t["name"] == k["TIMESTEP_INPUT"]:
                    assert t["dtype"] in k["TIMESTEP_DTYPES"], (label, t)
                else:
                    assert t["dtype"] in k["IMAGE_DTYPES"] and t["layout"] == k["LAYOUT"], (label, t)


def test_coreml_specs_match_the_manifests_and_the_swift_contract(exported: dict[str, Path]) -> None:
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2 as ft

    s = swift_contract()
    dtype = {ft.ArrayFeatureType.FLOAT32: "float32", ft.ArrayFeatureType.INT32: "int32",
             ft.ArrayFeatureType.FLOAT16: "float16", ft.ArrayFeatureType.DOUBLE: "float64"}
    for label in ("coreml/one_step", "coreml/ddim"):
        m = _manifest(exported[label])
        inputs, output = _expected_io(m, s)
        for graph in m["models"]:
            spec = ct.models.MLModel(str(exported[label].parent / graph["file"]), skip_model_load=True).get_spec()
            io = {f.name: ([int(x) for x in f.type.multiArrayType.shape], dtype[f.type.multiArrayType.dataType])
                  for f in [*spec.description.input, *spec.description.output]}
            manifest_io = {t["name"]: (t["shape"], t["dtype"]) for t in [*graph["inputs"], graph["output"]]}
            assert io == manifest_io, label
            assert {f.name for f in spec.description.input} == inputs
            assert [f.name for f in spec.description.output] == [output]
            for name, (_, dt) in io.items():
                assert dt in (s["TIMESTEP_DTYPES"] if name == s["TIMESTEP_INPUT"] else s["IMAGE_DTYPES"]), (label, name, dt)


def _jvm(main: str, *args: str) -> str:
    """Run a main of the Android app's compiled core/test classes (tests/apps/android_build.py)."""
    if MISSING:
        pytest.skip(SKIP_REASON)
    work, _ = build()
    stdlib = android_check.find_kotlinc().resolve().parent.parent / "lib" / "kotlin-stdlib.jar"
    cp = ":".join([str(work / "core-classes"), str(stdlib), str(android_check.JARS["json"])])
    proc = subprocess.run(["java", "-XX:+UseSerialGC", "-cp", cp, main, *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_android_parser_accepts_every_exported_manifest(exported: dict[str, Path]) -> None:
    paths = [exported[label] for label in sorted(exported) if label != "run"]
    stdout = _jvm("dev.edgekd.demo.core.ManifestCheckKt", *map(str, paths))
    assert len(stdout.splitlines()) == len(paths) == 4
    for path, line in zip(paths, stdout.splitlines()):
        parsed, m = json.loads(line), _manifest(path)
        assert "error" not in parsed, parsed
        assert parsed["kind"] == m["sampling"]["kind"]
        graphs = [m["sampling"]["graph"]] if parsed["kind"] == "one_step" else m["sampling"]["graph_per_step"]
        assert parsed["graphs"] == graphs
        assert parsed["image_shape"][1:] == m["noise"]["shape"]
        for graph in m["models"]:
            tensors = parsed["models"][graph["name"]]["tensors"]
            for t in [*graph["inputs"], graph["output"]]:
                assert tensors[t["name"]] == {"shape": t["shape"], "dtype": t["dtype"], "layout": t["layout"]}


def test_every_manifest_key_the_swift_decoder_needs_is_exported(exported: dict[str, Path]) -> None:
    """Swift decodes with convertFromSnakeCase: its non-optional stored properties are required manifest keys."""
    text = (SWIFT / "Manifest.swift").read_text()
    required = {re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
                for struct in re.findall(r"struct (?:ManifestJSON|SamplingJSON|GraphSpec|NoiseSpec|ImageSpec): Decodable \{(.*?\n)\}",
                                         text, re.S)
                for name in re.findall(r"let (\w+): [\w\[\]]+(?!\?)\n", struct)}
    assert {"format_version", "models", "sampling", "kind", "noise", "image", "file", "inputs", "output", "shape"} <= required

    def keys(value) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    for label in ("coreml/one_step", "coreml/ddim"):
        m = _manifest(exported[label])
        assert required <= keys(m), (label, required - keys(m))
        if m["sampling"]["kind"] == "ddim":
            assert {"timesteps", "graph_per_step", "alphas_cumprod", "alphas_cumprod_prev"} <= set(m["sampling"])


def test_the_android_benchmark_json_imports_into_the_profile(exported: dict[str, Path], tmp_path: Path) -> None:
    """The app's benchmark JSON (its protocol and report code, stand-in graph) passes `edgekd profile --import`."""
    device_import = pytest.importorskip("edgekd.profile.device_import",
                                        reason="edgekd profile --import (edgekd/profile/device_import.py) not present")
    for label in ("tflite/one_step", "tflite/ddim"):
        out = tmp_path / f"{label.replace('/', '-')}.json"
        _jvm("dev.edgekd.demo.core.BenchmarkSampleKt", str(exported[label]), str(out))
        row = device_import.import_benchmark(exported["run"], out)
        m = _manifest(exported[label])
        assert row["device"]["platform"] == "android" and row["runtime"]["name"] == "litert"
        assert row["model"]["sha256"] == [g["sha256"] for g in m["models"]] and row["runs"] == 5
        assert row["model"]["manifest"] == exported[label].name
