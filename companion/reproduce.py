"""Named full-scale runs, recorded in ``book/results/NAME/`` for the chapters to display.

    python -m companion reproduce --list
    python -m companion reproduce vae-mlp-mnist

Each entry of ``REGISTRY`` is an ``Experiment``: a ``VAERun`` (data, model, training) plus how to
evaluate it (the IWAE estimate of the test log-likelihood with ``iwae_k`` samples). ``reproduce``
trains on the best device available (CUDA, then MPS, then the CPU; ``device=`` overrides), resumes
from the checkpoint if the run was interrupted, evaluates, and writes to the run's folder:

- ``config.json`` (the ``VAERun``) and ``history.json`` (per-epoch train and validation terms);
- ``metrics.json``: ``dataset``, ``model``, ``test_elbo``, ``test_nll_nats``, ``iwae_k``,
  ``test_bits_per_dim``, ``device``, ``wall_time_s`` (training), ``commit``, plus the ELBO terms,
  the train/test gap, the evaluation's time and peak memory, torch's version and the command;
- ``iwae_curve.json``: the IWAE estimate against k on the first test images, when asked for;
- ``samples.png``, ``reconstructions.png``, ``samples_epoch_NNN.png`` (fixed latents decoded during
  training) and, for Z = 2, ``manifold.png``.

``checkpoint.pt`` is written there too (that is what makes a run resumable) and is kept out of git by
``.gitignore``.

See: appendix "Running the course"; chapters "Training a VAE", "Evaluating a VAE" and "A
convolutional VAE".
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .data import load_dataset
from .evaluation import evaluate_elbo, evaluate_nll
from .models.vae import VAEConfig
from .plots import save_grid
from .runs import VAERun, load_run, run_vae
from .training import TrainConfig, _write_json, resolve_device

__all__ = ["Experiment", "REGISTRY", "reproduce", "results_dir", "load_results"]

RESULTS = Path(__file__).resolve().parent.parent / "book" / "results"


@dataclass(frozen=True)
class Experiment:
    """A named full run.

    Attributes:
        description: one line for ``--list``.
        chapter: the chapter that shows it.
        run: the ``VAERun`` (its ``train.device`` is replaced by the device chosen at run time).
        iwae_k: importance samples per test image for ``test_nll_nats``.
        gap_images: how many training and test images the train/test gap is measured on (IWAE, same k).
        curve_ks: values of k for ``iwae_curve.json`` (empty: no curve). curve_images: images it uses.
        snapshot_epochs: epochs after which fixed latents are decoded into ``samples_epoch_NNN.png``.
        max_latents: latents decoded at once in the IWAE evaluation (see ``evaluate_nll``).
    """

    description: str
    chapter: str
    run: VAERun
    iwae_k: int = 5000
    gap_images: int = 1000
    curve_ks: tuple[int, ...] = ()
    curve_images: int = 500
    snapshot_epochs: tuple[int, ...] = ()
    max_latents: int = 4096


def _binarised_run(latent_dim: int, hidden: tuple[int, ...], epochs: int, dataset: str = "mnist", **model) -> VAERun:
    return VAERun(dataset=dataset, binarize=True, batch_size=128,
                  model=VAEConfig(latent_dim=latent_dim, hidden=hidden, **model),
                  train=TrainConfig(epochs=epochs, lr=1e-3, seed=0))


REGISTRY: dict[str, Experiment] = {
    "vae-mlp-mnist": Experiment(
        "MLP VAE 784-500-500-50, dynamically binarised MNIST, 120 epochs; IWAE k = 5000 (target <= 90 nats)",
        "Evaluating a VAE", _binarised_run(50, (500, 500), 120), iwae_k=5000,
        curve_ks=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000), snapshot_epochs=(1, 10, 50, 120)),
    "vae-mlp-mnist-z20": Experiment(
        "MLP VAE 784-400-20 (Kingma & Welling's network), binarised MNIST, 50 epochs; IWAE k = 1000",
        "Training a VAE", _binarised_run(20, (400,), 50), iwae_k=1000, snapshot_epochs=(1, 5, 20, 50)),
    "vae-mlp-mnist-z2": Experiment(
        "MLP VAE 784-400-2, binarised MNIST, 50 epochs (the 2-D latent manifold); IWAE k = 1000",
        "Training a VAE", _binarised_run(2, (400,), 50), iwae_k=1000, snapshot_epochs=(1, 5, 20, 50)),
    "vae-mlp-fashion": Experiment(
        "MLP VAE 784-400-20, binarised Fashion-MNIST, 10 epochs; IWAE k = 50",
        "A convolutional VAE", _binarised_run(20, (400,), 10, dataset="fashion-mnist"), iwae_k=50,
        snapshot_epochs=(1, 10)),
    "vae-conv-fashion": Experiment(
        "Conv VAE (32-64 channels, batch norm, PyTorch-VAE layout), binarised Fashion-MNIST, 10 epochs; IWAE k = 50",
        "A convolutional VAE", _binarised_run(20, (32, 64), 10, dataset="fashion-mnist", architecture="conv"), iwae_k=50,
        snapshot_epochs=(1, 10), max_latents=1024),
}


def results_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``book/results/NAME`` (or ``root/NAME``); raises KeyError for a name not in ``REGISTRY``."""
    if name not in REGISTRY:
        raise KeyError(f"no experiment named {name!r}; known: {', '.join(REGISTRY)}")
    return Path(root or RESULTS) / name


def load_results(name: str, root: str | os.PathLike | None = None) -> dict | None:
    """What a chapter needs from a recorded run: ``{"metrics", "history", "config", "curve", "dir"}``.

    Returns None when the run has not been recorded (``metrics.json`` missing), so a chapter can say
    so instead of failing. Raises KeyError for an unknown name.
    """
    out = results_dir(name, root)
    if not (out / "metrics.json").is_file():
        return None
    read = lambda f: json.loads((out / f).read_text()) if (out / f).is_file() else None  # noqa: E731
    return {"metrics": read("metrics.json"), "history": read("history.json"), "config": read("config.json"),
            "curve": read("iwae_curve.json"), "dir": out}


def reproduce(name: str, root: str | os.PathLike | None = None, *, device: str = "auto",
              data_root: str | os.PathLike | None = None, epochs: int | None = None, iwae_k: int | None = None,
              max_latents: int | None = None, progress: bool = True) -> dict:
    """Run the experiment ``name`` and write its results (see the module docstring).

    Arguments:
        name: a key of ``REGISTRY``. root: where the results go (default ``book/results``).
        device: "auto" (CUDA, then MPS, then CPU) or a torch device name.
        data_root: see ``companion.data.locate``.
        epochs, iwae_k: overrides, for smoke tests (recorded in the metrics, so nobody mistakes the
            result for the registered one).
        max_latents: latents decoded at once during the IWAE evaluation (default: the experiment's;
            raise it on a GPU).
    Returns:
        The metrics written to ``metrics.json``.
    Raises:
        KeyError: unknown name. DataNotFoundError: data missing. ValueError: a checkpoint in the
        folder that belongs to another configuration.
    """
    out = results_dir(name, root)                                    # raises KeyError for an unknown name
    experiment = REGISTRY[name]
    run = experiment.run
    run = replace(run, train=replace(run.train, device=device, epochs=epochs or run.train.epochs))
    k = iwae_k or experiment.iwae_k
    max_latents = max_latents or experiment.max_latents

    fixed_z = torch.randn(32, run.model.latent_dim, generator=torch.Generator().manual_seed(1234))

    def snapshot(trainer, epoch):
        if epoch in experiment.snapshot_epochs:
            trainer.model.eval()
            save_grid(trainer.model.generate(z=fixed_z.to(trainer.device)), out / f"samples_epoch_{epoch:03d}.png", nrow=16)
            trainer.model.train()

    where = resolve_device(device)
    data = load_dataset(run.dataset, data_root, device=where, val_size=run.val_size)   # once, for training and evaluation
    metrics = run_vae(run, out, data=data, progress=progress, on_epoch_end=snapshot)
    model, _, _, _ = load_run(out, device=where)
    start = time.perf_counter()
    test = evaluate_nll(model, data.test, k, binarize=run.binarize, max_latents=max_latents, progress=progress)
    n = min(experiment.gap_images, len(data.train))
    train_part = evaluate_nll(model, data.train[:n], k, binarize=run.binarize, max_latents=max_latents)
    train_elbo = evaluate_elbo(model, data, "train", binarize=run.binarize)
    if experiment.curve_ks:
        images = data.test[:experiment.curve_images]
        curve = [{"k": kk, "log_px": -evaluate_nll(model, images, kk, binarize=run.binarize, max_latents=max_latents).nll_nats}
                 for kk in experiment.curve_ks]
        _write_json(out / "iwae_curve.json", {"images": len(images), "points": curve})
    metrics.update({
        "test_nll_nats": test.nll_nats,
        "test_nll_std_error": test.std_error,
        "iwae_k": k,
        "test_bits_per_dim": test.bits_per_dim,
        "train_elbo_eval": train_elbo["elbo"],
        "gap_images": n,
        "train_nll_nats_first": train_part.nll_nats,
        "test_nll_nats_first": -test.log_px[:n].mean().item(),
        "iwae_wall_time_s": test.wall_time_s,
        "iwae_peak_memory_mb": test.peak_memory_mb,
        "iwae_memory_kind": test.memory_kind,
        "iwae_max_latents": max_latents,
        "evaluation_wall_time_s": time.perf_counter() - start,
        "parameters": sum(p.numel() for p in model.parameters()),
        "command": f"python -m companion reproduce {name}"
                   + (f" --epochs {epochs}" if epochs else "") + (f" --iwae-k {iwae_k}" if iwae_k else ""),
        "registered": epochs in (None, experiment.run.train.epochs) and iwae_k in (None, experiment.iwae_k),
        "python": sys.version.split()[0],
    })
    _write_json(out / "metrics.json", metrics)
    return metrics


def describe() -> str:
    """The registry as text, for ``--list``."""
    lines = []
    for name, e in REGISTRY.items():
        lines.append(f"{name:20} {e.description}\n{'':20} chapter: {e.chapter}; settings: "
                     f"{json.dumps(asdict(e.run), separators=(',', ':'))}")
    return "\n".join(lines)
