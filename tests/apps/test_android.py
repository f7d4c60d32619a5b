"""The Android app, checked without the Android SDK: aapt2 links its resources and manifest against Debian's
framework-res.apk, kotlinc compiles it against stubs of exactly the Android/LiteRT APIs it calls, and its JVM unit
tests reproduce the Python golden vectors (noise, DDIM loop, pixels, stats). Broken copies must fail.

apps/android/tools/check.py does the work (also runnable by hand); scripts/setup.sh installs its tools.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from android_build import MISSING, SKIP_REASON, android_check, build

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "android"
GOLDEN = ROOT / "apps" / "golden"
pytestmark = pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON)
CORE = APP / "app/src/main/java/dev/edgekd/demo/core"


@pytest.fixture(scope="module")
def built() -> tuple[Path, dict]:
    try:
        return build()
    except android_check.CheckFailed as exc:
        pytest.fail(f"Android check failed at {exc.step}:\n{exc.output[-3000:]}")


def _copy_app(tmp_path: Path) -> Path:
    dst = tmp_path / "android"
    shutil.copytree(APP, dst, ignore=shutil.ignore_patterns("node_modules", "build", ".gradle"))
    (tmp_path / "golden").symlink_to(GOLDEN)
    return dst


def _fails_at(app: Path, work: Path, step: str) -> str:
    work.mkdir()
    with pytest.raises(android_check.CheckFailed) as info:
        android_check.check(app, work, {}, skip_tests=True)
    assert info.value.step == step, (info.value.step, info.value.output[-2000:])
    return info.value.output


def test_resources_link_kotlin_compiles_and_jvm_tests_pass(built: tuple[Path, dict]) -> None:
    work, summary = built
    junit = summary["junit"]
    assert junit["ok"] and junit["failures"] == 0 and junit["tests_run"] >= 20, junit
    assert {c.rsplit(".", 1)[1] for c in junit["classes"]} == {"BenchmarkTest", "ManifestTest", "PixelsTest",
                                                               "PortableNoiseTest", "SamplerTest",
                                                               "SerialWorkerTest"}
    # the Android half compiled against the stubs and R
    assert {"dev/edgekd/demo/MainActivity.class", "dev/edgekd/demo/LiteRtGraphs.class"} <= set(summary["classes"])
    r_java = Path(summary["r_java"][0]).read_text()
    used = set(re.findall(r"R\.id\.(\w+)", (APP / "app/src/main/java/dev/edgekd/demo/MainActivity.kt").read_text()))
    assert used and all(re.search(rf"\b{name}\s*=", r_java) for name in used)
    # aapt2 wrote a resource APK with the binary manifest (package and SDK levels from build.gradle.kts)
    with zipfile.ZipFile(work / "resources.ap_") as apk:
        assert {"AndroidManifest.xml", "resources.arsc", "res/layout/activity_main.xml"} <= set(apk.namelist())
    merged = (work / "AndroidManifest.xml").read_text()
    assert 'package="dev.edgekd.demo"' in merged and 'android:minSdkVersion="26"' in merged


def test_jvm_tests_fail_when_the_golden_vectors_change(built: tuple[Path, dict], tmp_path: Path) -> None:
    """The JVM tests really compare with Python's numbers: nudge one pixel and one uint32 and they fail."""
    work, _ = built
    golden = tmp_path / "golden"
    shutil.copytree(GOLDEN, golden)
    sampler = json.loads((golden / "sampler.json").read_text())
    sampler["ddim"]["pixels"][100] = (sampler["ddim"]["pixels"][100] + 1) % 256
    (golden / "sampler.json").write_text(json.dumps(sampler))
    noise = json.loads((golden / "portable-noise.json").read_text())
    noise["uint32_seed42_first8"][3] += 1
    (golden / "portable-noise.json").write_text(json.dumps(noise))
    result = android_check.run_junit(work, golden)
    assert not result["ok"] and result["failures"] == 2, result
    assert "ddimLoopOverTwoGraphsMatchesDiffusers" in result["output"]
    assert "uint32StreamMatchesPythonExactly" in result["output"]


def test_on_destroy_closes_the_interpreters_on_the_worker() -> None:
    """The close is queued behind a running inference (SerialWorker, tested by SerialWorkerTest on the JVM), not
    done on the UI thread while the worker may still be inside Interpreter.runSignature."""
    text = (APP / "app/src/main/java/dev/edgekd/demo/MainActivity.kt").read_text()
    body = re.search(r"override fun onDestroy\(\) \{(.*?)\n    \}", text, re.S).group(1)
    code = "\n".join(line.split("//")[0] for line in body.splitlines())
    assert re.search(r"worker\.close \{\s*graphs\?\.close\(\)", code), code
    assert code.count("graphs?.close()") == 1 and "shutdownNow" not in code
    assert "private val worker = SerialWorker()" in text and ".execute" not in text


def test_core_imports_nothing_from_android() -> None:
    """Also enforced by the check, which compiles the core with org.json and JUnit only on the classpath."""
    for path in CORE.glob("*.kt"):
        imports = re.findall(r"^import\s+([\w.]+)", path.read_text(), re.M)
        assert not [i for i in imports if i.startswith(("android.", "org.tensorflow."))], path


def test_a_type_error_in_kotlin_fails_the_check(tmp_path: Path) -> None:
    app = _copy_app(tmp_path)
    sampler = app / "app/src/main/java/dev/edgekd/demo/core/Sampler.kt"
    text = sampler.read_text()
    assert "val sqrtA = sqrt(a)" in text
    sampler.write_text(text.replace("val sqrtA = sqrt(a)", 'val sqrtA: Float = "sqrt(a)"'))
    out = _fails_at(app, tmp_path / "work", "kotlinc core+tests")
    assert "Sampler.kt" in out


def test_a_broken_resource_fails_the_check(tmp_path: Path) -> None:
    app = _copy_app(tmp_path)
    layout = app / "app/src/main/res/layout/activity_main.xml"
    layout.write_text(layout.read_text().replace('android:text="@string/generate"', 'android:text="@string/no_such_string"'))
    out = _fails_at(app, tmp_path / "work", "aapt2 link")
    assert "no_such_string" in out
