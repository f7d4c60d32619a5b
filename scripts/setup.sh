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

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
EXTRAS="${EDGEKD_EXTRAS:-onnx,tflite,coreml,compress,test}"
echo "setup: installing edgekd[$EXTRAS] (first time: a few minutes)"
.venv/bin/python -m pip install --progress-bar off --disable-pip-version-check -c constraints.txt -e ".[$EXTRAS]"
.venv/bin/python -c "import torch, edgekd; print(f'setup: edgekd {edgekd.__version__}, torch {torch.__version__}')"
