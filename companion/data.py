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
root is treated as read-only: the files are extracted into the cache and read from there. Every
extracted file is checked before it is used (its IDX header and its size, which must match the
dataset's 60,000 + 10,000 images of 28 x 28), and extraction writes a temporary file that is renamed
into place only once it is complete and checked: an interrupted extraction (Ctrl-C, a full disk) or
a truncated archive never leaves a file that looks usable. A damaged file in the cache is removed
and extracted again; a damaged archive raises ``CorruptDataError`` naming it.

See: chapter "Training a VAE"; LeCun et al. (1998) for MNIST; Xiao, Rasul & Vollgraf (2017) for
Fashion-MNIST.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "CorruptDataError",
    "ImageData",
    "Batches",
    "cache_dir",
    "locate",
    "load_dataset",
    "to_float",
    "check_uint8_images",
    "idx_problem",
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
#: The IDX shape of each raw file (the same for MNIST and Fashion-MNIST).
RAW_SHAPES = {
    "train-images-idx3-ubyte": (60_000, 28, 28),
    "train-labels-idx1-ubyte": (60_000,),
    "t10k-images-idx3-ubyte": (10_000, 28, 28),
    "t10k-labels-idx1-ubyte": (10_000,),
}


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


class CorruptDataError(DataNotFoundError):
    """Raised when a dataset file was found but is damaged (a truncated archive, a wrong size); the
    message names the file and says how to replace it."""


def cache_dir() -> Path:
    """The per-user cache: ``$COMPANION_CACHE`` if set, else the platform's cache folder chosen by
    ``platformdirs`` (``~/.cache/companion`` on Linux). Without platformdirs installed (it is only
    needed for this default), ``$XDG_CACHE_HOME/companion`` or ``~/.cache/companion``."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    try:
        import platformdirs
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "companion"
    return Path(platformdirs.user_cache_dir("companion"))


def _folder(name: str) -> str:
    """torchvision's folder name for a dataset (``MNIST``, ``FashionMNIST``)."""
    _check_name(name)
    return _dataset_classes()[name].__name__


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")


def idx_problem(path: Path, name: str | None = None) -> str | None:
    """What is wrong with an extracted raw file, or None if its IDX header and size are right.

    ``name`` is the file's name in ``RAW_FILES`` (default: ``path``'s own name).

    An IDX file is 2 zero bytes, a type byte (0x08: unsigned bytes), the number of dimensions, one
    big-endian int32 per dimension, then the data; its size is therefore fixed by its header, and the
    header must give the shape in ``RAW_SHAPES``. Reads only the header (a few bytes).
    """
    path = Path(path)
    expected = RAW_SHAPES[name or path.name]
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4 + 4 * len(expected))
    if len(header) < 4 + 4 * len(expected):
        return f"{path} is {size:,} bytes, too short for an IDX header"
    if header[:3] != b"\x00\x00\x08" or header[3] != len(expected):
        return f"{path} does not start with the IDX header of a {len(expected)}-D array of bytes"
    shape = tuple(int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(len(expected)))
    if shape != expected:
        return f"{path} holds an array of shape {shape}, expected {expected}"
    want = 4 + 4 * len(expected) + math.prod(expected)
    if size != want:
        return f"{path} is {size:,} bytes, expected {want:,} (truncated or damaged)"
    return None


def _raw_state(raw: Path) -> str:
    """'extracted', 'gz' or a reason why this raw folder is unusable (missing or damaged files).

    A folder whose extracted files are damaged but whose ``.gz`` files are all there is 'gz': the
    archives are extracted (into the cache) instead.
    """
    if not raw.is_dir():
        return f"no folder {raw}"
    if all((raw / f).is_file() for f in RAW_FILES):
        problems = [p for p in (idx_problem(raw / f) for f in RAW_FILES) if p]
        if not problems:
            return "extracted"
        if all((raw / f"{f}.gz").is_file() for f in RAW_FILES):
            return "gz"
        return "damaged: " + "; ".join(problems)
    if all((raw / f"{f}.gz").is_file() for f in RAW_FILES):
        return "gz"
    missing = [f for f in RAW_FILES if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]
    return f"{raw} lacks {', '.join(missing)} (.gz or extracted)"


def _remove_damaged(raw: Path) -> list[str]:
    """Delete the damaged extracted files of a cache folder (the cache is the companion's own); returns
    what was removed, so that a download or an extraction can replace them."""
    removed = []
    for f in RAW_FILES:
        if (raw / f).is_file() and idx_problem(raw / f):
            (raw / f).unlink()
            removed.append(f)
    return removed


def _extract(raw: Path, dest_raw: Path) -> None:
    """Decompress the four ``.gz`` files of ``raw`` into ``dest_raw`` (``raw`` is not written).

    A file already in ``dest_raw`` is kept if it passes ``idx_problem``, else replaced. Each archive
    is decompressed into a temporary file in ``dest_raw``, checked, and renamed into place
    (``os.replace`` is atomic), so an interruption leaves either no file or a complete one.

    Raises:
        CorruptDataError: if an archive cannot be decompressed or decompresses to a damaged file.
    """
    dest_raw.mkdir(parents=True, exist_ok=True)
    for f in RAW_FILES:
        target = dest_raw / f
        if target.is_file() and idx_problem(target) is None:
            continue
        archive = raw / f"{f}.gz"
        fd, tmp = tempfile.mkstemp(dir=dest_raw, prefix=f".{f}.", suffix=".part")
        try:
            try:
                with os.fdopen(fd, "wb") as out, gzip.open(archive, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (EOFError, gzip.BadGzipFile, zlib.error) as error:
                raise CorruptDataError(
                    f"{archive} is damaged ({type(error).__name__}: {error}); replace it with a complete copy "
                    f"(or delete it, and the companion looks elsewhere or downloads); nothing was written to {dest_raw}"
                ) from None
            problem = idx_problem(Path(tmp), f)
            if problem:
                raise CorruptDataError(f"{archive} decompresses to a damaged file ({problem.replace(tmp, f)}); "
                                       "replace the archive with a complete copy")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


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
        CorruptDataError: when an archive to extract is damaged (the message names it).
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
        if state.startswith("damaged") and base == cache:
            looked.append(f"removed the damaged files {', '.join(_remove_damaged(raw))} from the cache")
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
            state = _raw_state(cache / folder / "raw")
            if state != "extracted":
                raise CorruptDataError(f"the download into {cache / folder / 'raw'} is unusable ({state}); delete "
                                       "that folder and try again")
            return Located(name, cache, f"downloaded by torchvision into {cache / folder / 'raw'}", looked)
        except CorruptDataError:
            raise
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


def check_uint8_images(images: Tensor, what: str = "images") -> None:
    """Raise unless ``images`` are uint8 grey levels 0..255 as ``load_dataset`` returns them.

    Two mistakes give good-looking but wrong numbers further on, so they are refused here: float
    images (``to_float`` would divide them by 255 a second time) and uint8 images that hold only 0s
    and 1s (already binarised or scaled to [0, 1]: divided by 255 they become nearly black images,
    which a Bernoulli decoder scores far better than the digits they were). The second check reads
    one number back from the device, so it is made once per set, not per batch.

    Raises:
        TypeError: if ``images`` is not a uint8 tensor.
        ValueError: if its largest value is 1.
    """
    if not torch.is_tensor(images) or images.dtype != torch.uint8:
        kind = images.dtype if torch.is_tensor(images) else type(images).__name__
        raise TypeError(f"{what}: expected uint8 images with grey levels 0..255 (as load_dataset returns), got {kind}")
    if images.numel() and int(images.max()) == 1:
        raise ValueError(f"{what}: these uint8 images hold only 0s and 1s, so they look already binarised or "
                         "scaled to [0, 1]; pass the grey levels 0..255 (binarisation, if wanted, is done here "
                         "with binarize=True), or multiply 0/1 images by 255")


def to_float(images: Tensor, binarize: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images (B, ...) -> floats in [0, 1]; with ``binarize``, a Bernoulli draw per pixel.

    Dynamic binarisation (a fresh draw each time an image is seen) is the protocol of the IWAE
    results on MNIST (Burda et al., 2016) that chapter 9 compares with; Salakhutdinov & Murray
    (2008) binarised MNIST stochastically once, keeping that single draw fixed. The draw uses torch's
    global generator on the images' device, so ``torch.manual_seed`` makes it reproducible.

    Arguments:
        images: uint8 tensor, values 0..255. binarize: see above.
        dtype: the floating dtype of the result (the model's: float32, or float64 for a model
            converted with ``.double()``).
    Raises:
        TypeError: if ``images`` is not uint8 (a float tensor would be scaled twice) or ``dtype``
            is not a floating dtype.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images (0..255), got {images.dtype}")
    if not dtype.is_floating_point:
        raise TypeError(f"to_float: dtype must be a floating dtype, got {dtype}")
    x = images.to(dtype).div_(255.0)
    return torch.bernoulli(x) if binarize else x


class Batches:
    """Minibatches of a uint8 image tensor that is already on the training device.

    Each pass draws a permutation with ``torch.randperm`` on the images' device (when ``shuffle``)
    and yields float batches of shape (B, 1, 28, 28) in [0, 1] (binarised afresh when
    ``binarize``), or ``(images, labels)`` pairs when ``labels`` is given. No host synchronisation
    happens per batch.

    Arguments:
        images: uint8 tensor (N, ...) on the device, grey levels 0..255 (``check_uint8_images``).
        batch_size: images per batch; the last batch may be smaller.
        shuffle: draw a new order every pass.
        binarize: dynamic binarisation (see ``to_float``).
        labels: optional (N,) tensor to yield beside the images.
        dtype: the floating dtype of the batches (default float32).
    Raises:
        ValueError: if ``batch_size`` < 1, labels do not match the images, or the images hold only
            0s and 1s.
        TypeError: if ``images`` is not uint8.
    """

    def __init__(self, images: Tensor, batch_size: int, *, shuffle: bool = False,
                 binarize: bool = False, labels: Tensor | None = None, dtype: torch.dtype = torch.float32):
        check_uint8_images(images, "Batches")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.binarize, self.dtype = batch_size, shuffle, binarize, dtype

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self):
        n = len(self.images)
        order = torch.randperm(n, device=self.images.device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            x = to_float(self.images[idx], self.binarize, self.dtype)
            yield x if self.labels is None else (x, self.labels[idx])
