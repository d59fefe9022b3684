"""companion.reproduce: the extra seeds of the registry, how they are read back, and the pooled seed
spread of the Frechet distance (the end-to-end runs of ``reproduce`` are in test_cli.py)."""

import json
import statistics
from dataclasses import replace

import pytest

from companion.reproduce import (EXTRA_SEEDS, REGISTRY, SEEDED, frechet_seed_spread, load_seeds, results_dir,
                                 seed_names)


def test_every_seeded_experiment_has_its_extra_seeds_with_only_the_seed_changed():
    assert {"sweep-bernoulli-beta1", "sigma-learned", "vae-conv-fashion"} <= set(SEEDED)
    for name in SEEDED:
        base = REGISTRY[name]
        assert seed_names(name) == [name] + [f"{name}-seed{s}" for s in EXTRA_SEEDS]
        for seed in EXTRA_SEEDS:
            other = REGISTRY[f"{name}-seed{seed}"]
            assert other.run.train.seed == seed != base.run.train.seed
            assert replace(other.run, train=base.run.train) == base.run        # nothing else differs
            assert other.chapter == base.chapter and other.frechet == base.frechet
    assert not any(n.startswith("h2h-") and "-seed" in n for n in REGISTRY)


def _record(root, name, frechet, seed):
    out = results_dir(name, root)
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"frechet_mean": frechet, "registered": True}))
    (out / "config.json").write_text(json.dumps({"train": {"seed": seed}}))


def test_load_seeds_and_the_pooled_seed_spread(tmp_path):
    with pytest.raises(ValueError, match="two recorded seeds"):
        frechet_seed_spread(root=tmp_path)
    values = {"sweep-bernoulli-beta1": [100.0, 110.0, 90.0], "sigma-learned": [500.0, 520.0]}
    for name, scores in values.items():
        for seed, score in enumerate(scores):
            _record(tmp_path, seed_names(name)[seed], score, seed)
    _record(tmp_path, "sweep-bernoulli-beta2", 300.0, 0)                   # one seed: not pooled
    assert [r["seed"] for r in load_seeds("sweep-bernoulli-beta1", tmp_path)] == [0, 1, 2]
    assert [r["metrics"]["frechet_mean"] for r in load_seeds("sigma-learned", tmp_path)] == [500.0, 520.0]
    spread = frechet_seed_spread(root=tmp_path)
    relative = [statistics.variance(v) / statistics.fmean(v) ** 2 for v in values.values()]
    expected = ((2 * relative[0] + 1 * relative[1]) / 3) ** 0.5            # weights: degrees of freedom
    assert spread["relative_sd"] == pytest.approx(expected, rel=1e-12)
    assert spread["groups"] == 2 and spread["runs"] == 5
    assert spread["largest"][0] == "sweep-bernoulli-beta1"
    assert frechet_seed_spread(("sigma-",), root=tmp_path)["relative_sd"] == pytest.approx(relative[1] ** 0.5)


def test_seed_names_refuses_unknown_experiments():
    with pytest.raises(KeyError):
        seed_names("no-such-run")


def test_recorded_runs_keep_their_signature():
    """``cuda_graph`` (TrainConfig) and ``train_iwae_k`` (VAEConfig) came after these runs were
    recorded: the signature a checkpoint must match leaves both out at their defaults, so that each
    recorded ``config.json`` gives the signature its checkpoint was written with (epochs 0, device
    "auto") and old run directories still resume and load. (Configs written before ``free_bits``
    existed are skipped: that field was added to the signature then, and stays.)"""
    from companion.paths import RESULTS
    from companion.runs import ModelRun, VAERun, _signature

    checked = 0
    for path in sorted(RESULTS.glob("*/config.json")):
        config = json.loads(path.read_text())
        if "train" not in config:
            continue
        old = json.loads(json.dumps(config))
        old["train"].update(epochs=0, device="auto")
        run = (ModelRun if "kind" in config else VAERun).from_dict(config)
        if "cuda_graph" not in config["train"] and ("kind" in config or "free_bits" in config["model"]):
            assert _signature(run) == old, path.parent.name
            checked += 1
    assert checked >= 40
