"""Time and peak memory of the IWAE evaluation (``companion.evaluation.evaluate_nll``).

Evaluates the test negative log-likelihood with k importance samples per image for several values
of ``max_latents`` (the number of latents decoded at once), each in a fresh process so that the peak
resident memory on a CPU is that of the evaluation (plus the data, the model and Python). On CUDA the
figure is ``torch.cuda.max_memory_allocated``. The model is a recorded run (``--run``, default
``book/results/vae-mlp-mnist``) or, if there is none, an untrained network of the same shape (the
cost does not depend on the weights).

    python benchmarks/bench_iwae.py --k 5000 --images 10000 [--device cuda] [--max-latents 1024 4096 16384]

Prints, per setting: images, k, max_latents, seconds, images per second, peak memory and the NLL.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _one(args) -> None:
    import torch

    from companion.data import load_dataset
    from companion.evaluation import evaluate_nll
    from companion.models import VAE, VAEConfig
    from companion.runs import load_run
    from companion.training import resolve_device

    device = resolve_device(args.device)
    run_dir = Path(args.run)
    if (run_dir / "checkpoint.pt").is_file():
        model = load_run(run_dir, device=device)[0]
        source = str(run_dir)
    else:
        torch.manual_seed(0)
        model = VAE(VAEConfig(latent_dim=50, hidden=(500, 500))).to(device).eval()
        source = "untrained 784-500-500-50 (no checkpoint found)"
    data = load_dataset("mnist", args.data_root, device=device)
    result = evaluate_nll(model, data.test[:args.images], args.k, max_latents=args.max_latents[0])
    print(json.dumps({"source": source, "images": result.num_images, "k": result.k, "max_latents": args.max_latents[0],
                      "seconds": result.wall_time_s, "peak_memory_mb": result.peak_memory_mb,
                      "memory_kind": result.memory_kind, "nll_nats": result.nll_nats, "device": str(device)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--max-latents", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--run", default=str(ROOT / "book" / "results" / "vae-mlp-mnist"))
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return _one(args)
    print(f"{'images':>7} {'k':>6} {'max_latents':>11} {'seconds':>8} {'images/s':>9} {'peak MB':>8}  {'NLL':>8}  memory kind, device")
    for m in args.max_latents:
        command = [sys.executable, __file__, "--one", "--k", str(args.k), "--images", str(args.images),
                   "--max-latents", str(m), "--device", args.device, "--run", args.run]
        if args.data_root:
            command += ["--data-root", args.data_root]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{r['images']:7} {r['k']:6} {m:11} {r['seconds']:8.1f} {r['images'] / r['seconds']:9.2f} "
              f"{r['peak_memory_mb']:8.0f}  {r['nll_nats']:8.2f}  {r['memory_kind']}, {r['device']}")
    print(f"model: {r['source']}")


if __name__ == "__main__":
    main()
