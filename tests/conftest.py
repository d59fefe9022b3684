"""Shared fixtures. Data come from $COMPANION_DATA or the offline mirror ../shared/data beside the
repository; the cache is a fresh temporary folder per session, so extraction is exercised too."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _data_root() -> Path | None:
    for candidate in (os.environ.get("COMPANION_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("no MNIST mirror: set COMPANION_DATA to a folder holding MNIST/raw (see README)")
    return root


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    old = os.environ.get("COMPANION_CACHE")
    os.environ["COMPANION_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("COMPANION_CACHE", None)
    else:
        os.environ["COMPANION_CACHE"] = old


@pytest.fixture(scope="session")
def mnist(data_root):
    from companion.data import load_dataset

    return load_dataset("mnist", data_root)
