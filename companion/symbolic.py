"""Symbolic derivations (sympy) that the chapters state and the tests reuse.

Each function returns sympy expressions in the symbols it documents, so a chapter can display the
result and a test can assert the identity, e.g. ``sp.simplify(derived - closed) == 0``, or
lambdify it and compare with the torch implementation in ``companion.divergences``.

See: chapter "The Gaussian KL in closed form".
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
