"""Named full-scale runs, recorded in ``book/results/NAME/`` for the chapters to display.

    python -m companion reproduce --list
    python -m companion reproduce vae-mlp-mnist
    python -m companion reproduce 'sweep-*' 'sigma-*'      # several, by name or shell glob

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

Part III's experiments add ``kl_per_dim`` and ``active_units`` (``evaluation.latent_usage``) and, with
``frechet=True``, ``frechet_mean`` and ``frechet_params`` (``frechet.score_vae_samples``, 10,000 prior
samples against the grey-level test set) with ``frechet_mean_bootstrap_sd`` and
``frechet_params_bootstrap_sd`` (their spread over ``FRECHET_BOOTSTRAP`` bootstrap resamples of the
samples: the sampling error alone); ``iwae_k = 0`` skips the IWAE evaluation. A run whose loss
becomes infinite is recorded with ``diverged`` and evaluated at its last finite checkpoint. A
``ClassifierExperiment`` trains the classifier of the Frechet distance instead and writes
``classifier.pt`` (kept in git) and ``metrics.json``.

Part IV's experiments train a GAN or a RealNVP (a ``ModelRun``): their ``metrics.json`` holds the
last epoch's terms, ``frechet`` (``frechet.score_samples``, 10,000 samples), ``parameters`` and, for
the flow, ``test_nll_nats`` and ``test_bits_per_dim``; the GAN adds ``interpolation.png`` (linear and
spherical paths between fixed latents).

**Seeds.** The runs whose scores the chapters compare closely (``SEEDED``: the beta sweep, the sigma
runs and the two Fashion-MNIST VAEs) are registered again with each of ``EXTRA_SEEDS`` as
``NAME-seed1``, ``NAME-seed2`` (only the training seed differs; seed 0 is ``NAME``). ``load_seeds``
reads all recorded seeds of a run and ``frechet_seed_spread`` pools their spread, the seed-to-seed
noise that an ordering of two runs must exceed.

``checkpoint.pt`` is written there too (that is what makes a run resumable) and is kept out of git by
``.gitignore``.

**Recorded results are never half-written or overwritten by a smoke test.** A run trains and is
evaluated in ``NAME.partial/`` beside its folder (an interrupted run resumes there: rerun the same
command), under a lock (``.NAME.lock`` beside the folders) that keeps a second process out, and
replaces ``NAME/`` only when everything is written, so
a reader of ``NAME/`` sees either the old recording or the new one, never a mixture and never stale
figures. A finished run that is reproduced again resumes from its checkpoint (no more epochs) and
is evaluated anew. A run whose settings are overridden (``epochs=`` or ``iwae_k=``, the command
line's ``--epochs`` and ``--iwae-k``) is recorded with ``"registered": false`` and written under
``runs/reproduce/`` (or the ``root`` given) but never into ``book/results``; ``load_results``, which
the chapters use, refuses a result that is not registered.

See: appendix "Running the course"; chapters "Training a VAE", "Evaluating a VAE" and "A
convolutional VAE"; Part III, chapters 10 to 14.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .data import load_dataset, to_float
from .evaluation import evaluate_elbo, evaluate_nll, latent_usage
from .models.vae import VAEConfig
from .plots import save_grid
from .models.flow import FlowConfig
from .models.gan import GANConfig
from .plots import latent_path
from .paths import RESULTS, SCRATCH_RESULTS
from .locks import run_lock
from .runs import (ModelRun, VAERun, _device_name, _signature, git_commit, load_model_run, load_run, run_model,
                   run_vae)
from .training import CHECKPOINT, CheckpointError, TrainConfig, _write_json, read_checkpoint, resolve_device

__all__ = ["Experiment", "ClassifierExperiment", "REGISTRY", "HEAD_TO_HEAD", "head_to_head", "reproduce", "results_dir",
           "load_results", "matching", "is_registered", "results_root", "UnregisteredResultError", "RESULTS",
           "recorded_runs", "seed_names", "load_seeds", "frechet_seed_spread", "EXTRA_SEEDS", "SEEDED", "FRECHET_BOOTSTRAP",
           "GPU_SCALE"]

#: Bootstrap resamples behind the ``frechet_*_bootstrap_sd`` of a VAE run's metrics (``frechet_bootstrap``).
FRECHET_BOOTSTRAP = 100
PARTIAL = ".partial"   # suffix of the folder a run is trained and evaluated in before it replaces NAME/


class UnregisteredResultError(ValueError):
    """A result folder holds a run with overridden settings (``"registered": false``), not the recording."""


@dataclass(frozen=True)
class Experiment:
    """A named full run.

    Attributes:
        description: one line for ``--list``.
        chapter: the chapter that shows it.
        run: the ``VAERun``, or for Part IV a ``ModelRun`` (a GAN or a flow); its ``train.device`` is
            replaced by the device chosen at run time.
        iwae_k: importance samples per test image for ``test_nll_nats``.
        gap_images: how many training and test images the train/test gap is measured on (IWAE, same k).
        curve_ks: values of k for ``iwae_curve.json`` (empty: no curve). curve_images: images it uses.
        snapshot_epochs: epochs after which fixed latents are decoded into ``samples_epoch_NNN.png``.
        max_latents: latents decoded at once in the IWAE evaluation (see ``evaluate_nll``).
        frechet: score 10,000 samples from the prior against the test set by the classifier Frechet
            distance (``companion.frechet``; needs the dataset's recorded classifier).

    ``iwae_k = 0`` skips the IWAE evaluation (for likelihoods whose values are not comparable, or
    sweeps scored by the Frechet distance).
    """

    description: str
    chapter: str
    run: VAERun | ModelRun
    iwae_k: int = 5000
    gap_images: int = 1000
    curve_ks: tuple[int, ...] = ()
    curve_images: int = 500
    snapshot_epochs: tuple[int, ...] = ()
    max_latents: int = 4096
    frechet: bool = False


@dataclass(frozen=True)
class ClassifierExperiment:
    """The classifier behind the Frechet distance of a dataset (``companion.frechet``).

    Writes ``classifier.pt`` (its weights, kept in git: chapters load them in quick mode) and
    ``metrics.json`` (test and validation accuracy, epochs, device, wall time, commit).
    """

    description: str
    chapter: str
    dataset: str
    epochs: int
    run = None


def _binarised_run(latent_dim: int, hidden: tuple[int, ...], epochs: int, dataset: str = "mnist",
                   binarize: bool = True, lr_decay: float = 1.0, **model) -> VAERun:
    return VAERun(dataset=dataset, binarize=binarize, batch_size=128,
                  model=VAEConfig(latent_dim=latent_dim, hidden=hidden, **model),
                  train=TrainConfig(epochs=epochs, lr=1e-3, seed=0, lr_decay=lr_decay))


def _tenfold(epochs: int) -> float:
    """The per-epoch decay that lowers the learning rate tenfold over ``epochs`` (as Burda et al., 2016,
    did over their 3,280 epochs)."""
    return 10 ** (-1 / epochs)


def _grey_run(likelihood: str, epochs: int = 20, beta: float = 1.0, **options) -> VAERun:
    """Part III's runs: the 784-400-20 MLP VAE on grey-level MNIST (not binarised)."""
    return _binarised_run(20, (400,), epochs, binarize=False, likelihood=likelihood, likelihood_options=options, beta=beta)


#: The beta sweep of chapter "Is the continuous Bernoulli better?" (and its rate-distortion use).
SWEEP_BETAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: The fixed sigmas that make up the tuned beta-VAE of chapter "The Gaussian decoder's sigma".
FIXED_SIGMAS = (0.05, 0.1, 0.2, 0.4, 0.707)
#: The betas of the rate-distortion curve of chapter "beta-VAE, blur and posterior collapse".
RD_BETAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _label(x: float) -> str:
    return f"{x:g}"


def _part4_run(kind: str, model, epochs: int, lr: float) -> ModelRun:
    return ModelRun(kind, model, dataset="mnist", batch_size=128, train=TrainConfig(epochs=epochs, lr=lr, seed=0))


#: The head-to-head of chapter "Head to head": three families on grey-level MNIST, one evaluation.
HEAD_TO_HEAD = ("h2h-vae-mnist", "h2h-gan-mnist", "h2h-flow-mnist")

REGISTRY: dict[str, Experiment] = {
    "vae-mlp-mnist": Experiment(
        "MLP VAE 784-500-500-50, dynamically binarised MNIST, 120 epochs; IWAE k = 5000 (target <= 90 nats)",
        "Evaluating a VAE", _binarised_run(50, (500, 500), 120), iwae_k=5000,
        curve_ks=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000), snapshot_epochs=(1, 10, 50, 120)),
    "vae-mlp-mnist-z20": Experiment(
        "MLP VAE 784-400-20 (pytorch's examples/vae network), binarised MNIST, 50 epochs; IWAE k = 1000",
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
    "classifier-mnist": ClassifierExperiment(
        "CNN classifier of MNIST digits (features for the classifier Frechet distance), 8 epochs",
        "Is the continuous Bernoulli better?", "mnist", 8),
    "classifier-fashion-mnist": ClassifierExperiment(
        "CNN classifier of Fashion-MNIST (features for the classifier Frechet distance), 12 epochs",
        "Is the continuous Bernoulli better?", "fashion-mnist", 12),
    **{f"sweep-{lik}-beta{_label(b)}": Experiment(
        f"784-400-20 VAE, {lik} likelihood on grey-level MNIST, beta = {b:g}, 20 epochs; classifier Frechet distance",
        "Is the continuous Bernoulli better?", _grey_run(lik, beta=b), iwae_k=0, frechet=True)
       for lik in ("bernoulli", "continuous-bernoulli") for b in SWEEP_BETAS},
    "beta-likelihood-mnist": Experiment(
        "784-400-20 VAE, Beta likelihood (mean and concentration) on grey-level MNIST, 50 epochs; IWAE k = 100",
        "The Beta likelihood", _grey_run("beta", epochs=50), iwae_k=100, frechet=True, snapshot_epochs=(1, 10, 50)),
    "cb-likelihood-mnist": Experiment(
        "784-400-20 VAE, continuous Bernoulli on grey-level MNIST, 50 epochs; IWAE k = 100 (compared with the Beta)",
        "The Beta likelihood", _grey_run("continuous-bernoulli", epochs=50), iwae_k=100, frechet=True),
    **{f"sigma-fixed-{_label(sig)}": Experiment(
        f"784-400-20 VAE, Gaussian with fixed sigma = {sig:g} on grey-level MNIST (a beta-VAE), 20 epochs",
        "The Gaussian decoder's sigma", _grey_run("gaussian", sigma=sig), iwae_k=0, frechet=True)
       for sig in FIXED_SIGMAS},
    **{f"sigma-{kind}": Experiment(
        f"784-400-20 VAE, Gaussian with {what} on grey-level MNIST, 20 epochs",
        "The Gaussian decoder's sigma", _grey_run(f"gaussian-{kind}"), iwae_k=0, frechet=True)
       for kind, what in (("learned", "one learned sigma"), ("pixel", "a learned sigma per pixel"),
                          ("predicted", "sigma predicted by the decoder"),
                          ("optimal-pixel", "the optimal sigma per pixel, log|x - mu| (floor 1e-3)"),
                          ("optimal-image", "the optimal sigma per image (a per-image variant of the optimal sigma-VAE)"))},
    **{f"rd-beta{_label(b)}": Experiment(
        f"784-400-20 beta-VAE on binarised MNIST, beta = {b:g}, 20 epochs (rate-distortion curve)",
        "beta-VAE, blur and posterior collapse", _binarised_run(20, (400,), 20, beta=b), iwae_k=0, frechet=True)
       for b in RD_BETAS},
    "rd-beta8-free-bits": Experiment(
        "784-400-20 beta-VAE on binarised MNIST, beta = 8 with free bits (0.5 nats per dimension), 20 epochs",
        "beta-VAE, blur and posterior collapse", _binarised_run(20, (400,), 20, beta=8.0, free_bits=0.5),
        iwae_k=0, frechet=True),
    "h2h-vae-mnist": Experiment(
        "784-400-20 VAE, discretized logistic on 8-bit MNIST, 30 epochs; IWAE k = 100 (bits/dim on 0..255)",
        "Head to head", _binarised_run(20, (400,), 30, binarize=False, likelihood="discretized-logistic"),
        iwae_k=100, frechet=True, snapshot_epochs=(1, 5, 30)),
    "h2h-gan-mnist": Experiment(
        "MLP GAN of seed 001 (G 128-256-512-1024, D 512-256), non-saturating loss, Adam 5e-4, MNIST, 60 epochs",
        "GANs", _part4_run("gan", GANConfig(), 60, 5e-4), iwae_k=0, frechet=True, snapshot_epochs=(1, 5, 20, 60)),
    "gan-mnist-saturating": Experiment(
        "The same GAN with the saturating generator loss log(1 - D(G(z))), MNIST, 20 epochs",
        "GANs", _part4_run("gan", GANConfig(generator_loss="saturating"), 20, 5e-4), iwae_k=0, frechet=True,
        snapshot_epochs=(1, 5, 20)),
    "h2h-flow-mnist": Experiment(
        "RealNVP, 2 scales, coupling ResNets of 32 channels x 2 blocks, dequantized 8-bit MNIST, 12 epochs",
        "Normalizing flows", _part4_run("flow", FlowConfig(scales=2, hidden=32, blocks=2), 12, 1e-3), iwae_k=0,
        frechet=True, snapshot_epochs=(1, 4, 12)),
}


#: Training seeds recorded besides seed 0 for the runs whose scores the text compares closely
#: (chapters "Is the continuous Bernoulli better?", "The Gaussian decoder's sigma" and "A convolutional
#: VAE"): experiment NAME-seedS is NAME with seed S (data order, initialisation, noise and the scored samples).
EXTRA_SEEDS = (1, 2)
SEEDED = (tuple(n for n in REGISTRY if n.startswith("sweep-"))
          + tuple(f"sigma-{kind}" for kind in ("fixed-0.2", "fixed-0.4", "fixed-0.707", "learned", "pixel", "optimal-image"))
          + ("vae-mlp-fashion", "vae-conv-fashion"))


def _with_seed(experiment: Experiment, seed: int) -> Experiment:
    run = replace(experiment.run, train=replace(experiment.run.train, seed=seed))
    return replace(experiment, description=f"{experiment.description}; seed {seed}", run=run)


REGISTRY.update({f"{name}-seed{seed}": _with_seed(REGISTRY[name], seed) for name in SEEDED for seed in EXTRA_SEEDS})
REGISTRY["cb-clamp-mnist"] = Experiment(
    "784-400-20 VAE, continuous Bernoulli with the authors' clamp lambda in [1e-4, 1 - 1e-4], grey-level MNIST, "
    "beta = 2, 20 epochs; classifier Frechet distance", "Is the continuous Bernoulli better?",
    _grey_run("continuous-bernoulli", beta=2.0, lambda_clamp=1e-4), iwae_k=0, frechet=True)


#: Full-scale runs for one GPU (issue 16), budgets a 2-core CPU cannot afford: ``vae-mlp-mnist``'s
#: network trained long (against Burda et al.'s 86.76 nats, from a smaller tanh network: 200-200-50),
#: the same network trained on the IWAE bound, and the head-to-head of chapter "Head to head" with its
#: three models and one budget of epochs for all three families. (A larger flow would not fit one
#: device session of about 9 minutes beside the VAE runs: see benchmarks/gpu_session.py.)
#: Named ``gpu-*`` so that the CPU globs (``h2h-*``) leave them out; ``benchmarks/gpu_session.py``
#: runs them, and chapters read them only once they are recorded.
GPU_SCALE = {
    "gpu-vae-mlp-mnist": Experiment(
        "MLP VAE 784-500-500-50, binarised MNIST, 1000 epochs (a GPU budget), Adam 1e-3 falling tenfold; IWAE "
        "k = 5000 (target <= 87.0 nats, Burda et al. 2016: 86.76)", "Evaluating a VAE",
        _binarised_run(50, (500, 500), 1000, lr_decay=_tenfold(1000)), iwae_k=5000, max_latents=65536),
    "gpu-iwae5-mlp-mnist": Experiment(
        "The same network trained on the IWAE bound with k = 5, 400 epochs, Adam 1e-3 falling tenfold; IWAE "
        "k = 5000 (Burda et al.: 85.54)", "Evaluating a VAE",
        _binarised_run(50, (500, 500), 400, lr_decay=_tenfold(400), train_iwae_k=5), iwae_k=5000, max_latents=65536),
    "gpu-iwae50-mlp-mnist": Experiment(
        "The same network trained on the IWAE bound with k = 50, 200 epochs, Adam 1e-3 falling tenfold; IWAE "
        "k = 5000 (Burda et al.: 84.78)", "Evaluating a VAE",
        _binarised_run(50, (500, 500), 200, lr_decay=_tenfold(200), train_iwae_k=50), iwae_k=5000,
        max_latents=65536),
    "gpu-h2h-vae-mnist": Experiment(
        "784-400-20 VAE, discretized logistic on 8-bit MNIST, 100 epochs (the head-to-head's GPU budget); IWAE k = 100",
        "Head to head", _binarised_run(20, (400,), 100, binarize=False, likelihood="discretized-logistic"),
        iwae_k=100, frechet=True, snapshot_epochs=(1, 10, 100), max_latents=65536),
    "gpu-h2h-gan-mnist": Experiment(
        "The MLP GAN of seed 001, non-saturating loss, Adam 5e-4, MNIST, 100 epochs (the head-to-head's GPU budget)",
        "GANs", _part4_run("gan", GANConfig(), 100, 5e-4), iwae_k=0, frechet=True, snapshot_epochs=(1, 10, 100)),
    "gpu-h2h-flow-mnist": Experiment(
        "RealNVP of h2h-flow-mnist (2 scales, coupling ResNets of 32 channels x 2 blocks), dequantized 8-bit MNIST, "
        "100 epochs (the head-to-head's GPU budget; target <= 1.15 bits/dim)", "Normalizing flows",
        _part4_run("flow", FlowConfig(scales=2, hidden=32, blocks=2), 100, 1e-3), iwae_k=0, frechet=True,
        snapshot_epochs=(1, 10, 100)),
}
REGISTRY.update(GPU_SCALE)
REGISTRY.update({f"{name}-seed{seed}": _with_seed(GPU_SCALE[name], seed) for name in GPU_SCALE for seed in EXTRA_SEEDS})


def seed_names(name: str) -> list[str]:
    """``name`` and its extra-seed experiments (``NAME-seed1``, ...) in seed order; raises KeyError for
    a name not in ``REGISTRY``."""
    results_dir(name)
    return [name] + [f"{name}-seed{s}" for s in EXTRA_SEEDS if f"{name}-seed{s}" in REGISTRY]


def load_seeds(name: str, root: str | os.PathLike | None = None) -> list[dict]:
    """``load_results`` of ``name`` and of each of its recorded extra seeds (``seed_names``), skipping
    the seeds not recorded yet; each dict gains ``"seed"``. Raises as ``load_results``."""
    out = []
    for each in seed_names(name):
        res = load_results(each, root)
        if res is not None:
            res["seed"] = res["config"]["train"]["seed"] if res.get("config") else None
            out.append(res)
    return out


def frechet_seed_spread(prefixes: tuple[str, ...] = ("sweep-", "sigma-"), key: str = "frechet_mean",
                        root: str | os.PathLike | None = None) -> dict:
    """How much the classifier Frechet distance of a recorded VAE run moves when only the seed changes.

    For every experiment in ``SEEDED`` whose name starts with one of ``prefixes`` and that has at
    least two recorded seeds, the sample variance of ``key`` over its seeds is divided by the square
    of its mean; these relative variances are pooled with weights n - 1 (their degrees of freedom).

    Returns:
        ``{"relative_sd": float, "groups": int, "runs": int, "largest": (name, relative sd)}``: the
        pooled relative standard deviation, to be read as the typical seed-to-seed spread of one
        recorded run of these families (an indication for single-seed runs, not a measurement of them).
    Raises:
        ValueError: if no group has two recorded seeds.
    """
    import statistics

    total, dof, runs, groups, largest = 0.0, 0, 0, 0, ("", 0.0)
    for name in SEEDED:
        if not name.startswith(prefixes):
            continue
        values = [r["metrics"][key] for r in load_seeds(name, root) if key in r["metrics"]]
        if len(values) < 2:
            continue
        relative = statistics.variance(values) / statistics.fmean(values) ** 2
        total, dof, runs, groups = total + relative * (len(values) - 1), dof + len(values) - 1, runs + len(values), groups + 1
        largest = max(largest, (name, relative ** 0.5), key=lambda pair: pair[1])
    if dof == 0:
        raise ValueError(f"no experiment starting with {prefixes} has two recorded seeds; record them with "
                         "`python -m companion reproduce 'sweep-*-seed*'`")
    return {"relative_sd": (total / dof) ** 0.5, "groups": groups, "runs": runs, "largest": largest}


def matching(patterns: list[str]) -> list[str]:
    """Registered names matching any of ``patterns`` (exact names or shell globs such as ``sweep-*``),
    in registry order. Raises KeyError for a pattern that matches nothing."""
    import fnmatch

    chosen = []
    for pattern in patterns:
        names = [n for n in REGISTRY if fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise KeyError(f"no experiment matches {pattern!r}; see `python -m companion reproduce --list`")
        chosen += [n for n in names if n not in chosen]
    return chosen


def results_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``book/results/NAME`` (or ``root/NAME``); raises KeyError for a name not in ``REGISTRY``."""
    if name not in REGISTRY:
        raise KeyError(f"no experiment named {name!r}; known: {', '.join(REGISTRY)}")
    return Path(root or RESULTS) / name


def load_results(name: str, root: str | os.PathLike | None = None, *, registered_only: bool = True) -> dict | None:
    """What a chapter needs from a recorded run: ``{"metrics", "history", "config", "curve", "dir"}``.

    Returns None when the run has not been recorded (``metrics.json`` missing), so a chapter can say
    so instead of failing.

    Arguments:
        registered_only: refuse a result whose ``metrics.json`` does not say ``"registered": true``
            (a smoke run with fewer epochs or samples); tests of ``reproduce`` turn it off.
    Raises:
        KeyError: for an unknown name. UnregisteredResultError: for a result that is not registered.
    """
    out = results_dir(name, root)
    if not (out / "metrics.json").is_file():
        return None
    read = lambda f: json.loads((out / f).read_text()) if (out / f).is_file() else None  # noqa: E731
    metrics = read("metrics.json")
    if registered_only and metrics.get("registered") is not True:
        raise UnregisteredResultError(
            f"{out / 'metrics.json'} is not the registered run of {name!r} "
            f"({metrics.get('command', 'no command recorded')}, \"registered\": {json.dumps(metrics.get('registered'))}); "
            f"record it with `python -m companion reproduce {name}`")
    return {"metrics": metrics, "history": read("history.json"), "config": read("config.json"),
            "curve": read("iwae_curve.json"), "dir": out}


def is_registered(name: str, epochs: int | None = None, iwae_k: int | None = None) -> bool:
    """Whether overrides leave experiment ``name`` at its registered settings (None means not overridden;
    ``iwae_k`` matters only for experiments evaluated by IWAE)."""
    experiment = REGISTRY[name]
    if isinstance(experiment, ClassifierExperiment):
        return epochs in (None, experiment.epochs)
    same_k = iwae_k in (None, experiment.iwae_k) or isinstance(experiment.run, ModelRun)
    return epochs in (None, experiment.run.train.epochs) and same_k


def results_root(root: str | os.PathLike | None, registered: bool) -> Path:
    """Where a run's folder goes: ``root``, else ``book/results`` for a registered run and
    ``runs/reproduce`` (under the working directory) for one with overridden settings.

    Raises:
        ValueError: if a run with overridden settings is pointed at ``book/results``.
    """
    if root is None:
        return RESULTS if registered else SCRATCH_RESULTS
    root = Path(root)
    if not registered and root.resolve() == RESULTS.resolve():
        raise ValueError(f"a run with overridden settings (--epochs, --iwae-k) is never written into {RESULTS}, "
                         "which holds the recorded results the chapters show; give another --results folder, "
                         f"or none (then it goes to {SCRATCH_RESULTS})")
    return root


def _recover(out: Path) -> None:
    """Finish a replacement of ``out`` that was interrupted between its two renames (see ``_publish``)."""
    old = out.with_name(out.name + ".old")
    if old.is_dir():
        if out.is_dir():
            shutil.rmtree(old)
        else:
            os.replace(old, out)


def _resumable(folder: Path, signature: dict | None, epochs: int) -> str | None:
    """Why the checkpoint in ``folder`` cannot be resumed for this run, or None if it can."""
    try:
        state = read_checkpoint(folder / CHECKPOINT, map_location="cpu")
    except CheckpointError as error:
        return str(error)
    if signature is not None and state["signature"] != signature:
        return "its checkpoint was made with other settings"
    if len(state["history"]) > epochs:
        return f"its checkpoint holds {len(state['history'])} epochs, more than the {epochs} asked for"
    return None


def _stage(out: Path, work: Path, signature: dict | None, epochs: int) -> None:
    """Prepare ``work`` (NAME.partial) for a run of ``epochs`` epochs.

    - ``work`` holds a checkpoint of this run: keep it (an interrupted run resumes);
    - it holds one that cannot be resumed: refuse, naming the folder to delete (nothing is lost);
    - else start from a copy of ``out`` if its checkpoint belongs to this run (a finished run is
      evaluated anew), the checkpoint copied last and renamed into place, so an interrupted copy
      leaves no checkpoint; else from an empty folder.

    ``signature`` is None for runs without a checkpoint (the classifiers), which always start afresh.
    """
    if signature is not None and (work / CHECKPOINT).is_file():
        problem = _resumable(work, signature, epochs)
        if problem is None:
            return
        raise ValueError(f"{work} holds an interrupted run that this one cannot resume ({problem}); delete the "
                         f"folder {work} to start afresh")
    for path in work.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if signature is None or not (out / CHECKPOINT).is_file() or _resumable(out, signature, epochs) is not None:
        return
    shutil.copytree(out, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(CHECKPOINT))
    shutil.copy2(out / CHECKPOINT, work / f"{CHECKPOINT}.tmp")
    os.replace(work / f"{CHECKPOINT}.tmp", work / CHECKPOINT)


def _publish(work: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``work``: rename ``out`` aside, ``work`` into place, delete the old.
    A reader sees the old folder or the new one; an interruption between the renames is repaired by
    ``_recover`` at the next start."""
    old = out.with_name(out.name + ".old")
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    if old.exists():
        shutil.rmtree(old)


def reproduce(name: str, root: str | os.PathLike | None = None, *, device: str = "auto",
              data_root: str | os.PathLike | None = None, epochs: int | None = None, iwae_k: int | None = None,
              max_latents: int | None = None, progress: bool = True, cuda_graph: bool = True) -> dict:
    """Run the experiment ``name`` and write its results (see the module docstring).

    Arguments:
        name: a key of ``REGISTRY``.
        root: where the run's folder goes (default: ``book/results`` for the registered settings,
            ``runs/reproduce`` when ``epochs`` or ``iwae_k`` override them).
        device: "auto" (CUDA, then MPS, then CPU) or a torch device name.
        data_root: see ``companion.data.locate``.
        epochs, iwae_k: overrides, for smoke tests (0 epochs means none: the untrained model is
            evaluated). A value other than the registered one is recorded as ``"registered": false``
            (``iwae_k`` only counts for experiments evaluated by IWAE).
        max_latents: latents decoded at once during the IWAE evaluation (default: the experiment's;
            raise it on a GPU).
        cuda_graph: on CUDA, replay the training step as a CUDA graph where the model allows
            (``TrainConfig.cuda_graph``); it does not change what is registered or resumed.
    Returns:
        The metrics written to ``metrics.json``; the results are in ``results_dir(name, root)``.
    Raises:
        KeyError: unknown name. DataNotFoundError: data missing. ValueError: overridden settings
        pointed at ``book/results``, or an interrupted run in ``NAME.partial`` that this one cannot
        resume (the message names the folder to delete). RunInUseError: the same experiment is
        running in another process. FloatingPointError: a GAN or flow whose loss diverged (a VAE's
        divergence is recorded in its metrics instead).
    """
    results_dir(name)                                                # raises KeyError for an unknown name
    experiment = REGISTRY[name]
    out = results_dir(name, results_root(root, is_registered(name, epochs, iwae_k)))
    work = out.with_name(out.name + PARTIAL)
    if isinstance(experiment, ClassifierExperiment):
        signature, planned = None, experiment.epochs if epochs is None else epochs
    else:
        signature = _signature(experiment.run)                       # the signature ignores epochs and device
        planned = experiment.run.train.epochs if epochs is None else epochs
    # The lock lives beside the folders (.NAME.lock), not in them, so that they can be renamed under it.
    with run_lock(work, lock_file=out.with_name(f".{out.name}.lock")):
        _recover(out)
        _stage(out, work, signature, planned)
        metrics = _reproduce_into(name, work, out.parent, device=device, data_root=data_root, epochs=epochs,
                                  iwae_k=iwae_k, max_latents=max_latents, progress=progress, cuda_graph=cuda_graph)
        _publish(work, out)
    return metrics


def _reproduce_into(name: str, out: Path, root: Path, *, device, data_root, epochs, iwae_k, max_latents,
                    progress, cuda_graph=True) -> dict:
    """Train and evaluate experiment ``name`` in the folder ``out``; ``root`` is where its classifier is looked for."""
    experiment = REGISTRY[name]
    if isinstance(experiment, ClassifierExperiment):
        return _reproduce_classifier(name, experiment, out, device=device, data_root=data_root, epochs=epochs,
                                     progress=progress)
    run = experiment.run
    run = replace(run, train=replace(run.train, device=device, cuda_graph=cuda_graph,
                                     epochs=run.train.epochs if epochs is None else epochs))
    if isinstance(run, ModelRun):
        return _reproduce_model(name, experiment, run, out, root, device=device, data_root=data_root,
                                epochs=epochs, progress=progress)
    k = experiment.iwae_k if iwae_k is None else iwae_k
    max_latents = max_latents or experiment.max_latents

    fixed_z = torch.randn(32, run.model.latent_dim, generator=torch.Generator().manual_seed(1234))

    def snapshot(trainer, epoch):
        if epoch in experiment.snapshot_epochs:
            trainer.model.eval()
            save_grid(trainer.model.generate(z=fixed_z.to(trainer.device)).clamp(0, 1), out / f"samples_epoch_{epoch:03d}.png", nrow=16)
            trainer.model.train()

    where = resolve_device(device)
    data = load_dataset(run.dataset, data_root, device=where, val_size=run.val_size)   # once, for training and evaluation
    try:
        metrics = run_vae(run, out, data=data, progress=progress, on_epoch_end=snapshot)
    except FloatingPointError as error:   # recorded, not hidden: the chapter shows which losses diverge
        model, _, history, _ = load_run(out, device=where)
        metrics = {"dataset": run.dataset, "model": run.model.name, "likelihood": run.model.likelihood,
                   "epochs": len(history), "diverged": str(error), "device": _device_name(where),
                   "wall_time_s": history[-1]["wall_time_s"] if history else 0.0, "commit": git_commit(Path(__file__).parent),
                   "torch": torch.__version__}
    model, _, _, _ = load_run(out, device=where)
    start = time.perf_counter()
    metrics.update(latent_usage(model, data.test, binarize=run.binarize))
    if k:
        test = evaluate_nll(model, data.test, k, binarize=run.binarize, max_latents=max_latents, progress=progress)
        n = min(experiment.gap_images, len(data.train))
        train_part = evaluate_nll(model, data.train[:n], k, binarize=run.binarize, max_latents=max_latents)
        train_elbo = evaluate_elbo(model, data, "train", binarize=run.binarize)
        metrics.update({
            "test_nll_nats": test.nll_nats,
            "test_nll_std_error": test.std_error,
            "test_bits_per_dim": test.bits_per_dim,
            "train_elbo_eval": train_elbo["elbo"],
            "gap_images": n,
            "train_nll_nats_first": train_part.nll_nats,
            "test_nll_nats_first": -test.log_px[:n].mean().item(),
            "iwae_wall_time_s": test.wall_time_s,
            "iwae_peak_memory_mb": test.peak_memory_mb,
            "iwae_memory_kind": test.memory_kind,
            "iwae_max_latents": max_latents,
        })
    if experiment.curve_ks:
        images = data.test[:experiment.curve_images]
        curve = [{"k": kk, "log_px": -evaluate_nll(model, images, kk, binarize=run.binarize, max_latents=max_latents).nll_nats}
                 for kk in experiment.curve_ks]
        _write_json(out / "iwae_curve.json", {"images": len(images), "points": curve})
    if experiment.frechet:
        metrics.update(_frechet(model, data, run, root))
    metrics.update({
        "iwae_k": k,
        "evaluation_wall_time_s": time.perf_counter() - start,
        "parameters": sum(p.numel() for p in model.parameters()),
        "command": _command(name, epochs, iwae_k),
        "registered": is_registered(name, epochs, iwae_k),
        "python": sys.version.split()[0],
    })
    _write_json(out / "metrics.json", metrics)
    return metrics


def _command(name: str, epochs: int | None = None, iwae_k: int | None = None) -> str:
    """The command line that reproduces this result, overrides included."""
    return (f"python -m companion reproduce {name}" + (f" --epochs {epochs}" if epochs is not None else "")
            + (f" --iwae-k {iwae_k}" if iwae_k is not None else ""))


def _frechet(model, data, run: VAERun, root=None) -> dict:
    """``score_vae_samples`` with 10,000 samples against the grey-level test set, as metrics.json entries.

    The reference is always the grey-level test set, also for models of binarised data (whose means
    are pixel probabilities), so that every Frechet distance in the book is a distance to the same
    images. The classifier comes from the results root if it holds one, else from ``book/results``.
    """
    from .frechet import score_vae_samples

    classifier = _classifier(run.dataset, root, next(model.parameters()).device)
    scores = score_vae_samples(model, to_float(data.test, False), classifier, seed=run.train.seed,
                               bootstrap=FRECHET_BOOTSTRAP)
    return {"frechet_mean": scores["mean"], "frechet_params": scores["params"], "frechet_samples": scores["samples"],
            "frechet_mean_bootstrap_sd": scores["mean_sd"], "frechet_params_bootstrap_sd": scores["params_sd"],
            "frechet_bootstrap_resamples": FRECHET_BOOTSTRAP}


def _reproduce_model(name, experiment: Experiment, run: ModelRun, out: Path, root, *, device, data_root, epochs,
                     progress) -> dict:
    """Part IV: train the GAN or flow, then its sample figures and Frechet distance (see the module docstring)."""
    from .frechet import score_samples

    latent = run.model.latent_dim if run.kind == "gan" else run.model.num_pixels
    fixed_z = torch.randn(32, latent, generator=torch.Generator().manual_seed(1234))

    def snapshot(trainer, epoch):
        if epoch in experiment.snapshot_epochs:
            save_grid(trainer.model.generate(z=fixed_z.to(trainer.device)), out / f"samples_epoch_{epoch:03d}.png", nrow=16)

    where = resolve_device(device)
    data = load_dataset(run.dataset, data_root, device=where, val_size=run.val_size)
    metrics = run_model(run, out, data=data, progress=progress, on_epoch_end=snapshot)
    model, _, _, _ = load_model_run(out, device=where)
    start = time.perf_counter()
    if run.kind == "gan":
        paths = [latent_path(fixed_z[2 * i], fixed_z[2 * i + 1], 10, spherical=sph) for i in range(4) for sph in (False, True)]
        save_grid(model.generate(z=torch.cat(paths).to(where)), out / "interpolation.png", nrow=10)
    if experiment.frechet:
        classifier = _classifier(run.dataset, root, where)
        metrics.update({"frechet": score_samples(model, to_float(data.test), classifier, seed=run.train.seed),
                        "frechet_samples": 10_000})
    metrics.update({
        "evaluation_wall_time_s": time.perf_counter() - start,
        "command": _command(name, epochs), "registered": is_registered(name, epochs), "python": sys.version.split()[0],
    })
    _write_json(out / "metrics.json", metrics)
    return metrics


def _classifier(dataset: str, root, device):
    """The dataset's recorded classifier: from the results root if it holds one, else from ``book/results``."""
    from .frechet import CLASSIFIER_FILE, load_classifier

    local = (root is not None and Path(root).resolve() != RESULTS.resolve()
             and (Path(root) / f"classifier-{dataset}" / CLASSIFIER_FILE).is_file())
    return load_classifier(dataset, root if local else None, device=device)


def _reproduce_classifier(name, experiment: ClassifierExperiment, out: Path, *, device, data_root, epochs, progress) -> dict:
    from .frechet import save_classifier, train_classifier

    where = resolve_device(device)
    model, metrics = train_classifier(experiment.dataset, data_root=data_root, device=where, progress=progress,
                                      epochs=experiment.epochs if epochs is None else epochs)
    metrics.update({"device": _device_name(where), "commit": git_commit(Path(__file__).parent), "torch": torch.__version__,
                    "command": _command(name, epochs),
                    "registered": is_registered(name, epochs), "python": sys.version.split()[0]})
    save_classifier(model, metrics, out)
    return metrics


def head_to_head(root: str | os.PathLike | None = None) -> list[dict]:
    """The rows of chapter "Head to head", read from the recorded runs in ``HEAD_TO_HEAD``.

    Each row: ``name``, ``family`` (VAE, GAN, flow), ``model``, ``nll_nats`` and ``bits_per_dim`` (None
    for the GAN), ``nll_method``, ``frechet`` (10,000 samples against the test set), ``parameters``,
    ``wall_time_s`` (training), ``epochs``, ``device``, ``commit`` and ``dir`` (for the sample grids).
    Runs not recorded yet are left out.
    """
    rows = []
    for name in HEAD_TO_HEAD:
        res = load_results(name, root)
        if res is None:
            continue
        m = res["metrics"]
        family = {"gan": "GAN", "flow": "flow"}.get(m.get("kind"), "VAE")
        method = {"VAE": f"IWAE, k = {m.get('iwae_k')}", "flow": "exact (one dequantization)", "GAN": "none"}[family]
        rows.append({"name": name, "family": family, "model": m["model"], "nll_nats": m.get("test_nll_nats"),
                     "bits_per_dim": m.get("test_bits_per_dim"), "nll_method": method,
                     "frechet": m.get("frechet", m.get("frechet_mean")), "parameters": m["parameters"],
                     "wall_time_s": m["wall_time_s"], "epochs": m["epochs"], "device": m["device"],
                     "commit": m.get("commit"), "dir": res["dir"]})
    return rows


def recorded_runs(root: str | os.PathLike | None = None) -> list[dict]:
    """Provenance of every recorded run, for the appendix "Recorded runs": one dict per registered
    experiment that has a registered ``metrics.json`` under ``root`` (default ``book/results``).

    Each row: ``name``, ``chapter``, ``description``, ``epochs``, ``device``, ``training_s``
    (``wall_time_s``), ``evaluation_s``, ``peak_memory`` (the IWAE evaluation's, with its kind, or
    None), ``torch``, ``python``, ``commit`` (12 characters, "-dirty" kept), ``command``.
    """
    rows = []
    for name, experiment in REGISTRY.items():
        result = load_results(name, root)
        if result is None:
            continue
        m = result["metrics"]
        memory = m.get("iwae_peak_memory_mb")
        commit = m.get("commit") or "unknown"
        rows.append({"name": name, "chapter": experiment.chapter, "description": experiment.description,
                     "epochs": m.get("epochs"), "device": m.get("device"), "training_s": m.get("wall_time_s"),
                     "evaluation_s": m.get("evaluation_wall_time_s"),
                     "peak_memory": None if memory is None else f"{memory:.0f} MB ({m.get('iwae_memory_kind')})",
                     "torch": m.get("torch"), "python": m.get("python"),
                     "commit": commit[:12] + ("-dirty" if commit.endswith("-dirty") else ""),
                     "command": m.get("command", f"python -m companion reproduce {name}")})
    return rows


def describe() -> str:
    """The registry as text, for ``--list``."""
    lines = []
    for name, e in REGISTRY.items():
        settings = asdict(e.run) if e.run is not None else {"dataset": e.dataset, "epochs": e.epochs}
        lines.append(f"{name:20} {e.description}\n{'':20} chapter: {e.chapter}; settings: "
                     f"{json.dumps(settings, separators=(',', ':'))}")
    return "\n".join(lines)
