"""Where the course's files live: the repository, the book, and the book's recorded results.

The lowest module of the package: it imports nothing of the companion, so the modules that read or
write results (``frechet``, ``reproduce``, ``course``, ``assignments``) share one definition and the
data still flow one way (data -> models -> losses -> trainer -> results -> book).

The paths assume the editable install of the README (``pip install -e .``), in which the package
sits inside the repository.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO", "BOOK", "RESULTS", "SCRATCH_RESULTS"]

#: The repository root (the folder holding ``companion/`` and ``book/``).
REPO = Path(__file__).resolve().parent.parent
#: The chapters.
BOOK = REPO / "book"
#: Recorded full runs, one folder per registered experiment (``python -m companion reproduce NAME``).
RESULTS = BOOK / "results"
#: Where ``reproduce`` writes a run whose settings were overridden (``--epochs``, ``--iwae-k``) when no
#: ``--results`` is given: relative to the working directory, never inside ``RESULTS``.
SCRATCH_RESULTS = Path("runs") / "reproduce"
