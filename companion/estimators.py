"""Gradient estimators for d/d(mu, sigma) E_{z ~ N(mu, sigma^2)}[f(z)]: score function and pathwise.

Both are unbiased; they differ in variance. With S samples z_s = mu + sigma * eps_s:

- score function (REINFORCE; Williams, 1992): f(z) * d/dphi log N(z; mu, sigma^2), phi = (mu, sigma), with
  d/dmu log N = (z - mu) / sigma^2 and d/dsigma log N = ((z - mu)^2 - sigma^2) / sigma^3.
  Needs only values of f.
- pathwise (reparameterization; Kingma & Welling, 2014; Rezende et al., 2014): d/dphi f(mu + sigma eps)
  = f'(z) * (1, eps). Needs f to be differentiable; torch's autograd supplies f'.

See: chapter "The reparameterization trick".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["score_function_gradient", "pathwise_gradient"]


def _check(mu: float, sigma: float, samples: int) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")


def score_function_gradient(f: Callable[[Tensor], Tensor], mu: float, sigma: float, samples: int,
                            repeats: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Score-function estimates of (dL/dmu, dL/dsigma), each the mean over ``samples`` draws.

    Arguments:
        f: elementwise function of a float64 tensor.
        mu, sigma: parameters of N(mu, sigma^2), sigma > 0.
        samples: draws averaged in one estimate (S).
        repeats: independent estimates returned (R).
    Returns:
        float64 tensor of shape (R, 2).
    Raises:
        ValueError: for sigma <= 0 or samples < 1.
    """
    _check(mu, sigma, samples)
    eps = torch.randn(repeats, samples, dtype=torch.float64, generator=generator)
    z = mu + sigma * eps
    fz = f(z)
    d_mu = fz * (z - mu) / sigma**2                       # (R, S)
    d_sigma = fz * ((z - mu) ** 2 - sigma**2) / sigma**3  # (R, S)
    return torch.stack([d_mu.mean(1), d_sigma.mean(1)], dim=1)


def pathwise_gradient(f: Callable[[Tensor], Tensor], mu: float, sigma: float, samples: int,
                      repeats: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Pathwise (reparameterized) estimates of (dL/dmu, dL/dsigma), computed by autograd.

    Same arguments and return shape (R, 2) as ``score_function_gradient``.
    """
    _check(mu, sigma, samples)
    eps = torch.randn(repeats, samples, dtype=torch.float64, generator=generator)
    m = torch.full((repeats, 1), float(mu), dtype=torch.float64, requires_grad=True)
    s = torch.full((repeats, 1), float(sigma), dtype=torch.float64, requires_grad=True)
    objective = f(m + s * eps).mean(1).sum()  # each repeat only depends on its own (m, s)
    d_mu, d_sigma = torch.autograd.grad(objective, (m, s))
    return torch.cat([d_mu, d_sigma], dim=1)
