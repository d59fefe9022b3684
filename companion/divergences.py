"""KL divergences between Gaussians in closed form, in nats.

The encoder of a VAE outputs a mean and a log-variance per latent dimension; these functions take
exactly that. Networks output log sigma^2 rather than sigma^2 because it is unconstrained (any real
number is a valid log-variance) and because the KL then contains ``logvar`` itself, not
``log(exp(logvar))``.

Numerics: the closed form has a cancellation ``sigma^2 - 1 - log sigma^2`` near sigma = 1. Written
as ``expm1(logvar) - logvar`` it keeps about 3 more significant digits in float32 for small KLs
(chapter "The Gaussian KL in closed form" shows the difference on seed 001's worked example).

See: Kingma & Welling (2014), appendix B; chapter "The Gaussian KL in closed form".
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gaussian_kl", "gaussian_kl_per_dim", "gaussian_kl_diag"]


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 1:
        raise ValueError(f"{names} need at least one (latent) dimension, got a scalar")


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats, summed over the last dimension.

    Per dimension: (sigma^2 + mu^2 - 1)/2 - log sigma, computed as (mu^2 + expm1(logvar) - logvar)/2.

    Arguments:
        mu: posterior means, shape (..., Z).
        logvar: posterior log-variances log sigma^2, shape (..., Z).
    Returns:
        KL per example, shape (...,) (for (B, Z) inputs, shape (B,)).
    Raises:
        ValueError: if the shapes differ or the inputs are scalars.
    See: Kingma & Welling (2014), appendix B; chapter "The Gaussian KL in closed form".
    """
    return gaussian_kl_per_dim(mu, logvar).sum(-1)


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """The terms of ``gaussian_kl`` before the sum: KL of each latent dimension, shape of ``mu``, in nats.

    Averaged over data, KL_j measures how much dimension j is used; a dimension with KL_j near 0
    is inactive (collapsed to the prior). Raises ValueError like ``gaussian_kl``.
    See: chapter "beta-VAE, blur and posterior collapse".
    """
    _check_pair(mu, logvar, "mu and logvar")
    return 0.5 * (mu.square() + torch.expm1(logvar) - logvar)


def gaussian_kl_diag(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, diag(exp(logvar_q))) || N(mu_p, diag(exp(logvar_p)))) in nats, summed over the last dimension.

    Per dimension: log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2.
    With mu_p = 0 and logvar_p = 0 it equals ``gaussian_kl``.

    Arguments:
        mu_q, logvar_q: the first Gaussian (usually the posterior q(z|x)), shape (..., Z).
        mu_p, logvar_p: the second Gaussian (usually a prior), broadcastable to (..., Z).
    Returns:
        KL per example, shape (...,).
    Raises:
        ValueError: if mu_q and logvar_q differ in shape, or the second Gaussian does not broadcast.
    See: chapter "The Gaussian KL in closed form" (derived with sympy there).
    """
    _check_pair(mu_q, logvar_q, "mu_q and logvar_q")
    try:
        shape = torch.broadcast_shapes(mu_q.shape, mu_p.shape, logvar_p.shape)
    except RuntimeError as error:
        raise ValueError(f"the prior's parameters do not broadcast to {tuple(mu_q.shape)}: {error}") from None
    if shape != mu_q.shape:
        raise ValueError(f"the prior's parameters broadcast to {tuple(shape)}, not to {tuple(mu_q.shape)}")
    d = logvar_q - logvar_p
    return 0.5 * ((mu_q - mu_p).square() * torch.exp(-logvar_p) + torch.expm1(d) - d).sum(-1)
