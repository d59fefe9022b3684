#!/usr/bin/env bash
# The tests: set up, then the unit tests and nbval on every chapter notebook under book/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
"$PYTHON" -m pytest "$@"
