"""companion.divergences against torch.distributions, sympy and bad input (chapter "The Gaussian KL")."""

import pytest
import sympy as sp
import torch
from torch.distributions import Normal, kl_divergence

from companion import symbolic
from companion.divergences import gaussian_kl, gaussian_kl_diag


@pytest.mark.parametrize("shape", [(5,), (7, 3), (2, 4, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_kl_matches_torch_distributions(shape, dtype):
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    got = gaussian_kl(mu, logvar)
    assert got.shape == shape[:-1] and got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6 if dtype == torch.float32 else 0)


def test_gaussian_kl_diag_matches_torch_and_reduces_to_standard_prior():
    g = torch.Generator().manual_seed(1)
    a = [torch.randn(16, 8, generator=g, dtype=torch.float64) for _ in range(4)]
    q, p = Normal(a[0], (0.5 * a[1]).exp()), Normal(a[2], (0.5 * a[3]).exp())
    torch.testing.assert_close(gaussian_kl_diag(*a), kl_divergence(q, p).sum(-1), rtol=1e-12, atol=0)
    zeros = torch.zeros(8, dtype=torch.float64)  # a prior shared by the batch broadcasts
    torch.testing.assert_close(gaussian_kl_diag(a[0], a[1], zeros, zeros), gaussian_kl(a[0], a[1]), rtol=1e-12, atol=0)


def test_kl_is_zero_only_at_the_prior():
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0
    assert (gaussian_kl(torch.randn(100, 4), torch.randn(100, 4)) > 0).all()


def test_sympy_closed_form_lambdified_equals_torch_in_float64():
    """Chapter eq.: KL(N(mu, sigma^2) || N(0, 1)) = (sigma^2 + mu^2 - 1)/2 - log sigma, per dimension."""
    f = sp.lambdify((symbolic.mu, symbolic.sigma), symbolic.kl_standard_normal_1d_closed_form(), "math")
    g = torch.Generator().manual_seed(2)
    mu, logvar = 3 * torch.randn(200, 1, generator=g, dtype=torch.float64), torch.randn(200, 1, generator=g, dtype=torch.float64)
    ours = gaussian_kl(mu, logvar)
    for m, lv, k in zip(mu[:, 0].tolist(), logvar[:, 0].tolist(), ours.tolist()):
        ref = f(m, (0.5 * torch.tensor(lv, dtype=torch.float64)).exp().item())
        assert abs(k - ref) <= 1e-10 * abs(ref) + 1e-15


def test_sympy_general_1d_lambdified_equals_gaussian_kl_diag():
    f = sp.lambdify((symbolic.mu, symbolic.sigma, symbolic.mu_2, symbolic.sigma_2), symbolic.kl_normal_1d_closed_form(), "math")
    g = torch.Generator().manual_seed(3)
    a = [torch.randn(100, 1, generator=g, dtype=torch.float64) for _ in range(4)]
    ours = gaussian_kl_diag(*a)
    for i in range(100):
        ref = f(a[0][i, 0].item(), (0.5 * a[1][i, 0]).exp().item(), a[2][i, 0].item(), (0.5 * a[3][i, 0]).exp().item())
        assert abs(ours[i].item() - ref) <= 1e-10 * abs(ref) + 1e-15


def test_float32_small_kl_keeps_digits():
    """sigma = 1 + 1e-5, mu = 1e-5 (seed 001, section 1.5a): exact KL is 1.4999997e-10 nats."""
    mu = torch.tensor([1e-5])
    logvar = 2 * torch.log1p(torch.tensor([1e-5], dtype=torch.float64)).float()
    assert abs(gaussian_kl(mu, logvar).item() - 1.4999997e-10) < 0.01 * 1.5e-10


@pytest.mark.parametrize("fn, args", [
    (gaussian_kl, (torch.zeros(3, 4), torch.zeros(3, 5))),
    (gaussian_kl, (torch.tensor(0.0), torch.tensor(0.0))),
    (gaussian_kl_diag, (torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(5), torch.zeros(4))),
    (gaussian_kl_diag, (torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2, 3, 4), torch.zeros(4))),
])
def test_bad_shapes_raise_value_error(fn, args):
    with pytest.raises(ValueError):
        fn(*args)
