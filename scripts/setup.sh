#!/usr/bin/env bash
# Set up edgekd from nothing: Debian packages (Fashion-MNIST, and the tools of the sample apps' checks), a virtual
# environment in .venv with edgekd and every backend (pins in constraints.txt: an unpinned torch pulls a multi-GB
# CUDA build), and the apps' npm packages. Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

# --- Debian packages, one apt transaction -----------------------------------------------------------------------
# dataset-fashion-mnist: the data of the quickstart and the tests (/usr/share/datasets/fashion-mnist).
# chromium: the browser of the web app's and the report's tests (driven by playwright; never a downloaded build).
# aapt (aapt2), android-framework-res, junit4, libandroid-json-java: tests/apps/test_android.py builds apps/android
#   without the Android SDK or Gradle: aapt2 links its resources against Debian's framework-res.apk, javac/kotlinc
#   compile it against API stubs, JUnit4 + Android's org.json run its JVM tests.
# npm (when missing): the web app's runtimes and kotlinc (npm kotlin-compiler) come from npm.
APT="dataset-fashion-mnist chromium aapt android-framework-res junit4 libandroid-json-java"
command -v javac >/dev/null || APT="$APT default-jdk-headless"
command -v npm >/dev/null || APT="$APT npm"
MISSING=$(for p in $APT; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
if [ -n "$MISSING" ]; then
  echo "setup: installing Debian packages: $MISSING"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $MISSING >/dev/null
fi

# --- the Python environment -------------------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
EXTRAS="${EDGEKD_EXTRAS:-onnx,tflite,coreml,executorch,compress,test}"
echo "setup: installing edgekd[$EXTRAS] (first time: a few minutes)"
.venv/bin/python -m pip install --progress-bar off --disable-pip-version-check -c constraints.txt -e ".[$EXTRAS]"
.venv/bin/python -c "import torch, edgekd; print(f'setup: edgekd {edgekd.__version__}, torch {torch.__version__}')"

# --- npm packages of the apps (no CDN: served and run from these folders) ----------------------------------------
# apps/web: onnxruntime-web and LiteRT.js. The lock file copied into node_modules marks an install that matches it.
if ! cmp -s apps/web/package-lock.json apps/web/node_modules/.edgekd-package-lock.json; then
  echo "setup: npm ci in apps/web"
  (cd apps/web && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.edgekd-package-lock.json)
fi
# apps/android/tools: kotlinc (npm kotlin-compiler, pinned by its package-lock.json; runs offline once installed).
if [ ! -x apps/android/tools/node_modules/kotlin-compiler/bin/kotlinc ]; then
  echo "setup: installing kotlinc (npm kotlin-compiler) in apps/android/tools"
  (cd apps/android/tools && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
