"""Training speed of Part IV's models: seconds per step of the GAN and of RealNVPs of several sizes.

Times one training step (forward, backward, Adam update) on random 8-bit images, after two warm-up
steps, for the MLP GAN of chapter "GANs" (one discriminator and one generator update) and for RealNVP
configurations around the recorded ``h2h-flow-mnist`` (2 scales, 32 channels, 2 residual blocks),
and extrapolates to one epoch of 50,000 images. This is how the recorded flow's size was chosen for a
2-core CPU.

    python benchmarks/bench_part4.py [--device cuda] [--batch-size 128] [--steps 5] [--threads 2]

Prints, per model: parameters, seconds per step, minutes per epoch.
"""

from __future__ import annotations

import argparse
import time

import torch

from companion.models.flow import FlowConfig, RealNVP
from companion.models.gan import GAN, GANConfig
from companion.training import TrainConfig, Trainer


def _time(trainer: Trainer, batch: torch.Tensor, steps: int) -> float:
    for _ in range(2):
        trainer.step(batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {"GAN (seed 001)": (lambda: GAN(GANConfig()), 5e-4)}
    for scales, hidden, blocks in ((2, 16, 1), (2, 32, 1), (2, 32, 2), (3, 32, 2), (2, 64, 4)):
        models[f"RealNVP {scales} scales x {hidden} ch x {blocks} blocks"] = (
            lambda s=scales, h=hidden, b=blocks: RealNVP(FlowConfig(scales=s, hidden=h, blocks=b)), 1e-3)
    print(f"device {args.device}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'model':40} {'parameters':>11} {'s/step':>8} {'min/epoch':>10}")
    for name, (make, lr) in models.items():
        trainer = Trainer.build(make, TrainConfig(lr=lr, device=args.device), progress=False)
        batch = (torch.randint(0, 256, (args.batch_size, 1, 28, 28)).float() / 255).to(trainer.device)
        seconds = _time(trainer, batch, args.steps)
        params = sum(p.numel() for p in trainer.model.parameters())
        print(f"{name:40} {params:11,d} {seconds:8.3f} {seconds * 50_000 / args.batch_size / 60:10.1f}", flush=True)


if __name__ == "__main__":
    main()
