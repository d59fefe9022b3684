"""companion.likelihoods against torch.distributions, and bad input."""

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Normal

from companion.likelihoods import LIKELIHOODS, Bernoulli, Gaussian, Laplace, Likelihood, make_likelihood

SHAPES = [(4, 1, 28, 28), (3, 10), (2, 3, 5, 5)]


@pytest.mark.parametrize("shape", SHAPES)
def test_bernoulli_matches_torch_distributions(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, shape, generator=g).double()
    logits = 5 * torch.randn(shape[0], 1, *shape[1:], generator=g, dtype=torch.float64)
    expected = TorchBernoulli(logits=logits[:, 0]).log_prob(x).flatten(1).sum(1)
    got = Bernoulli().log_prob(x, logits)
    assert got.shape == (shape[0],)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_bernoulli_is_finite_for_extreme_logits():
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    logits = torch.tensor([[[200.0, -200.0, -200.0, 200.0]]])
    out = Bernoulli().log_prob(x, logits)
    assert torch.isfinite(out).all()
    assert out.item() == pytest.approx(-400.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0])
def test_gaussian_matches_torch_distributions(shape, sigma):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    mean = torch.rand(shape[0], 1, *shape[1:], generator=g, dtype=torch.float64)
    expected = Normal(mean[:, 0], sigma).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(Gaussian(sigma).log_prob(x, mean), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [0.05, 1.0])
def test_laplace_matches_torch_distributions(shape, scale):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    loc = torch.randn(shape[0], 1, *shape[1:], generator=g, dtype=torch.float64)
    expected = torch.distributions.Laplace(loc[:, 0], torch.tensor(scale, dtype=torch.float64)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(Laplace(scale).log_prob(x, loc), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_mean_and_sample_have_data_shape(name):
    lik = make_likelihood(name)
    params = torch.randn(6, lik.num_params, 1, 28, 28)
    assert lik.mean(params).shape == (6, 1, 28, 28)
    assert lik.sample(params).shape == (6, 1, 28, 28)


def test_bernoulli_samples_are_binary_and_mean_is_sigmoid():
    params = torch.randn(2, 1, 50)
    assert set(Bernoulli().sample(params).unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(Bernoulli().mean(params), torch.sigmoid(params[:, 0]))


@pytest.mark.parametrize("lik", [Bernoulli(), Gaussian(0.5), Laplace(0.5)])
def test_wrong_parameter_shape_raises(lik):
    with pytest.raises(ValueError, match="decoder output has shape"):
        lik.log_prob(torch.zeros(4, 1, 28, 28), torch.zeros(4, 1, 28, 27))
    with pytest.raises(ValueError):
        lik.log_prob(torch.zeros(4, 784), torch.zeros(4, 784))  # missing the parameter axis


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.inf, math.nan])
def test_gaussian_and_laplace_reject_bad_scales(sigma):
    with pytest.raises(ValueError):
        Gaussian(sigma)
    with pytest.raises(ValueError):
        Laplace(sigma)


def test_unknown_likelihood_name():
    with pytest.raises(ValueError, match="unknown likelihood"):
        make_likelihood("poisson")


def test_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        Likelihood().log_prob(torch.zeros(1, 2), torch.zeros(1, 1, 2))
