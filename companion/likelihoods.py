"""Decoder likelihoods p(x | z) with one interface: log-probability, mean and sample.

A decoder outputs a tensor ``params`` of shape (B, P, *event_shape), where P = ``num_params`` is
how many numbers the likelihood needs per pixel (1 for a Bernoulli's logit, 2 for a Gaussian whose
decoder also predicts sigma, ...). The likelihood turns ``params`` into

- ``log_prob(x, params)``: log p(x | z) in nats, summed over every dimension but the batch, shape (B,);
- ``mean(params)``: E[x | z], shape (B, *event_shape) (what "the reconstruction" should mean);
- ``sample(params)``: a draw x ~ p(x | z), same shape.

Adding a likelihood means writing a subclass and registering it in ``LIKELIHOODS``; the VAE and the
trainer do not change. The chapters of Part III add the continuous Bernoulli, Beta, Laplace and the
learned and optimal sigma family this way.

See: chapter "From likelihoods to losses"; chapter "Training a VAE".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Likelihood", "Bernoulli", "ContinuousBernoulli", "Gaussian", "Laplace", "LIKELIHOODS", "make_likelihood",
           "continuous_bernoulli_log_normalizer", "continuous_bernoulli_mean"]


def _positive(name: str, value: float) -> float:
    """``value`` as a float; ValueError unless it is a positive finite number."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return float(value)


class Likelihood(nn.Module):
    """Base class: subclasses set ``num_params`` and implement ``_log_prob``, ``mean`` and ``sample``.

    It is an ``nn.Module`` so that a likelihood may own trainable parameters (a learned sigma).
    """

    num_params: int = 1

    def check(self, x: Tensor, params: Tensor) -> None:
        """Raise ValueError unless ``params`` has shape (B, num_params, *x.shape[1:])."""
        expected = (x.shape[0], self.num_params, *x.shape[1:])
        if tuple(params.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: decoder output has shape {tuple(params.shape)}, "
                f"expected {expected} for data of shape {tuple(x.shape)}"
            )

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | params) in nats, summed over all dimensions but the first; shape (B,).

        Raises:
            ValueError: if ``params`` does not have shape (B, num_params, *x.shape[1:]).
        """
        self.check(x, params)
        return self._log_prob(x, params).flatten(1).sum(1)

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:  # per pixel
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_params={self.num_params}"


class Bernoulli(Likelihood):
    """Bernoulli pixels from logits: log p(x) = x * l - softplus(l), the negative binary cross-entropy.

    Computed with ``binary_cross_entropy_with_logits``, which never forms sigmoid(l) and so stays
    finite for any logit (a sigmoid followed by log(.) underflows for logits beyond about +-17 in
    float32). It is a proper likelihood for binary x; for grey-level x in (0, 1) it is not a density
    (chapter "Bernoulli on grey pixels").

    See: Kingma & Welling (2014), appendix C.1.
    """

    num_params = 1

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none")

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[:, 0])

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(self.mean(params))


class Gaussian(Likelihood):
    """Gaussian pixels with a fixed standard deviation ``sigma``; the decoder outputs the mean.

    log p(x) = -(x - mu)^2 / (2 sigma^2) - log sigma - log(2 pi)/2 per pixel: the squared error
    weighted by 1/(2 sigma^2) plus a constant. A fixed sigma is a beta-VAE in disguise (chapter
    "The Gaussian decoder's sigma").

    Arguments:
        sigma: standard deviation in data units (pixels in [0, 1]); must be positive.
    Raises:
        ValueError: if sigma <= 0 or is not finite.
    See: Kingma & Welling (2014), appendix C.2; chapter "From likelihoods to losses".
    """

    num_params = 1

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        self.sigma = _positive("sigma", sigma)

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        mu = params[:, 0]
        return -0.5 * (x - mu).square() / self.sigma**2 - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0]

    def sample(self, params: Tensor) -> Tensor:
        mu = params[:, 0]
        return mu + self.sigma * torch.randn_like(mu)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class Laplace(Likelihood):
    """Laplace pixels with a fixed scale ``b``; the decoder outputs the location.

    log p(x) = -|x - mu| / b - log(2 b) per pixel: the L1 error weighted by 1/b plus a constant. Its
    maximum-likelihood location is the median, which makes it less sensitive to outliers than the
    Gaussian (chapter "From likelihoods to losses").

    Arguments:
        scale: b > 0, in data units.
    Raises:
        ValueError: if the scale is not a positive number.
    """

    num_params = 1

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = _positive("scale", scale)

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return -(x - params[:, 0]).abs() / self.scale - math.log(2 * self.scale)

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0]

    def sample(self, params: Tensor) -> Tensor:
        return torch.distributions.Laplace(params[:, 0], self.scale).sample()

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


#: Below this |logit| the continuous Bernoulli's normaliser and mean use their Taylor series: the
#: closed forms subtract two numbers near 1/l and lose every digit as l -> 0 (at |l| = 0.05 the series'
#: first omitted terms are below 1e-11; the series themselves are checked against sympy in the tests).
_CB_SERIES = 0.05


def continuous_bernoulli_log_normalizer(logits: Tensor) -> Tensor:
    """log C(theta) of the continuous Bernoulli, computed from the logit l = log(theta / (1 - theta)).

    C(theta) = 2 artanh(1 - 2 theta) / (1 - 2 theta) (Loaiza-Ganem & Cunningham, 2019) becomes
    l / tanh(l / 2) in terms of the logit: even in l, equal to 2 at l = 0 (theta = 1/2, the uniform
    density) and growing like |l| for large |l|. Near 0 the series log 2 + l^2/12 - 7 l^4/1440 is used;
    elsewhere log|l| - log|tanh(l/2)|, with log|tanh(l/2)| = log(-expm1(-|l|)) - log1p(exp(-|l|)),
    which is finite for every logit in float32 and float64.

    Arguments:
        logits: any shape. Returns: the same shape, in nats.
    See: chapter "Bernoulli on grey pixels, and the continuous Bernoulli".
    """
    a = logits.abs()
    safe = torch.where(a < _CB_SERIES, torch.ones_like(a), a)
    closed = torch.log(safe) - torch.log(-torch.expm1(-safe)) + torch.log1p(torch.exp(-safe))
    series = math.log(2) + a.square() / 12 - 7 * a.pow(4) / 1440   # next term 31 l^6 / 90720 < 1e-12
    return torch.where(a < _CB_SERIES, series, closed)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """E[x] of the continuous Bernoulli from its logit: 1 / (1 - exp(-l)) - 1 / l, series 1/2 + l/12 - l^3/720 near 0.

    The mean is not theta: at theta = 0.9999 (l = 9.21) it is 0.8915, and it approaches 1 only like
    1 - 1/l. Computed as -1/expm1(-l) - 1/l, finite for every logit. Same shape as ``logits``.
    See: chapter "Bernoulli on grey pixels, and the continuous Bernoulli".
    """
    small = logits.abs() < _CB_SERIES
    safe = torch.where(small, torch.ones_like(logits), logits)
    closed = -1 / torch.expm1(-safe) - 1 / safe
    series = 0.5 + logits / 12 - logits.pow(3) / 720                # next term l^5 / 30240 < 1e-11
    return torch.where(small, series, closed)


class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli on [0, 1] from logits: the Bernoulli's form, normalised to a density.

    log p(x | l) = x l - softplus(l) + log C, with the log-normaliser of
    ``continuous_bernoulli_log_normalizer``. ``mean`` is the expected value (not sigmoid(l): the two
    differ, and showing sigmoid(l) as "the reconstruction" overstates the sharpness); ``sample`` draws
    by inverting the CDF, x = log(1 + u (e^l - 1)) / l, computed without overflow.

    See: Loaiza-Ganem & Cunningham (2019); chapter "Bernoulli on grey pixels, and the continuous Bernoulli".
    """

    num_params = 1

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        logits = params[:, 0]
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none") + continuous_bernoulli_log_normalizer(logits)

    def mean(self, params: Tensor) -> Tensor:
        return continuous_bernoulli_mean(params[:, 0])

    def sample(self, params: Tensor) -> Tensor:
        logits = params[:, 0]
        u = torch.rand_like(logits)
        small = logits.abs() < _CB_SERIES
        safe = torch.where(small, torch.ones_like(logits), logits)
        positive = (safe + torch.log(u + (1 - u) * torch.exp(-safe))) / safe      # l > 0: log(u e^l + 1 - u) / l
        negative = torch.log1p(u * torch.expm1(safe)) / safe                      # l < 0: expm1(l) in (-1, 0)
        closed = torch.where(safe > 0, positive, negative)
        return torch.where(small, u, closed).clamp(0, 1)   # near l = 0 the density is nearly uniform


#: Registered likelihoods by name (the ``--likelihood`` choices).
LIKELIHOODS: dict[str, type[Likelihood]] = {"bernoulli": Bernoulli, "continuous-bernoulli": ContinuousBernoulli,
                                             "gaussian": Gaussian, "laplace": Laplace}


def make_likelihood(name: str, **options) -> Likelihood:
    """Build a registered likelihood by name, e.g. ``make_likelihood("gaussian", sigma=0.1)``.

    Raises:
        ValueError: for an unknown name.
        TypeError: for options the likelihood does not take.
    """
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](**options)
