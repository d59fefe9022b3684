"""Device-resident batches vs the usual Dataset + ToTensor + DataLoader, on the same VAE.

The model is the 784-400-20 MLP VAE of pytorch's examples/vae: batch 128, Adam 1e-3, loss = BCE
summed over pixels + KL, grey-level Fashion-MNIST inputs. Both pipelines train the same model from the
same initial weights for the same number of epochs over the full 60,000 training images. The baseline
is the loop of examples/vae (DataLoader, plain Adam); the companion side is its own pipeline as a user
gets it: device-resident batches and the companion's Trainer (fused Adam, optional bf16 autocast, and
on CUDA the whole step replayed as a CUDA graph; --no-cuda-graph measures the eager step instead).
A last line times the delivery of batches alone, without a model. Prints seconds per epoch, images per second and the test loss (negative
ELBO in nats per image, averaged over the 10,000 test images) of each, and the speed ratio.

    python benchmarks/bench_data_pipeline.py --epochs 3 [--device cuda] [--data-root DIR]

Targets: at least 25x on one H100/H200 at equal test loss (within 1%; issue 16, with the CUDA graph); on a
2-core CPU issue 2 asked for 5x. See benchmarks/gpu_session.py for all the GPU figures at once.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from companion.data import Batches, load_dataset, locate
from companion.models import VAE, VAEConfig
from companion.training import Trainer, TrainConfig, evaluate, resolve_device

CONFIG = VAEConfig(latent_dim=20, hidden=(400,), likelihood="bernoulli")


def companion_pipeline(args, device, init_state):
    data = load_dataset("fashion-mnist", args.data_root, device=device, val_size=0)
    model = VAE(CONFIG)
    model.load_state_dict(init_state)
    trainer = Trainer(model, TrainConfig(epochs=args.epochs, lr=1e-3, seed=args.seed, device=str(device),
                                         precision=args.precision, cuda_graph=getattr(args, "cuda_graph", True)),
                      progress=False)
    torch.manual_seed(args.seed)
    train = Batches(data.train, 128, shuffle=True)
    _sync(device)
    start = time.perf_counter()
    trainer.fit(train)
    _sync(device)
    seconds = time.perf_counter() - start
    test = evaluate(trainer.model, Batches(data.test, 1000))
    return seconds, test["loss"]


def dataloader_pipeline(args, device, init_state):
    root = str(locate("fashion-mnist", args.data_root).root)
    to_tensor = transforms.ToTensor()
    train_set = datasets.FashionMNIST(root, train=True, transform=to_tensor)
    test_set = datasets.FashionMNIST(root, train=False, transform=to_tensor)
    extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}  # as in examples/vae
    train_loader = DataLoader(train_set, batch_size=128, shuffle=True, **extra)
    test_loader = DataLoader(test_set, batch_size=1000, **extra)
    model = VAE(CONFIG).to(device)
    model.load_state_dict(init_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(args.seed)
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for x, _ in train_loader:
            x = x.to(device)
            loss, _ = model.loss(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - start
    model.eval()
    total, count = 0.0, 0
    torch.manual_seed(0)
    with torch.no_grad():
        for x, _ in test_loader:
            loss, _ = model.loss(x.to(device))
            total += loss.item() * len(x)
            count += len(x)
    return seconds, total / count


def data_only(args, device):
    """Seconds per epoch spent delivering batches alone (no model), for each pipeline."""
    data = load_dataset("fashion-mnist", args.data_root, device=device, val_size=0)
    root = str(locate("fashion-mnist", args.data_root).root)
    extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    loader = DataLoader(datasets.FashionMNIST(root, train=True, transform=transforms.ToTensor()),
                        batch_size=128, shuffle=True, **extra)
    out = {}
    for name, batches in (("DataLoader + ToTensor", ((x.to(device), y) for x, y in loader)),
                          ("companion Batches", Batches(data.train, 128, shuffle=True))):
        _sync(device)
        start = time.perf_counter()
        total = torch.zeros((), device=device)
        for batch in batches:
            x = batch[0] if isinstance(batch, tuple) else batch
            total += x[:, 0, 0, 0].sum()  # touch the batch so nothing is skipped
        _sync(device)
        out[name] = time.perf_counter() - start
    return out


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="the companion trainer's precision (the DataLoader baseline stays fp32)")
    parser.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                        help="the companion's steps eagerly on CUDA (default: replayed as a CUDA graph)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    init_state = VAE(CONFIG).state_dict()
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"torch {torch.__version__}, {args.epochs} epochs of 60,000 Fashion-MNIST images")
    results = {}
    for name, fn in (("DataLoader + ToTensor", dataloader_pipeline), (f"companion ({args.precision})", companion_pipeline)):
        seconds, test_loss = fn(args, device, init_state)
        results[name] = (seconds / args.epochs, test_loss)
        print(f"{name:24} {seconds / args.epochs:8.2f} s/epoch {60_000 * args.epochs / seconds:10.0f} images/s "
              f"  test loss {test_loss:8.2f} nats/image")
    (slow, loss_slow), (fast, loss_fast) = results.values()
    print(f"speed-up: {slow / fast:.2f}x; test-loss difference: {100 * abs(loss_fast - loss_slow) / loss_slow:.2f}%")
    feeding = data_only(args, device)
    (name_a, a), (name_b, b) = feeding.items()
    print(f"batches alone, one epoch: {name_a} {a:.2f} s, {name_b} {b:.3f} s ({a / b:.0f}x)")


if __name__ == "__main__":
    main()
