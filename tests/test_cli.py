"""The command line and run directories, on real MNIST."""

import json

import pytest
import torch

from companion.cli import main
from companion.data import Batches
from companion.models import VAE, VAEConfig
from companion.runs import load_run
from companion.training import evaluate


@pytest.mark.slow
def test_train_vae_improves_the_test_elbo(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", "vae", "--dataset", "mnist", "--latent-dim", "20", "--epochs", "1", "--out", str(out),
                   "--data-root", str(data_root), "--no-progress", "--device", "cpu"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "test ELBO" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_elbo"] == pytest.approx(metrics["test_reconstruction"] - metrics["test_kl"], abs=1e-3)
    for name in ("config.json", "history.json", "checkpoint.pt", "samples.png", "reconstructions.png"):
        assert (out / name).is_file(), name

    model, run, history, loaded = load_run(out)
    assert loaded == metrics and len(history) == 1 and run.model.latent_dim == 20
    from companion.data import load_dataset
    data = load_dataset("mnist", data_root)
    torch.manual_seed(0)
    untrained = evaluate(VAE(VAEConfig(latent_dim=20)), Batches(data.test, 1000, binarize=True))
    assert metrics["test_elbo"] > untrained["elbo"] + 300  # about -545 before, about -120 after one epoch
    assert metrics["test_elbo"] < -80  # and not implausibly good


def test_data_command_reports_where_data_are(data_root, capsys):
    assert main(["data", "--data-root", str(data_root), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "mnist: found at" in out and "fashion-mnist: found at" in out


def test_data_command_reports_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "empty-cache"))
    assert main(["data", "--data-root", str(tmp_path), "--no-download", "--dataset", "mnist"]) == 1
    assert "NOT FOUND" in capsys.readouterr().out


def test_bad_arguments_give_a_message_not_a_traceback(data_root, tmp_path, capsys):
    status = main(["train", "vae", "--latent-dim", "0", "--epochs", "1", "--out", str(tmp_path / "r"),
                   "--data-root", str(data_root), "--no-progress"])
    assert status == 2 and "latent_dim must be >= 1" in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "vae", "--help"])
    text = capsys.readouterr().out
    for option in ("--device", "--batch-size", "--seed", "--beta", "--likelihood", "--latent-dim", "--epochs", "--out"):
        assert option in text


def test_load_run_refuses_a_mismatched_checkpoint(data_root, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "vae", "--epochs", "0", "--latent-dim", "3", "--hidden", "16", "--out", str(out),
                 "--data-root", str(data_root), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    config["model"]["latent_dim"] = 4
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        load_run(out)


def test_reproduce_list_and_unknown_names(capsys):
    from companion.reproduce import REGISTRY, results_dir

    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in REGISTRY) and "vae-mlp-mnist" in REGISTRY
    assert main(["reproduce", "no-such-run"]) == 2
    assert "no experiment matches 'no-such-run'" in capsys.readouterr().err
    with pytest.raises(KeyError):
        results_dir("no-such-run")


@pytest.mark.slow
def test_reproduce_writes_results_with_provenance(data_root, tmp_path, capsys):
    from companion.reproduce import load_results

    assert load_results("vae-mlp-mnist-z2", tmp_path) is None
    status = main(["reproduce", "vae-mlp-mnist-z2", "--results", str(tmp_path), "--epochs", "1", "--iwae-k", "3",
                   "--device", "cpu", "--data-root", str(data_root), "--no-progress"])
    assert status == 0 and "bits/dim" in capsys.readouterr().out
    recorded = load_results("vae-mlp-mnist-z2", tmp_path)
    m = recorded["metrics"]
    for key in ("dataset", "model", "test_elbo", "test_nll_nats", "iwae_k", "test_bits_per_dim", "device", "wall_time_s",
                "commit", "torch", "iwae_peak_memory_mb", "train_nll_nats_first"):
        assert key in m, key
    assert m["dataset"] == "mnist" and m["model"] == "vae-mlp-400-z2" and m["iwae_k"] == 3 and m["registered"] is False
    assert m["test_nll_nats"] < -m["test_elbo"] + 1.0          # k = 3 is at least about as tight as the ELBO
    assert m["test_bits_per_dim"] == pytest.approx(m["test_nll_nats"] / (784 * 0.6931471805599453))
    assert len(recorded["history"]) == 1 and recorded["config"]["model"]["latent_dim"] == 2
    for name in ("samples.png", "reconstructions.png", "manifold.png", "samples_epoch_001.png", "checkpoint.pt"):
        assert (tmp_path / "vae-mlp-mnist-z2" / name).is_file(), name


@pytest.mark.slow
def test_reproduce_part_three_run_scores_samples_and_latent_usage(data_root, tmp_path, capsys):
    """A sweep entry by glob: no IWAE (k = 0), the classifier Frechet distances of means and parameters
    (with the recorded MNIST classifier), and the KL per latent dimension."""
    from companion.reproduce import load_results

    status = main(["reproduce", "sweep-continuous-bernoulli-beta[1]", "--results", str(tmp_path), "--epochs", "1",
                   "--device", "cpu", "--data-root", str(data_root), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0 and "classifier Frechet distance" in out and "beta16" not in out
    m = load_results("sweep-continuous-bernoulli-beta1", tmp_path)["metrics"]
    assert "test_nll_nats" not in m and m["iwae_k"] == 0 and m["likelihood"] == "continuous-bernoulli"
    assert m["frechet_mean"] > 0 and m["frechet_params"] > 0 and m["frechet_samples"] == 10_000
    assert len(m["kl_per_dim"]) == 20 and sum(m["kl_per_dim"]) == pytest.approx(m["test_kl"], rel=0.05)
    assert 0 <= m["active_units"] <= 20


@pytest.mark.slow
def test_reproduce_records_a_classifier(data_root, tmp_path, capsys):
    from companion.frechet import load_classifier

    status = main(["reproduce", "classifier-mnist", "--results", str(tmp_path), "--epochs", "1", "--device", "cpu",
                   "--data-root", str(data_root), "--no-progress"])
    assert status == 0 and "test accuracy" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "classifier-mnist" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9 and metrics["registered"] is False and metrics["epochs"] == 1
    assert load_classifier("mnist", root=tmp_path) is not None


@pytest.mark.slow
def test_reproduce_part_four_gan_writes_samples_interpolation_and_frechet(data_root, tmp_path, capsys):
    from companion.reproduce import load_results

    status = main(["reproduce", "h2h-gan-mnist", "--results", str(tmp_path), "--epochs", "1", "--device", "cpu",
                   "--data-root", str(data_root), "--no-progress"])
    assert status == 0 and "classifier Frechet distance of the samples" in capsys.readouterr().out
    m = load_results("h2h-gan-mnist", tmp_path)["metrics"]
    assert m["kind"] == "gan" and m["frechet"] > 0 and m["parameters"] == 2_043_537 and m["registered"] is False
    for name in ("samples.png", "interpolation.png", "samples_epoch_001.png"):
        assert (tmp_path / "h2h-gan-mnist" / name).is_file(), name


def _small(mnist, n=512):
    from companion.data import ImageData

    return ImageData(name="mnist", source=mnist.source, train=mnist.train[:n], train_labels=mnist.train_labels[:n],
                     val=mnist.val[:256], val_labels=mnist.val_labels[:256], test=mnist.test[:256],
                     test_labels=mnist.test_labels[:256])


def test_run_model_flow_records_bits_per_dim_and_refuses_a_mismatched_checkpoint(mnist, tmp_path):
    from companion.models.flow import FlowConfig
    from companion.runs import ModelRun, load_model_run, run_model
    from companion.training import TrainConfig

    run = ModelRun("flow", FlowConfig(hidden=4, blocks=0), train=TrainConfig(epochs=1, device="cpu"))
    m = run_model(run, tmp_path / "flow", data=_small(mnist), progress=False)
    assert m["kind"] == "flow" and 1.0 < m["test_bits_per_dim"] < 30.0    # 4 steps from the identity flow
    assert m["test_nll_nats"] == pytest.approx(m["test_bits_per_dim"] * 784 * 0.6931471805599453, rel=1e-6)
    model, loaded, history, _ = load_model_run(tmp_path / "flow")
    assert loaded == run and len(history) == 1 and not model.training
    config = json.loads((tmp_path / "flow" / "config.json").read_text())
    config["model"]["hidden"] = 8
    (tmp_path / "flow" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        load_model_run(tmp_path / "flow")


def test_model_run_rejects_a_config_of_another_kind():
    from companion.models.gan import GANConfig
    from companion.runs import ModelRun

    with pytest.raises(ValueError, match="FlowConfig"):
        ModelRun("flow", GANConfig())
    with pytest.raises(ValueError, match="kind"):
        ModelRun("diffusion", GANConfig())


def test_head_to_head_reads_the_recorded_rows(tmp_path):
    """The chapter's table comes from metrics.json: the GAN row has no likelihood, the flow's is exact."""
    from companion.reproduce import head_to_head

    common = {"parameters": 10, "wall_time_s": 60.0, "epochs": 2, "device": "cpu", "commit": "abc"}
    recorded = {"h2h-vae-mnist": {"model": "vae", "test_nll_nats": 700.0, "test_bits_per_dim": 1.29, "iwae_k": 100,
                                  "frechet_mean": 300.0},
                "h2h-gan-mnist": {"kind": "gan", "model": "gan", "frechet": 100.0},
                "h2h-flow-mnist": {"kind": "flow", "model": "flow", "test_nll_nats": 600.0, "test_bits_per_dim": 1.1,
                                   "frechet": 500.0}}
    for name, metrics in recorded.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({**common, **metrics}))
    rows = {r["family"]: r for r in head_to_head(tmp_path)}
    assert rows["GAN"]["nll_nats"] is None and rows["GAN"]["nll_method"] == "none" and rows["GAN"]["frechet"] == 100.0
    assert rows["VAE"]["nll_method"] == "IWAE, k = 100" and rows["VAE"]["frechet"] == 300.0
    assert rows["flow"]["bits_per_dim"] == 1.1 and rows["flow"]["nll_method"].startswith("exact")
    (tmp_path / "h2h-gan-mnist" / "metrics.json").unlink()
    assert [r["family"] for r in head_to_head(tmp_path)] == ["VAE", "flow"]
