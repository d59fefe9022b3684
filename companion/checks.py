"""Checks that students run on their own implementations; a failure says what went wrong in words.

Each ``check_*`` function calls the student's function on a few inputs, compares with the companion's
reference, and raises ``CheckFailed`` (an ``AssertionError``) whose message names the input, what was
expected and what came back. A function that still raises ``NotImplementedError`` (the stub of a
student notebook) is reported as "not implemented yet".

See: appendix "For instructors"; the exercises of every chapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, kl_divergence

from .divergences import gaussian_kl

__all__ = ["CheckFailed", "check_gaussian_kl", "check_kl_full_covariance", "check_elbo_estimator", "check_negative_elbo",
           "check_entropy",
           "check_laplace_nll", "check_linear_gaussian_elbo",
           "check_score_function_estimator", "check_log_mean_exp", "check_pca",
           "check_importance_weights", "check_equivalent_sigma", "check_cb_log_normalizer", "check_frechet_distance",
           "check_beta_log_prob", "check_sigma_vae_log_likelihood", "check_active_units",
           "check_gan_value", "check_coupling_forward", "check_bits_per_dim"]


class CheckFailed(AssertionError):
    """A student's function disagrees with the reference; the message explains how."""


def _invoke(fn: Callable, name: str, *args, **kwargs):
    """Call the student's function, turning its exceptions into explanations."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(f"{name} is not implemented yet: replace the `raise NotImplementedError` line with your code") from None
    except Exception as error:
        raise CheckFailed(f"{name} raised {type(error).__name__}: {error}") from error


def _call(fn: Callable, name: str, *args, **kwargs) -> Tensor:
    out = _invoke(fn, name, *args, **kwargs)
    if not torch.is_tensor(out):
        raise CheckFailed(f"{name} returned {type(out).__name__}, expected a torch.Tensor")
    return out


def _compare(name: str, case: str, got: Tensor, expected: Tensor, rtol: float, atol: float = 0.0) -> None:
    if tuple(got.shape) != tuple(expected.shape):
        raise CheckFailed(f"{name} on {case}: returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if not torch.isfinite(got).all():
        raise CheckFailed(f"{name} on {case}: returned non-finite values {got.flatten()[:4].tolist()}")
    bad = ~torch.isclose(got.double(), expected.double(), rtol=rtol, atol=atol)
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        g, e = got.flatten()[i].item(), expected.flatten()[i].item()
        raise CheckFailed(f"{name} on {case}: element {i} is {g:.6g}, expected {e:.6g} "
                          f"(relative error {abs(g - e) / max(abs(e), 1e-30):.2e}, allowed {rtol:.0e}); "
                          f"{int(bad.sum())} of {bad.numel()} elements differ")


def check_entropy(fn: Callable[[Tensor, float], Tensor]) -> None:
    """Check ``fn(p, base)``: the entropy of a probability vector p (last dimension) in units of log ``base``.

    Cases: the four-letter source (1/2, 1/4, 1/8, 1/8) has 1.75 bits; a uniform distribution over 8
    symbols 3 bits; zero probabilities contribute nothing (0 log 0 = 0, the limit), so (1/2, 1/2, 0)
    has 1 bit, not NaN; in nats (base e) a fair coin has log 2; a batch (B, K) gives B entropies.
    Raises CheckFailed.
    """
    import math

    name = "your entropy"
    f64 = lambda values: torch.tensor(values, dtype=torch.float64)
    cases = [
        ("the four-letter source (1/2, 1/4, 1/8, 1/8), base 2", f64([0.5, 0.25, 0.125, 0.125]), 2, f64(1.75)),
        ("a uniform distribution over 8 symbols, base 2", torch.full((8,), 1 / 8, dtype=torch.float64), 2, f64(3.0)),
        ("(1/2, 1/2, 0), base 2: a zero probability must contribute 0, not NaN", f64([0.5, 0.5, 0.0]), 2, f64(1.0)),
        ("a fair coin in nats (base e)", f64([0.5, 0.5]), math.e, f64(math.log(2))),
        ("a batch of two distributions, shape (2, 2)", f64([[1.0, 0.0], [0.5, 0.5]]), 2, f64([0.0, 1.0])),
    ]
    for case, p, base, expected in cases:
        _compare(name, case, _call(fn, name, p, base), expected, 1e-9, 1e-12)


def check_laplace_nll(fn: Callable[[Tensor, Tensor, float], Tensor]) -> None:
    """Check ``fn(x, loc, scale)``: -log Laplace(x; loc, scale) in nats, summed over all dimensions but the first.

    Compared with ``torch.distributions.Laplace`` on random batches of shape (B, D) and (B, 1, 4, 4),
    for scales 1, 0.1 and 3. Raises CheckFailed.
    """
    name = "your laplace_nll"
    g = torch.Generator().manual_seed(0)
    for shape, scale in (((5, 3), 1.0), ((4, 1, 4, 4), 0.1), ((6, 10), 3.0)):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        loc = torch.randn(shape, generator=g, dtype=torch.float64)
        expected = -torch.distributions.Laplace(loc, torch.tensor(scale, dtype=torch.float64)).log_prob(x).flatten(1).sum(1)
        _compare(name, f"x and loc of shape {shape}, scale {scale}", _call(fn, name, x, loc, scale), expected, 1e-9)


def check_linear_gaussian_elbo(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(x, w, b, s, m, v)``: the exact ELBO of the model z ~ N(0, 1), x | z ~ N(w z + b, s^2)
    for q(z) = N(m, v), elementwise over float64 tensors.

    Compared with the sympy derivation ``companion.symbolic.linear_gaussian().elbo`` on random
    parameters, and at the true posterior, where the ELBO must equal log p(x). Raises CheckFailed.
    """
    import sympy as sp

    from .symbolic import linear_gaussian

    model = linear_gaussian()
    args = (model.x, model.w, model.b, model.s, model.m, model.v)
    exact = sp.lambdify(args, model.elbo, "math")
    name = "your ELBO"
    g = torch.Generator().manual_seed(0)
    values = [torch.randn(20, generator=g, dtype=torch.float64) for _ in range(4)]
    s_, v_ = (0.2 + torch.rand(20, generator=g, dtype=torch.float64) for _ in range(2))
    x, w, b, m = values
    expected = torch.tensor([exact(*map(float, row)) for row in zip(x, w, b, s_, m, v_)], dtype=torch.float64)
    _compare(name, "20 random settings of (x, w, b, s, m, v)", _call(fn, name, x, w, b, s_, m, v_), expected, 1e-9)
    post_var, post_mean = s_**2 / (w**2 + s_**2), w * (x - b) / (w**2 + s_**2)
    evidence = torch.distributions.Normal(b, (w**2 + s_**2).sqrt()).log_prob(x)
    _compare(name, "q equal to the true posterior (the ELBO must equal log p(x))",
             _call(fn, name, x, w, b, s_, post_mean, post_var), evidence, 1e-9)


def check_score_function_estimator(fn: Callable[..., Tensor]) -> None:
    """Check ``fn(f, mu, sigma, samples)``: one score-function estimate of (dL/dmu, dL/dsigma), shape (2,),
    for L = E_{z ~ N(mu, sigma^2)}[f(z)].

    Unbiasedness is tested statistically: 4000 estimates with 8 samples each, for f(z) = (z - 3)^2
    and mu = 0.5, sigma = 1.2, must average to the exact gradient (2 mu - 6, 2 sigma) within five
    standard errors; the estimate must also change from call to call (it samples). Raises CheckFailed.
    """
    import math

    name = "your score-function estimator"
    f = lambda z: (z - 3) ** 2
    torch.manual_seed(0)
    first = _call(fn, name, f, 0.5, 1.2, 8)
    if tuple(first.shape) != (2,):
        raise CheckFailed(f"{name}: returned shape {tuple(first.shape)}, expected (2,) = (dL/dmu, dL/dsigma)")
    estimates = torch.stack([first] + [_call(fn, name, f, 0.5, 1.2, 8) for _ in range(3999)]).double()
    if estimates.std(0).min() == 0:
        raise CheckFailed(f"{name}: every call returned the same value; it should average f(z) * score over fresh samples")
    exact = torch.tensor([2 * 0.5 - 6, 2 * 1.2], dtype=torch.float64)
    stderr = estimates.std(0) / math.sqrt(len(estimates))
    mean = estimates.mean(0)
    for i, label in enumerate(("dL/dmu", "dL/dsigma")):
        if abs(mean[i] - exact[i]) > 5 * stderr[i]:
            raise CheckFailed(f"{name}: the average of 4000 estimates of {label} is {mean[i]:.3f}, but the exact "
                              f"gradient is {exact[i]:.3f} (standard error {stderr[i]:.3f}); check the score "
                              "d/dphi log N(z; mu, sigma^2), phi = (mu, sigma)")


def check_log_mean_exp(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Check ``fn(a, dim)`` = log(mean(exp(a))) along ``dim``, stable for very negative and very large a.

    Cases: small values against the direct formula; log-likelihood-sized values (around -1000 nats,
    where exp underflows to 0 and a naive version returns -inf); large positive values (exp
    overflows); a reduction over dim 0 of a (S, B) tensor. Raises CheckFailed.
    """
    import math

    name = "your log_mean_exp"
    f64 = lambda values: torch.tensor(values, dtype=torch.float64)
    cases = [
        ("a = (0, log 3) along dim -1: log((1 + 3) / 2) = log 2", f64([0.0, math.log(3.0)]), -1, f64(math.log(2.0))),
        ("a = (-1000, -1001, -1002): exp underflows, the answer does not", f64([-1000.0, -1001.0, -1002.0]), -1,
         f64(-1000.0 + math.log((1 + math.exp(-1) + math.exp(-2)) / 3))),
        ("a = (800, 800): exp overflows, the answer is 800", f64([800.0, 800.0]), -1, f64(800.0)),
        ("a of shape (3, 2) reduced over dim 0", f64([[0.0, -500.0], [0.0, -500.0], [0.0, -500.0]]), 0, f64([0.0, -500.0])),
    ]
    for case, a, dim, expected in cases:
        _compare(name, case, _call(fn, name, a, dim), expected, 1e-12, 1e-12)


def _call_pair(fn: Callable, name: str, *args) -> tuple[Tensor, Tensor]:
    out = _invoke(fn, name, *args)
    if not (isinstance(out, tuple) and len(out) == 2 and all(torch.is_tensor(t) for t in out)):
        raise CheckFailed(f"{name} should return a pair of tensors, got {type(out).__name__}")
    return out


def check_pca(fn: Callable[[Tensor, int], tuple[Tensor, Tensor]], data: Tensor | None = None) -> None:
    """Check ``fn(x, k) -> (mean, components)``: PCA of the rows of x (N, D), components of shape (k, D).

    The mean must be the column mean; the components must be orthonormal rows spanning the same
    subspace as the top-k right singular vectors of the centred data (largest principal angle below
    1e-4 radians, by ``scipy.linalg.subspace_angles``), in decreasing order of variance. Checked on a
    random matrix with a known spectrum, and on ``data`` (rows flattened, float64) if given.
    Raises CheckFailed.
    """
    from scipy.linalg import subspace_angles

    name = "your pca"
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    scales = torch.tensor([10.0, 7, 5, 3, 2] + [0.5] * 15, dtype=torch.float64)
    synthetic = (torch.randn(500, 20, generator=g, dtype=torch.float64) * scales) @ basis.T + 3.0
    cases = [("a 500 x 20 matrix with five dominant directions", synthetic, 3)]
    if data is not None:
        cases.append(("the data given", data.double().flatten(1), 5))
    for label, x, k in cases:
        mean, components = _call_pair(fn, name, x, k)
        _compare(name, f"{label}: the mean", mean.double().reshape(-1), x.mean(0), 1e-9, 1e-9)
        if tuple(components.shape) != (k, x.shape[1]):
            raise CheckFailed(f"{name} on {label}: components have shape {tuple(components.shape)}, expected ({k}, {x.shape[1]})")
        c = components.double()
        identity = torch.eye(k, dtype=torch.float64)
        if not torch.allclose(c @ c.T, identity, atol=1e-6):
            raise CheckFailed(f"{name} on {label}: the components are not orthonormal rows "
                              f"(C C^T differs from I by {(c @ c.T - identity).abs().max():.2e})")
        centred = x - x.mean(0)
        reference = torch.linalg.svd(centred, full_matrices=False).Vh[:k]
        angle = subspace_angles(c.T.numpy(), reference.T.numpy()).max()
        if angle > 1e-4:
            raise CheckFailed(f"{name} on {label}: the components span a different subspace from the top-{k} principal "
                              f"directions (largest principal angle {angle:.3g} rad); is the data centred first?")
        variances = (centred @ c.T).var(0)
        if not (variances[:-1] >= variances[1:] - 1e-9).all():
            raise CheckFailed(f"{name} on {label}: components are not sorted by decreasing variance ({variances.tolist()})")


def check_gaussian_kl(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(mu, logvar)`` = KL(N(mu, diag(exp(logvar))) || N(0, I)) in nats, summed over the last dim.

    Cases: the prior itself (KL 0), a single dimension with a known value, a random batch (B, Z) in
    float64, and a float32 batch. Raises CheckFailed with an explanation.
    """
    name = "your gaussian_kl"
    zero = _call(fn, name, torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64))
    _compare(name, "mu = 0, logvar = 0 (q equals the prior, so the KL must be 0)", zero, torch.zeros(3, dtype=torch.float64), 0, 1e-12)
    one = _call(fn, name, torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[0.0]], dtype=torch.float64))
    _compare(name, "mu = 1, logvar = 0 (expected 1/2: only the mu^2/2 term is left)", one, torch.tensor([0.5], dtype=torch.float64), 1e-9)
    g = torch.Generator().manual_seed(0)
    for dtype, rtol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        mu, logvar = torch.randn(8, 5, generator=g).to(dtype), torch.randn(8, 5, generator=g).to(dtype)
        got = _call(fn, name, mu, logvar)
        _compare(name, f"a random batch of shape (8, 5) in {dtype}", got, gaussian_kl(mu.double(), logvar.double()).to(dtype), rtol, 1e-6)


def check_kl_full_covariance(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], k_values=(1, 3), batch: int = 6,
                             seed: int = 0) -> None:
    """Check ``fn(mu_1, cov_1, mu_2, cov_2)`` = KL(N(mu_1, cov_1) || N(mu_2, cov_2)) per example, shape (B,).

    Compared with ``torch.distributions.kl_divergence`` of two ``MultivariateNormal`` on random
    positive-definite covariances of each size in ``k_values`` (float64). Raises CheckFailed.
    """
    name = "your kl_full_covariance"
    g = torch.Generator().manual_seed(seed)

    def gaussians(k):
        a = torch.randn(batch, k, k, generator=g, dtype=torch.float64)
        return torch.randn(batch, k, generator=g, dtype=torch.float64), a @ a.mT + 0.5 * torch.eye(k, dtype=torch.float64)

    for k in k_values:
        (m1, c1), (m2, c2) = gaussians(k), gaussians(k)
        expected = kl_divergence(MultivariateNormal(m1, c1), MultivariateNormal(m2, c2))
        got = _call(fn, name, m1, c1, m2, c2)
        _compare(name, f"{batch} random pairs of {k}-dimensional Gaussians", got, expected, 1e-8)
    same = _call(fn, name, m1, c1, m1, c1)
    _compare(name, "identical Gaussians (the KL must be 0)", same, torch.zeros(batch, dtype=torch.float64), 0, 1e-9)


def check_elbo_estimator(fn: Callable, model, x: Tensor, seeds: int = 20) -> None:
    """Check ``fn(model, x, k)``: the ELBO per image, estimated with ``k`` samples of z, shape (B,).

    An unbiased k-sample estimate has the same expectation for every k and a variance that falls
    like 1/k. The variance over seeds of ``fn(model, x, 16)`` must be at most a quarter of that of
    ``fn(model, x, 1)``, and the batch mean of ``fn(model, x, 64)`` must agree within 0.5 nats with
    ``model.elbo_terms`` averaged over ``4 * seeds`` draws. Raises CheckFailed.
    """
    name = "your elbo estimator"
    with torch.no_grad():
        out = _call(fn, name, model, x, 1)
        if tuple(out.shape) != (len(x),):
            raise CheckFailed(f"{name}: returned shape {tuple(out.shape)} for a batch of {len(x)} images, expected ({len(x)},)")
        torch.manual_seed(0)
        reference = torch.stack([model.elbo_terms(x)["elbo"] for _ in range(4 * seeds)]).mean(0)
        draws = {}
        for k in (1, 16):
            values = []
            for s in range(seeds):
                torch.manual_seed(1000 + s)
                values.append(_call(fn, name, model, x, k))
            draws[k] = torch.stack(values)  # (seeds, B)
        torch.manual_seed(1)
        many = _call(fn, name, model, x, 64)
    var_1, var_16 = draws[1].var(0).mean().item(), draws[16].var(0).mean().item()
    if var_1 == 0:
        raise CheckFailed(f"{name} with k = 1 gives the same value for every seed: is z sampled (reparameterize)?")
    if var_16 > 2 * var_1:
        raise CheckFailed(f"{name}: variance over seeds grows from {var_1:.3g} with k = 1 to {var_16:.3g} with k = 16; "
                          "are the k log-likelihoods summed instead of averaged?")
    if var_16 > var_1 / 4:
        raise CheckFailed(f"{name}: variance over seeds is {var_1:.3g} with k = 1 and {var_16:.3g} with k = 16; "
                          "averaging 16 independent samples should divide it by about 16. Are the k samples independent?")
    gap = (many.mean() - reference.mean()).item()
    if abs(gap) > 0.5:
        raise CheckFailed(f"{name} with k = 64: batch-mean ELBO {many.mean():.2f} nats, but the ELBO is "
                          f"{reference.mean():.2f} (gap {gap:+.2f}); is the KL subtracted once per image, and are "
                          "the k log-likelihoods averaged (not summed)?")


def _negative_elbo_reference(model, x: Tensor, eps: Tensor) -> Tensor:
    """The batch mean of -ELBO for given noise, from torch.distributions (not the companion's own code)."""
    from torch.distributions import Bernoulli, Normal

    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    z = mu + std * eps
    logits = model.decode(z)[:, 0]
    reconstruction = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(Normal(mu, std), Normal(torch.zeros_like(mu), torch.ones_like(std))).sum(1)
    return -(reconstruction - kl).mean()


def check_negative_elbo(fn: Callable, model, x: Tensor) -> None:
    """Check ``fn(model, x, eps)``: the VAE's training loss, the batch mean of -ELBO, as a scalar tensor.

    ``model`` is a VAE with a Bernoulli decoder, ``x`` a batch of binary images (B, 1, 28, 28) and
    ``eps`` the standard normal noise (B, Z) of the reparameterization z = mu + exp(logvar / 2) * eps.
    With the noise given, the loss is a deterministic function, compared (relative tolerance 1e-5)
    with a reference built from ``torch.distributions`` (Bernoulli log-probabilities summed over the
    pixels, the Gaussian KL from ``kl_divergence``) on three noise draws. The usual mistakes are named:
    a missing KL, pixels averaged instead of summed, the standard deviation taken as exp(logvar),
    the sign, the batch summed instead of averaged. Gradients must reach the encoder and the decoder.
    Raises CheckFailed.
    """
    name = "your negative_elbo"
    mu, _ = model.encode(x)
    for seed in range(3):
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed)).to(mu)
        with torch.no_grad():
            got = _call(fn, name, model, x, eps)
            expected = _negative_elbo_reference(model, x, eps)
        if got.numel() != 1:
            raise CheckFailed(f"{name} returned shape {tuple(got.shape)}; the loss is one number, the batch mean "
                              "of -ELBO (use .mean() over the images)")
        got = got.reshape(())
        if torch.isclose(got.double(), expected.double(), rtol=1e-5, atol=1e-4):
            continue
        value = got.item()
        with torch.no_grad():
            m, logvar = model.encode(x)
            z = m + torch.exp(0.5 * logvar) * eps
            recon = torch.distributions.Bernoulli(logits=model.decode(z)[:, 0]).log_prob(x).flatten(1).sum(1)
            kl = (expected + recon.mean()).item()
        hints = [
            (-recon.mean().item(), "the KL term is missing"),
            (-expected.item(), "the sign is flipped: the loss is -ELBO"),
            (expected.item() * len(x), "the batch is summed; average the per-image values"),
            (-(recon / x[0].numel()).mean().item() + kl, "the pixels are averaged; the log-likelihood of an image "
                                                          "is the sum over its pixels"),
        ]
        hint = next((text for target, text in hints if math.isclose(value, target, rel_tol=1e-6, abs_tol=1e-4)),
                    "is z = mu + exp(logvar / 2) * eps, the reconstruction summed over pixels, and the KL of "
                    "N(mu, exp(logvar)) from N(0, I) summed over latent dimensions?")
        raise CheckFailed(f"{name} on noise draw {seed}: {value:.4f}, expected {expected.item():.4f}; {hint}")
    model.zero_grad(set_to_none=True)
    loss = _call(fn, name, model, x, torch.randn(mu.shape, generator=torch.Generator().manual_seed(9)).to(mu))
    if not loss.requires_grad:
        raise CheckFailed(f"{name}: the loss carries no gradient (was it computed under torch.no_grad or with .item()?)")
    loss.backward()
    for part in ("encoder", "decoder"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        if any(g is None for g in grads) or all(g.abs().sum() == 0 for g in grads):
            raise CheckFailed(f"{name}: no gradient reaches the {part}; z must be computed from mu and logvar")
    model.zero_grad(set_to_none=True)


def check_importance_weights(fn: Callable, model, x: Tensor, seeds: int = 20) -> None:
    """Check ``fn(model, x, k)``: log importance weights log p(x|z_i) + log p(z_i) - log q(z_i|x), shape (B, k).

    Cases: on ``evaluation.linear_gaussian_vae()`` with the encoder set to the true posterior every
    weight equals log p(x) exactly (a wrong sign or a missing term breaks this); on ``model`` and
    ``x`` the weights vary between samples, and their mean over samples and seeds is the ELBO
    (``model.elbo_terms``) within 0.5 nats. Raises CheckFailed.
    """
    from .evaluation import linear_gaussian_vae

    name = "your log_importance_weights"
    exact, x_exact, log_px = linear_gaussian_vae(exact_posterior=True)
    with torch.no_grad():
        w = _call(fn, name, exact, x_exact, 5)
        _compare(name, "the linear-Gaussian model whose encoder is the exact posterior (every weight is log p(x))",
                 w, log_px[:, None].expand(2, 5), rtol=1e-6, atol=1e-6)
        torch.manual_seed(0)
        w = _call(fn, name, model, x, 50)
        if tuple(w.shape) != (len(x), 50):
            raise CheckFailed(f"{name}: returned shape {tuple(w.shape)} for {len(x)} images and k = 50, expected ({len(x)}, 50)")
        if (w.std(1) == 0).all():
            raise CheckFailed(f"{name}: all k weights of an image are equal on a trained model; is a new z drawn for each sample?")
        torch.manual_seed(1)
        reference = torch.stack([model.elbo_terms(x)["elbo"] for _ in range(4 * seeds)]).mean()
        mean = torch.stack([_call(fn, name, model, x, 50).mean() for _ in range(seeds // 4 or 1)]).mean()
    if abs(mean - reference) > 0.5:
        raise CheckFailed(f"{name}: the mean log weight is {mean:.2f} nats but E_q[log w] is the ELBO, {reference:.2f}; "
                          "check log q(z|x) (the density of the sample you drew) and the prior term")


def check_equivalent_sigma(fn: Callable[[float, int], float]) -> None:
    """Check ``fn(kld_weight, num_pixels)``: the sigma for which PyTorch-VAE's loss is the negative ELBO.

    That loss is mean((x - x_hat)^2) + kld_weight * KL per image. With the returned sigma, the
    gradient of the Gaussian negative ELBO, sum((x - x_hat)^2) / (2 sigma^2) + KL, must be the
    loss's gradient times one positive constant, for random reconstructions and posteriors, several
    weights and image sizes. Raises CheckFailed.
    """
    import math

    name = "your equivalent_sigma"
    generator = torch.Generator().manual_seed(0)
    for weight, pixels in [(0.00025, 64 * 64 * 3), (128 / 60000, 784), (1.0, 784), (0.01, 10)]:
        sigma = _invoke(fn, name, weight, pixels)
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            raise CheckFailed(f"{name}({weight}, {pixels}) returned {sigma!r}, expected a number") from None
        if not (math.isfinite(sigma) and sigma > 0):
            raise CheckFailed(f"{name}({weight}, {pixels}) returned {sigma}, expected a positive number")
        x = torch.rand(pixels, generator=generator, dtype=torch.float64)
        params = torch.randn(pixels + 4, generator=generator, dtype=torch.float64).requires_grad_()
        x_hat, mu, logvar = params[:pixels], params[pixels:pixels + 2], params[pixels + 2:]
        kl = gaussian_kl(mu[None], logvar[None])[0]
        popular = (x - x_hat).square().mean() + weight * kl
        elbo_loss = (x - x_hat).square().sum() / (2 * sigma**2) + kl
        g_pop = torch.autograd.grad(popular, params, retain_graph=True)[0]
        g_elbo = torch.autograd.grad(elbo_loss, params)[0]
        ratio = g_elbo / g_pop
        if not torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-6):
            raise CheckFailed(f"{name}({weight}, {pixels}) = {sigma:.6g}: the negative ELBO with this sigma weighs the KL "
                              f"{(ratio[-4:].mean() / ratio[:pixels].mean()).item():.4g} times as much, relative to the squared "
                              "error, as the popular loss does; match the ratio of the two weights")


def _as_tensor(value, name: str, shape: tuple[int, ...]) -> Tensor:
    if not torch.is_tensor(value):
        raise CheckFailed(f"{name} returned {type(value).__name__}, expected a tensor of shape {shape}")
    if tuple(value.shape) != shape:
        raise CheckFailed(f"{name} returned shape {tuple(value.shape)}, expected {shape}")
    return value


def check_cb_log_normalizer(fn: Callable[[Tensor], Tensor]) -> None:
    """Check ``fn(logits)``: log C of the continuous Bernoulli, elementwise, finite everywhere.

    Compared in float64 with ``companion.likelihoods.continuous_bernoulli_log_normalizer`` (tested
    against sympy) to 1e-8 at logits from -50 to 50, including 0 and |l| < 1e-4 (where the closed
    form loses its digits); in float32 the result must be finite and within 1e-4 for logits up to
    +-1e4. Raises CheckFailed. See: chapter "Bernoulli on grey pixels, and the continuous Bernoulli".
    """
    from .likelihoods import continuous_bernoulli_log_normalizer as reference

    name = "your log_normalizer"
    logits = torch.tensor([-50.0, -9.21, -2.0, -0.3, -1e-4, -1e-7, 0.0, 1e-7, 1e-4, 0.3, 2.0, 9.21, 50.0], dtype=torch.float64)
    got = _as_tensor(_invoke(fn, name, logits), name, tuple(logits.shape))
    bad = ~torch.isclose(got.double(), reference(logits), rtol=1e-8, atol=1e-8)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise CheckFailed(f"{name} at logit {logits[i].item():g} (float64) gave {got[i].item():.10g}, expected "
                          f"{reference(logits)[i].item():.10g}" + (" (hint: theta = 1/2 is the uniform density, C = 2)"
                                                                   if abs(logits[i].item()) < 1e-3 else ""))
    big = torch.tensor([-1e4, -100.0, -1e-3, 0.0, 1e-3, 100.0, 1e4])
    got = _as_tensor(_invoke(fn, name, big), name, tuple(big.shape))
    if not torch.isfinite(got).all():
        raise CheckFailed(f"{name} is not finite in float32 for logits {big[~torch.isfinite(got)].tolist()}")
    if not torch.allclose(got.double(), reference(big.double()), rtol=1e-4, atol=1e-4):
        raise CheckFailed(f"{name} in float32 gave {got.tolist()}, expected {reference(big.double()).tolist()}")


def check_frechet_distance(fn: Callable) -> None:
    """Check ``fn(mu1, cov1, mu2, cov2)`` (numpy arrays): the squared Frechet distance of two Gaussians.

    Compared with ``companion.frechet.frechet_distance`` on random Gaussians of dimensions 1 to 8,
    on identical ones (0) and on the 1-D case (m1 - m2)^2 + (s1 - s2)^2. Raises CheckFailed.
    See: chapter "Is the continuous Bernoulli better?".
    """
    import numpy as np

    from .frechet import frechet_distance

    name = "your frechet"
    rng = np.random.default_rng(0)
    cases = []
    for dim in (1, 3, 8):
        a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
        cases.append((rng.normal(size=dim), a @ a.T + 0.1 * np.eye(dim), rng.normal(size=dim), b @ b.T + 0.1 * np.eye(dim)))
    cases.append((cases[2][0], cases[2][1], cases[2][0], cases[2][1]))
    cases.append((np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])))
    for mu1, cov1, mu2, cov2 in cases:
        got = _invoke(fn, name, mu1, cov1, mu2, cov2)
        expected = frechet_distance(mu1, cov1, mu2, cov2)
        try:
            got = float(np.real(got))
        except (TypeError, ValueError):
            raise CheckFailed(f"{name} returned {got!r}, expected a number") from None
        if not abs(got - expected) <= 1e-6 * max(1.0, abs(expected)):
            raise CheckFailed(f"{name} for {len(mu1)}-dimensional Gaussians gave {got:.8g}, expected {expected:.8g}"
                              + (" (identical Gaussians must give 0)" if expected == 0 else ""))


def check_beta_log_prob(fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(y, mean, concentration)``: log Beta(y; mean * kappa, (1 - mean) * kappa) elementwise, nats.

    Compared in float64 with ``torch.distributions.Beta`` on random values, means and
    concentrations from 0.5 to 1000, including points within 1e-3 of 0 and 1. Raises CheckFailed.
    See: chapter "The Beta likelihood".
    """
    name = "your beta_log_prob"
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.rand(20, generator=g, dtype=torch.float64), torch.tensor([1e-3, 1 - 1e-3], dtype=torch.float64)])
    mean = 0.02 + 0.96 * torch.rand(22, generator=g, dtype=torch.float64)
    kappa = torch.exp(torch.empty(22, dtype=torch.float64).uniform_(math.log(0.5), math.log(1000), generator=g))
    got = _as_tensor(_invoke(fn, name, y, mean, kappa), name, (22,))
    expected = torch.distributions.Beta(mean * kappa, (1 - mean) * kappa).log_prob(y)
    bad = ~torch.isclose(got.double(), expected, rtol=1e-8, atol=1e-8)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise CheckFailed(f"{name}(y={y[i].item():.4g}, mean={mean[i].item():.4g}, concentration={kappa[i].item():.4g}) "
                          f"gave {got[i].item():.8g}, expected {expected[i].item():.8g} (is the log Beta function "
                          "lgamma(a) + lgamma(b) - lgamma(a + b)?)")


def check_sigma_vae_log_likelihood(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(x, mu)``: log N(x; mu, sigma*^2 I) per image with sigma*^2 = ||x - mu||^2 / D, shape (B,).

    Compared with ``companion.likelihoods.GaussianOptimalImageSigma`` (tested against the sympy
    derivation) on images of two sizes, and checked to be at least the log-likelihood of every fixed
    sigma. Raises CheckFailed. See: chapter "The Gaussian decoder's sigma".
    """
    from .likelihoods import Gaussian, GaussianOptimalImageSigma

    name = "your sigma_vae_log_likelihood"
    g = torch.Generator().manual_seed(0)
    for shape in ((5, 1, 28, 28), (3, 1, 4, 4)):
        x = torch.rand(*shape, generator=g, dtype=torch.float64)
        mu = x + 0.1 * torch.randn(*shape, generator=g, dtype=torch.float64)
        got = _as_tensor(_invoke(fn, name, x, mu), name, (shape[0],))
        expected = GaussianOptimalImageSigma(min_sigma=1e-12).log_prob(x, mu[:, None])
        if not torch.allclose(got.double(), expected, rtol=1e-8, atol=1e-6):
            raise CheckFailed(f"{name} on images of shape {shape[1:]} gave {got.tolist()[:3]}..., expected "
                              f"{expected.tolist()[:3]}... (all constants included: -(D/2)(log(2 pi sigma*^2) + 1))")
        for sigma in (0.05, 0.1, 0.5):
            if (got.double() < Gaussian(sigma).log_prob(x, mu[:, None]) - 1e-6).any():
                raise CheckFailed(f"{name} is below the log-likelihood with the fixed sigma {sigma}; the optimum cannot be")


def check_active_units(fn: Callable[[Tensor], int]) -> None:
    """Check ``fn(posterior_means)``: the number of active latent dimensions, Cov_x(E_q[z_u | x]) > 0.01.

    ``posterior_means`` has shape (N, Z). Compared with the definition of Burda et al. (2016) on
    means with chosen variances (some just above and below the threshold). Raises CheckFailed.
    See: chapter "beta-VAE, blur and posterior collapse".
    """
    name = "your active_units"
    g = torch.Generator().manual_seed(0)
    for spreads in ([1.0, 0.5, 0.0, 0.02, 0.005, 3.0], [0.0] * 4, [0.2] * 7):
        base = torch.randn(5000, len(spreads), generator=g, dtype=torch.float64)
        base = (base - base.mean(0)) / base.std(0)                        # unit sample variance per column
        means = base * torch.tensor(spreads, dtype=torch.float64).sqrt() + 3.0
        expected = int((means.var(0) > 0.01).sum())
        got = _invoke(fn, name, means)
        try:
            got = int(got)
        except (TypeError, ValueError):
            raise CheckFailed(f"{name} returned {got!r}, expected a whole number") from None
        if got != expected:
            raise CheckFailed(f"{name} counted {got} active units for per-dimension variances {spreads}, expected "
                              f"{expected} (active: the variance over images of the posterior mean exceeds 0.01)")


def check_gan_value(fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """Check ``fn(real_logits, fake_logits)``: the minimax value V(D, G) of one batch, in nats.

    V = mean over real images of log D(x) + mean over generated images of log(1 - D(G(z))), with
    D = sigmoid(logit). Compared with minus the discriminator's binary cross-entropy on moderate
    logits and on confident ones (|logit| up to 80), where sigmoid(80) rounds to 1 in float32 and a
    computation through probabilities gives -inf. Raises CheckFailed. See: chapter "GANs".
    """
    import torch.nn.functional as F

    name = "your gan_value"
    g = torch.Generator().manual_seed(0)
    cases = {"moderate logits": (torch.randn(64, generator=g), torch.randn(48, generator=g)),
             "confident logits": (torch.tensor([80.0, 30.0, -20.0, 5.0]), torch.tensor([-80.0, -30.0, 20.0]))}
    for case, (real, fake) in cases.items():
        got = _call(fn, name, real.clone(), fake.clone())
        expected = -(F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                     + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        _compare(name, case, got.reshape(()), expected, rtol=1e-5, atol=1e-6)


def check_coupling_forward(fn: Callable) -> None:
    """Check ``fn(x, mask, scale_shift) -> (y, log_det)``: one affine coupling layer.

    y = mask * x + (1 - mask) * (x * exp(s) + t) with (s, t) = scale_shift(mask * x), and
    log_det = the sum of (1 - mask) * s over all but the batch dimension, shape (B,). Checked with
    checkerboard and channel masks, against log |det| of the autograd Jacobian. Raises CheckFailed.
    See: chapter "Normalizing flows"; Dinh et al. (2017), equations (4) to (6).
    """
    from .models.flow import channel_mask, checkerboard_mask

    name = "your coupling_forward"
    g = torch.Generator().manual_seed(0)
    w_s, w_t = (torch.randn(32, 32, generator=g, dtype=torch.float64) * 0.3 for _ in range(2))

    def scale_shift(masked):                    # any function of the masked input will do
        flat = masked.flatten(1)
        return 0.5 * torch.tanh(flat @ w_s).view_as(masked), torch.sin(flat @ w_t).view_as(masked)

    for case, mask in (("a checkerboard mask", checkerboard_mask((2, 4, 4))), ("a channel mask", channel_mask((2, 4, 4)))):
        mask = mask.double()
        x = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
        out = _invoke(fn, name, x.clone(), mask, scale_shift)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise CheckFailed(f"{name} must return a pair (y, log_det), got {type(out).__name__}")
        y, log_det = out
        s, t = scale_shift(mask * x)
        _compare(name + " (y)", case, y, mask * x + (1 - mask) * (x * torch.exp(s) + t), rtol=1e-10, atol=1e-12)
        jac = torch.autograd.functional.jacobian(lambda v: (mask * v + (1 - mask) * (v * torch.exp(scale_shift(mask * v)[0])
                                                            + scale_shift(mask * v)[1])).flatten(), x[:1])
        expected0 = torch.linalg.slogdet(jac.reshape(32, 32))[1]
        _compare(name + " (log_det)", case, log_det, ((1 - mask) * s).flatten(1).sum(1), rtol=1e-10, atol=1e-12)
        if abs(log_det[0].item() - expected0.item()) > 1e-8:
            raise CheckFailed(f"{name}: log_det {log_det[0].item():.6g} is not log |det| of the Jacobian, {expected0.item():.6g}")


def check_bits_per_dim(fn: Callable[[Tensor, int], Tensor]) -> None:
    """Check ``fn(log_density, num_dims)``: bits/dim on the 0..255 scale from log p(y) of y in [0, 1]^D.

    ``log_density`` (B,) is in nats, for dequantized images y = (k + u) / 256; the answer is
    -(log_density - D log 256) / (D log 2), shape (B,). Raises CheckFailed.
    See: chapters "Normalizing flows" and "Head to head".
    """
    name = "your bits_per_dim"
    for dims, values in ((784, [1500.0, 3000.0, -100.0]), (3072, [5000.0, 0.0])):
        log_density = torch.tensor(values, dtype=torch.float64)
        got = _call(fn, name, log_density.clone(), dims)
        expected = -(log_density - dims * math.log(256)) / (dims * math.log(2))
        if got.shape == expected.shape and torch.allclose(got.double() + 8, expected, rtol=1e-9):
            raise CheckFailed(f"{name} is off by 8 bits/dim: the density of y in [0, 1]^D must be turned into a density "
                              "of k + u in [0, 256)^D, which divides it by 256 per dimension")
        _compare(name, f"D = {dims}", got, expected, rtol=1e-9)
