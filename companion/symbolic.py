"""Symbolic derivations (sympy) that the chapters state and the tests reuse.

Each function returns sympy expressions in the symbols it documents, so a chapter can display the
result and a test can assert the identity, e.g. ``sp.simplify(derived - closed) == 0``, or
lambdify it and compare with the torch implementation (``companion.divergences``,
``companion.likelihoods``).

Contents: the Gaussian KL (1-D by integration, diagonal, full covariance); the negative
log-likelihoods of the Bernoulli, Gaussian and Laplace distributions; the ELBO of a linear-Gaussian
model, whose evidence and posterior are exact; the toy objective of the reparameterization chapter
and its exact gradient; Part III's continuous-Bernoulli normaliser and mean, the optimal Gaussian
sigmas (per dimension and shared), the sigma-to-beta mapping and the Beta's moments.

See: chapters "From likelihoods to losses", "The evidence lower bound", "The Gaussian KL in closed
form", "The reparameterization trick".
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "normal_pdf",
    "kl_normal_1d_by_integration",
    "kl_normal_1d_closed_form",
    "kl_standard_normal_1d_closed_form",
    "kl_mvn_closed_form",
    "kl_diag_closed_form",
    "symbols",
    "bernoulli_nll",
    "gaussian_nll",
    "laplace_nll",
    "LinearGaussian",
    "linear_gaussian",
    "toy_objective",
    "continuous_bernoulli",
    "optimal_sigma_per_dim",
    "optimal_sigma_shared",
    "sigma_to_beta",
    "beta_moments",
]

x = sp.Symbol("x", real=True)
mu, mu_2 = sp.symbols("mu mu_2", real=True)
sigma, sigma_2 = sp.symbols("sigma sigma_2", positive=True)


def symbols() -> dict[str, sp.Symbol]:
    """The symbols used below: x, mu, sigma (the first Gaussian), mu_2, sigma_2 (the second)."""
    return {"x": x, "mu": mu, "sigma": sigma, "mu_2": mu_2, "sigma_2": sigma_2}


def normal_pdf(value, mean, std) -> sp.Expr:
    """The density of N(mean, std^2) at ``value``."""
    return sp.exp(-((value - mean) ** 2) / (2 * std**2)) / (sp.sqrt(2 * sp.pi) * std)


def kl_normal_1d_by_integration(mean_2=mu_2, std_2=sigma_2) -> sp.Expr:
    """KL(N(mu, sigma^2) || N(mean_2, std_2^2)) = integral of q (log q - log p) dx, done by sympy.

    The log-ratio is expanded first (it is a quadratic in x), so sympy integrates Gaussian moments.
    Pass ``mean_2=0, std_2=1`` for the KL to the standard normal prior.

    Returns:
        An expression in mu, sigma (and mu_2, sigma_2 unless given as numbers), in nats.
    """
    q, p = normal_pdf(x, mu, sigma), normal_pdf(x, mean_2, std_2)
    log_ratio = sp.expand(sp.expand_log(sp.log(q) - sp.log(p), force=True))
    return sp.integrate(q * log_ratio, (x, -sp.oo, sp.oo))


def kl_normal_1d_closed_form(m_1=mu, s_1=sigma, m_2=mu_2, s_2=sigma_2) -> sp.Expr:
    """log(s_2 / s_1) + (s_1^2 + (m_1 - m_2)^2) / (2 s_2^2) - 1/2: KL(N(m_1, s_1^2) || N(m_2, s_2^2))."""
    return sp.log(s_2 / s_1) + (s_1**2 + (m_1 - m_2) ** 2) / (2 * s_2**2) - sp.Rational(1, 2)


def kl_standard_normal_1d_closed_form(m=mu, s=sigma) -> sp.Expr:
    """(s^2 + m^2 - 1)/2 - log s: KL(N(m, s^2) || N(0, 1)), the VAE's KL per latent dimension.

    See: Kingma & Welling (2014), appendix B.
    """
    return (s**2 + m**2 - 1) / 2 - sp.log(s)


def kl_mvn_closed_form(mean_1: sp.Matrix, cov_1: sp.Matrix, mean_2: sp.Matrix, cov_2: sp.Matrix) -> sp.Expr:
    """KL(N(mean_1, cov_1) || N(mean_2, cov_2)) for k-dimensional Gaussians:

        (tr(cov_2^-1 cov_1) + (mean_2 - mean_1)^T cov_2^-1 (mean_2 - mean_1) - k + log(det cov_2 / det cov_1)) / 2.

    Arguments:
        mean_1, mean_2: column vectors (k x 1); cov_1, cov_2: symmetric positive definite (k x k).
    Raises:
        ValueError: if the shapes do not agree.
    """
    k = mean_1.shape[0]
    if mean_1.shape != (k, 1) or mean_2.shape != (k, 1) or cov_1.shape != (k, k) or cov_2.shape != (k, k):
        raise ValueError(f"shapes do not agree: {mean_1.shape}, {cov_1.shape}, {mean_2.shape}, {cov_2.shape}")
    inv = cov_2.inv()
    d = mean_2 - mean_1
    return ((inv * cov_1).trace() + (d.T * inv * d)[0, 0] - k + sp.log(cov_2.det() / cov_1.det())) / 2


def kl_diag_closed_form(k: int) -> tuple[sp.Expr, list[sp.Symbol], list[sp.Symbol]]:
    """Sum over k dimensions of the 1-D KL to N(0, 1): the diagonal case used by the VAE.

    Returns:
        ``(expression, means, stds)`` with symbols mu_1..mu_k and sigma_1..sigma_k.
    """
    means = list(sp.symbols(f"mu_1:{k + 1}", real=True))
    stds = list(sp.symbols(f"sigma_1:{k + 1}", positive=True))
    return sum(kl_standard_normal_1d_closed_form(m, s) for m, s in zip(means, stds)), means, stds


# -- negative log-likelihoods (chapter "From likelihoods to losses") ------------------------------

def bernoulli_nll(value=x, p=sp.Symbol("p", positive=True)) -> sp.Expr:
    """-log Bernoulli(value; p) = -(value log p + (1 - value) log(1 - p)): the binary cross-entropy."""
    return -(value * sp.log(p) + (1 - value) * sp.log(1 - p))


def gaussian_nll(value=x, mean=mu, std=sigma) -> sp.Expr:
    """-log N(value; mean, std^2) = (value - mean)^2 / (2 std^2) + log std + log(2 pi) / 2.

    Returned as sympy derived it from the density, so ``sp.expand`` shows the squared error, its
    weight 1/(2 std^2) and the constant.
    """
    return sp.expand(-sp.expand_log(sp.log(normal_pdf(value, mean, std)), force=True))


def laplace_nll(value=x, location=mu, scale=sp.Symbol("b", positive=True)) -> sp.Expr:
    """-log Laplace(value; location, scale) = |value - location| / scale + log(2 scale): the L1 loss."""
    density = sp.exp(-sp.Abs(value - location) / scale) / (2 * scale)
    return sp.expand(-sp.expand_log(sp.log(density), force=True))


# -- the ELBO on a linear-Gaussian model (chapter "The evidence lower bound") --------------------

class LinearGaussian:
    """z ~ N(0, 1), x | z ~ N(w z + b, s^2): one latent and one observed dimension, all exact.

    Attributes (sympy expressions in x, w, b, s and the variational parameters m, v of
    q(z) = N(m, v)):
        evidence: log p(x) = log N(x; b, w^2 + s^2).
        posterior_mean, posterior_var: of p(z | x), by Bayes' rule for Gaussians.
        elbo: E_q[log p(x | z) + log p(z) - log q(z)], integrated by sympy.
        reconstruction: E_q[log p(x | z)]; kl_prior: KL(q || p(z)); kl_posterior: KL(q || p(z | x)).
    """

    def __init__(self):
        self.x, self.z = sp.Symbol("x", real=True), sp.Symbol("z", real=True)
        self.w, self.b = sp.Symbol("w", real=True), sp.Symbol("b", real=True)
        self.s, self.m, self.v = sp.Symbol("s", positive=True), sp.Symbol("m", real=True), sp.Symbol("v", positive=True)
        x, z, w, b, s, m, v = self.x, self.z, self.w, self.b, self.s, self.m, self.v
        q = normal_pdf(z, m, sp.sqrt(v))
        log_lik = -sp.expand_log(-sp.log(normal_pdf(x, w * z + b, s)), force=True)
        log_prior = sp.expand_log(sp.log(normal_pdf(z, 0, 1)), force=True)
        log_q = sp.expand_log(sp.log(q), force=True)

        def expect(f):
            return sp.simplify(sp.integrate(sp.expand(q * sp.expand(f)), (z, -sp.oo, sp.oo)))

        self.reconstruction = expect(log_lik)
        self.kl_prior = expect(log_q - log_prior)
        self.elbo = self.reconstruction - self.kl_prior
        self.evidence = sp.expand_log(sp.log(normal_pdf(x, b, sp.sqrt(w**2 + s**2))), force=True)
        self.posterior_var = s**2 / (w**2 + s**2)
        self.posterior_mean = w * (x - b) / (w**2 + s**2)
        self.kl_posterior = kl_normal_1d_closed_form(m, sp.sqrt(v), self.posterior_mean, sp.sqrt(self.posterior_var))

    def gap(self) -> sp.Expr:
        """log p(x) - ELBO(q) - KL(q || p(z|x)), which simplifies to 0 for every m and v."""
        return sp.simplify(sp.expand_log(self.evidence - self.elbo - self.kl_posterior, force=True))


_LINEAR_GAUSSIAN: LinearGaussian | None = None


def linear_gaussian() -> LinearGaussian:
    """The ``LinearGaussian`` model, derived once and cached (the integrals take about a second)."""
    global _LINEAR_GAUSSIAN
    if _LINEAR_GAUSSIAN is None:
        _LINEAR_GAUSSIAN = LinearGaussian()
    return _LINEAR_GAUSSIAN


# -- the toy objective of chapter "The reparameterization trick" ----------------------------------

def toy_objective(f=None) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """L(mu, sigma) = E_{z ~ N(mu, sigma^2)}[f(z)], integrated exactly, and its exact gradient.

    The integral is taken over eps ~ N(0, 1) with z = mu + sigma * eps (the reparameterization
    itself), which sympy does in a fraction of a second.

    Arguments:
        f: a sympy expression in ``symbolic.x`` (the sampled variable); default (x - 3)^2 + exp(x/2).
    Returns:
        ``(L, dL/dmu, dL/dsigma)`` as expressions in mu and sigma.
    """
    f = (x - 3) ** 2 + sp.exp(x / 2) if f is None else f
    eps = sp.Symbol("epsilon", real=True)
    integrand = sp.expand(f.subs(x, mu + sigma * eps)) * normal_pdf(eps, 0, 1)
    value = sp.simplify(sp.integrate(integrand, (eps, -sp.oo, sp.oo)))
    return value, sp.simplify(sp.diff(value, mu)), sp.simplify(sp.diff(value, sigma))


# -- Part III: which likelihood? -------------------------------------------------------------------

def continuous_bernoulli() -> dict[str, sp.Expr]:
    """The Bernoulli form theta^x (1 - theta)^(1 - x) on x in [0, 1], integrated by sympy.

    Returns ``{"theta", "x", "density", "integral", "normaliser", "mean"}``: ``integral`` is the
    integral of the unnormalised density over [0, 1] (not 1: binary cross-entropy on grey pixels is
    not a density), ``normaliser`` is C(theta) = 1 / integral and ``mean`` the expected value of
    the normalised density. The integrals are taken with ``conds="none"`` (no Piecewise), valid for
    theta != 1/2; evaluate them with mpmath (``sp.lambdify(theta, expr, "mpmath")``), which is what
    the tests do in 40 digits.

    See: Loaiza-Ganem & Cunningham (2019); chapter "Bernoulli on grey pixels, and the continuous Bernoulli".
    """
    value, theta = sp.symbols("x theta", positive=True)
    density = theta**value * (1 - theta) ** (1 - value)
    integral = sp.integrate(density, (value, 0, 1), conds="none")
    normaliser = 1 / integral
    mean = sp.integrate(value * density, (value, 0, 1), conds="none") * normaliser
    return {"theta": theta, "x": value, "density": density, "integral": integral, "normaliser": normaliser, "mean": mean}


def optimal_sigma_per_dim() -> tuple[sp.Expr, sp.Expr]:
    """The sigma that minimises -log N(x; mu, sigma^2) for one dimension, and the loss there.

    Solving d/dsigma [(x - mu)^2 / (2 sigma^2) + log sigma] = 0 gives sigma* = |x - mu|; substituting
    leaves log|x - mu| + 1/2 + log(2 pi)/2, which goes to minus infinity as the error goes to 0.

    Returns:
        ``(sigma_star, loss_at_sigma_star)`` in the module's ``x`` and ``mu``.
    See: chapter "The Gaussian decoder's sigma".
    """
    error = sp.Symbol("r", positive=True)                     # r = |x - mu|, so that sympy keeps sigma > 0
    nll = gaussian_nll(x, mu, sigma).subs(x, mu + error)
    (sigma_star,) = sp.solve(sp.diff(nll, sigma), sigma)
    loss = sp.simplify(sp.expand_log(nll.subs(sigma, sigma_star), force=True))
    return sigma_star.subs(error, sp.Abs(x - mu)), loss.subs(error, sp.Abs(x - mu))


def optimal_sigma_shared(dims: sp.Symbol | int | None = None) -> tuple[sp.Expr, sp.Expr, sp.Symbol]:
    """The single sigma shared by the D dimensions of an image that minimises its Gaussian NLL.

    With S = ||x - mu||^2, the NLL is S / (2 sigma^2) + D log sigma + (D/2) log(2 pi); its minimiser
    is sigma*^2 = S / D (the mean squared error) and the loss there is
    (D/2) log(S / D) + D/2 + (D/2) log(2 pi): the sigma-VAE loss of Rybkin et al. (2021), up to
    constants (D/2) log ||x - mu||^2.

    Returns:
        ``(sigma_star, loss_at_sigma_star, S)`` with D = ``dims`` (a positive symbol by default).
    See: chapter "The Gaussian decoder's sigma".
    """
    d = sp.Symbol("D", positive=True) if dims is None else dims
    squared_error = sp.Symbol("S", positive=True)
    nll = squared_error / (2 * sigma**2) + d * sp.log(sigma) + d / 2 * sp.log(2 * sp.pi)
    (sigma_star,) = sp.solve(sp.diff(nll, sigma), sigma)
    return sp.simplify(sigma_star), sp.simplify(sp.expand_log(nll.subs(sigma, sigma_star), force=True)), squared_error


def sigma_to_beta() -> tuple[sp.Expr, sp.Symbol]:
    """The beta of "squared error + beta * KL" that a Gaussian decoder with fixed sigma trains with.

    The negative ELBO with N(x; mu, sigma^2) pixels is S / (2 sigma^2) + KL + const; multiplying by
    2 sigma^2 (which changes no minimiser) gives S + 2 sigma^2 KL. So beta = 2 sigma^2, and the
    plain squared error (beta = 1) is sigma = 1/sqrt(2), about 0.707.

    Returns:
        ``(beta, KL)``: beta as an expression in ``sigma``, and the KL symbol used.
    See: chapter "The Gaussian decoder's sigma".
    """
    kl, squared_error = sp.symbols("KL S", positive=True)
    negative_elbo = squared_error / (2 * sigma**2) + kl
    scaled = sp.expand(2 * sigma**2 * negative_elbo)
    beta = sp.simplify((scaled - squared_error) / kl)
    return beta, kl


def beta_moments() -> dict[str, sp.Expr]:
    """Mean and variance of Beta(a, b) from the Beta function, simplified by sympy.

    E[x] = B(a + 1, b) / B(a, b) = a / (a + b); E[x^2] = B(a + 2, b) / B(a, b); with the mean m and
    the concentration kappa = a + b the variance is m (1 - m) / (kappa + 1).

    Returns:
        ``{"a", "b", "mean", "variance"}`` with the variance in terms of a and b.
    See: chapter "The Beta likelihood".
    """
    a, b = sp.symbols("a b", positive=True)

    def beta_function(p, q):
        return sp.gamma(p) * sp.gamma(q) / sp.gamma(p + q)

    mean = sp.gammasimp(beta_function(a + 1, b) / beta_function(a, b))
    second = sp.gammasimp(beta_function(a + 2, b) / beta_function(a, b))
    return {"a": a, "b": b, "mean": sp.factor(mean), "variance": sp.factor(sp.simplify(second - mean**2))}
