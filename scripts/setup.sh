#!/usr/bin/env bash
# Installs everything the course needs into the current Python environment (a virtual environment is
# recommended). Idempotent: a second run only checks. No Debian packages are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# torch and torchvision are installed together so their builds match (torchvision's wheels need the
# registry's torch build; an unrelated local CPU wheel of torch makes `import torchvision` fail).
# TORCH_INDEX_URL picks the build: e.g. https://download.pytorch.org/whl/cpu for the CPU-only wheels on
# a machine without a GPU (a few hundred MB instead of several GB of CUDA libraries; see README).
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --index-url "$TORCH_INDEX_URL" torch torchvision
else
  "$PYTHON" -m pip install --quiet --disable-pip-version-check torch torchvision
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
"$PYTHON" -c "import torch, torchvision, companion; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, companion {companion.__version__}')"
