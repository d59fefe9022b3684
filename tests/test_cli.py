"""The command line and run directories, on real MNIST."""

import json
import re

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
    assert "test ELBO" in printed and " 1 epoch on " in printed
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


def test_the_cuda_graph_switch_is_recorded_and_does_not_block_a_resume(data_root, tmp_path, capsys):
    """--no-cuda-graph reaches TrainConfig and config.json; it is an execution setting, so the same
    run continued without the switch resumes instead of being refused as other settings."""
    out = tmp_path / "run"
    common = ["train", "vae", "--hidden", "16", "--latent-dim", "2", "--out", str(out), "--data-root", str(data_root),
              "--no-progress", "--device", "cpu"]
    assert main([*common, "--epochs", "1", "--no-cuda-graph"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["cuda_graph"] is False
    assert json.loads((out / "metrics.json").read_text())["cuda_graph"] is False     # a CPU never uses it
    assert main([*common, "--epochs", "2"]) == 0
    assert " 2 epochs on " in capsys.readouterr().out
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert main([*common, "--epochs", "1", "--train-iwae-k", "3", "--out", str(tmp_path / "iwae")]) == 0
    assert "train/iwae" in json.loads((tmp_path / "iwae" / "history.json").read_text())[0]
    assert main([*common, "--epochs", "1", "--train-iwae-k", "3", "--beta", "2", "--out", str(tmp_path / "b")]) == 2
    assert "no KL term" in capsys.readouterr().err


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
    # the store_false switches and --out used to read "(default: True)" and "(default: None)", the
    # opposite of what they do; every option says what it is for
    assert "(default: True)" not in text and "(default: None)" not in text
    lines = text[text.index("options:"):].splitlines()[1:]
    for i, line in enumerate(lines):          # an option without help is followed by the next option at once
        if line.startswith("  -"):
            described = re.match(r"  -\S.*?\s{2,}\S", line) or (i + 1 < len(lines) and lines[i + 1].startswith(" " * 8))
            assert described, f"no help for {line.strip()}"


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
    recorded = load_results("vae-mlp-mnist-z2", tmp_path, registered_only=False)
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
    m = load_results("sweep-continuous-bernoulli-beta1", tmp_path, registered_only=False)["metrics"]
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
    m = load_results("h2h-gan-mnist", tmp_path, registered_only=False)["metrics"]
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

    common = {"parameters": 10, "wall_time_s": 60.0, "epochs": 2, "device": "cpu", "commit": "abc", "registered": True}
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


# -- faults that lose or falsify results, and errors a person can act on ----------------------------------------

def _train(out, data_root, *extra):
    return main(["train", "vae", "--latent-dim", "3", "--hidden", "16", "--out", str(out), "--data-root", str(data_root),
                 "--no-progress", "--device", "cpu", *extra])


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".lock")}


@pytest.fixture
def recorded_results(tmp_path, monkeypatch):
    """A copy of book/results/vae-mlp-mnist-z2 standing in for book/results, so that a regression
    writes into the copy, never into the repository's recorded results."""
    import shutil

    from companion import paths, reproduce
    from companion.paths import RESULTS

    fake = tmp_path / "book-results"
    shutil.copytree(RESULTS / "vae-mlp-mnist-z2", fake / "vae-mlp-mnist-z2")
    for module in (paths, reproduce):
        monkeypatch.setattr(module, "RESULTS", fake)
    return fake


def test_smoke_runs_never_write_into_book_results(data_root, tmp_path, monkeypatch, capsys, recorded_results):
    """`reproduce NAME --epochs 1` used to overwrite the recorded run in book/results (146.39 nats became
    172.50 for vae-mlp-mnist-z2); and --epochs 0 silently meant the full registered run."""
    from companion.reproduce import UnregisteredResultError, load_results

    recorded = recorded_results / "vae-mlp-mnist-z2"
    before = _snapshot(recorded)
    monkeypatch.chdir(tmp_path)
    smoke = ["--device", "cpu", "--data-root", str(data_root), "--no-progress"]
    assert main(["reproduce", "vae-mlp-mnist-z2", "--epochs", "1", "--iwae-k", "2", *smoke]) == 0
    assert main(["reproduce", "vae-mlp-mnist-z2", "--epochs", "0", "--iwae-k", "2", *smoke]) == 0
    out = capsys.readouterr().out
    assert "0 epochs on" in out and "not registered" in out
    assert _snapshot(recorded) == before and not (recorded_results / "vae-mlp-mnist-z2.partial").exists()
    smoke_dir = tmp_path / "runs" / "reproduce" / "vae-mlp-mnist-z2"
    metrics = json.loads((smoke_dir / "metrics.json").read_text())
    # zero epochs even after a 1-epoch smoke run in the same folder: the untrained model is evaluated
    assert metrics["epochs"] == 0 and metrics["registered"] is False and metrics["iwae_k"] == 2
    assert metrics["command"].endswith("--epochs 0 --iwae-k 2") and metrics["test_elbo"] < -500
    with pytest.raises(UnregisteredResultError, match="not the registered run"):     # what a chapter would get
        load_results("vae-mlp-mnist-z2", tmp_path / "runs" / "reproduce")
    assert main(["reproduce", "vae-mlp-mnist-z2", "--epochs", "1", "--results", str(recorded_results), *smoke]) == 2
    assert "never written into" in capsys.readouterr().err
    assert _snapshot(recorded) == before
    assert main(["train", "vae", "--epochs", "0", "--out", str(recorded_results / "mine"), *smoke]) == 2
    assert "written only by `python -m companion reproduce`" in capsys.readouterr().err


def test_an_interrupted_reproduce_that_cannot_resume_names_the_folder(data_root, tmp_path, capsys):
    partial = tmp_path / "vae-mlp-mnist-z2.partial"
    partial.mkdir()
    (partial / "checkpoint.pt").write_bytes(b"damaged")
    assert main(["reproduce", "vae-mlp-mnist-z2", "--epochs", "1", "--results", str(tmp_path), "--device", "cpu",
                 "--data-root", str(data_root), "--no-progress"]) == 2
    assert f"delete the folder {partial}" in capsys.readouterr().err
    assert (partial / "checkpoint.pt").read_bytes() == b"damaged"


def test_a_reproduced_run_replaces_its_folder_whole(data_root, tmp_path, capsys):
    """The run trains in NAME.partial and replaces NAME only when finished: no stale figure survives."""
    root = tmp_path / "results"
    stale = root / "vae-mlp-mnist-z2" / "samples_epoch_050.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an old figure")
    assert main(["reproduce", "vae-mlp-mnist-z2", "--epochs", "1", "--iwae-k", "1", "--results", str(root),
                 "--device", "cpu", "--data-root", str(data_root), "--no-progress"]) == 0
    names = sorted(p.name for p in (root / "vae-mlp-mnist-z2").iterdir())
    assert "samples_epoch_050.png" not in names and "samples_epoch_001.png" in names and ".lock" not in names
    assert sorted(p.name for p in root.iterdir()) == [".vae-mlp-mnist-z2.lock", "vae-mlp-mnist-z2"]   # no .partial


def test_a_refused_resume_changes_nothing(data_root, tmp_path, capsys):
    """config.json used to be written before the checkpoint was compared, leaving a run load_run refused."""
    from companion.runs import load_run

    out = tmp_path / "run"
    assert _train(out, data_root, "--epochs", "0") == 0
    before = _snapshot(out)
    assert _train(out, data_root, "--epochs", "0", "--latent-dim", "4") == 2
    assert "other settings (model.latent_dim: checkpoint 3, now 4)" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert load_run(out)[1].model.latent_dim == 3


def test_a_second_process_cannot_train_into_a_run_directory_in_use(data_root, tmp_path, capsys):
    import subprocess
    import sys

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom companion.runs import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _train(out, data_root, "--epochs", "0") == 1
        err = capsys.readouterr().err
        assert f"{out} is in use by process {holder.pid}" in err and f"-c {out}" in err    # its command line
        assert not (out / "config.json").exists() and not (out / "checkpoint.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert _train(out, data_root, "--epochs", "0") == 0                # the lock died with its process


def test_diverged_training_is_one_message_and_a_nonzero_exit(data_root, tmp_path, capsys):
    assert _train(tmp_path / "run", data_root, "--epochs", "1", "--lr", "1e5") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training diverged: the training loss of epoch 1 is nan") and "Traceback" not in err


def test_a_damaged_checkpoint_is_named_with_the_way_out(data_root, tmp_path, capsys):
    from companion.runs import load_run
    from companion.training import CheckpointError

    out = tmp_path / "run"
    assert _train(out, data_root, "--epochs", "0") == 0
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert _train(out, data_root, "--epochs", "0") == 2
    err = capsys.readouterr().err
    assert f"{out / 'checkpoint.pt'} cannot be read" in err and "--no-resume" in err
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_run(out)
    assert _train(out, data_root, "--epochs", "0", "--no-resume") == 0
    assert load_run(out)[1].model.latent_dim == 3


def test_ctrl_c_says_how_to_resume_and_the_rerun_resumes(data_root, tmp_path, monkeypatch, capsys):
    from companion.runs import load_run
    from companion.training import Trainer

    step, calls = Trainer.step, {"n": 0}

    def interrupted_in_epoch_two(self, batch):
        calls["n"] += 1
        if calls["n"] == 400:                                          # 391 steps per epoch
            raise KeyboardInterrupt
        return step(self, batch)

    monkeypatch.setattr(Trainer, "step", interrupted_in_epoch_two)
    out = tmp_path / "run"
    try:
        status = _train(out, data_root, "--epochs", "2")
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped main() as a traceback")
    assert status == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert len(load_run(out)[2]) == 1                                   # epoch 1 was kept
    monkeypatch.setattr(Trainer, "step", step)
    assert _train(out, data_root, "--epochs", "2") == 0
    assert [r["epoch"] for r in load_run(out)[2]] == [1, 2]


def test_sigma_with_a_likelihood_that_has_none(data_root, tmp_path, capsys):
    assert _train(tmp_path / "run", data_root, "--likelihood", "bernoulli", "--sigma", "0.1") == 2
    assert "sigma is an option of: gaussian, gaussian-learned, gaussian-pixel" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_with_epochs_left_removes_the_earlier_finish(data_root, tmp_path, monkeypatch):
    """metrics.json of a 1-epoch finish must not stand beside a checkpoint that has trained further."""
    from companion.training import Trainer

    out = tmp_path / "run"
    assert _train(out, data_root, "--epochs", "1") == 0 and (out / "metrics.json").is_file()

    def interrupted(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "step", interrupted)
    try:
        assert _train(out, data_root, "--epochs", "2") == 130
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped main() as a traceback")
    assert not (out / "metrics.json").exists() and not (out / "samples.png").exists()


def test_fewer_epochs_than_the_checkpoint_holds_are_refused(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, data_root, "--epochs", "1") == 0
    before = _snapshot(out)
    assert _train(out, data_root, "--epochs", "0") == 2
    assert "already holds 1 epochs, more than the 0 asked for" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_results_without_a_checkpoint_are_not_deleted(data_root, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "manifold.png").write_bytes(b"the user's own figure")
    assert _train(out, data_root, "--epochs", "0") == 2
    assert "holds the results of a run (manifold.png" in capsys.readouterr().err
    assert (out / "manifold.png").read_bytes() == b"the user's own figure" and not (out / "checkpoint.pt").exists()
