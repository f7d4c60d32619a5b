#!/usr/bin/env python3
"""Build-check the Android app without the Android SDK or Gradle (neither exists here), with real tools.

What Gradle would do, step by step, with the pieces Debian and npm provide:
  1. manifest: AndroidManifest.xml plus what Gradle's manifest merger injects (package = namespace, uses-sdk from
     app/build.gradle.kts);
  2. aapt2 compile + link of res/ and the manifest against Debian's framework-res.apk (API 29): every resource
     reference (@string, @dimen, @android:style, layout attributes) must resolve; writes R.java;
  3. javac: the stub jar of exactly the Android and LiteRT APIs the app calls (apps/android/stubs, same signatures
     as the real ones, bodies throw) and R.java;
  4. kotlinc: the platform-free core (dev.edgekd.demo.core) and its JUnit tests against org.json + JUnit ONLY, which
     proves the core needs no Android; then the Android part against the core, the stubs and R;
  5. JUnit4 on the JVM (golden vectors from apps/golden, given as -Dedgekd.golden).
Prints one JSON summary line at the end; exit 0 only when every step passed.

    python apps/android/tools/check.py [--app apps/android] [--work DIR] [--skip-tests]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FRAMEWORK_RES = Path("/usr/share/android-framework-res/framework-res.apk")
JARS = {
    "json": Path("/usr/share/java/com.android.json.jar"),  # Android's own org.json (libandroid-json-java)
    "junit": Path("/usr/share/java/junit4.jar"),
    "hamcrest": Path("/usr/share/java/hamcrest-core.jar"),
}
CORE_PACKAGE = "dev/edgekd/demo/core"


class CheckFailed(Exception):
    def __init__(self, step: str, output: str):
        super().__init__(f"{step} failed")
        self.step, self.output = step, output


def find_kotlinc() -> Path | None:
    env = os.environ.get("KOTLINC")
    if env:
        return Path(env)
    local = HERE / "node_modules" / "kotlin-compiler" / "bin" / "kotlinc"
    if local.is_file():
        return local
    found = shutil.which("kotlinc")
    return Path(found) if found else None


def missing_tools() -> list[str]:
    """What this machine lacks to run the check (empty when everything is there); names the package to install."""
    missing = []
    for tool, pkg in (("aapt2", "apt: aapt"), ("javac", "apt: default-jdk-headless"), ("java", "apt: default-jdk-headless"),
                      ("jar", "apt: default-jdk-headless")):
        if not shutil.which(tool):
            missing.append(f"{tool} ({pkg})")
    if not FRAMEWORK_RES.is_file():
        missing.append(f"{FRAMEWORK_RES} (apt: android-framework-res)")
    for name, path in JARS.items():
        if not path.is_file():
            pkg = {"json": "libandroid-json-java", "junit": "junit4", "hamcrest": "junit4"}[name]
            missing.append(f"{path} (apt: {pkg})")
    if find_kotlinc() is None:
        missing.append("kotlinc (npm kotlin-compiler: scripts/setup.sh installs it in apps/android/tools)")
    return missing


# the compilers are short-lived JVMs: the C1 JIT alone and the serial GC halve their CPU time on small inputs
FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
JAVAC_FAST = [f"-J{flag}" for flag in FAST_JVM.split()]


def run(step: str, cmd: list[str], log: list[str]) -> str:
    t0 = time.monotonic()
    env = {**os.environ, "JAVA_OPTS": FAST_JVM}
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    out = (proc.stdout + proc.stderr).strip()
    log.append(f"[{step}] {time.monotonic() - t0:.1f}s rc={proc.returncode}")
    if proc.returncode != 0:
        raise CheckFailed(step, out)
    return out


def gradle_values(app: Path) -> dict[str, str]:
    """namespace, minSdk, targetSdk and versions from app/build.gradle.kts, as Gradle's manifest merger uses them."""
    text = (app / "app" / "build.gradle.kts").read_text()
    values = {}
    for key in ("namespace", "minSdk", "targetSdk", "versionCode", "versionName"):
        m = re.search(rf"^\s*{key}\s*=\s*\"?([^\"\s]+)\"?", text, re.M)
        if not m:
            raise CheckFailed("gradle", f"app/build.gradle.kts sets no {key}")
        values[key] = m.group(1)
    return values


def merged_manifest(app: Path, work: Path) -> Path:
    g = gradle_values(app)
    text = (app / "app/src/main/AndroidManifest.xml").read_text()
    if re.search(r"<manifest[^>]*\spackage=", text):
        raise CheckFailed("manifest", "AndroidManifest.xml sets package=; AGP 8 takes it from namespace in app/build.gradle.kts")
    text = re.sub(r"<manifest\b", f'<manifest package="{g["namespace"]}" android:versionCode="{g["versionCode"]}" '
                                  f'android:versionName="{g["versionName"]}"', text, count=1)
    uses_sdk = f'\n    <uses-sdk android:minSdkVersion="{g["minSdk"]}" android:targetSdkVersion="{g["targetSdk"]}" />'
    text = re.sub(r"(<manifest\b[^>]*>)", r"\1" + uses_sdk, text, count=1)
    out = work / "AndroidManifest.xml"
    out.write_text(text)
    return out


def check(app: Path, work: Path, summary: dict, skip_tests: bool = False, golden: Path | None = None) -> dict:
    """Run every step; ``summary`` fills in as they pass (kept on failure too)."""
    log: list[str] = []
    summary.update({"app": str(app), "work": str(work), "steps": log})
    kotlinc = find_kotlinc()
    main = app / "app/src/main"
    sources = sorted((main / "java").rglob("*.kt"))
    core = [p for p in sources if CORE_PACKAGE in p.as_posix()]
    android = [p for p in sources if p not in core]
    tests = sorted((app / "app/src/test").rglob("*.kt"))
    if not core or not android:
        raise CheckFailed("sources", f"expected core and Android Kotlin sources under {main / 'java'}")

    # 1-2. resources and manifest
    manifest = merged_manifest(app, work)
    run("aapt2 compile", ["aapt2", "compile", "--dir", main / "res", "-o", work / "res.zip"], log)
    gen = work / "gen"
    gen.mkdir()
    link = ["aapt2", "link", "-o", work / "resources.ap_", "-I", FRAMEWORK_RES, "--manifest", manifest,
            "--java", gen, "--auto-add-overlay", work / "res.zip"]
    if (main / "assets").is_dir():
        link[4:4] = ["-A", main / "assets"]
    run("aapt2 link", link, log)
    r_java = sorted(gen.rglob("R.java"))
    summary["r_java"] = [str(p) for p in r_java]

    # 3. stubs + R
    stub_classes, r_classes = work / "stub-classes", work / "r-classes"
    stub_sources = sorted((app / "stubs").rglob("*.java"))
    run("javac stubs", ["javac", *JAVAC_FAST, "-nowarn", "--release", "17", "-d", stub_classes, *stub_sources], log)
    run("jar stubs", ["jar", "cf", work / "android-litert-stubs.jar", "-C", stub_classes, "."], log)
    run("javac R", ["javac", *JAVAC_FAST, "--release", "17", "-d", r_classes, *r_java], log)

    # 4. Kotlin: core + tests without Android, then the Android part
    core_classes, app_classes = work / "core-classes", work / "app-classes"
    cp_core = os.pathsep.join(str(JARS[k]) for k in ("json", "junit", "hamcrest"))
    kt = [kotlinc, "-Werror", "-jvm-target", "17", "-no-reflect"]
    run("kotlinc core+tests", [*kt, "-classpath", cp_core, "-d", core_classes, *core, *tests], log)
    cp_app = os.pathsep.join([str(core_classes), str(work / "android-litert-stubs.jar"), str(r_classes), str(JARS["json"])])
    run("kotlinc android", [*kt, "-classpath", cp_app, "-d", app_classes, *android], log)
    summary["classes"] = sorted(p.relative_to(app_classes).as_posix() for p in app_classes.rglob("*.class"))

    # 5. JUnit
    if not skip_tests:
        summary["junit"] = run_junit(work, golden or app.parent / "golden", log)
        if not summary["junit"]["ok"]:
            raise CheckFailed("junit", summary["junit"].get("output", ""))
    return summary


def run_junit(work: Path, golden: Path, log: list[str] | None = None) -> dict:
    """Run the compiled JUnit tests in ``work`` (from an earlier check) against the golden files in ``golden``."""
    core_classes = work / "core-classes"
    test_classes = sorted(p.relative_to(core_classes).with_suffix("").as_posix().replace("/", ".")
                          for p in core_classes.rglob("*Test.class"))
    stdlib = find_kotlinc().resolve().parent.parent / "lib" / "kotlin-stdlib.jar"
    cp = os.pathsep.join([str(core_classes), str(stdlib), *(str(JARS[k]) for k in ("json", "junit", "hamcrest"))])
    try:
        out = run("junit", ["java", "-XX:+UseSerialGC", f"-Dedgekd.golden={golden}", "-cp", cp,
                            "org.junit.runner.JUnitCore", *test_classes], log if log is not None else [])
    except CheckFailed as exc:
        out = exc.output
    result = parse_junit(out)
    result["classes"] = test_classes
    return result


def parse_junit(out: str) -> dict:
    """JUnitCore's closing line: 'OK (N tests)' or 'Tests run: N,  Failures: M'."""
    ok = re.search(r"^OK \((\d+) tests?\)", out, re.M)
    if ok:
        return {"ok": True, "tests_run": int(ok.group(1)), "failures": 0}
    bad = re.search(r"Tests run: (\d+),\s+Failures: (\d+)", out)
    return {"ok": False, "tests_run": int(bad.group(1)) if bad else 0, "failures": int(bad.group(2)) if bad else -1,
            "output": out[-4000:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", type=Path, default=HERE.parent, help="the Android project folder (default: apps/android)")
    ap.add_argument("--work", type=Path, help="build folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--skip-tests", action="store_true", help="compile only, do not run the JUnit tests")
    ap.add_argument("--golden", type=Path, help="golden vectors folder (default: apps/golden beside the app)")
    args = ap.parse_args(argv)
    missing = missing_tools()
    if missing:
        print("check: missing tools: " + "; ".join(missing), file=sys.stderr)
        return 2
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgekd-android-")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    try:
        check(args.app.resolve(), args.work.resolve(), summary, args.skip_tests, args.golden)
        summary["ok"] = True
        rc = 0
    except CheckFailed as exc:
        print(f"check: {exc.step} FAILED:\n{exc.output}", file=sys.stderr)
        summary.update(ok=False, failed_step=exc.step)
        rc = 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps(summary))
    return rc


if __name__ == "__main__":
    sys.exit(main())
