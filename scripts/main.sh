#!/usr/bin/env bash
# The main job: set up, build the book (which executes every chapter in quick mode), then train a VAE
# from the command line. Outputs: _build/html/ and runs/mnist-z20/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
jupyter-book build --all -W --keep-going .
"$PYTHON" -m companion train vae --dataset mnist --latent-dim 20 --epochs 10 --out runs/mnist-z20 --no-progress
