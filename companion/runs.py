"""A run from configuration to run directory: data -> batches -> model -> trainer -> results.

``run_vae`` is what ``python -m companion train vae`` calls; chapters call it too, and ``load_run``
lets them reuse a finished run instead of training again. ``run_model`` and ``load_model_run`` do the
same for the GAN and the normalizing flow of Part IV (a ``ModelRun``). A VAE's run directory holds:

- ``config.json``: the ``VAERun`` (data, model and training settings);
- ``checkpoint.pt`` and ``history.json``: written after every epoch (an interrupted run resumes);
- ``metrics.json``: test and validation ELBO and terms in nats per example, device, wall time,
  versions and commit;
- ``samples.png``, ``reconstructions.png`` and, for a 2-D latent space, ``manifold.png``.

A run directory is used by one process at a time: ``companion.locks.run_lock`` holds an exclusive
lock on it (the files ``.lock`` and ``.lock-owner.json``, with the holder's process id and command)
for the whole run, so a second run started into the same directory is refused with a message naming
the first. Apart from those two files, nothing is written into the directory before its checkpoint
has been found to match the settings (or there is none), so a refused resume leaves a finished run
as it was. No stale result is left beside a new one: a run started afresh over an earlier one
(``resume=False``) removes that run's results and figures; a resumed run that has epochs left to
train removes the earlier finish's results (``FINAL_OUTPUTS``) before it trains; and a directory
that holds results but no checkpoint (nothing to resume, and nothing this run should delete) is
refused.

See: chapter "Training a VAE".
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .data import Batches, ImageData, load_dataset
from .locks import LOCK_FILE, RunInUseError, run_lock
from .models.flow import FlowConfig, RealNVP
from .models.gan import GAN, GANConfig
from .models.vae import VAE, VAEConfig
from .plots import manifold_latents, save_grid
from .training import ADDED_LATER, CHECKPOINT, Trainer, TrainConfig, _write_json, evaluate, read_checkpoint, resolve_device

__all__ = ["VAERun", "ModelRun", "run_vae", "run_model", "load_run", "load_model_run", "git_commit", "MODELS",
           "run_lock", "RunInUseError", "LOCK_FILE", "OUTPUTS", "FINAL_OUTPUTS"]

#: Files a finished run writes besides its checkpoint, history and config.
FINAL_OUTPUTS = ("metrics.json", "iwae_curve.json", "samples.png", "reconstructions.png", "manifold.png",
                 "interpolation.png")
#: Files written during training (decoded fixed latents after chosen epochs).
SNAPSHOTS = ("samples_epoch_*.png",)
OUTPUTS = FINAL_OUTPUTS + SNAPSHOTS


def _existing_outputs(out: Path, patterns=OUTPUTS) -> list[Path]:
    return [path for pattern in patterns for path in sorted(out.glob(pattern))]


def _clear_outputs(out: Path, patterns=OUTPUTS) -> list[str]:
    """Remove the results of an earlier run from ``out`` (``patterns`` of ``OUTPUTS``); returns the names."""
    removed = []
    for pattern in patterns:
        for path in out.glob(pattern):
            path.unlink()
            removed.append(path.name)
    return removed

#: The model families of Part IV: ``ModelRun.kind`` -> (model class, config class).
MODELS = {"gan": (GAN, GANConfig), "flow": (RealNVP, FlowConfig)}


@dataclass(frozen=True)
class VAERun:
    """Everything that defines a VAE run.

    Attributes:
        dataset: "mnist" or "fashion-mnist".
        binarize: dynamic binarisation (the protocol of Burda et al., 2016, one of the two common ones for
            MNIST likelihoods; the other keeps one fixed draw); with False the
            model sees grey levels in [0, 1].
        batch_size: 128, as in pytorch's examples/vae (Kingma & Welling, 2014, used batches of 100 with
            Adagrad).
        val_size: images of the training set held out for validation.
        model: the ``VAEConfig``.
        train: the ``TrainConfig``.
    """

    dataset: str = "mnist"
    binarize: bool = True
    batch_size: int = 128
    val_size: int = 10_000
    model: VAEConfig = field(default_factory=VAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict) -> "VAERun":
        """Inverse of ``dataclasses.asdict``; raises TypeError for unknown keys."""
        data = dict(data)
        return cls(model=VAEConfig(**data.pop("model")), train=TrainConfig(**data.pop("train")), **data)


@dataclass(frozen=True)
class ModelRun:
    """Everything that defines a GAN or flow run (Part IV); the data are grey levels, never binarised.

    Attributes:
        kind: "gan" or "flow" (a key of ``MODELS``).
        model: its ``GANConfig`` or ``FlowConfig``.
        dataset, batch_size, val_size, train: as in ``VAERun``.
    Raises:
        ValueError: for an unknown kind or a config of another kind.
    """

    kind: str
    model: GANConfig | FlowConfig
    dataset: str = "mnist"
    batch_size: int = 128
    val_size: int = 10_000
    train: TrainConfig = field(default_factory=TrainConfig)

    binarize = False   # a class constant (not a field): Part IV models see grey levels

    def __post_init__(self):
        if self.kind not in MODELS:
            raise ValueError(f"kind must be one of {sorted(MODELS)}, got {self.kind!r}")
        if not isinstance(self.model, MODELS[self.kind][1]):
            raise ValueError(f"a {self.kind} run needs a {MODELS[self.kind][1].__name__}, got {type(self.model).__name__}")

    def build(self):
        """The model, freshly initialised."""
        return MODELS[self.kind][0](self.model)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelRun":
        """Inverse of ``dataclasses.asdict``; raises TypeError for unknown keys, ValueError for an unknown kind."""
        data = dict(data)
        if data.get("kind") not in MODELS:
            raise ValueError(f"kind must be one of {sorted(MODELS)}, got {data.get('kind')!r}")
        config = MODELS[data["kind"]][1](**data.pop("model"))
        return cls(model=config, train=TrainConfig(**data.pop("train")), **data)


def git_commit(path: str | os.PathLike = ".") -> str | None:
    """The commit of the checkout containing ``path`` (with "-dirty" if it has changes), or None."""
    try:
        cwd = Path(path).resolve()
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _signature(run: VAERun | ModelRun) -> dict:
    """What a checkpoint must match to be resumed or loaded: the run minus how it is executed (its length,
    device and step path, ``companion.training.EXECUTION_SETTINGS``; epochs and device stay as 0 and
    "auto", and ``lr_decay`` = 1 and a VAE's ``train_iwae_k`` = 1 are left out: the form of the
    checkpoints written before ``cuda_graph``, ``lr_decay`` and ``train_iwae_k`` existed)."""
    signature = json.loads(json.dumps(asdict(replace(run, train=replace(run.train, epochs=0, device="auto")))))
    signature["train"].pop("cuda_graph", None)
    for part, added_later in (("train", ADDED_LATER), ("model", {"train_iwae_k": 1})):
        for key, default in added_later.items():
            if key in signature[part] and signature[part][key] == default:
                del signature[part][key]
    return signature


def _start(run, out: Path, make_model, data_root, data, progress, resume) -> tuple[Trainer, ImageData]:
    """Load (or move) the data, build the trainer (seeded model), resume or start afresh, write ``config.json``.

    The order matters: data first (a missing dataset changes nothing in ``out``), then the
    checkpoint's signature (a mismatch raises before any file is written), and ``config.json`` last.
    """
    had_checkpoint = (out / CHECKPOINT).is_file()
    if not had_checkpoint and _existing_outputs(out):
        names = ", ".join(p.name for p in _existing_outputs(out)[:4])
        raise ValueError(f"{out} holds the results of a run ({names}, ...) but no {CHECKPOINT}: there is nothing to "
                         "resume, and starting afresh would delete them; use another directory, or delete those "
                         "files first")
    device = resolve_device(run.train.device)
    if data is None:
        data = load_dataset(run.dataset, data_root, device=device, val_size=run.val_size)
    elif data.train.device != device:
        data = ImageData(**{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in vars(data).items()})
    trainer = Trainer.build(make_model, run.train, run_dir=out, progress=progress, signature=_signature(run))
    if not trainer.prepare(resume):
        _clear_outputs(out)                                  # --no-resume over an earlier run: all of it goes
    elif len(trainer.history) < run.train.epochs:
        _clear_outputs(out, FINAL_OUTPUTS)                   # more epochs to train: the earlier finish is stale
    _write_json(out / "config.json", asdict(run))
    return trainer, data


def _common_metrics(run, trainer: Trainer, history: list[dict], data: ImageData) -> dict:
    return {"dataset": run.dataset, "model": run.model.name, "epochs": len(history),
            "device": _device_name(trainer.device), "wall_time_s": trainer.wall_time_s, "torch": torch.__version__,
            "cuda_graph": trainer.cuda_graph_used,
            "commit": git_commit(Path(__file__).parent), "data_source": data.source,
            "parameters": sum(p.numel() for p in trainer.model.parameters())}


def run_vae(run: VAERun, out: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
            data: ImageData | None = None, resume: bool = True, progress: bool = True,
            on_epoch_end=None) -> dict:
    """Train (or resume) a VAE run in ``out`` and write its results there.

    Arguments:
        run: the settings.
        out: the run directory (created).
        data_root: where the data are (see ``companion.data.locate``); ignored when ``data`` is given.
        data: an already loaded ``ImageData`` (on any device; it is moved to the training device).
        resume: continue from ``out/checkpoint.pt`` if present.
        progress: show the progress bar.
        on_epoch_end: passed to ``Trainer.fit``.
    Returns:
        The metrics written to ``out/metrics.json``: ``test_elbo``, ``test_reconstruction`` and
        ``test_kl`` (nats per example; ``test_elbo = test_reconstruction - test_kl``), the same for
        ``val_``, plus ``dataset``, ``model``, ``device``, ``wall_time_s``, ``epochs``, ``commit``.
    Raises:
        DataNotFoundError: if the data are nowhere (see ``companion.data``).
        ValueError: if ``out`` holds a checkpoint of a different run, or one with more epochs than
            asked for, or results without a checkpoint (in each case nothing in ``out`` is changed).
        CheckpointError: if its checkpoint cannot be read (``resume=False`` starts afresh).
        RunInUseError: if another process is running in ``out``.
        FloatingPointError: if the training loss diverges (the last good epoch stays in ``out``).
    """
    with run_lock(out):
        return _run_vae(run, Path(out), data_root, data, resume, progress, on_epoch_end)


def _run_vae(run: VAERun, out: Path, data_root, data, resume, progress, on_epoch_end) -> dict:
    trainer, data = _start(run, out, lambda: VAE(run.model), data_root, data, progress, resume)
    train = Batches(data.train, run.batch_size, shuffle=True, binarize=run.binarize)
    # Evaluation batches: a convolutional decoder keeps 28 x 28 feature maps per image (about 100 MB
    # per layer for 1000 images), so it gets smaller batches to stay within Binder's 2 GB.
    eval_batch = 1000 if run.model.architecture == "mlp" else 200
    val = Batches(data.val, eval_batch, binarize=run.binarize) if len(data.val) else None
    history = trainer.fit(train, val, on_epoch_end=on_epoch_end)

    test = evaluate(trainer.model, Batches(data.test, eval_batch, binarize=run.binarize))
    last = history[-1] if history else {}
    metrics = {
        **_common_metrics(run, trainer, history, data),
        "likelihood": run.model.likelihood,
        "binarized": run.binarize,
        "test_elbo": test["elbo"],
        "test_reconstruction": test["reconstruction"],
        "test_kl": test["kl"],
        "val_elbo": last.get("val/elbo"),
        "train_elbo": last.get("train/elbo"),
    }
    _write_json(out / "metrics.json", metrics)

    model = trainer.model
    with torch.no_grad():
        torch.manual_seed(run.train.seed)
        save_grid(model.generate(64), out / "samples.png")
        x = Batches(data.test[:32], 32, binarize=run.binarize)
        x = next(iter(x))
        save_grid(torch.cat([x[:16], model.reconstruct(x)[:16], x[16:], model.reconstruct(x)[16:]]),
                  out / "reconstructions.png", nrow=16)
        if run.model.latent_dim == 2:
            save_grid(model.generate(z=manifold_latents(20).to(trainer.device)), out / "manifold.png", nrow=20)
    return metrics


def run_model(run: ModelRun, out: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
              data: ImageData | None = None, resume: bool = True, progress: bool = True, on_epoch_end=None) -> dict:
    """Train (or resume) a GAN or flow run in ``out`` and write its results there.

    Arguments: as for ``run_vae``.
    Returns:
        The metrics written to ``out/metrics.json``: ``kind``, ``dataset``, ``model``, ``epochs``,
        ``device``, ``wall_time_s``, ``parameters``, ``commit``, the last epoch's train and
        validation terms (``train/...``, ``val/...``) and, for a flow, ``test_nll_nats`` and
        ``test_bits_per_dim`` (exact log-density of one dequantization of each test image, with a
        fixed seed). ``samples.png`` holds 64 samples.
    Raises:
        DataNotFoundError, ValueError, CheckpointError, RunInUseError, FloatingPointError: as for ``run_vae``.
    """
    with run_lock(out):
        return _run_model(run, Path(out), data_root, data, resume, progress, on_epoch_end)


def _run_model(run: ModelRun, out: Path, data_root, data, resume, progress, on_epoch_end) -> dict:
    trainer, data = _start(run, out, run.build, data_root, data, progress, resume)
    train = Batches(data.train, run.batch_size, shuffle=True)
    val = Batches(data.val, 500) if len(data.val) else None
    history = trainer.fit(train, val, on_epoch_end=on_epoch_end)
    last = history[-1] if history else {}
    metrics = {"kind": run.kind, **_common_metrics(run, trainer, history, data),
               **{k: v for k, v in last.items() if k.startswith(("train/", "val/"))}}
    model = trainer.model
    if run.kind == "flow":
        test = evaluate(model, Batches(data.test, 500))
        metrics.update({"test_nll_nats": test["nll"], "test_bits_per_dim": test["bits_per_dim"]})
    _write_json(out / "metrics.json", metrics)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(run.train.seed)
        save_grid(model.generate(64), out / "samples.png")
    return metrics


def load_model_run(out: str | os.PathLike, device: str | torch.device = "cpu") -> tuple:
    """Load a GAN or flow run directory: ``(model, run, history, metrics)`` (model in eval mode).

    Raises:
        FileNotFoundError: if ``out`` has no ``config.json`` or no checkpoint.
        ValueError: if the checkpoint does not match ``config.json``.
    """
    return _load(out, ModelRun, device)


def _load(out, run_class, device):
    out = Path(out)
    for name in ("config.json", CHECKPOINT):
        if not (out / name).is_file():
            raise FileNotFoundError(f"{out / name} not found: is {out} a run directory of the companion?")
    run = run_class.from_dict(json.loads((out / "config.json").read_text()))
    state = read_checkpoint(out / CHECKPOINT, map_location=device)
    if state["signature"] != _signature(run):
        raise ValueError(f"{out / CHECKPOINT} does not match {out / 'config.json'}: the checkpoint was written by another run")
    model = (VAE(run.model) if run_class is VAERun else run.build()).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else None
    return model, run, state["history"], metrics


def load_run(out: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[VAE, VAERun, list[dict], dict | None]:
    """Load a finished (or interrupted) run: ``(model, run, history, metrics)``.

    Raises:
        FileNotFoundError: if ``out`` has no ``config.json`` or no checkpoint.
        ValueError: if the checkpoint does not match ``config.json``.
        CheckpointError: if the checkpoint cannot be read.
    """
    return _load(out, VAERun, device)
