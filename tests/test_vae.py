"""companion.models.vae: shapes, finiteness, the ELBO identity, bad input."""

import dataclasses

import pytest
import torch

from companion.models import VAE, VAEConfig, reparameterize


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("latent_dim, hidden", [(2, (64,)), (20, (400,)), (8, (128, 64))])
def test_elbo_terms_shapes_and_finiteness(likelihood, latent_dim, hidden):
    model = VAE(VAEConfig(latent_dim=latent_dim, hidden=hidden, likelihood=likelihood))
    x = torch.rand(5, 1, 28, 28).round()
    terms = model.elbo_terms(x)
    for value in terms.values():
        assert value.shape == (5,) and torch.isfinite(value).all()
    assert torch.equal(terms["elbo"], terms["reconstruction"] - terms["kl"])
    assert (terms["kl"] >= 0).all()
    loss, logged = model.loss(x)
    assert loss.dim() == 0 and set(logged) == {"elbo", "reconstruction", "kl"}
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_beta_weights_only_the_kl_in_the_loss():
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64).round()
    model = VAE(VAEConfig(beta=1.0)).double()
    heavy = VAE(VAEConfig(beta=4.0)).double()
    heavy.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    loss_1, terms_1 = model.loss(x)
    torch.manual_seed(0)
    loss_4, terms_4 = heavy.loss(x)
    torch.testing.assert_close(terms_1["elbo"], terms_4["elbo"])
    torch.testing.assert_close(loss_4 - loss_1, 3 * terms_1["kl"])


def test_reparameterize_has_the_right_moments():
    mu, logvar = torch.full((200_000, 2), 1.5), torch.full((200_000, 2), 2 * torch.log(torch.tensor(0.5)))
    z = reparameterize(mu, logvar)
    assert abs(z.mean().item() - 1.5) < 0.01 and abs(z.std().item() - 0.5) < 0.01


def test_generate_and_reconstruct_shapes():
    model = VAE(VAEConfig(latent_dim=3, hidden=(32,)))
    assert model.generate(7).shape == (7, 1, 28, 28)
    assert model.generate(z=torch.zeros(2, 3), mean=False).shape == (2, 1, 28, 28)
    assert model.reconstruct(torch.rand(4, 1, 28, 28)).shape == (4, 1, 28, 28)


@pytest.mark.parametrize("shape", [(4, 784), (4, 1, 28, 27), (1, 28, 28), (4, 3, 28, 28)])
def test_wrong_input_shape_raises_value_error(shape):
    with pytest.raises(ValueError, match="expected a batch of images"):
        VAE(VAEConfig()).loss(torch.zeros(shape))


def test_wrong_latent_shape_raises_value_error():
    with pytest.raises(ValueError, match="latents"):
        VAE(VAEConfig(latent_dim=4)).decode(torch.zeros(2, 5))


@pytest.mark.parametrize("kwargs", [{"latent_dim": 0}, {"hidden": (0,)}, {"beta": -1.0}, {"likelihood": "nope"}])
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        VAE(VAEConfig(**kwargs))


def test_conv_vae_shapes_and_names():
    config = VAEConfig(latent_dim=8, hidden=(16, 32), architecture="conv")
    model = VAE(config)
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 8)
    assert model.decode(mu).shape == (5, 1, 1, 28, 28)
    loss, terms = model.loss(x)
    assert torch.isfinite(loss) and set(terms) == {"elbo", "reconstruction", "kl"}
    assert config.name == "vae-conv-16-32-z8" and VAEConfig().name == "vae-mlp-400-z20"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_conv_vae_rejects_sizes_it_cannot_mirror():
    with pytest.raises(ValueError, match="divisible"):
        VAEConfig(hidden=(16, 32, 64), architecture="conv")      # 28 is not divisible by 8
    with pytest.raises(ValueError, match="architecture"):
        VAEConfig(architecture="resnet")
    with pytest.raises(ValueError, match="reduction"):
        VAEConfig(reduction="batchmean")


def test_mean_reduction_is_beta_times_d():
    torch.manual_seed(0)
    x = (torch.rand(6, 1, 28, 28) > 0.5).float()
    mean_model = VAE(VAEConfig(reduction="mean", beta=0.5))
    sum_model = VAE(VAEConfig(beta=0.5 * 784))
    sum_model.load_state_dict(mean_model.state_dict())
    torch.manual_seed(1)
    loss_mean, _ = mean_model.loss(x)
    torch.manual_seed(1)
    loss_sum, _ = sum_model.loss(x)
    torch.testing.assert_close(loss_mean * 784, loss_sum)


# -- training on the IWAE bound (train_iwae_k) ------------------------------------------------------

def _iwae_copy(model, k):
    trained_on_iwae = VAE(dataclasses.replace(model.config, train_iwae_k=k)).double().eval()
    trained_on_iwae.load_state_dict(model.state_dict())
    return trained_on_iwae


def test_the_iwae_loss_is_exact_when_the_posterior_is():
    """With q(z|x) the true posterior every weight p(x, z) / q(z|x) equals p(x): L_k = log p(x) for
    every draw, whatever k."""
    from companion.evaluation import linear_gaussian_vae

    model, x, log_px = linear_gaussian_vae(exact_posterior=True)
    for k in (2, 5, 50):
        loss, terms = _iwae_copy(model, k).loss(x)
        assert loss.item() == pytest.approx(-log_px.mean().item(), abs=1e-10)
        assert terms["iwae"].item() == pytest.approx(log_px.mean().item(), abs=1e-10)


def test_the_iwae_loss_agrees_with_the_evaluation_code_and_beats_the_elbo():
    """A poor proposal (the prior): the training loss, averaged over 20,000 copies of two images,
    against ``evaluation.iwae_bound`` (written separately), within 4 standard errors; and L_5 lies
    above the ELBO L_1 by more than its error."""
    from companion.evaluation import iwae_bound, linear_gaussian_vae

    model, x, _ = linear_gaussian_vae(exact_posterior=False)
    many = x.repeat(10_000, 1, 1, 1)
    torch.manual_seed(0)
    with torch.no_grad():
        loss, terms = _iwae_copy(model, 5).loss(many)
        reference = iwae_bound(model, many, 5)
    error = reference.std().item() / len(reference) ** 0.5
    assert -loss.item() == pytest.approx(reference.mean().item(), abs=4 * 2**0.5 * error)   # 4 SE of a difference
    assert terms["iwae"] - terms["elbo"] > 10 * error


def test_bad_train_iwae_k_is_refused():
    assert VAEConfig(train_iwae_k=5).name == "vae-mlp-400-z20-iwae5"
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="train_iwae_k"):
            VAEConfig(train_iwae_k=bad)
    for other in ({"beta": 2.0}, {"free_bits": 0.5}, {"reduction": "mean"}):
        with pytest.raises(ValueError, match="no KL term"):
            VAEConfig(train_iwae_k=5, **other)
