#!/usr/bin/env bash
# Set up edgekd from nothing: Debian packages (Fashion-MNIST), a virtual environment in .venv, the package with
# every backend. Safe to re-run. Pins live in constraints.txt (an unpinned torch pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing Debian's dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

# The web app's browser test drives Debian's chromium through playwright (never a downloaded browser build)
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing Debian's chromium (the web app's browser test)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
EXTRAS="${EDGEKD_EXTRAS:-onnx,tflite,coreml,compress,test}"
echo "setup: installing edgekd[$EXTRAS] (first time: a few minutes)"
.venv/bin/python -m pip install --progress-bar off --disable-pip-version-check -c constraints.txt -e ".[$EXTRAS]"
.venv/bin/python -c "import torch, edgekd; print(f'setup: edgekd {edgekd.__version__}, torch {torch.__version__}')"

# The web app's runtimes (onnxruntime-web, LiteRT.js) are npm packages served from apps/web/node_modules: no CDN.
# The lock file copied into node_modules marks an install that matches it, so a re-run skips npm.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing Debian's npm (the web app's packages)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null
fi
if ! cmp -s apps/web/package-lock.json apps/web/node_modules/.edgekd-package-lock.json; then
  echo "setup: npm ci in apps/web"
  (cd apps/web && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.edgekd-package-lock.json)
fi
