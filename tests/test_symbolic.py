"""The sympy derivations of companion.symbolic (chapter "The Gaussian KL in closed form")."""

import pytest
import sympy as sp

from companion import symbolic


def test_integral_equals_closed_form_general_1d():
    assert sp.simplify(symbolic.kl_normal_1d_by_integration() - symbolic.kl_normal_1d_closed_form()) == 0


def test_integral_equals_closed_form_standard_prior():
    assert sp.simplify(symbolic.kl_normal_1d_by_integration(0, 1) - symbolic.kl_standard_normal_1d_closed_form()) == 0


def test_full_covariance_reduces_to_diagonal_sum():
    diag, means, stds = symbolic.kl_diag_closed_form(3)
    full = symbolic.kl_mvn_closed_form(sp.Matrix(means), sp.diag(*[s**2 for s in stds]), sp.zeros(3, 1), sp.eye(3))
    assert sp.simplify(sp.expand_log(full - diag, force=True)) == 0


def test_full_covariance_1d_equals_general_1d():
    s = symbolic.symbols()
    full = symbolic.kl_mvn_closed_form(sp.Matrix([s["mu"]]), sp.Matrix([[s["sigma"] ** 2]]),
                                       sp.Matrix([s["mu_2"]]), sp.Matrix([[s["sigma_2"] ** 2]]))
    assert sp.simplify(sp.expand_log(full - symbolic.kl_normal_1d_closed_form(), force=True)) == 0


def test_closed_form_is_not_identically_zero():
    """Guards the checks above against a vacuous closed form."""
    assert symbolic.kl_standard_normal_1d_closed_form().subs({symbolic.mu: 1, symbolic.sigma: 1}) == sp.Rational(1, 2)


# -- derivations against their torch counterparts, float64, relative error below 1e-10 -------------

import math

import torch

from companion.divergences import gaussian_kl
from companion.estimators import pathwise_gradient, score_function_gradient
from companion.likelihoods import Bernoulli, Gaussian, Laplace

RTOL = 1e-10


def _close(a, b):
    return abs(a - b) <= RTOL * max(abs(a), abs(b), 1e-300)


def test_bernoulli_nll_is_the_binary_cross_entropy_of_the_companion():
    p = sp.Symbol("p", positive=True)
    nll = sp.lambdify((symbolic.x, p), symbolic.bernoulli_nll(symbolic.x, p), "math")
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(50, generator=g, dtype=torch.float64) * 0.98 + 0.01
    values = torch.randint(0, 2, (50,), generator=g).double()
    ours = -Bernoulli().log_prob(values[:, None], torch.logit(probs)[:, None, None])
    for v, q, o in zip(values.tolist(), probs.tolist(), ours.tolist()):
        assert _close(nll(v, q), o)


def test_gaussian_nll_matches_the_companion_and_shows_its_weight_and_constant():
    nll = symbolic.gaussian_nll()
    s = symbolic.sigma
    assert sp.simplify(sp.diff(nll, symbolic.x, 2) - 1 / s**2) == 0  # the squared error is weighted by 1/(2 sigma^2)
    constant = nll.subs({symbolic.x: symbolic.mu})
    assert sp.simplify(constant - (sp.log(s) + sp.log(2 * sp.pi) / 2)) == 0
    _assert_nll_matches(nll, s, Gaussian, scales=(0.1, 1.0, 2.5), sample=torch.rand, seed=1)


def test_laplace_nll_matches_the_companion():
    b = sp.Symbol("b", positive=True)
    _assert_nll_matches(symbolic.laplace_nll(), b, Laplace, scales=(0.05, 1.0, 3.0), sample=torch.randn, seed=2)


def _assert_nll_matches(nll, scale_symbol, likelihood, scales, sample, seed):
    """The lambdified sympy NLL equals -likelihood(scale).log_prob on random values, per pixel, rel < 1e-10."""
    f = sp.lambdify((symbolic.x, symbolic.mu, scale_symbol), nll, "math")
    g = torch.Generator().manual_seed(seed)
    for scale in scales:
        xs, means = sample(30, generator=g, dtype=torch.float64), sample(30, generator=g, dtype=torch.float64)
        ours = -likelihood(scale).log_prob(xs[:, None], means[:, None, None])
        for a, m, o in zip(xs.tolist(), means.tolist(), ours.tolist()):
            assert _close(f(a, m, scale), o)


def test_linear_gaussian_gap_is_the_kl_to_the_true_posterior():
    model = symbolic.linear_gaussian()
    assert model.gap() == 0
    # and the gap is not trivially zero: the ELBO is below the evidence away from the posterior
    values = {model.x: 1.3, model.w: 2.0, model.b: 0.5, model.s: 0.7, model.m: -0.2, model.v: 0.9}
    assert float((model.evidence - model.elbo).subs(values)) > 0.1
    at_posterior = {**values, model.m: model.posterior_mean.subs(values), model.v: model.posterior_var.subs(values)}
    assert abs(float((model.evidence - model.elbo).subs(at_posterior))) < 1e-12


def test_linear_gaussian_elbo_matches_the_companion_terms():
    """ELBO = log N(x; w m + b, s^2) - w^2 v / (2 s^2) - KL(N(m, v) || N(0, 1)), with torch's pieces."""
    model = symbolic.linear_gaussian()
    args = (model.x, model.w, model.b, model.s, model.m, model.v)
    elbo, evidence = sp.lambdify(args, model.elbo, "math"), sp.lambdify(args, model.evidence, "math")
    g = torch.Generator().manual_seed(3)
    for _ in range(40):
        x, w, b, m = (torch.randn(1, generator=g, dtype=torch.float64).item() for _ in range(4))
        s, v = (0.2 + torch.rand(1, generator=g, dtype=torch.float64).item() for _ in range(2))
        mean = torch.tensor([[[w * m + b]]], dtype=torch.float64)
        ours = (Gaussian(s).log_prob(torch.tensor([[x]], dtype=torch.float64), mean).item() - w**2 * v / (2 * s**2)
                - gaussian_kl(torch.tensor([m], dtype=torch.float64), torch.tensor([math.log(v)], dtype=torch.float64)).item())
        assert _close(elbo(x, w, b, s, m, v), ours)
        f64 = lambda value: torch.tensor(value, dtype=torch.float64)  # python floats would give float32
        exact = torch.distributions.Normal(f64(b), f64(math.sqrt(w**2 + s**2))).log_prob(f64(x)).item()
        assert _close(evidence(x, w, b, s, m, v), exact)


def test_toy_objective_gradient_against_both_estimators():
    value, d_mu, d_sigma = symbolic.toy_objective()
    assert sp.simplify(value - (symbolic.mu**2 - 6 * symbolic.mu + symbolic.sigma**2 + 9
                                + sp.exp(symbolic.mu / 2 + symbolic.sigma**2 / 8))) == 0
    mu, sigma = 0.5, 1.2
    exact = torch.tensor([float(d_mu.subs({symbolic.mu: mu, symbolic.sigma: sigma})),
                          float(d_sigma.subs({symbolic.mu: mu, symbolic.sigma: sigma}))], dtype=torch.float64)
    f = lambda z: (z - 3) ** 2 + torch.exp(z / 2)
    for estimator in (score_function_gradient, pathwise_gradient):
        estimates = estimator(f, mu, sigma, samples=1, repeats=400_000, generator=torch.Generator().manual_seed(4))
        stderr = estimates.std(0) / math.sqrt(len(estimates))
        assert ((estimates.mean(0) - exact).abs() < 5 * stderr).all(), (estimator.__name__, estimates.mean(0), exact)


def test_optimal_discriminator_and_the_value_minus_log_4():
    """Goodfellow et al. (2014), proposition 1 and theorem 1 (chapter "GANs")."""
    o = symbolic.optimal_discriminator()
    assert sp.simplify(o["optimum"] - o["p_data"] / (o["p_data"] + o["p_g"])) == 0
    assert o["second_derivative"].subs({o["p_data"]: 0.3, o["p_g"]: 0.5}) < 0       # a maximum
    assert sp.simplify(o["value_at_equilibrium"] + sp.log(4)) == 0
    assert o["optimum"].subs(o["p_g"], o["p_data"]) == sp.Rational(1, 2)


def test_generator_loss_gradients_match_the_companion():
    from companion.models.gan import generator_loss

    g = symbolic.generator_loss_gradients()
    assert sp.simplify(g["d_saturating"] + 1 / (1 + sp.exp(-g["logit"]))) == 0
    assert sp.simplify(g["d_non_saturating"] - (1 / (1 + sp.exp(-g["logit"])) - 1)) == 0
    logits = torch.tensor([-9.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    for kind, key in (("saturating", "d_saturating"), ("non-saturating", "d_non_saturating")):
        (grad,) = torch.autograd.grad(generator_loss(logits, kind).sum(), logits)
        expected = [float(g[key].subs(g["logit"], v)) for v in logits.tolist()]
        assert torch.allclose(grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dim,kept", [(2, 1), (4, 2), (5, 2)])
def test_coupling_jacobian_is_triangular_with_log_det_the_sum_of_scales(dim, kept):
    c = symbolic.coupling_jacobian(dim, kept)
    jac = c["jacobian"]
    assert all(jac[i, j] == 0 for i in range(dim) for j in range(i + 1, dim))      # lower triangular
    assert sp.simplify(c["det"] - sp.exp(c["log_det_of_sum"])) == 0


def test_change_of_variables_gives_the_log_normal():
    v = symbolic.change_of_variables_1d()
    lognormal = sp.exp(-sp.log(v["y"]) ** 2 / 2) / (v["y"] * sp.sqrt(2 * sp.pi))
    assert sp.simplify(v["density"] - lognormal) == 0
    assert abs(v["total"] - 1) < 1e-20
