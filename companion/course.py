"""The one setup call every chapter makes: quick or full settings, device, seed, paths.

The switch is the environment variable ``COMPANION_MODE``: ``quick`` (the default; each chapter
runs in about 2 minutes on a 2-core CPU in under 1.5 GB) or ``full`` (the settings of the runs
recorded in ``book/results/``, for a GPU). A chapter asks ``settings.pick(quick=..., full=...)``
for every size that depends on it, so the two modes differ only in numbers, never in code.

See: appendix "Running the course".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .paths import BOOK, RESULTS
from .training import resolve_device, seed_everything

__all__ = ["Settings", "setup", "MODES"]

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
