#!/usr/bin/env bash
# Installs everything the course needs into the current Python environment (a virtual environment is
# recommended). Idempotent: a second run only checks. No Debian packages are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# torch and torchvision are installed together so their builds match (torchvision's wheels need the
# registry's torch build; an unrelated local CPU wheel of torch makes `import torchvision` fail).
"$PYTHON" -m pip install --quiet --disable-pip-version-check torch torchvision
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
"$PYTHON" -c "import torch, torchvision, companion; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, companion {companion.__version__}')"
