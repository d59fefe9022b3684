"""companion.likelihoods against torch.distributions and the sympy derivations, and bad input."""

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Normal

from companion.likelihoods import (LIKELIHOODS, Bernoulli, Beta, Gaussian, GaussianLearnedSigma, GaussianOptimalImageSigma,
                                   GaussianOptimalPixelSigma, GaussianPixelSigma, GaussianPredictedSigma, Laplace,
                                   Likelihood, make_likelihood)

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


@pytest.mark.parametrize("lik", [Bernoulli(), Gaussian(0.5), Laplace(0.5), Beta(), GaussianPredictedSigma()])
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
    """C(theta) and the mean from ``companion.symbolic`` (symbolic integration), evaluated in 40-digit mpmath."""
    import mpmath
    import sympy as sp

    from companion.symbolic import continuous_bernoulli

    cb = continuous_bernoulli()
    mpmath.mp.dps = 40
    return sp.lambdify(cb["theta"], cb["normaliser"], "mpmath"), sp.lambdify(cb["theta"], cb["mean"], "mpmath"), mpmath


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


# --- the Beta ---------------------------------------------------------------------------------------


def test_beta_matches_torch_distributions_after_the_squeeze():
    g = torch.Generator().manual_seed(0)
    params = torch.randn(5, 2, 3, 4, generator=g, dtype=torch.float64) * 3
    x = torch.rand(5, 3, 4, generator=g, dtype=torch.float64)
    x[0, 0, 0], x[1, 0, 0] = 0.0, 1.0                                   # exact black and white pixels
    lik = Beta()
    a, b = lik.alpha_beta(params)
    y = lik.eps + (1 - 2 * lik.eps) * x
    expected = (torch.distributions.Beta(a, b).log_prob(y) + math.log(1 - 2 * lik.eps)).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(x, params), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a / (a + b), lik.eps + (1 - 2 * lik.eps) * lik.mean(params), rtol=1e-12, atol=1e-12)


def test_beta_density_integrates_to_its_mass_inside_the_squeeze():
    """On [0, 1] the squeezed density integrates to the Beta's mass on [eps, 1 - eps] (scipy's CDF):
    at most 1, so the ELBO and IWAE values computed with it are conservative bounds."""
    from scipy.stats import beta as scipy_beta

    x = torch.linspace(0, 1, 400_001, dtype=torch.float64)
    lik = Beta()
    for mean_logit, raw_kappa in ((0.0, 0.0), (-4.0, 2.0), (3.0, -3.0)):
        params = torch.tensor([mean_logit, raw_kappa], dtype=torch.float64).view(1, 2, 1).expand(len(x), 2, 1)
        density = lik.log_prob(x[:, None], params).exp()
        a, b = (v[0, 0].item() for v in lik.alpha_beta(params[:1]))
        mass = scipy_beta(a, b).cdf(1 - lik.eps) - scipy_beta(a, b).cdf(lik.eps)
        assert torch.trapezoid(density, x).item() == pytest.approx(mass, abs=1e-5), (mean_logit, raw_kappa)
        assert mass <= 1 and (mass > 0.998 or raw_kappa < 0)   # the missing mass is small except near the ends


def test_beta_is_bounded_on_always_black_pixels():
    """The limits at work: however hard the decoder pushes towards a black pixel, log p(0) stays finite
    and below the bound set by max_concentration; without the squeeze it would be +inf."""
    lik = Beta()
    params = torch.tensor([[-1e4, 1e4]]).view(1, 2, 1)
    value = lik.log_prob(torch.zeros(1, 1), params)
    assert torch.isfinite(value).all() and value.item() < 10
    unbounded = torch.distributions.Beta(torch.tensor(0.01), torch.tensor(5.0)).log_prob(torch.tensor(1e-30))
    assert unbounded.item() > 60          # the density an unbounded Beta gives near 0: why the limits exist


def test_beta_rejects_bad_limits():
    for kwargs in ({"eps": 0.0}, {"eps": 0.5}, {"min_concentration": 0.0}, {"min_concentration": 5.0, "max_concentration": 1.0}):
        with pytest.raises(ValueError):
            Beta(**kwargs)


def test_beta_moments_match_sympy():
    import sympy as sp

    from companion.symbolic import beta_moments

    m = beta_moments()
    params = torch.tensor([[0.7, -0.4]], dtype=torch.float64).view(1, 2, 1)
    a, b = Beta().alpha_beta(params)
    mean = float(m["mean"].subs({m["a"]: a.item(), m["b"]: b.item()}))
    variance = float(m["variance"].subs({m["a"]: a.item(), m["b"]: b.item()}))
    reference = torch.distributions.Beta(a, b)
    assert mean == pytest.approx(reference.mean.item(), rel=1e-12)
    assert variance == pytest.approx(reference.variance.item(), rel=1e-12)
    kappa = a + b
    assert variance == pytest.approx((mean * (1 - mean) / (kappa + 1)).item(), rel=1e-12)   # the docstring's form
    assert sp.simplify(m["mean"] - m["a"] / (m["a"] + m["b"])) == 0


# --- the Gaussian sigma family ------------------------------------------------------------------------

def _normal_sum(x, mu, sigma):
    return Normal(mu, sigma).log_prob(x).flatten(1).sum(1)


def test_learned_sigmas_match_torch_and_receive_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    mu = torch.rand(3, 1, 1, 4, 4, generator=g, dtype=torch.float64)
    glob = GaussianLearnedSigma(sigma=0.3).double()
    assert glob.sigma == pytest.approx(0.3, rel=1e-6)
    torch.testing.assert_close(glob.log_prob(x, mu), _normal_sum(x, mu[:, 0], torch.tensor(glob.sigma, dtype=torch.float64)))
    pixel = GaussianPixelSigma((1, 4, 4), sigma=0.2).double()
    torch.testing.assert_close(pixel.log_prob(x, mu), _normal_sum(x, mu[:, 0], pixel.sigma.double()))
    for lik in (glob, pixel):
        lik.log_prob(x, mu).sum().backward()
        assert lik.raw.grad is not None and torch.isfinite(lik.raw.grad).all() and lik.raw.grad.abs().sum() > 0


def test_predicted_sigma_matches_torch():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 5, generator=g, dtype=torch.float64)
    params = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    lik = GaussianPredictedSigma(min_sigma=1e-3)
    sigma = 1e-3 + torch.nn.functional.softplus(params[:, 1])
    torch.testing.assert_close(lik.log_prob(x, params), _normal_sum(x, params[:, 0], sigma))


def test_optimal_sigmas_match_sympy_and_beat_every_fixed_sigma():
    import sympy as sp

    from companion import symbolic

    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 6, 6, generator=g, dtype=torch.float64)
    mu = (x + 0.1 * torch.randn(4, 1, 6, 6, generator=g, dtype=torch.float64))[:, None]
    per_pixel, per_image = GaussianOptimalPixelSigma(min_sigma=1e-12), GaussianOptimalImageSigma(min_sigma=1e-12)
    # sympy: -loss at sigma* = -(log|x - mu| + 1/2 + log(2 pi)/2) per pixel
    _, loss = symbolic.optimal_sigma_per_dim()
    f = sp.lambdify((symbolic.x, symbolic.mu), -loss, "math")
    expected = torch.tensor([sum(f(a, b) for a, b in zip(xi.flatten().tolist(), mi.flatten().tolist()))
                             for xi, mi in zip(x, mu)], dtype=torch.float64)
    torch.testing.assert_close(per_pixel.log_prob(x, mu), expected, rtol=1e-10, atol=1e-10)
    # sympy: -(D/2)(log(2 pi S / D) + 1) per image, S the summed squared error
    _, loss_shared, s_symbol = symbolic.optimal_sigma_shared(36)
    g_shared = sp.lambdify(s_symbol, -loss_shared, "math")
    expected = torch.tensor([g_shared(v) for v in (x - mu[:, 0]).square().flatten(1).sum(1).tolist()], dtype=torch.float64)
    torch.testing.assert_close(per_image.log_prob(x, mu), expected, rtol=1e-10, atol=1e-10)
    for sigma in (0.01, 0.05, 0.1, 0.2, 1.0):           # the optimum is at least as good as any fixed sigma
        fixed = Gaussian(sigma).log_prob(x, mu)
        assert (per_image.log_prob(x, mu) >= fixed - 1e-9).all() and (per_pixel.log_prob(x, mu) >= fixed - 1e-9).all()


def test_optimal_pixel_sigma_is_capped_by_its_floor():
    x = torch.zeros(1, 3)
    mu = torch.zeros(1, 1, 3)                            # a perfect reconstruction
    value = GaussianOptimalPixelSigma(min_sigma=1e-3).log_prob(x, mu)
    assert value.item() == pytest.approx(3 * (-math.log(1e-3) - 0.5 * math.log(2 * math.pi)), rel=1e-5)


def test_vae_builds_a_per_pixel_sigma_of_its_image_shape():
    from companion.models.vae import VAE, VAEConfig

    model = VAE(VAEConfig(image_shape=(1, 8, 8), hidden=(16,), latent_dim=2, likelihood="gaussian-pixel"))
    assert model.likelihood.raw.shape == (1, 8, 8)
    assert any(p is model.likelihood.raw for p in model.parameters())      # so the optimiser trains it
    loss, _ = model.loss(torch.rand(5, 1, 8, 8))
    loss.backward()
    assert model.likelihood.raw.grad.abs().sum() > 0


def test_free_bits_change_the_loss_but_not_the_reported_elbo():
    from companion.models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    plain = VAE(VAEConfig(image_shape=(1, 8, 8), hidden=(16,), latent_dim=3))
    free = VAE(VAEConfig(image_shape=(1, 8, 8), hidden=(16,), latent_dim=3, free_bits=100.0))
    free.load_state_dict(plain.state_dict())
    x = torch.rand(4, 1, 8, 8).round()
    torch.manual_seed(1)
    loss_plain, terms_plain = plain.loss(x)
    torch.manual_seed(1)
    loss_free, terms_free = free.loss(x)
    torch.testing.assert_close(terms_plain["elbo"], terms_free["elbo"])
    # with lambda = 100 nats every dimension is charged lambda: loss = -reconstruction + 3 * 100
    torch.testing.assert_close(loss_free, -terms_free["reconstruction"] + 300.0)
    with pytest.raises(ValueError, match="free_bits"):
        VAEConfig(free_bits=-1.0)


@pytest.mark.parametrize("mu,log_s", [(0.3, -2.0), (0.0, -6.0), (0.999, -7.0), (0.5, 1.0), (-0.2, -5.0), (1.4, -3.0)])
def test_discretized_logistic_is_a_probability_on_256_levels(mu, log_s):
    """The 256 masses sum to 1 to float64 rounding (the PixelCNN++ fallback missed by up to 2.5e-6)."""
    from companion.likelihoods import DiscretizedLogistic

    x = (torch.arange(256, dtype=torch.float64) / 255).view(256, 1, 1, 1)
    params = torch.tensor([mu, log_s], dtype=torch.float64).view(1, 2, 1, 1, 1).expand(256, 2, 1, 1, 1)
    log_p = DiscretizedLogistic().log_prob(x, params)
    assert (log_p <= 1e-12).all()
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-13)


def test_discretized_logistic_matches_the_logistic_cdf_inside():
    from companion.likelihoods import DiscretizedLogistic

    mu, s = 0.4, 0.05
    x = torch.tensor([100 / 255], dtype=torch.float64).view(1, 1, 1, 1)
    params = torch.tensor([mu, math.log(s)], dtype=torch.float64).view(1, 2, 1, 1, 1)
    cdf = lambda u: 1 / (1 + math.exp(-(u - mu) / s))  # noqa: E731
    expected = math.log(cdf(100 / 255 + 1 / 510) - cdf(100 / 255 - 1 / 510))
    assert DiscretizedLogistic().log_prob(x, params).item() == pytest.approx(expected, rel=1e-10)


def _logistic_cell_mass_mpmath(k: int, mu: float, log_s: float) -> float:
    """log P(level k) of the binned logistic in 60-digit arithmetic, each cell from the tail it lies in
    (so that no two nearly equal numbers are subtracted, even 400 standard deviations out)."""
    import mpmath

    mpmath.mp.dps = 60
    s, half, mu = mpmath.exp(mpmath.mpf(log_s)), mpmath.mpf(1) / 510, mpmath.mpf(mu)
    cdf = lambda u: 1 / (1 + mpmath.exp(-(u - mu) / s))         # noqa: E731
    survival = lambda u: 1 / (1 + mpmath.exp((u - mu) / s))     # noqa: E731
    upper, lower = mpmath.mpf(k) / 255 + half, mpmath.mpf(k) / 255 - half
    if k == 0:
        return float(mpmath.log(cdf(upper)))
    if k == 255:
        return float(mpmath.log(survival(lower)))
    return float(mpmath.log(cdf(upper) - cdf(lower) if upper <= mu else survival(lower) - survival(upper)))


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
def test_discretized_logistic_cells_match_high_precision_arithmetic(dtype, rtol):
    """Narrow logistics a few cells away from the level: the old density-times-width fallback was off
    by 0.68 nats at mu = 0.5, s = e^-7, level 132 (-17.894 against -17.216)."""
    from companion.likelihoods import DiscretizedLogistic

    cases = [(mu, log_s, k) for log_s in (-7.0, -5.0, -3.0, 0.0) for mu in (0.0, 0.1, 0.5, 1.2)
             for k in (0, 1, 3, 20, 127, 128, 132, 200, 254, 255)]
    x = torch.tensor([k / 255 for _, _, k in cases], dtype=dtype).view(-1, 1, 1, 1)
    params = torch.tensor([[mu, log_s] for mu, log_s, _ in cases], dtype=dtype).view(-1, 2, 1, 1, 1)
    got = DiscretizedLogistic().log_prob(x, params)
    expected = torch.tensor([_logistic_cell_mass_mpmath(k, mu, log_s) for mu, log_s, k in cases], dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("logit", [0.049, -0.049, 1e-4, 1e-30, 0.0, -3.0, 30.0, -100.0])
def test_continuous_bernoulli_sampler_follows_its_distribution(logit):
    """A Kolmogorov-Smirnov test of 200,000 draws against F(x) = (e^(l x) - 1) / (e^l - 1). The old
    sampler drew uniforms whenever 0 < |l| < 0.05 (mean 0.5002 where the true mean is 0.50408 at
    l = 0.049), which this test rejected at p = 1.3e-7 (8.7e-8 at l = -0.049)."""
    import numpy as np
    from scipy import stats

    from companion.likelihoods import ContinuousBernoulli

    def cdf(x):
        if logit == 0:
            return x
        if logit < 0:
            return np.expm1(logit * x) / np.expm1(logit)
        return np.exp(-logit) * np.expm1(logit * x) / -np.expm1(-logit)

    torch.manual_seed(0)
    draws = ContinuousBernoulli().sample(torch.full((200_000, 1, 1), logit, dtype=torch.float64).unsqueeze(1))
    assert draws.min() >= 0 and draws.max() <= 1
    assert stats.kstest(draws.flatten().numpy(), cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", ["bernoulli", "continuous-bernoulli", "beta", "discretized-logistic"])
def test_bounded_likelihoods_refuse_data_outside_zero_one(name):
    """Pixels in 0..255 gave finite, meaningless numbers (positive Bernoulli 'log-probabilities')."""
    from companion.likelihoods import set_validation

    lik = make_likelihood(name)
    x = torch.rand(2, 1, 4, 4)
    params = torch.zeros(2, lik.num_params, 1, 4, 4)
    lik.log_prob(x, params)
    with_nan = x.masked_fill(x > 0.5, float("nan"))
    for bad, seen in ((x * 255, "got values in"), (x - 0.5, "got values in"), (with_nan, "NaN")):
        with pytest.raises(ValueError, match=rf"must lie in \[0, 1\].*{seen}"):
            lik.log_prob(bad, params)
    previous = set_validation(False)
    try:
        lik.log_prob(x * 255, params)                             # the check can be turned off
    finally:
        set_validation(previous)


def test_vae_loss_refuses_pixels_in_0_255():
    from companion.models import VAE, VAEConfig

    model = VAE(VAEConfig(latent_dim=2, hidden=(8,)))
    with pytest.raises(ValueError, match="divided by 255"):
        model.loss(torch.randint(0, 256, (3, 1, 28, 28)).float())
    with pytest.raises(TypeError, match="to_float"):
        model.loss(torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8))


def test_an_option_the_likelihood_does_not_take_names_those_that_do():
    from companion.models import VAEConfig

    takers = "gaussian, gaussian-learned, gaussian-pixel"
    with pytest.raises(ValueError, match=f"bernoulli likelihood takes no option 'sigma'.*{takers}"):
        make_likelihood("bernoulli", sigma=0.1)
    with pytest.raises(ValueError, match="its options: scale"):
        VAEConfig(likelihood="laplace", likelihood_options={"sigma": 0.1})


def test_continuous_bernoulli_clamp_of_the_authors_code():
    """lambda in [1e-4, 1 - 1e-4]: the largest mean is 0.8915 (seed 000), the smallest 1 - 0.8915, the
    gradient vanishes beyond the clamp and the clamp does nothing inside it."""
    clamped, free = ContinuousBernoulli(lambda_clamp=1e-4), ContinuousBernoulli()
    logits = torch.tensor([-50.0, -3.0, 0.5, 50.0], dtype=torch.float64).view(4, 1, 1).requires_grad_()
    means = clamped.mean(logits).flatten()
    assert means[-1].item() == pytest.approx(0.8915, abs=5e-5) and means[0].item() == pytest.approx(1 - 0.8915, abs=5e-5)
    torch.testing.assert_close(means[1:3], free.mean(logits).flatten()[1:3])
    x = torch.full((4, 1), 0.7, dtype=torch.float64)
    clamped.log_prob(x, logits).sum().backward()
    grad = logits.grad.flatten()
    assert grad[0] == 0 and grad[-1] == 0 and (grad[1:3] != 0).all()
    assert ContinuousBernoulli(lambda_clamp=0.0).lambda_clamp == 0.0
    for bad in (-1e-3, 0.5):
        with pytest.raises(ValueError, match="lambda_clamp"):
            ContinuousBernoulli(lambda_clamp=bad)
