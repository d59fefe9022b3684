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


# --- the continuous Bernoulli ---------------------------------------------------------------------

from companion.likelihoods import ContinuousBernoulli, continuous_bernoulli_log_normalizer, continuous_bernoulli_mean

CB_LOGITS = [-30.0, -5.0, -1.0, -0.051, -0.049, -0.01, 0.0, 0.01, 0.049, 0.051, 0.7, 3.0, 9.21, 30.0]


def _sympy_cb():
    """C(theta) and the mean by symbolic integration, as functions evaluated in 40-digit mpmath."""
    import mpmath
    import sympy as sp

    x, t = sp.symbols("x theta", positive=True)
    density = t**x * (1 - t) ** (1 - x)
    normaliser = 1 / sp.integrate(density, (x, 0, 1), conds="none")                 # C(theta)
    mean = sp.integrate(x * density, (x, 0, 1), conds="none") * normaliser
    mpmath.mp.dps = 40
    return sp.lambdify(t, normaliser, "mpmath"), sp.lambdify(t, mean, "mpmath"), mpmath


def test_continuous_bernoulli_matches_sympy_in_float64():
    normaliser, mean, mpmath = _sympy_cb()
    for l in CB_LOGITS:
        if l == 0.0:
            expected_c, expected_m = math.log(2), 0.5           # the uniform density, the limit theta -> 1/2
        else:
            theta = 1 / (1 + mpmath.exp(-mpmath.mpf(l)))
            expected_c, expected_m = float(mpmath.log(normaliser(theta))), float(mean(theta))
        logit = torch.tensor(l, dtype=torch.float64)
        assert continuous_bernoulli_log_normalizer(logit).item() == pytest.approx(expected_c, rel=1e-10, abs=1e-12), l
        assert continuous_bernoulli_mean(logit).item() == pytest.approx(expected_m, rel=1e-10, abs=1e-12), l


def test_continuous_bernoulli_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([-8.0, -2.0, -0.5, 0.5, 2.0, 8.0], dtype=torch.float64).view(6, 1, 1)
    x = torch.rand(6, 1, generator=g, dtype=torch.float64)
    reference = torch.distributions.ContinuousBernoulli(logits=logits[:, 0])
    torch.testing.assert_close(ContinuousBernoulli().log_prob(x, logits), reference.log_prob(x).sum(1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ContinuousBernoulli().mean(logits), reference.mean, rtol=1e-10, atol=1e-10)


def test_continuous_bernoulli_density_integrates_to_one():
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    for l in (-20.0, -0.02, 0.0, 1.5, 20.0):
        params = torch.full((len(x), 1, 1), l, dtype=torch.float64)
        density = ContinuousBernoulli().log_prob(x[:, None], params).exp()
        assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-6), l


def test_continuous_bernoulli_means_reported_in_the_seed():
    """The seed (000) reports means 0.8915 at theta = 0.9999 and 0.9373 at theta = 0.9999999. The second
    is a float32 result: 0.9999999 rounds to 0.99999988 in float32, whose logit is 15.94, not 16.12."""
    means = {}
    for dtype in (torch.float32, torch.float64):
        theta = torch.tensor([0.9999, 0.9999999], dtype=dtype)
        means[dtype] = continuous_bernoulli_mean(torch.log(theta) - torch.log1p(-theta)).tolist()
    assert means[torch.float32][0] == pytest.approx(0.8915, abs=5e-5) and means[torch.float64][0] == pytest.approx(0.8915, abs=5e-5)
    assert means[torch.float32][1] == pytest.approx(0.9373, abs=5e-5)
    assert means[torch.float64][1] == pytest.approx(0.93796, abs=5e-5)


def test_continuous_bernoulli_is_finite_for_extreme_logits_in_float32():
    logits = torch.tensor([-1e6, -100.0, -1e-6, 0.0, 1e-6, 100.0, 1e6]).view(7, 1, 1)
    x = torch.tensor([[0.0], [0.3], [0.5], [1.0], [0.9], [1.0], [0.0]])
    lik = ContinuousBernoulli()
    for value in (lik.log_prob(x, logits), lik.mean(logits), lik.sample(logits)):
        assert torch.isfinite(value).all()
    mean = lik.mean(logits).flatten()
    assert (mean >= 0).all() and (mean <= 1).all() and mean[3] == 0.5


def test_continuous_bernoulli_samples_have_the_mean():
    torch.manual_seed(0)
    logits = torch.tensor([-30.0, -5.0, -0.01, 0.0, 3.0, 30.0]).view(6, 1, 1).expand(6, 1, 40_000)
    samples = ContinuousBernoulli().sample(logits)
    assert samples.shape == (6, 40_000) and (samples >= 0).all() and (samples <= 1).all()
    torch.testing.assert_close(samples.mean(1), ContinuousBernoulli().mean(logits[:, :, :1])[:, 0], rtol=0, atol=0.01)
