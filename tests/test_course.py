"""companion.course: the chapters' setup, the VAE chapters 4, 8 and 9 share, and glue."""

from __future__ import annotations

import json

import pytest
import torch

from companion import course
from companion.reproduce import REGISTRY, recorded_runs


def test_setup_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="quick"):
        course.setup(mode="fast")


def test_settings_pick_by_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_RUNS", str(tmp_path))
    assert course.setup(mode="quick").pick(1, 2) == 1
    assert course.setup(mode="full").pick(1, 2) == 2
    assert course.setup().runs == tmp_path


@pytest.mark.slow
def test_the_shared_vae_is_trained_once_and_then_loaded(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_RUNS", str(tmp_path))
    monkeypatch.setitem(course.SHARED_EPOCHS, "quick", 1)
    settings = course.setup(mode="quick")
    first = course.shared_vae(settings, latent_dim=2)
    assert first.trained_here and first.directory == tmp_path / "shared-vae-z2-quick"
    assert len(first.history) == 1 and sorted(first.snapshots) == [1]
    assert first.snapshots[1].shape == (course.SNAPSHOT_LATENTS, 1, 28, 28)
    assert first.metrics["test_elbo"] < 0 and not first.model.training

    again = course.shared_vae(settings, latent_dim=2)
    assert not again.trained_here
    for a, b in zip(first.model.parameters(), again.model.parameters()):
        assert torch.equal(a.cpu(), b.cpu())
    assert again.metrics == first.metrics

    # A cache that no longer matches the settings (here: one more epoch asked for) is trained on, not
    # silently reused.
    monkeypatch.setitem(course.SHARED_EPOCHS, "quick", 2)
    longer = course.shared_vae(settings, latent_dim=2)
    assert longer.trained_here and len(longer.history) == 2 and sorted(longer.snapshots) == [1, 2]


@pytest.mark.slow
def test_a_damaged_shared_cache_is_trained_again(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_RUNS", str(tmp_path))
    monkeypatch.setitem(course.SHARED_EPOCHS, "quick", 1)
    settings = course.setup(mode="quick")
    course.shared_vae(settings, latent_dim=2)
    (tmp_path / "shared-vae-z2-quick" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    rerun = course.shared_vae(settings, latent_dim=2)
    assert rerun.trained_here and len(rerun.history) == 1


def test_glue_records_a_value_or_does_nothing(monkeypatch):
    course.glue("test_value", 1.5)                       # with or without myst-nb: no error, no output
    import builtins

    real_import = builtins.__import__

    def without_myst_nb(name, *args, **kwargs):
        if name.startswith("myst_nb"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_myst_nb)
    assert course.glue("test_value", 1.5) is None


def test_glue_stores_numpy_and_torch_scalars_as_python_numbers(monkeypatch):
    import numpy as np
    import myst_nb

    stored = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: stored.setdefault(name, value))
    course.glue("a", np.float64(0.25))
    course.glue("b", torch.tensor(3))
    course.glue("c", [1, 2])
    assert stored == {"a": 0.25, "b": 3, "c": [1, 2]}
    assert type(stored["a"]) is float and type(stored["b"]) is int and repr(stored["a"]) == "0.25"


def test_recorded_runs_describe_every_registered_result():
    rows = recorded_runs()
    assert rows, "book/results holds recorded runs"
    for row in rows:
        assert row["name"] in REGISTRY
        metrics = json.loads((course.RESULTS / row["name"] / "metrics.json").read_text())
        assert row["device"] == metrics["device"] and row["epochs"] == metrics.get("epochs")
        assert row["commit"] == "unknown" or len(row["commit"].removesuffix("-dirty")) == 12


def test_recorded_runs_of_an_empty_folder(tmp_path):
    assert recorded_runs(tmp_path) == []
