"""companion.models.gan: shapes, the two generator losses and their gradients, training through the Trainer."""

import json

import pytest
import torch

from companion.data import Batches
from companion.models.gan import GAN, GANConfig, generator_loss
from companion.training import Trainer, TrainConfig

SMALL = GANConfig(latent_dim=8, hidden=16)


def test_shapes_and_ranges():
    gan = GAN(SMALL)
    x = torch.rand(5, 1, 28, 28)
    assert gan.discriminator(2 * x - 1).shape == (5,)
    images = gan.generate(7)
    assert images.shape == (7, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert gan.generator.training  # generate restores the mode
    layers = [m for m in GAN().generator.net if isinstance(m, torch.nn.Linear)]
    assert [layer.out_features for layer in layers] == [128, 256, 512, 1024, 784]  # seed 001, section 2.5
    layers = [m for m in GAN().discriminator.net if isinstance(m, torch.nn.Linear)]
    assert [layer.out_features for layer in layers] == [512, 256, 1]


def test_generator_losses_and_their_gradients_near_d_zero():
    logits = torch.tensor([-8.0, -4.0, 0.0, 3.0], requires_grad=True)
    d = torch.sigmoid(logits)
    sat = generator_loss(logits, "saturating")
    non = generator_loss(logits, "non-saturating")
    assert torch.allclose(sat, torch.log1p(-d), atol=1e-6)
    assert torch.allclose(non, -torch.log(d), atol=1e-5)
    (grad_sat,) = torch.autograd.grad(sat.sum(), logits)
    (grad_non,) = torch.autograd.grad(non.sum(), logits)
    assert torch.allclose(grad_sat, -d.detach(), atol=1e-6)        # -D: vanishes when D(G(z)) -> 0
    assert torch.allclose(grad_non, d.detach() - 1, atol=1e-6)     # D - 1: about -1 there
    assert grad_sat[0].abs() < 1e-3 < 0.99 < grad_non[0].abs()
    with pytest.raises(ValueError):
        generator_loss(logits, "wasserstein")


def test_discriminator_loss_is_minus_the_value():
    gan = GAN(SMALL).eval()
    x = torch.rand(16, 1, 28, 28)
    torch.manual_seed(0)
    d_loss, terms = gan.loss(x)
    torch.manual_seed(0)
    fake = gan.generator(torch.randn(16, 8))
    value = (torch.log(torch.sigmoid(gan.discriminator(2 * x - 1))).mean()
             + torch.log(1 - torch.sigmoid(gan.discriminator(fake))).mean())
    assert d_loss.item() == pytest.approx(-value.item(), rel=1e-5)
    assert set(terms) == {"d_loss", "g_loss", "d_real", "d_fake"}


def test_training_step_updates_both_networks():
    gan = GAN(SMALL)
    optimizers = gan.configure_optimizers(TrainConfig(lr=1e-3))
    before_g = [p.clone() for p in gan.generator.parameters()]
    before_d = [p.clone() for p in gan.discriminator.parameters()]
    gan.training_step(torch.rand(8, 1, 28, 28), optimizers)
    assert all(not torch.equal(a, b) for a, b in zip(before_g, gan.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, gan.discriminator.parameters()))


class Interrupt(Exception):
    pass


def _fit(mnist, run_dir, interrupt_at=None):
    def stop(trainer, epoch):
        if epoch == interrupt_at:
            raise Interrupt
    trainer = Trainer.build(lambda: GAN(SMALL), TrainConfig(epochs=3, lr=5e-4, seed=1, device="cpu"), run_dir=run_dir,
                            progress=False)
    return trainer.fit(Batches(mnist.train[:1024], 128, shuffle=True), Batches(mnist.val[:256], 128), on_epoch_end=stop)


def test_gan_trains_through_the_trainer_and_resumes_bit_for_bit(mnist, tmp_path):
    """The trainer checkpoints both optimizers: an interrupted GAN resumes to the same history."""
    full = _fit(mnist, tmp_path / "a")
    with pytest.raises(Interrupt):
        _fit(mnist, tmp_path / "b", interrupt_at=2)
    resumed = _fit(mnist, tmp_path / "b")
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k} for r in h]  # noqa: E731
    assert strip(resumed) == strip(full)
    assert {"train/d_loss", "train/g_loss", "val/d_real", "val/d_fake"} <= set(full[-1])
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert set(state["optimizers"]) == {"discriminator", "generator"}
    assert json.loads((tmp_path / "a" / "history.json").read_text())[-1]["epoch"] == 3


@pytest.mark.parametrize("kwargs", [{"latent_dim": 0}, {"dropout": 1.0}, {"generator_loss": "hinge"}, {"adam_beta1": 1.0}])
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        GANConfig(**kwargs)


def test_wrong_image_shape():
    with pytest.raises(ValueError, match="shape"):
        GAN(SMALL).loss(torch.rand(4, 1, 32, 32))
    with pytest.raises(ValueError, match="noise"):
        GAN(SMALL).generate(z=torch.randn(3, 9))
