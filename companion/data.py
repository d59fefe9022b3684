"""Datasets on the training device: MNIST and Fashion-MNIST as uint8 tensors, batched without a DataLoader.

The images are read by torchvision's dataset classes (they own the IDX format); this module only
decides *where* the files come from and keeps the whole dataset (47 MB as uint8) on the device, so a
batch is an index into a resident tensor instead of 128 PIL images converted one by one.

Where the data are looked for, in order (the first that holds the four raw files wins):

1. the root passed as ``root=`` / ``--data-root``, else the environment variable ``COMPANION_DATA``;
2. the per-user cache (``cache_dir()``);
3. Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``), Fashion-MNIST only;
4. torchvision's download into the cache (needs internet).

A root may hold the raw files compressed (``.gz``) only, as the course's offline mirror does. Such a
root is treated as read-only: the files are extracted into the cache and read from there.

See: chapter "Training a VAE"; LeCun et al. (1998) for MNIST; Xiao, Rasul & Vollgraf (2017) for
Fashion-MNIST.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "ImageData",
    "Batches",
    "cache_dir",
    "locate",
    "load_dataset",
    "to_float",
]

ENV_ROOT = "COMPANION_DATA"
ENV_CACHE = "COMPANION_CACHE"
DEBIAN_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _dataset_classes() -> dict:
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}


#: The dataset names this module knows, with their class labels.
DATASETS = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset is in none of the places looked at and cannot be downloaded."""


def cache_dir() -> Path:
    """The per-user cache: ``$COMPANION_CACHE`` if set, else the platform's cache folder
    (``~/.cache/companion`` on Linux, chosen by ``platformdirs``)."""
    return Path(os.environ.get(ENV_CACHE) or platformdirs.user_cache_dir("companion"))


def _folder(name: str) -> str:
    """torchvision's folder name for a dataset (``MNIST``, ``FashionMNIST``)."""
    _check_name(name)
    return _dataset_classes()[name].__name__


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")


def _raw_state(raw: Path) -> str:
    """'extracted', 'gz' or a reason why this raw folder is unusable."""
    if not raw.is_dir():
        return f"no folder {raw}"
    if all((raw / f).is_file() for f in RAW_FILES):
        return "extracted"
    if all((raw / f"{f}.gz").is_file() for f in RAW_FILES):
        return "gz"
    missing = [f for f in RAW_FILES if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]
    return f"{raw} lacks {', '.join(missing)} (.gz or extracted)"


def _extract(raw: Path, dest_raw: Path) -> None:
    """Decompress the four ``.gz`` files of ``raw`` into ``dest_raw`` (``raw`` is not written)."""
    from torchvision.datasets.utils import extract_archive

    dest_raw.mkdir(parents=True, exist_ok=True)
    for f in RAW_FILES:
        if not (dest_raw / f).is_file():
            extract_archive(str(raw / f"{f}.gz"), str(dest_raw))


@dataclass
class Located:
    """Where a dataset was found: ``root`` is a torchvision root holding the extracted raw files."""

    name: str
    root: Path
    source: str
    looked: list[str] = field(default_factory=list)


def locate(name: str, root: str | os.PathLike | None = None, download: bool = True) -> Located:
    """Find (or fetch) a dataset and return a torchvision root that holds its extracted raw files.

    Arguments:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        root: a torchvision-style root (``<root>/MNIST/raw/...``); default ``$COMPANION_DATA``.
        download: whether to try torchvision's download into the cache as a last resort.
    Returns:
        A ``Located`` with the usable root, a one-line description of the source, and the list of
        places looked at.
    Raises:
        ValueError: for an unknown dataset name.
        DataNotFoundError: when no place holds the data; the message lists every place looked at
            and the ways to provide the data.
    """
    folder = _folder(name)
    cache = cache_dir()
    looked: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if root is not None:
        candidates.append(("data root argument", Path(root)))
    elif os.environ.get(ENV_ROOT):
        candidates.append((f"${ENV_ROOT}", Path(os.environ[ENV_ROOT])))
    candidates.append(("per-user cache", cache))

    for label, base in candidates:
        raw = base.expanduser() / folder / "raw"
        state = _raw_state(raw)
        looked.append(f"{label}: {raw} ({state})")
        if state == "extracted":
            return Located(name, base.expanduser(), f"{raw} ({label})", looked)
        if state == "gz":
            _extract(raw, cache / folder / "raw")
            return Located(name, cache, f"{raw} ({label}, .gz extracted into {cache / folder / 'raw'})", looked)

    if name in DEBIAN_DIRS:
        deb = DEBIAN_DIRS[name]
        state = _raw_state(deb)
        looked.append(f"Debian package dataset-{name}: {deb} ({state})")
        if state == "gz":
            _extract(deb, cache / folder / "raw")
            return Located(name, cache, f"{deb} (Debian, extracted into {cache / folder / 'raw'})", looked)

    if download:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                _dataset_classes()[name](str(cache), train=True, download=True)
            return Located(name, cache, f"downloaded by torchvision into {cache / folder / 'raw'}", looked)
        except Exception as error:  # torchvision raises RuntimeError/URLError when offline
            looked.append(f"torchvision download into {cache}: failed ({type(error).__name__}: {' '.join(str(error).split())})")
    else:
        looked.append("torchvision download: not tried (download=False)")

    ways = [
        f"pass a data root (data_root=... / --data-root DIR) whose {folder}/raw/ holds the four IDX files "
        f"({', '.join(RAW_FILES)}), extracted or as .gz",
        f"or set {ENV_ROOT}=DIR to such a folder",
        f"or connect to the internet: torchvision then downloads into {cache}",
    ]
    if name in DEBIAN_DIRS:
        ways.append(f"or install Debian's package: apt-get install dataset-{name}")
    raise DataNotFoundError(
        f"the {name} dataset was not found. Looked at:\n  - "
        + "\n  - ".join(looked)
        + "\nTo provide it:\n  - "
        + "\n  - ".join(ways)
    )


@dataclass
class ImageData:
    """A dataset's splits as uint8 tensors of shape (N, 1, 28, 28) with int64 labels (N,), on one device.

    ``train`` and ``val`` are carved from the official training set by a fixed permutation;
    ``test`` is the official test set.
    """

    name: str
    source: str
    train: Tensor
    train_labels: Tensor
    val: Tensor
    val_labels: Tensor
    test: Tensor
    test_labels: Tensor

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASETS[self.name]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    def split(self, which: str) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` of ``"train"``, ``"val"`` or ``"test"``; raises ValueError otherwise."""
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', not {which!r}")
        return getattr(self, which), getattr(self, f"{which}_labels")


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    val_size: int = 10_000,
    split_seed: int = 0,
    download: bool = True,
) -> ImageData:
    """Load ``name`` into uint8 tensors on ``device``, with a validation split carved from training.

    Arguments:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        root: data root (see ``locate``).
        device: where the tensors live (the training device).
        val_size: images moved from the training set into the validation split (0 for none).
        split_seed: seed of the permutation that chooses them (fixed, so every run shares the split).
        download: whether torchvision may download when the files are nowhere local.
    Returns:
        ``ImageData`` with images of shape (N, 1, 28, 28), dtype uint8, values 0..255.
    Raises:
        ValueError: unknown name, or ``val_size`` outside [0, 60000).
        DataNotFoundError: see ``locate``.
    """
    located = locate(name, root, download=download)
    cls = _dataset_classes()[name]
    train_set = cls(str(located.root), train=True, download=False)
    test_set = cls(str(located.root), train=False, download=False)
    images, labels = train_set.data.unsqueeze(1), train_set.targets
    if not 0 <= val_size < len(images):
        raise ValueError(f"val_size must be in [0, {len(images)}), got {val_size}")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    dev = torch.device(device)
    return ImageData(
        name=name,
        source=located.source,
        train=images[train_idx].to(dev),
        train_labels=labels[train_idx].to(dev),
        val=images[val_idx].to(dev),
        val_labels=labels[val_idx].to(dev),
        test=test_set.data.unsqueeze(1).to(dev),
        test_labels=test_set.targets.to(dev),
    )


def to_float(images: Tensor, binarize: bool = False) -> Tensor:
    """uint8 images (B, ...) -> float32 in [0, 1]; with ``binarize``, a Bernoulli draw per pixel.

    Dynamic binarisation (a fresh draw each time an image is seen) is the standard protocol for
    likelihoods on MNIST (Salakhutdinov & Murray, 2008; Burda et al., 2015). The draw uses torch's
    global generator on the images' device, so ``torch.manual_seed`` makes it reproducible.

    Raises:
        TypeError: if ``images`` is not uint8 (a float tensor would be scaled twice).
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images (0..255), got {images.dtype}")
    x = images.float().div_(255.0)
    return torch.bernoulli(x) if binarize else x


class Batches:
    """Minibatches of a uint8 image tensor that is already on the training device.

    Each pass draws a permutation with ``torch.randperm`` on the images' device (when ``shuffle``)
    and yields float32 batches of shape (B, 1, 28, 28) in [0, 1] (binarised afresh when
    ``binarize``), or ``(images, labels)`` pairs when ``labels`` is given. No host synchronisation
    happens per batch.

    Arguments:
        images: uint8 tensor (N, ...) on the device.
        batch_size: images per batch; the last batch may be smaller.
        shuffle: draw a new order every pass.
        binarize: dynamic binarisation (see ``to_float``).
        labels: optional (N,) tensor to yield beside the images.
    Raises:
        ValueError: if ``batch_size`` < 1 or labels do not match the images.
        TypeError: if ``images`` is not uint8.
    """

    def __init__(self, images: Tensor, batch_size: int, *, shuffle: bool = False,
                 binarize: bool = False, labels: Tensor | None = None):
        if images.dtype != torch.uint8:
            raise TypeError(f"Batches expects uint8 images, got {images.dtype}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.binarize = batch_size, shuffle, binarize

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self):
        n = len(self.images)
        order = torch.randperm(n, device=self.images.device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            x = to_float(self.images[idx], self.binarize)
            yield x if self.labels is None else (x, self.labels[idx])
