"""Symbolic derivations (sympy) that the chapters state and the tests reuse.

Each function returns sympy expressions in the symbols it documents, so a chapter can display the
result and a test can assert the identity, e.g. ``sp.simplify(derived - closed) == 0``, or
lambdify it and compare with the torch implementation (``companion.divergences``,
``companion.likelihoods``).

Contents: the Gaussian KL (1-D by integration, diagonal, full covariance); the negative
log-likelihoods of the Bernoulli, Gaussian and Laplace distributions; the ELBO of a linear-Gaussian
model, whose evidence and posterior are exact; the toy objective of the reparameterization chapter
and its exact gradient; Part III's continuous-Bernoulli normaliser and mean, the optimal Gaussian
sigmas (per dimension and shared), the sigma-to-beta mapping and the Beta's moments; Part IV's
optimal discriminator and generator-loss gradients (GANs), the change of variables and the coupling
layer's triangular Jacobian (flows).

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
    "optimal_discriminator",
    "generator_loss_gradients",
    "coupling_jacobian",
    "change_of_variables_1d",
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
    (D/2) log(S / D) + D/2 + (D/2) log(2 pi), that is (D/2) log ||x - mu||^2 up to constants. With
    S summed over a whole batch and D its number of pixels this is the optimal sigma-VAE loss of
    Rybkin et al. (2021); per image, it is the seed post's variant.

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


def optimal_discriminator() -> dict[str, sp.Expr]:
    """The discriminator that maximises the GAN value for a fixed generator, and the value there.

    At each x the integrand of V(D, G) = integral of p_data log D + p_g log(1 - D) dx is
    a log D + b log(1 - D) with a = p_data(x), b = p_g(x); sympy solves d/dD = 0 for
    D* = a / (a + b) and checks that the second derivative is negative. Substituting D* and then
    p_g = p_data gives V = -log 4 at the equilibrium, with D* = 1/2 everywhere.

    Returns:
        ``{"p_data", "p_g", "D", "integrand", "optimum", "second_derivative", "value_at_equilibrium"}``
        where ``value_at_equilibrium`` is the integrand at D* with p_g = p_data, integrated against a
        density (so a multiple of the integral of p_data, which is 1).
    See: Goodfellow et al. (2014), proposition 1 and theorem 1; chapter "GANs".
    """
    a, b = sp.symbols("p_data p_g", positive=True)
    d = sp.Symbol("D", positive=True)
    integrand = a * sp.log(d) + b * sp.log(1 - d)
    (optimum,) = sp.solve(sp.diff(integrand, d), d)
    second = sp.simplify(sp.diff(integrand, d, 2).subs(d, optimum))
    at_equilibrium = sp.simplify(sp.expand_log(integrand.subs(d, optimum).subs(b, a), force=True) / a)
    return {"p_data": a, "p_g": b, "D": d, "integrand": integrand, "optimum": optimum,
            "second_derivative": second, "value_at_equilibrium": at_equilibrium}


def generator_loss_gradients() -> dict[str, sp.Expr]:
    """Derivatives of the two generator losses with respect to the discriminator's logit l.

    With D = sigmoid(l): the saturating loss log(1 - D) has derivative -D, which vanishes as
    D -> 0 (a discriminator that confidently rejects the samples gives the generator nothing to
    learn from); the non-saturating loss -log D has derivative D - 1, which tends to -1.

    Returns:
        ``{"logit", "saturating", "non_saturating", "d_saturating", "d_non_saturating"}``.
    See: Goodfellow et al. (2014), section 3; chapter "GANs".
    """
    logit = sp.Symbol("l", real=True)
    d = 1 / (1 + sp.exp(-logit))
    saturating, non_saturating = sp.log(1 - d), -sp.log(d)
    return {"logit": logit, "saturating": saturating, "non_saturating": non_saturating,
            "d_saturating": sp.simplify(sp.diff(saturating, logit)),
            "d_non_saturating": sp.simplify(sp.diff(non_saturating, logit))}


def coupling_jacobian(dim: int = 4, kept: int = 2) -> dict[str, sp.Expr]:
    """The Jacobian of an affine coupling layer on ``dim`` variables, ``kept`` of them passed through.

    y_i = x_i for i < kept; y_i = x_i exp(s_i(x_:kept)) + t_i(x_:kept) otherwise, with s_i and t_i
    arbitrary (undefined sympy functions). The Jacobian is lower block-triangular, so its
    determinant is the product of the diagonal, exp(sum of s_i): sympy computes both.

    Returns:
        ``{"x", "y", "jacobian", "det", "log_det_of_sum"}`` with ``log_det_of_sum`` = sum of s_i.
    See: Dinh et al. (2017), equation (6); chapter "Normalizing flows".
    """
    xs = sp.symbols(f"x0:{dim}", real=True)
    cond = xs[:kept]
    s = [sp.Function(f"s_{i}")(*cond) for i in range(kept, dim)]
    t = [sp.Function(f"t_{i}")(*cond) for i in range(kept, dim)]
    ys = list(cond) + [xs[i] * sp.exp(s[i - kept]) + t[i - kept] for i in range(kept, dim)]
    jacobian = sp.Matrix(ys).jacobian(sp.Matrix(xs))
    return {"x": xs, "y": ys, "jacobian": jacobian, "det": sp.simplify(jacobian.det()),
            "log_det_of_sum": sum(s)}


def change_of_variables_1d(transform=None) -> dict[str, sp.Expr]:
    """Density of y = f(x) for x ~ N(0, 1) and an increasing f onto (0, inf), by the change of variables.

    p_y(y) = p_x(f^{-1}(y)) |d f^{-1}/dy|. The default f(x) = exp(x) gives the log-normal density;
    its integral over y > 0 is evaluated numerically by mpmath (30 digits), since sympy leaves it
    unevaluated in closed form.

    Arguments:
        transform: a function of a sympy symbol returning an increasing expression (default exp).
    Returns:
        ``{"x", "y", "f", "inverse", "density", "total"}`` (total: the numerical integral of the density).
    See: chapter "Normalizing flows".
    """
    y = sp.Symbol("y", positive=True)
    f = (transform or sp.exp)(x)
    (inverse,) = sp.solve(sp.Eq(f, y), x)
    density = sp.simplify(normal_pdf(inverse, 0, 1) * sp.Abs(sp.diff(inverse, y)))
    return {"x": x, "y": y, "f": f, "inverse": inverse, "density": density,
            "total": sp.Integral(density, (y, 0, sp.oo)).evalf(30)}
