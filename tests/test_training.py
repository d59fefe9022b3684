"""companion.training: resume reproduces history, mismatched checkpoints, NaN, devices."""

import json

import pytest
import torch
from torch import nn

from companion.data import Batches
from companion.models import VAE, VAEConfig
from companion.training import Trainer, TrainConfig, evaluate, resolve_device

SMALL = VAEConfig(latent_dim=4, hidden=(64,))


class Interrupt(Exception):
    pass


def _fit(mnist, run_dir, epochs=3, interrupt_at=None):
    def stop(trainer, epoch):
        if epoch == interrupt_at:
            raise Interrupt
    trainer = Trainer.build(lambda: VAE(SMALL), TrainConfig(epochs=epochs, seed=3, device="cpu"), run_dir=run_dir, progress=False)
    train = Batches(mnist.train[:2048], 128, shuffle=True, binarize=True)
    val = Batches(mnist.val[:512], 256, binarize=True)
    return trainer, trainer.fit(train, val, on_epoch_end=stop)


def _without_times(history):
    return [{k: v for k, v in r.items() if "time" not in k} for r in history]


def test_resume_after_interruption_reproduces_the_history(mnist, tmp_path):
    _, uninterrupted = _fit(mnist, tmp_path / "a")
    with pytest.raises(Interrupt):
        _fit(mnist, tmp_path / "b", interrupt_at=2)
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())) == 2  # epoch 2 was saved
    trainer, resumed = _fit(mnist, tmp_path / "b")
    assert _without_times(resumed) == _without_times(uninterrupted)
    reference, _ = _fit(mnist, tmp_path / "a")  # finished run: nothing left to do, same weights
    for p, q in zip(trainer.model.parameters(), reference.model.parameters()):
        assert torch.equal(p, q)


def test_history_improves_and_has_all_terms(mnist, tmp_path):
    _, history = _fit(mnist, tmp_path / "run")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert {"train/loss", "train/elbo", "train/kl", "train/reconstruction", "val/elbo", "time_s", "wall_time_s"} <= set(history[0])
    assert history[-1]["val/elbo"] > history[0]["val/elbo"]


def test_checkpoint_of_other_settings_is_refused(mnist, tmp_path):
    _fit(mnist, tmp_path / "run", epochs=1)
    other = Trainer(VAE(VAEConfig(latent_dim=5, hidden=(64,))), TrainConfig(epochs=2, seed=3), run_dir=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="latent_dim: checkpoint 4, now 5"):
        other.fit(Batches(mnist.train[:256], 128))


def test_non_finite_loss_raises(tmp_path):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def loss(self, batch):
            return self.w.sum() * float("nan"), {}

    trainer = Trainer(Broken(), TrainConfig(epochs=1, device="cpu"), progress=False)
    with pytest.raises(FloatingPointError, match="epoch 1"):
        trainer.fit([torch.zeros(2, 1)])


def test_evaluate_is_reproducible_and_leaves_the_rng_alone(mnist):
    model = VAE(SMALL)
    batches = Batches(mnist.val[:300], 100, binarize=True)
    torch.manual_seed(0)
    a = evaluate(model, batches)
    after = torch.rand(1)
    torch.manual_seed(0)
    b = evaluate(model, batches)
    assert a == b and torch.equal(after, torch.rand(1))
    with pytest.raises(ValueError):
        evaluate(model, [])


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("kwargs", [{"epochs": -1}, {"lr": 0.0}, {"precision": "fp8"}])
def test_bad_train_config(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_a_checkpoint_of_the_single_optimizer_format_still_resumes(mnist, tmp_path):
    """Checkpoints written before models could own several optimizers stored one under "optimizer"."""
    trainer, history = _fit(mnist, tmp_path / "old", epochs=1)
    state = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=False)
    state["optimizer"] = state.pop("optimizers")["model"]
    torch.save(state, tmp_path / "old" / "checkpoint.pt")
    resumed, _ = _fit(mnist, tmp_path / "old", epochs=2)
    assert len(resumed.history) == 2 and resumed.history[0] == history[0]


def test_the_history_records_a_learned_decoder_sigma_each_epoch(mnist, tmp_path):
    """``decoder/sigma`` is the learned sigma at the end of each epoch (it falls from its initial 1 as the
    reconstructions improve); a decoder without a learned sigma records none."""
    config = VAEConfig(latent_dim=4, hidden=(64,), likelihood="gaussian-learned")
    trainer = Trainer.build(lambda: VAE(config), TrainConfig(epochs=2, seed=3, device="cpu"), progress=False)
    history = trainer.fit(Batches(mnist.train[:2048], 128, shuffle=True))
    sigmas = [r["decoder/sigma"] for r in history]
    assert sigmas[-1] == trainer.model.likelihood.sigma
    assert 1.0 > sigmas[0] > sigmas[1]
    _, bernoulli = _fit(mnist, tmp_path / "b", epochs=1)
    assert not any(k.startswith("decoder/") for k in bernoulli[0])
