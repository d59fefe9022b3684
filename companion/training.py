"""A trainer that knows nothing about VAEs: a model gives a loss and named terms; this does the rest.

The contract: ``model.loss(batch) -> (loss, terms)`` where ``loss`` is a scalar tensor to minimise
and ``terms`` maps names to scalar tensors (batch means) to log. A model whose update is not one
gradient step on one loss (the GAN's alternating updates of discriminator and generator) defines
``configure_optimizers(config) -> {name: optimizer}`` and ``training_step(batch, optimizers) ->
(loss, terms)``, which does its own backward passes and steps; ``loss`` is then only logged. The trainer handles the device,
seeds, Adam, precision, one progress bar per run, the per-epoch history of train and validation
terms with wall times, and checkpoints after every epoch, so an interrupted run loses at most the
epoch in progress and resumes to the same history (bit for bit on a CPU).

Per step the trainer copies nothing to the host: the terms are summed on the device and read once per
epoch. (A likelihood with bounded support reads one number back per step to check the data,
``companion.likelihoods.set_validation``.)

On CUDA the trainer replays the training step as a CUDA graph (``TrainConfig.cuda_graph``, on by
default): at batch 128 a small MLP's step is bound by kernel launches, not arithmetic, and one graph
launch replaces a few hundred of them. See ``_GraphedStep`` for what is captured and why.

See: chapter "Training a VAE".
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "Trainer", "CheckpointError", "read_checkpoint", "resolve_device", "evaluate",
           "seed_everything", "CHECKPOINT", "EXECUTION_SETTINGS", "ADDED_LATER", "train_signature", "CudaGraphError"]

CHECKPOINT = "checkpoint.pt"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read (damaged, truncated, or not the companion's)."""


def read_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """``torch.load`` a checkpoint written by ``Trainer.save_checkpoint``.

    Raises:
        CheckpointError: if the file cannot be unpickled or lacks the trainer's entries; the message
            names the file and how to start afresh.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:   # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        reason = " ".join(str(error).split())[:200]
        raise CheckpointError(
            f"the checkpoint {path} cannot be read ({type(error).__name__}: {reason}); it is damaged or "
            "incomplete. Start the run afresh with --no-resume (resume=False in Python), which replaces it, "
            "or delete the file") from None
    if not isinstance(state, dict) or not {"signature", "model", "history"} <= set(state):
        raise CheckpointError(f"{path} is not a checkpoint of the companion's trainer (it lacks signature, model "
                              "or history); use another run directory, or --no-resume to replace it")
    return state


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        epochs: passes over the training batches.
        lr: Adam's learning rate; 1e-3 is the usual choice for these small models (Kingma & Ba, 2015).
        seed: seeds torch's generators (weights, shuffling, binarisation, reparameterisation noise).
        device: "auto" (CUDA, then MPS, then CPU), or a torch device name such as "cpu" or "cuda:0".
        precision: "fp32", or "bf16"/"fp16" for autocast on a GPU.
        lr_decay: gamma, the factor the learning rate is multiplied by after each epoch: epoch e
            trains with lr * gamma ** (e - 1). 1 (the default) keeps it constant. Burda et al.
            (2016) lowered it tenfold over their 3,280 epochs; 10 ** (-1 / E) does that over E.
        cuda_graph: on a CUDA device, replay the training step (forward, backward, Adam) as one
            CUDA graph when the model allows it (a model trained by one loss on batches of one
            shape); False runs every step eagerly. It changes the speed, not the arithmetic, and is
            ignored on the CPU and on MPS.
    """

    epochs: int = 10
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    lr_decay: float = 1.0
    cuda_graph: bool = True

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")
        if not (math.isfinite(self.lr_decay) and 0 < self.lr_decay <= 1):
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not isinstance(self.cuda_graph, bool):
            raise TypeError(f"cuda_graph must be True or False, got {self.cuda_graph!r}")


#: Settings of ``TrainConfig`` that say how and how long to train, not what is trained: a checkpoint
#: written with other values of these is resumed (on another device, or on the other step path).
EXECUTION_SETTINGS = ("epochs", "device", "cuda_graph")
#: Settings added after checkpoints were first written, and their defaults: a signature leaves one
#: out while it has its default, so that those checkpoints still resume.
ADDED_LATER = {"lr_decay": 1.0}


def train_signature(config: TrainConfig) -> dict:
    """The part of ``config`` a checkpoint must match: all but ``EXECUTION_SETTINGS``, and
    ``ADDED_LATER`` settings only where they differ from their default."""
    return {k: v for k, v in asdict(config).items()
            if k not in EXECUTION_SETTINGS and not (k in ADDED_LATER and v == ADDED_LATER[k])}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA if available, else Apple's MPS, else CPU; any other name is checked and returned.

    Raises:
        ValueError: if the named device is unknown or not available on this machine.
    """
    if str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here")
    return device


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and accelerator generators (the only randomness the companion uses)."""
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    # The generators take CPU byte tensors; a checkpoint loaded with map_location=<accelerator> has
    # moved them onto it.
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:      # this device's generator (the run uses no other)
        index = device.index if device.index is not None else torch.cuda.current_device()
        saved = state["cuda"]
        torch.cuda.set_rng_state(saved[index if index < len(saved) else 0].cpu(), device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"].cpu())


@contextlib.contextmanager
def _fixed_rng(seed: int, device: torch.device):
    """Run a block with torch's generators seeded to ``seed``, restoring their state afterwards."""
    on_cuda = {"devices": [device], "device_type": "cuda"} if device.type == "cuda" else {"devices": []}
    with torch.random.fork_rng(**on_cuda):
        torch.manual_seed(seed)
        yield


def _mean_terms(sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    """Divide on the device and read all terms with one host copy."""
    names = list(sums)
    values = (torch.stack([sums[k].float() for k in names]) / max(count, 1)).tolist()
    return dict(zip(names, values))


def _accumulate(sums: dict, loss: torch.Tensor, terms: dict, n: int) -> None:
    for name, value in {"loss": loss, **terms}.items():
        value = value.detach() * n
        sums[name] = sums[name] + value if name in sums else value


def _accumulate_in_place(sums: dict, loss: torch.Tensor, terms: dict, n: int) -> None:
    """As ``_accumulate``, into tensors that keep their storage (a CUDA graph writes to them): float32,
    or the term's own dtype where it is wider (a float64 model logs float64 sums, as eagerly)."""
    for name, value in {"loss": loss, **terms}.items():
        if name not in sums:
            dtype = torch.promote_types(value.dtype, torch.float32)
            sums[name] = torch.zeros((), dtype=dtype, device=value.device)
        sums[name].add_(value.detach() * n)


def _first_dim(batch) -> int:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x.shape[0]


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, seed: int = 0) -> dict[str, float]:
    """Mean of the model's loss and terms over ``batches`` (weighted by batch size), in eval mode.

    The block runs with torch's generators seeded to ``seed`` and restored afterwards, so the result
    is reproducible (same binarisation and same reparameterisation noise every call) and evaluating
    does not change the course of training.

    Returns:
        ``{"loss": ..., **terms}`` as Python floats.
    Raises:
        ValueError: if ``batches`` is empty.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    try:
        with _fixed_rng(seed, device):
            for batch in batches:
                loss, terms = model.loss(batch)
                n = _first_dim(batch)
                _accumulate(sums, loss, terms, n)
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got no batches")
    return _mean_terms(sums, count)


def _jsonable(obj):
    return asdict(obj) if is_dataclass(obj) else obj


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class CudaGraphError(RuntimeError):
    """The training step could not be captured as a CUDA graph; rerun with ``cuda_graph=False``."""


class _GraphedStep:
    """The training step captured once as a CUDA graph and replayed for every batch of its shape.

    Captured: ``zero_grad``, the forward pass and loss, ``backward``, the optimizer's step (fused Adam,
    whose step count and bias corrections stay on the device; ``capturable`` is set while capturing)
    and the addition of the logged terms to the epoch's sums. Outside the graph: the batches
    themselves (``Batches`` shuffles and binarises, then the batch is copied into the graph's input),
    evaluation and checkpoints. The noise drawn inside the step (reparameterization, a flow's
    dequantization) comes from CUDA's Philox generator, which a graph registers at capture: every
    replay reads the generator's current offset and advances it, so each replay draws fresh noise,
    the noise an eager step would draw from the same generator state.

    The graph has the shape of the run's first batch. The first ``WARMUP`` batches of that shape run
    eagerly on a side stream (PyTorch's recipe: state created on first use, such as Adam's moments,
    must exist before capture); they are training steps on the run's first batches, so no batch is
    spent twice or skipped. The last of them runs with CUDA's sync debug mode set to "error": a step
    that reads a value back to the host (which a capture forbids, and which would leave the process
    unusable if met during capture) raises there instead; the generator, model, optimizers and sums
    are put back as they were before that step, the batch is trained again eagerly, a warning says
    why, and the run continues eagerly. (The mode does not see every read: a non-blocking copy from
    pageable memory slips through and then fails the capture, which raises ``CudaGraphError``.) Batches of another shape (the last, smaller
    batch of an epoch) and batches with labels also run eagerly, on the same parameters and
    optimizer state.

    ``rehearse=True`` (tests on a machine without CUDA) keeps all this bookkeeping but "captures" by
    remembering the step and "replays" by running it eagerly on the static input.

    Source: PyTorch documentation, "CUDA Graphs: whole-network capture".
    """

    WARMUP = 3

    def __init__(self, trainer: "Trainer", rehearse: bool = False):
        self.trainer, self.rehearse = trainer, rehearse
        self.sums: dict[str, torch.Tensor] = {}
        self.shape: tuple | None = None          # (shape, dtype) of the run's first batch
        self.static: torch.Tensor | None = None
        self.graph = None
        self.warmed = 0
        self.replays = 0
        self.failed: str | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def new_epoch(self) -> dict[str, torch.Tensor]:
        for total in self.sums.values():      # zeroed in place: the graph adds to these very tensors
            total.zero_()
        return self.sums

    def _body(self, x: torch.Tensor) -> None:
        loss, terms = self.trainer.step(x)
        _accumulate_in_place(self.sums, loss, terms, x.shape[0])

    def __call__(self, batch) -> None:
        if not isinstance(batch, torch.Tensor):
            loss, terms = self.trainer.step(batch)
            _accumulate_in_place(self.sums, loss, terms, _first_dim(batch))
            return
        if self.shape is None:
            self.shape = (batch.shape, batch.dtype)
        if (batch.shape, batch.dtype) != self.shape or self.failed is not None:
            self._body(batch)                                  # another shape: eagerly
        elif self.graph is not None:
            self.static.copy_(batch)
            self._replay()
        elif self.warmed < self.WARMUP:
            self._warm_up(batch)
        else:
            self._capture(batch)
            self.static.copy_(batch)
            self._replay()

    def _warm_up(self, batch: torch.Tensor) -> None:
        self.warmed += 1
        if self.rehearse:
            self._body(batch)
            return
        device = self.trainer.device
        probe = self.warmed == self.WARMUP
        if probe:     # what the probe may change before it fails, to be put back before the batch is retrained
            snapshot = self._snapshot()     # copied on the current stream, before the side stream waits for it
            mode = torch.cuda.get_sync_debug_mode()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        try:
            with torch.cuda.stream(side):
                if probe:
                    torch.cuda.set_sync_debug_mode("error")      # process-wide: restored below
                self._body(batch)
        except RuntimeError as error:
            if not (probe and "synchronizing CUDA operation" in str(error)):
                raise                                           # out of memory, cuBLAS, ...: not ours to hide
            self.failed = " ".join(str(error).split())[:300]
        finally:
            if probe:
                torch.cuda.set_sync_debug_mode(mode)
            torch.cuda.current_stream(device).wait_stream(side)
        if self.failed is not None:
            warnings.warn(f"the training step reads a value back to the host, which a CUDA graph cannot hold "
                          f"({self.failed}); the run continues with eager steps (TrainConfig(cuda_graph=False) "
                          "skips the attempt)", RuntimeWarning, stacklevel=4)
            self._restore(snapshot)
            self._body(batch)

    def _snapshot(self) -> tuple:
        """The generator, model (weights and buffers such as batch-norm statistics), optimizers and
        sums, copied: a probe that fails part-way may have drawn noise, moved statistics or stepped."""
        trainer = self.trainer
        return (torch.cuda.get_rng_state(trainer.device),
                {k: v.clone() for k, v in trainer.model.state_dict().items()},
                {name: copy.deepcopy(opt.state_dict()) for name, opt in trainer.optimizers.items()},
                {k: v.clone() for k, v in self.sums.items()})

    def _restore(self, snapshot: tuple) -> None:
        rng, model, optimizers, sums = snapshot
        torch.cuda.set_rng_state(rng, self.trainer.device)
        self.trainer.model.load_state_dict(model)
        for name, opt in self.trainer.optimizers.items():
            opt.load_state_dict(optimizers[name])
        for name in list(self.sums):
            if name in sums:
                self.sums[name].copy_(sums[name])
            else:
                del self.sums[name]

    def _capture(self, batch: torch.Tensor) -> None:
        self.static = batch.clone()
        if self.rehearse:
            self.graph = "rehearsal"
            return
        # Adam refuses to be captured unless capturable; the fused kernel keeps its step count on the
        # device either way, so the flag is set for the capture only (eager steps with it set warn).
        groups = [group for optimizer in self.trainer.optimizers.values() for group in optimizer.param_groups]
        before = [group["capturable"] for group in groups]
        device = self.trainer.device
        stream = torch.cuda.current_stream(device)
        graph = torch.cuda.CUDAGraph()
        try:
            for group in groups:
                group["capturable"] = True
            torch.cuda.synchronize(device)
            with torch.cuda.graph(graph):
                self._body(self.static)
        except Exception as error:
            torch.cuda.set_stream(stream)      # a failed capture_end leaves the capture stream current
            raise CudaGraphError(
                f"the training step could not be captured as a CUDA graph ({' '.join(str(error).split())[:300]}). "
                "Rerun with --no-cuda-graph (TrainConfig(cuda_graph=False)): the run resumes from its last "
                "finished epoch") from error
        finally:
            for group, capturable in zip(groups, before):
                group["capturable"] = capturable
        self.graph = graph

    def _replay(self) -> None:
        self.replays += 1
        if self.rehearse:
            self._body(self.static)
        else:
            self.graph.replay()


class Trainer:
    """Train any model with a ``loss(batch) -> (loss, terms)`` method.

    Arguments:
        model: an ``nn.Module``; it is moved to the chosen device.
        config: a ``TrainConfig``.
        run_dir: where ``checkpoint.pt`` and ``history.json`` go after every epoch; None keeps
            everything in memory (no resume).
        signature: what a checkpoint must match to be resumed (default: the model's ``config``
            and the training settings other than ``EXECUTION_SETTINGS``).
        progress: show a tqdm progress bar (one for the whole run).

    The seed is applied before the model's weights are used, so build the model *after* calling
    ``seed_everything`` if the initial weights must be reproducible (``Trainer.build`` does both).

    Raises:
        ValueError: for an unavailable device, or (in ``fit``) a checkpoint made with other settings.
    """

    def __init__(self, model: nn.Module, config: TrainConfig = TrainConfig(), run_dir: str | os.PathLike | None = None,
                 signature: dict | None = None, progress: bool = True):
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        if hasattr(self.model, "configure_optimizers"):     # a model with its own update rule (the GAN)
            self.optimizers = dict(self.model.configure_optimizers(config))
        else:
            # The fused kernel updates all parameters in one pass (same arithmetic, about 25% off a CPU step here).
            self.optimizers = {"model": torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                                         fused=self.device.type in ("cpu", "cuda"))}
        self.run_dir = Path(run_dir) if run_dir is not None else None
        train = train_signature(config)
        self.signature = json.loads(json.dumps(
            signature if signature is not None else {"model": _jsonable(getattr(model, "config", None)), "train": train},
            default=str))
        self.progress = progress
        self.history: list[dict] = []
        self.wall_time_s = 0.0
        self._resumed: bool | None = None     # set by prepare()
        # load_state_dict replaces whole param groups, implementation flags included; a resumed
        # optimizer keeps this trainer's own (a checkpoint may come from another device or path).
        self._flags = {name: [{k: group.get(k) for k in ("capturable", "fused", "foreach")} for group in opt.param_groups]
                       for name, opt in self.optimizers.items()}
        self._initial_lr = {name: [float(group["lr"]) for group in opt.param_groups]
                            for name, opt in self.optimizers.items()}
        self._graphed: _GraphedStep | None = None
        self._rehearse_graph = False          # tests without CUDA: see _GraphedStep
        #: Whether the last ``fit`` replayed its steps as a CUDA graph (see ``TrainConfig.cuda_graph``).
        self.cuda_graph_used = False

    @classmethod
    def build(cls, make_model: Callable[[], nn.Module], config: TrainConfig = TrainConfig(), **kwargs) -> "Trainer":
        """Seed, then build the model and the trainer: reproducible initial weights."""
        seed_everything(config.seed)
        return cls(make_model(), config, **kwargs)

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / CHECKPOINT if self.run_dir else None

    def save_checkpoint(self) -> None:
        """Write model, optimizer, history, RNG state and signature to ``run_dir`` (atomically)."""
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "signature": self.signature,
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "history": self.history,
            "wall_time_s": self.wall_time_s,
            "rng": _rng_state(self.device),
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)
        _write_json(self.run_dir / "history.json", self.history)

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> bool:
        """Restore from a checkpoint; returns False if there is none.

        Raises:
            ValueError: if the checkpoint was made with other settings (the differing keys are named).
            CheckpointError: if the file cannot be read.
        """
        path = Path(path) if path else self.checkpoint_path
        if path is None or not path.is_file():
            return False
        state = read_checkpoint(path, map_location=self.device)
        if state["signature"] != self.signature:
            diff = _diff(state["signature"], self.signature)
            raise ValueError(
                f"checkpoint {path} was made with other settings ({diff}); "
                "use another run directory, or --no-resume (resume=False in Python) to start afresh in this one"
            )
        self.model.load_state_dict(state["model"])
        # Checkpoints written before models could own several optimizers hold one, under "optimizer".
        saved = state["optimizers"] if "optimizers" in state else {name: state["optimizer"] for name in self.optimizers}
        if set(saved) != set(self.optimizers):
            raise ValueError(f"checkpoint {path} holds optimizers {sorted(saved)}, this model has {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(saved[name])
            for group, flags in zip(opt.param_groups, self._flags[name]):
                group.update(flags)
                if isinstance(group["lr"], torch.Tensor):      # the graph path's rate: see _set_lr
                    group["lr"] = float(group["lr"])
                if group.get("fused") or group.get("capturable"):
                    # Saved by a plain Adam (on MPS: step counts on the CPU), which load_state_dict
                    # leaves where they are; the fused kernel and a capture want them on the device.
                    for param in group["params"]:
                        step = opt.state.get(param, {}).get("step")
                        if isinstance(step, torch.Tensor) and step.device != param.device:
                            opt.state[param]["step"] = step.to(device=param.device, dtype=torch.float32)
        self.history = state["history"]
        self.wall_time_s = state["wall_time_s"]
        _set_rng_state(state["rng"], self.device)
        return True

    # -- training ---------------------------------------------------------------------------------
    def _autocast(self):
        dtype = PRECISIONS[self.config.precision]
        if dtype is None:
            return contextlib.nullcontext()
        # autocast's cache of cast weights must not outlive a graph capture (torch.cuda.graph's docs)
        return torch.autocast(device_type=self.device.type, dtype=dtype, cache_enabled=self._graphed is None)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of a model trained by one loss (for a model with several, see ``optimizers``)."""
        if len(self.optimizers) != 1:
            raise AttributeError(f"this model has several optimizers: {sorted(self.optimizers)}")
        return next(iter(self.optimizers.values()))

    def step(self, batch) -> tuple[torch.Tensor, dict]:
        """One update: ``training_step`` when the model has one, else a gradient step on ``model.loss``."""
        if hasattr(self.model, "training_step"):
            with self._autocast():
                return self.model.training_step(batch, self.optimizers)
        with self._autocast():
            loss, terms = self.model.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss, terms

    def _set_lr(self, epoch: int, as_tensor: bool = False) -> None:
        """Each group's learning rate for ``epoch``: its initial value times lr_decay ** (epoch - 1).

        A CUDA graph bakes a Python number into the captured kernel; with ``as_tensor`` the rate
        is a 0-dim tensor on the device that the graph reads and this updates in place.
        """
        if self.config.lr_decay == 1.0:
            return                              # constant: the optimizers keep their own numbers
        factor = self.config.lr_decay ** (epoch - 1)
        for name, optimizer in self.optimizers.items():
            for group, initial in zip(optimizer.param_groups, self._initial_lr[name]):
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(initial * factor)
                elif as_tensor:
                    group["lr"] = torch.tensor(initial * factor, dtype=torch.float32, device=self.device)
                else:
                    group["lr"] = initial * factor

    def cuda_graph_refusal(self) -> str | None:
        """Why ``fit`` will run eager steps rather than a CUDA graph, or None if it will try the graph."""
        if not self.config.cuda_graph:
            return "switched off (TrainConfig.cuda_graph=False)"
        if self.device.type != "cuda" and not self._rehearse_graph:
            return f"the device is {self.device.type}, not CUDA"
        if hasattr(self.model, "training_step"):
            return "the model makes its own updates (training_step)"
        return None

    def prepare(self, resume: bool = True) -> bool:
        """Resume from ``run_dir``'s checkpoint, or write the initial one; returns whether it resumed.

        Called by ``fit``; call it earlier to find out, before writing anything else into the run
        directory, whether its checkpoint belongs to these settings (a refused resume changes no
        file). Calling it again returns the first answer and does nothing.

        Raises:
            ValueError: if the checkpoint was made with other settings, or holds more epochs than
                ``config.epochs`` (a shorter run must not silently report a longer one).
            CheckpointError: if it cannot be read.
        """
        if self._resumed is not None:
            return self._resumed
        resumed = False
        if self.run_dir is not None:
            resumed = resume and self.load_checkpoint()
            if resumed and len(self.history) > self.config.epochs:
                raise ValueError(
                    f"{self.checkpoint_path} already holds {len(self.history)} epochs, more than the "
                    f"{self.config.epochs} asked for; ask for {len(self.history)} or more to continue that run, or "
                    "start afresh with --no-resume (resume=False in Python) or in another directory")
            if not resumed:
                self.save_checkpoint()   # the initial state: even a run stopped in epoch 1 can be loaded
            _write_json(self.run_dir / "train_signature.json", self.signature)
        self._resumed = resumed
        return resumed

    def fit(self, train: Iterable, val: Iterable | None = None, *, resume: bool = True,
            on_epoch_end: Callable[["Trainer", int], None] | None = None) -> list[dict]:
        """Train for ``config.epochs`` epochs (continuing from a checkpoint in ``run_dir`` when ``resume``).

        Arguments:
            train: re-iterable batches (e.g. ``companion.data.Batches`` with ``shuffle=True``).
            val: optional batches evaluated after each epoch with ``evaluate`` (fixed seed).
            resume: continue from ``run_dir/checkpoint.pt`` if it exists (passed to ``prepare``; once
                ``prepare`` has run, its decision stands).
            on_epoch_end: called as ``f(trainer, epoch)`` after each epoch's checkpoint is written.
        On CUDA the steps are replayed as a CUDA graph unless ``cuda_graph_refusal()`` says why not
        (``_GraphedStep``); ``cuda_graph_used`` tells afterwards whether they were.

        Returns:
            The history: one dict per epoch with ``epoch``, ``train/<term>``, ``val/<term>``, what the
            model's ``epoch_summary()`` returns if it has one, ``time_s`` (this epoch) and
            ``wall_time_s`` (cumulative).
        Raises:
            FloatingPointError: if the training loss of an epoch is not finite.
            ValueError, CheckpointError: from ``prepare``.
        """
        self.prepare(resume)
        start = len(self.history)
        steps = len(train) if hasattr(train, "__len__") else None
        bar = tqdm(total=steps * self.config.epochs if steps else None, initial=steps * start if steps else 0,
                   disable=not self.progress, desc="training", unit="step", dynamic_ncols=True)
        self.model.train()
        # after prepare(): a resumed optimizer has new state tensors, which the graph must capture
        self._graphed = _GraphedStep(self, rehearse=self._rehearse_graph) if self.cuda_graph_refusal() is None else None
        try:
            for epoch in range(start + 1, self.config.epochs + 1):
                t0 = time.perf_counter()
                self._set_lr(epoch, as_tensor=self._graphed is not None)
                sums: dict[str, torch.Tensor] = {} if self._graphed is None else self._graphed.new_epoch()
                count = 0
                for batch in train:
                    if self._graphed is None:
                        loss, terms = self.step(batch)
                        _accumulate(sums, loss, terms, _first_dim(batch))
                    else:
                        self._graphed(batch)
                    count += _first_dim(batch)
                    bar.update(1)
                record = {"epoch": epoch, **{f"train/{k}": v for k, v in _mean_terms(sums, count).items()}}
                if not math.isfinite(record["train/loss"]):
                    raise FloatingPointError(
                        f"the training loss of epoch {epoch} is {record['train/loss']}; the last good state is "
                        f"{self.checkpoint_path or 'not saved (no run_dir)'}. Try a lower learning rate."
                    )
                if val is not None:
                    record.update({f"val/{k}": v for k, v in evaluate(self.model, val).items()})
                    self.model.train()
                summary = getattr(self.model, "epoch_summary", None)   # e.g. a VAE's learned decoder sigma
                if callable(summary):
                    record.update(summary())
                record["time_s"] = time.perf_counter() - t0
                self.wall_time_s += record["time_s"]
                record["wall_time_s"] = self.wall_time_s
                self.history.append(record)
                self.save_checkpoint()
                shown = {k.split("/")[0] + " " + k.split("/")[1]: f"{v:.2f}" for k, v in record.items()
                         if k in ("train/loss", "val/loss")}
                bar.set_postfix(shown, refresh=False)
                if on_epoch_end is not None:
                    on_epoch_end(self, epoch)
        finally:
            bar.close()
            self.cuda_graph_used = self._graphed is not None and self._graphed.captured
            self._last_graphed, self._graphed = self._graphed, None      # kept for inspection (tests)
        return self.history


def _diff(a: dict, b: dict, prefix: str = "") -> str:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            sub = _diff(x, y, f"{prefix}{key}.")
            if sub:
                out.append(sub)
        elif x != y:
            out.append(f"{prefix}{key}: checkpoint {x!r}, now {y!r}")
    return "; ".join(out)
