"""The one setup call every chapter makes (quick or full settings, device, seed, paths), the VAE that
chapters 4, 8 and 9 share, and ``glue`` for numbers quoted in the prose.

The switch is the environment variable ``COMPANION_MODE``: ``quick`` (the default; each chapter
runs in about 2 minutes on a 2-core CPU in under 1.5 GB) or ``full`` (the settings of the runs
recorded in ``book/results/``, for a GPU). A chapter asks ``settings.pick(quick=..., full=...)``
for every size that depends on it, so the two modes differ only in numbers, never in code.

``shared_vae(settings, latent_dim)`` trains the course's small VAE (784-400-Z, dynamically binarised
MNIST) once per mode and latent size into ``settings.runs`` and loads it afterwards, so the chapters
that need a trained model (4, 8 and 9) do not each train their own copy.

See: appendix "Running the course".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .paths import BOOK, RESULTS
from .training import resolve_device, seed_everything

__all__ = ["Settings", "setup", "MODES", "SharedRun", "shared_vae", "glue"]

ENV_MODE = "COMPANION_MODE"
MODES = ("quick", "full")


@dataclass(frozen=True)
class Settings:
    """What a chapter's setup cell knows.

    Attributes:
        mode: "quick" or "full".
        device: the training device ("auto" resolved; ``COMPANION_DEVICE`` overrides).
        seed: the seed applied by ``setup``.
        data_root: ``$COMPANION_DATA`` or None (then the per-user cache or a download is used).
        results: ``book/results``, where full runs are recorded.
        runs: a scratch folder for this session's quick runs (``$COMPANION_RUNS`` or ``book/_runs``).
    """

    mode: str
    device: torch.device
    seed: int
    data_root: str | None
    results: Path
    runs: Path

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def pick(self, quick, full):
        """The quick or the full value, by mode."""
        return quick if self.quick else full


def setup(seed: int = 0, mode: str | None = None) -> Settings:
    """Read the mode, choose the device, seed torch, and style matplotlib for the page.

    Arguments:
        seed: applied with ``torch.manual_seed``.
        mode: overrides ``$COMPANION_MODE`` (default "quick").
    Raises:
        ValueError: for a mode other than "quick" or "full".
    """
    mode = mode or os.environ.get(ENV_MODE, "quick")
    if mode not in MODES:
        raise ValueError(f"{ENV_MODE} must be one of {MODES}, got {mode!r}")
    settings = Settings(
        mode=mode,
        device=resolve_device(os.environ.get("COMPANION_DEVICE", "auto")),
        seed=seed,
        data_root=os.environ.get("COMPANION_DATA"),
        results=RESULTS,
        runs=Path(os.environ.get("COMPANION_RUNS", BOOK / "_runs")),
    )
    seed_everything(seed)
    try:
        import matplotlib.pyplot as plt

        plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "figure.figsize": (6, 3.5), "font.size": 10})
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    return settings


#: Epochs of the shared VAE in each mode.
SHARED_EPOCHS = {"quick": 5, "full": 50}
#: The latents decoded after every epoch of the shared VAE (seeded, so every chapter shows the same ones).
SNAPSHOT_LATENTS, SNAPSHOT_SEED = 16, 1234


@dataclass
class SharedRun:
    """The shared VAE as a chapter gets it.

    Attributes:
        model: the trained VAE, in eval mode, on ``settings.device``.
        run: its ``VAERun``. history: one dict per epoch (``companion.training.Trainer.fit``).
        metrics: its ``metrics.json`` (test ELBO and terms in nats per image, wall time, ...).
        snapshots: epoch -> the ``SNAPSHOT_LATENTS`` fixed latents decoded after that epoch, (16, 1, 28, 28).
        directory: the run directory. trained_here: whether this call trained it (else it was cached).
    """

    model: torch.nn.Module
    run: object
    history: list
    metrics: dict
    snapshots: dict
    directory: Path
    trained_here: bool


def shared_vae(settings: Settings, latent_dim: int = 20, data=None, progress: bool = False) -> SharedRun:
    """The course's small VAE with ``latent_dim`` latents, trained once per mode and then loaded.

    784-400-Z MLP, Bernoulli decoder, dynamically binarised MNIST, Adam 1e-3, batches of 128,
    ``SHARED_EPOCHS`` epochs, seed ``settings.seed``. Trained into ``settings.runs /
    shared-vae-z{Z}-{mode}`` (``companion.runs.run_vae``, resumed if interrupted); a later call,
    from this chapter or another, loads it. A cache made by other code (its checkpoint no longer
    matches the settings, or cannot be read) is trained again.

    Arguments:
        settings: from ``setup``. latent_dim: Z. data: the loaded MNIST (``load_dataset``), if at hand.
    Returns:
        a ``SharedRun``.
    Raises:
        DataNotFoundError: if MNIST is needed and cannot be found.
    """
    from .data import load_dataset
    from .models.vae import VAEConfig
    from .runs import VAERun, load_run, run_vae
    from .training import CheckpointError, TrainConfig

    epochs = SHARED_EPOCHS[settings.mode]
    run = VAERun(dataset="mnist", binarize=True, model=VAEConfig(latent_dim=latent_dim, hidden=(400,)),
                 train=TrainConfig(epochs=epochs, seed=settings.seed, device=str(settings.device)))
    directory = settings.runs / f"shared-vae-z{latent_dim}-{settings.mode}"
    snapshots_file = directory / "snapshots.pt"
    fixed_z = torch.randn(SNAPSHOT_LATENTS, latent_dim, generator=torch.Generator().manual_seed(SNAPSHOT_SEED))
    snapshots: dict = torch.load(snapshots_file) if snapshots_file.is_file() else {}

    def decode_fixed_latents(trainer, epoch):
        trainer.model.eval()
        with torch.no_grad():
            snapshots[epoch] = trainer.model.generate(z=fixed_z.to(trainer.device)).cpu()
        trainer.model.train()
        torch.save(snapshots, snapshots_file)

    trained_here = not (directory / "metrics.json").is_file()
    if not trained_here:
        try:
            model, loaded, history, metrics = load_run(directory, device=settings.device)
            if loaded == run and len(history) == epochs and len(snapshots) == epochs:
                return SharedRun(model, loaded, history, metrics, snapshots, directory, False)
        except (ValueError, CheckpointError, FileNotFoundError, TypeError):
            pass
        trained_here = True
    if data is None:
        data = load_dataset("mnist", settings.data_root, device=settings.device)
    try:
        run_vae(run, directory, data=data, progress=progress, on_epoch_end=decode_fixed_latents)
    except (ValueError, CheckpointError):        # a cache of other settings: start it afresh
        snapshots.clear()
        run_vae(run, directory, data=data, progress=progress, resume=False, on_epoch_end=decode_fixed_latents)
    model, loaded, history, metrics = load_run(directory, device=settings.device)
    return SharedRun(model, loaded, history, metrics, snapshots, directory, trained_here)


def glue(name: str, value) -> None:
    """Record ``value`` under ``name`` for the prose, where ``{glue:text}`name:.2f``` inserts it.

    myst-nb's ``glue`` (installed with Jupyter Book) stores the value in the cell's outputs without
    displaying it; where myst-nb is not installed (a plain Jupyter kernel, Binder) nothing happens,
    and the markdown shows the role as written. numpy and torch scalars are stored as Python numbers
    (their repr, such as ``np.float64(0.5)``, is not a number that the role can format).
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    myst_glue(name, value, display=False)
