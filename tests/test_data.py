"""companion.data: finding the offline mirror, the clear error when data are missing, batches."""

import os
import shutil

import pytest
import torch

from companion.data import (Batches, CorruptDataError, DataNotFoundError, cache_dir, check_uint8_images, idx_problem,
                            load_dataset, locate, to_float)


def test_gz_only_mirror_is_found_and_extracted_into_the_cache(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COMPANION_DATA", raising=False)
    assert all(f.suffix == ".gz" for f in (data_root / "MNIST" / "raw").iterdir())
    found = locate("mnist", data_root, download=False)
    assert found.root == tmp_path / "cache"
    assert sorted(p.name for p in (tmp_path / "cache" / "MNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    again = locate("mnist", download=False)  # now the cache alone is enough
    assert again.root == tmp_path / "cache" and "per-user cache" in again.source


def test_environment_variable_is_used(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COMPANION_DATA", str(data_root))
    assert "$COMPANION_DATA" in locate("fashion-mnist", download=False).source


def test_extracted_root_is_used_in_place(data_root, tmp_path, monkeypatch):
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    locate("mnist", data_root, download=False)
    for f in (tmp_path / "cache" / "MNIST" / "raw").iterdir():
        shutil.copy(f, raw / f.name)
    assert locate("mnist", tmp_path / "root", download=False).root == tmp_path / "root"


def test_missing_data_error_names_every_place_and_the_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("COMPANION_DATA", raising=False)
    with pytest.raises(DataNotFoundError) as info:
        locate("mnist", tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert str(tmp_path / "empty-cache" / "MNIST" / "raw") in message
    assert "--data-root" in message and "COMPANION_DATA" in message and "internet" in message


def test_missing_data_offline_download_fails_cleanly(tmp_path, monkeypatch):
    """On this offline machine torchvision's download fails; the error must say so, not hang or crash."""
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COMPANION_DATA", raising=False)
    try:
        found = locate("mnist", tmp_path / "nowhere", download=True)
    except DataNotFoundError as error:
        assert "torchvision download" in str(error)
    else:  # a machine with internet downloads it: also correct
        assert "downloaded" in found.source


def test_fashion_mnist_error_mentions_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    if os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Debian's dataset-fashion-mnist is installed here")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        locate("fashion-mnist", tmp_path / "nowhere", download=False)


def test_partial_raw_folder_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataNotFoundError, match="lacks train-labels-idx1-ubyte"):
        locate("mnist", tmp_path / "root", download=False)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        locate("cifar10")


def test_splits(mnist):
    assert mnist.train.shape == (50_000, 1, 28, 28) and mnist.train.dtype == torch.uint8
    assert mnist.val.shape == (10_000, 1, 28, 28) and mnist.test.shape == (10_000, 1, 28, 28)
    assert mnist.train_labels.shape == (50_000,) and set(mnist.test_labels.unique().tolist()) == set(range(10))
    assert mnist.train.max() == 255 and mnist.train.min() == 0
    with pytest.raises(ValueError):
        mnist.split("validation")


def test_validation_split_is_fixed_and_disjoint(data_root):
    a = load_dataset("mnist", data_root, val_size=1000)
    b = load_dataset("mnist", data_root, val_size=1000)
    assert torch.equal(a.val, b.val) and len(a.train) == 59_000
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("mnist", data_root, val_size=60_000)


def test_batches_cover_the_data_once_per_pass(mnist):
    images = mnist.test[:1000]
    batches = Batches(images, 128, shuffle=True, labels=mnist.test_labels[:1000])
    assert len(batches) == 8
    seen = torch.cat([x for x, _ in batches])
    assert seen.shape == (1000, 1, 28, 28) and seen.dtype == torch.float32
    # a permutation of the same images: compare sorted per-image pixel sums, exact as integers
    per_image = lambda x: (x * 255).round().flatten(1).sum(1).sort().values
    assert torch.equal(per_image(seen), per_image(to_float(images)))
    assert not torch.equal(seen, to_float(images))  # and actually shuffled


def test_dynamic_binarisation_is_fresh_each_pass(mnist):
    batches = Batches(mnist.test[:256], 256, binarize=True)
    first, second = next(iter(batches)), next(iter(batches))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    # the draws are unbiased: the mean binary image approaches the grey levels
    mean = torch.stack([next(iter(batches)) for _ in range(200)]).mean(0)
    assert (mean - to_float(mnist.test[:256])).abs().mean() < 0.02


def test_bad_batches_input():
    with pytest.raises(TypeError):
        Batches(torch.zeros(4, 1, 2, 2), 2)
    with pytest.raises(ValueError):
        Batches(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), 0)
    with pytest.raises(ValueError):
        Batches(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), 2, labels=torch.zeros(3))
    with pytest.raises(TypeError):
        to_float(torch.zeros(2, 2))


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path


# -- faults: an interrupted extraction, a damaged cache, a truncated archive, wrongly scaled images ----------


def _mirror(data_root, tmp_path):
    """A writable copy of the MNIST .gz mirror."""
    raw = tmp_path / "mirror" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "MNIST" / "raw").iterdir():
        shutil.copy(f, raw / f.name)
    return tmp_path / "mirror"


def test_interrupted_extraction_leaves_nothing_that_looks_usable(data_root, tmp_path, monkeypatch):
    """Ctrl-C in the middle of decompressing: no file is left under the final name, and the next call
    extracts again (before, a 0-byte file stayed and every later call said 'found')."""
    import gzip

    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))

    def interrupted(self, *args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(gzip.GzipFile, "read", interrupted)
        with pytest.raises(KeyboardInterrupt):
            locate("mnist", data_root, download=False)
    raw = tmp_path / "cache" / "MNIST" / "raw"
    assert [p.name for p in raw.iterdir()] == []               # no partial file, no temporary file
    assert locate("mnist", data_root, download=False).root == tmp_path / "cache"
    assert load_dataset("mnist", data_root, val_size=0).test.shape == (10_000, 1, 28, 28)


def test_damaged_cache_file_is_extracted_again(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    locate("mnist", data_root, download=False)
    target = tmp_path / "cache" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    target.write_bytes(b"")                                     # what an interrupted old extraction left
    assert "0 bytes" in idx_problem(target)
    found = locate("mnist", data_root, download=False)
    assert "extracted" in found.source and idx_problem(target) is None
    assert load_dataset("mnist", data_root).train.shape == (50_000, 1, 28, 28)


def test_damaged_cache_without_a_source_is_reported_and_removed(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COMPANION_DATA", raising=False)
    locate("mnist", data_root, download=False)
    target = tmp_path / "cache" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    target.write_bytes(target.read_bytes()[:-10])               # truncated
    with pytest.raises(DataNotFoundError, match=r"damaged: .*t10k-labels-idx1-ubyte is 9,998 bytes, expected 10,008"):
        locate("mnist", download=False)
    assert not target.exists()                                  # so that a download or an extraction can replace it


def test_truncated_archive_names_the_file_and_leaves_the_cache_clean(data_root, tmp_path, monkeypatch, capsys):
    from companion.cli import main

    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    mirror = _mirror(data_root, tmp_path)
    archive = mirror / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CorruptDataError, match=f"{archive}.*damaged.*complete copy"):
        locate("mnist", mirror, download=False)
    assert not (tmp_path / "cache" / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
    assert [p.name for p in (tmp_path / "cache" / "MNIST" / "raw").glob(".*")] == []
    assert main(["data", "--data-root", str(mirror), "--dataset", "mnist", "--no-download"]) == 1
    assert "mnist: DAMAGED" in capsys.readouterr().out
    shutil.copy(data_root / "MNIST" / "raw" / archive.name, archive)      # the mirror repaired: works again
    assert locate("mnist", mirror, download=False).root == tmp_path / "cache"


def test_uint8_images_that_are_already_zero_one_are_refused(mnist):
    binary = (mnist.test[:100] > 127).to(torch.uint8)           # 0/1 stored as uint8: to_float would make them 0..1/255
    with pytest.raises(ValueError, match="only 0s and 1s"):
        Batches(binary, 10)
    with pytest.raises(ValueError, match="only 0s and 1s"):
        check_uint8_images(binary)
    Batches(binary * 255, 10)                                    # the same images as grey levels are fine
    with pytest.raises(TypeError, match="uint8"):
        check_uint8_images(binary.float())


def test_to_float_gives_the_requested_dtype(mnist):
    x = to_float(mnist.test[:4], dtype=torch.float64)
    assert x.dtype == torch.float64 and torch.equal(x, mnist.test[:4].double() / 255)
    assert next(iter(Batches(mnist.test[:4], 4, dtype=torch.float64))).dtype == torch.float64
    with pytest.raises(TypeError, match="floating"):
        to_float(mnist.test[:4], dtype=torch.int64)
