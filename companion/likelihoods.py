"""Decoder likelihoods p(x | z) with one interface: log-probability, mean and sample.

A decoder outputs a tensor ``params`` of shape (B, P, *event_shape), where P = ``num_params`` is
how many numbers the likelihood needs per pixel (1 for a Bernoulli's logit, 2 for a Gaussian whose
decoder also predicts sigma, ...). The likelihood turns ``params`` into

- ``log_prob(x, params)``: log p(x | z) in nats, summed over every dimension but the batch, shape (B,);
- ``mean(params)``: E[x | z], shape (B, *event_shape) (what "the reconstruction" should mean);
- ``sample(params)``: a draw x ~ p(x | z), same shape.

Likelihoods whose support is bounded (the Bernoulli, continuous Bernoulli, Beta and discretized
logistic: x in [0, 1]) refuse data outside it with a ValueError: pixels in 0..255 would otherwise
give finite numbers with no meaning (Bernoulli "log-probabilities" above 0). The check costs one
reduction and one number read back from the device per call; ``set_validation(False)`` turns it off,
and it is skipped inside ``torch.compile`` and CUDA-graph capture, which cannot read values back.

Adding a likelihood means writing a subclass and registering it in ``LIKELIHOODS``; the VAE and the
trainer do not change. Part III of the book adds the continuous Bernoulli, the Beta and the Gaussian
sigma family (fixed, learned global, learned per pixel, predicted, optimal per pixel, optimal per
image) this way; a likelihood may own trainable parameters (a learned sigma), which the optimiser
then trains with the network.

See: chapter "From likelihoods to losses"; chapter "Training a VAE".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Likelihood", "Bernoulli", "ContinuousBernoulli", "Beta", "Gaussian", "GaussianLearnedSigma",
           "GaussianPixelSigma", "GaussianPredictedSigma", "GaussianOptimalPixelSigma", "GaussianOptimalImageSigma",
           "Laplace", "DiscretizedLogistic", "LIKELIHOODS", "make_likelihood", "likelihood_options",
           "check_likelihood_options", "continuous_bernoulli_log_normalizer", "continuous_bernoulli_mean",
           "gaussian_log_density", "set_validation"]


_VALIDATE = True


def set_validation(enabled: bool) -> bool:
    """Turn the support check of ``Likelihood.log_prob`` on or off for every likelihood; returns the
    previous setting (so that ``set_validation(previous)`` restores it)."""
    global _VALIDATE
    previous, _VALIDATE = _VALIDATE, bool(enabled)
    return previous


def can_read_values() -> bool:
    """False while torch.compile traces or a CUDA graph is captured (no value may be read back then).

    Also False while CUDA's sync debug mode is on (``torch.cuda.set_sync_debug_mode``), as in the
    trainer's probe for reads back to the host before a capture. Checks of the data that read a value
    back (``Likelihood.check``, ``companion.models.flow.dequantize``) skip themselves then: the eager
    steps before a capture have checked the first batches (``companion.training._GraphedStep``)."""
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)   # torch >= 2.3
    if is_compiling is not None and is_compiling():
        return False
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return True                    # (get_sync_debug_mode would start CUDA in a CPU or MPS run)
    # The trainer's probe before a capture runs with CUDA's sync debug mode set to "error".
    return not (torch.cuda.is_current_stream_capturing() or torch.cuda.get_sync_debug_mode() != 0)


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
    #: The closed interval that x must lie in, or None for the whole real line.
    support: tuple[float, float] | None = None

    def check(self, x: Tensor, params: Tensor) -> None:
        """Raise ValueError unless ``params`` has shape (B, num_params, *x.shape[1:]) and, for a
        likelihood with a bounded ``support``, every x lies in it (see ``set_validation``)."""
        expected = (x.shape[0], self.num_params, *x.shape[1:])
        if tuple(params.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}: decoder output has shape {tuple(params.shape)}, "
                f"expected {expected} for data of shape {tuple(x.shape)}"
            )
        if self.support is not None and _VALIDATE and x.numel() and can_read_values():
            low, high = self.support
            smallest, largest = torch.stack(torch.aminmax(x.detach())).tolist()   # NaN propagates: refused too
            if not (smallest >= low and largest <= high):
                finite = x[torch.isfinite(x)]
                seen = (f"[{finite.min().item():.4g}, {finite.max().item():.4g}]" if finite.numel()
                        else "no finite value")
                nan = ", and NaN or infinite values" if finite.numel() < x.numel() else ""
                raise ValueError(
                    f"{type(self).__name__}: the data must lie in [{low:g}, {high:g}], got values in {seen}{nan}. "
                    "Images stored as 0..255 must be divided by 255 first (companion.data.to_float does it)")

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | params) in nats, summed over all dimensions but the first; shape (B,).

        Raises:
            ValueError: if ``params`` does not have shape (B, num_params, *x.shape[1:]), or x lies
                outside a bounded ``support`` (``check``).
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
    finite for any logit (with a sigmoid followed by log(.), log(1 - sigmoid(l)) is -inf in float32 for logits above
    about 17, where sigmoid(l) rounds to 1). It is a proper likelihood for binary x; for grey-level x in (0, 1) it is not a density
    (chapter "Bernoulli on grey pixels").

    See: Kingma & Welling (2014), appendix C.1.
    """

    num_params = 1
    support = (0.0, 1.0)

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none")

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params[:, 0])

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(self.mean(params))


def gaussian_log_density(x: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """log N(x; mu, sigma^2) per element, in nats: -(x - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2.

    Takes log sigma rather than sigma so that a learned or predicted sigma is never divided by zero.
    Arguments broadcast against each other. See: chapter "The Gaussian decoder's sigma".
    """
    return -0.5 * (x - mu).square() * torch.exp(-2 * log_sigma) - log_sigma - 0.5 * math.log(2 * math.pi)


class _GaussianFamily(Likelihood):
    """Gaussian pixels whose mean is the decoder's first output; subclasses say where sigma comes from.

    ``log_sigma(x, params)`` returns log sigma, broadcastable to x. ``mean`` is mu; ``sample`` adds
    sigma-scaled noise where sigma does not depend on x (for the optimal-sigma variants, which need x
    to define sigma, ``sample`` returns mu).
    """

    def log_sigma(self, x: Tensor | None, params: Tensor) -> Tensor:
        raise NotImplementedError

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        return gaussian_log_density(x, params[:, 0], self.log_sigma(x, params))

    def mean(self, params: Tensor) -> Tensor:
        return params[:, 0]

    def sample(self, params: Tensor) -> Tensor:
        mu = params[:, 0]
        return mu + torch.exp(self.log_sigma(None, params)) * torch.randn_like(mu)


class Gaussian(_GaussianFamily):
    """Gaussian pixels with a fixed standard deviation ``sigma``; the decoder outputs the mean.

    log p(x) = -(x - mu)^2 / (2 sigma^2) - log sigma - log(2 pi)/2 per pixel: the squared error
    weighted by 1/(2 sigma^2) plus a constant. A fixed sigma is a beta-VAE in disguise, with
    beta = 2 sigma^2 relative to the plain squared error (chapter "The Gaussian decoder's sigma").

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

    def log_sigma(self, x, params):
        return params.new_full((), math.log(self.sigma))     # a fill on the device: no copy from the host

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class GaussianLearnedSigma(_GaussianFamily):
    """One sigma for every pixel of every image, learned with the network (a trainable log sigma).

    The ELBO's gradient in log sigma is zero at sigma^2 = the mean squared error, so training drives
    sigma towards the current reconstruction error; as reconstructions improve, sigma shrinks and
    the effective beta (2 sigma^2) falls with it.

    Arguments:
        sigma: the initial sigma (default 1). min_sigma: a floor (default 1e-3), applied as
            sigma = min_sigma + exp(log_sigma) so that sigma can never reach 0.
    Raises:
        ValueError: for a non-positive sigma or min_sigma.
    See: Rybkin et al. (2021), section 3; chapter "The Gaussian decoder's sigma".
    """

    num_params = 1

    def __init__(self, sigma: float = 1.0, min_sigma: float = 1e-3):
        super().__init__()
        self.min_sigma = _positive("min_sigma", min_sigma)
        self.raw = nn.Parameter(torch.tensor(math.log(max(_positive("sigma", sigma) - min_sigma, 1e-6))))

    def log_sigma(self, x, params):
        return torch.log(self.min_sigma + torch.exp(self.raw.to(params.dtype)))

    @property
    def sigma(self) -> float:
        """The current sigma, a Python float."""
        return float(self.min_sigma + torch.exp(self.raw.detach()))


class GaussianPixelSigma(_GaussianFamily):
    """A learned sigma per pixel, shared by all images (a trainable tensor of shape ``image_shape``).

    On MNIST the border pixels are always 0, so their sigma can fall until the floor: the floor
    bounds log p(x) from above (-log(min_sigma) - log(2 pi)/2 per pixel, 5.99 nats for 1e-3).

    Arguments:
        image_shape: (C, H, W); the VAE passes its own. sigma: initial value. min_sigma: the floor.
    Raises:
        ValueError: for non-positive sigmas.
    See: chapter "The Gaussian decoder's sigma".
    """

    num_params = 1
    needs_image_shape = True

    def __init__(self, image_shape: tuple[int, ...] = (1, 28, 28), sigma: float = 1.0, min_sigma: float = 1e-3):
        super().__init__()
        self.min_sigma = _positive("min_sigma", min_sigma)
        start = math.log(max(_positive("sigma", sigma) - min_sigma, 1e-6))
        self.raw = nn.Parameter(torch.full(tuple(image_shape), start))

    def log_sigma(self, x, params):
        return torch.log(self.min_sigma + torch.exp(self.raw.to(params.dtype)))

    @property
    def sigma(self) -> Tensor:
        """The current sigmas, shape ``image_shape`` (detached)."""
        return self.min_sigma + torch.exp(self.raw.detach())


class _FlooredSigma(_GaussianFamily):
    """A Gaussian whose sigma is never below ``min_sigma`` (ValueError unless it is positive)."""

    num_params = 1

    def __init__(self, min_sigma: float = 1e-3):
        super().__init__()
        self.min_sigma = _positive("min_sigma", min_sigma)


class _OptimalSigma(_FlooredSigma):
    """sigma at its maximum-likelihood value given x and mu (``_optimal_log_sigma``); with no x, as
    when sampling, sigma is 0 and ``sample`` returns mu."""

    def log_sigma(self, x, params):
        if x is None:
            return params.new_full((), -math.inf)
        return self._optimal_log_sigma(x, params[:, 0])

    def _optimal_log_sigma(self, x: Tensor, mu: Tensor) -> Tensor:
        raise NotImplementedError


class GaussianPredictedSigma(_FlooredSigma):
    """The decoder predicts sigma per pixel and per image: params[:, 0] is mu, params[:, 1] a raw scale.

    sigma = min_sigma + softplus(raw), so the decoder can express certainty (small sigma) and
    doubt (large sigma) for each pixel of each image. ``num_params`` is 2.

    Arguments:
        min_sigma: the floor (default 1e-3).
    Raises:
        ValueError: for a non-positive floor.
    See: Rybkin et al. (2021); chapter "The Gaussian decoder's sigma".
    """

    num_params = 2

    def log_sigma(self, x, params):
        return torch.log(self.min_sigma + F.softplus(params[:, 1]))


class GaussianOptimalPixelSigma(_OptimalSigma):
    """sigma set, pixel by pixel, to its maximum-likelihood value |x - mu|, with a floor.

    Substituting sigma_d = |x_d - mu_d| gives log p = -log|x_d - mu_d| - 1/2 - log(2 pi)/2 per
    pixel: a loss that rewards perfect pixels without bound (the floor caps the reward at
    -log(min_sigma)). It is not a likelihood (sigma depends on x) and ``sample`` returns mu.

    Arguments:
        min_sigma: the floor (default 1e-3).
    Raises:
        ValueError: for a non-positive floor.
    See: chapter "The Gaussian decoder's sigma" (the derivation and its instability).
    """

    def _optimal_log_sigma(self, x, mu):
        return torch.log((x - mu).abs().clamp_min(self.min_sigma))


class GaussianOptimalImageSigma(_OptimalSigma):
    """One sigma per image at its maximum-likelihood value, sigma^2 = ||x - mu||^2 / D.

    Substituting gives log p(x) = -(D/2) log(||x - mu||^2 / D) - D/2 - (D/2) log(2 pi): the
    logarithm of each image's summed squared error. This is a per-image variant (the seed post's) of
    the optimal sigma-VAE of Rybkin et al. (2021), who share ONE sigma across all pixels of all images
    of a batch, set at every step to the batch's mean squared error (``gaussian-learned`` is their
    learned-sigma version).
    sigma is floored at ``min_sigma``. Not a likelihood in the strict sense (sigma depends on x);
    ``sample`` returns mu.

    Arguments:
        min_sigma: the floor (default 1e-3).
    Raises:
        ValueError: for a non-positive floor.
    See: Rybkin, Daniilidis & Levine (2021); chapter "The Gaussian decoder's sigma".
    """

    def _optimal_log_sigma(self, x, mu):
        mse = (x - mu).square().flatten(1).mean(1).clamp_min(self.min_sigma**2)
        return (0.5 * torch.log(mse)).view(-1, *([1] * (x.dim() - 1)))


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
#: closed forms subtract two numbers near 1/l and lose every digit as l -> 0. At |l| = 0.05 the first
#: omitted terms are 5.3e-12 (normaliser) and 1.03e-11 (mean); the series are checked against sympy
#: in the tests.
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
    series = math.log(2) + a.square() / 12 - 7 * a.pow(4) / 1440   # next term 31 l^6 / 90720 <= 5.3e-12
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
    series = 0.5 + logits / 12 - logits.pow(3) / 720                # next term |l|^5 / 30240 <= 1.03e-11
    return torch.where(small, series, closed)


class ContinuousBernoulli(Likelihood):
    """The continuous Bernoulli on [0, 1] from logits: the Bernoulli's form, normalised to a density.

    log p(x | l) = x l - softplus(l) + log C, with the log-normaliser of
    ``continuous_bernoulli_log_normalizer``. ``mean`` is the expected value (not sigmoid(l): the two
    differ, and showing sigmoid(l) as "the reconstruction" overstates the sharpness); ``sample`` draws
    by inverting the CDF F(x) = (e^(l x) - 1) / (e^l - 1): x = log1p(u expm1(l)) / l for l < 0 and,
    by the symmetry x -> 1 - x, l -> -l, x = 1 + log1p((1 - u) expm1(-l)) / l for l > 0. Both forms
    are exact for every nonzero logit, however small (expm1 and log1p keep their digits near 0), and
    never overflow; only at l = 0 exactly is the draw the uniform u.

    See: Loaiza-Ganem & Cunningham (2019); chapter "Bernoulli on grey pixels, and the continuous Bernoulli".
    """

    num_params = 1
    support = (0.0, 1.0)

    def __init__(self, lambda_clamp: float = 0.0):
        """``lambda_clamp`` = eps > 0 clamps the parameter lambda = sigmoid(logit) to [eps, 1 - eps], as the
        authors' code does (eps = 1e-4 there, so lambda <= 0.9999 and the mean <= 0.8915); the clamp
        has zero gradient outside. 0 (the default) leaves the logits free.

        Raises:
            ValueError: unless 0 <= lambda_clamp < 1/2.
        """
        super().__init__()
        if not 0.0 <= lambda_clamp < 0.5:
            raise ValueError(f"lambda_clamp must lie in [0, 1/2), got {lambda_clamp}")
        self.lambda_clamp = float(lambda_clamp)

    def _logits(self, params: Tensor) -> Tensor:
        logits = params[:, 0]
        if self.lambda_clamp > 0:
            bound = math.log((1 - self.lambda_clamp) / self.lambda_clamp)   # logit(1 - eps)
            logits = logits.clamp(-bound, bound)
        return logits

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        logits = self._logits(params)
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none") + continuous_bernoulli_log_normalizer(logits)

    def mean(self, params: Tensor) -> Tensor:
        return continuous_bernoulli_mean(self._logits(params))

    def sample(self, params: Tensor) -> Tensor:
        logits = self._logits(params)
        u = torch.rand_like(logits)
        a = logits.abs()
        safe = torch.where(a > 0, a, torch.ones_like(a))
        w = torch.where(logits < 0, u, 1 - u)
        t = -torch.log1p(w * torch.expm1(-safe)) / safe          # the l < 0 quantile at w, for |l| = a
        x = torch.where(logits < 0, t, 1 - t)
        return torch.where(a > 0, x, u).clamp(0, 1)


class Beta(Likelihood):
    """Beta pixels on (0, 1), parameterised by a mean and a concentration so that it trains.

    The decoder outputs two numbers per pixel: a logit for the mean m and a raw concentration.
    alpha = m kappa and beta = (1 - m) kappa, so m = alpha / (alpha + beta) is the mean and
    kappa = alpha + beta sets the variance, m (1 - m) / (kappa + 1): the same mean with a larger
    kappa is a narrower density. Three limits keep it finite on data with exact 0s and 1s, such as
    MNIST's always-black border:

    - the data are squeezed into [eps, 1 - eps] by x' = eps + (1 - 2 eps) x before evaluating, and
      the log-Jacobian log(1 - 2 eps) per pixel is added, so ``log_prob`` is still a density on [0, 1];
    - the mean is kept in [eps, 1 - eps] (a sigmoid rescaled to that interval);
    - kappa = min_concentration + (max_concentration - min_concentration) sigmoid(raw), bounded.

    Without the bounds, a pixel that is always 0 lets alpha -> 0 with the density at x' = eps
    growing without limit; the ELBO then diverges (the chapter shows it).

    The squeezed density integrates over [0, 1] to the Beta's mass on [eps, 1 - eps], which is at
    most 1: the ELBO and IWAE values it gives are therefore lower bounds on those of the properly
    renormalised density. How much lower depends on alpha and beta (scipy.stats.beta, eps = 1/512):
    at mean 1/2 the mass is 0.773 for kappa = 0.5 (the smallest allowed), 0.996 for kappa = 2 (the
    uniform) and 1 - 7e-12 for kappa = 10; with the mean pushed to eps it is 0.405 at kappa = 1000
    and 0.0073 at kappa = 0.5, because most of the Beta's mass then lies in [0, eps].

    Arguments:
        eps: the squeeze, default 1/512 (half a grey level). min_concentration, max_concentration:
            bounds on kappa (default 0.5 and 1000).
    Raises:
        ValueError: unless 0 < eps < 1/2 and 0 < min_concentration < max_concentration.
    See: chapter "The Beta likelihood"; torch.distributions.Beta (the tests compare with it).
    """

    num_params = 2
    support = (0.0, 1.0)

    def __init__(self, eps: float = 1 / 512, min_concentration: float = 0.5, max_concentration: float = 1000.0):
        super().__init__()
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 1/2), got {eps}")
        if not 0 < min_concentration < max_concentration or not math.isfinite(max_concentration):
            raise ValueError(f"need 0 < min_concentration < max_concentration < inf, got {min_concentration}, {max_concentration}")
        self.eps, self.min_concentration, self.max_concentration = float(eps), float(min_concentration), float(max_concentration)

    def alpha_beta(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, beta) per pixel, each of shape (B, *event_shape)."""
        m = self.eps + (1 - 2 * self.eps) * torch.sigmoid(params[:, 0])
        kappa = self.min_concentration + (self.max_concentration - self.min_concentration) * torch.sigmoid(params[:, 1])
        return m * kappa, (1 - m) * kappa

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        a, b = self.alpha_beta(params)
        y = self.eps + (1 - 2 * self.eps) * x
        log_beta_function = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
        return (a - 1) * torch.log(y) + (b - 1) * torch.log1p(-y) - log_beta_function + math.log(1 - 2 * self.eps)

    def mean(self, params: Tensor) -> Tensor:
        a, b = self.alpha_beta(params)
        return ((a / (a + b) - self.eps) / (1 - 2 * self.eps)).clamp(0, 1)

    def sample(self, params: Tensor) -> Tensor:
        a, b = self.alpha_beta(params)
        y = torch.distributions.Beta(a, b).sample()
        return ((y - self.eps) / (1 - 2 * self.eps)).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, concentration in [{self.min_concentration}, {self.max_concentration}]"


class DiscretizedLogistic(Likelihood):
    """A probability mass on the 256 grey levels of 8-bit images: a logistic binned into 256 cells.

    The data are x = k / 255 for k = 0..255 (``companion.data.to_float``). The decoder outputs the
    location mu and log-scale of a logistic per pixel (``num_params`` = 2), and the level k gets the
    logistic's mass on the cell [x - 1/510, x + 1/510], with the two end cells stretched to -inf and
    +inf so that the 256 masses sum to exactly 1:

        P(k) = F(x + 1/510) - F(x - 1/510),   F(u) = sigmoid((u - mu) / s),
        P(0) = F(1/510),   P(255) = 1 - F(1 - 1/510).

    Because it is a probability (not a density), log p(x | z) <= 0 and the ELBO and IWAE estimates
    are bounds on the log-probability of the discrete image: their negatives in bits per dimension
    are comparable with a flow's dequantized bits/dim (chapter "Head to head").

    The mass of an inner cell is computed in log space, exactly: with a = (x + 1/510 - mu) / s and
    b = (x - 1/510 - mu) / s, sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^(b - a)), so

        log P(k) = logsigmoid(a) + logsigmoid(-b) + log(-expm1(-1 / (255 s))),

    which never subtracts two nearly equal numbers. (PixelCNN++ instead replaces masses below 1e-5
    by the density at the centre times the cell width, which is off by up to 0.68 nats per pixel
    where a narrow logistic sits a few cells away.)

    Arguments:
        min_log_scale: floor on log s (default -7: s >= 0.0009 in [0, 1] units, a quarter of a
            cell's width 1/255 = 0.0039).
    See: Salimans et al. (2017), "PixelCNN++", section 2.1; Kingma et al. (2016), IAF, section 5.
    """

    num_params = 2
    support = (0.0, 1.0)
    half_bin = 1 / 510

    def __init__(self, min_log_scale: float = -7.0):
        super().__init__()
        self.min_log_scale = float(min_log_scale)

    def _log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        mu, log_s = params[:, 0], params[:, 1].clamp_min(self.min_log_scale)
        inv_s = torch.exp(-log_s)
        upper, lower = inv_s * (x - mu + self.half_bin), inv_s * (x - mu - self.half_bin)
        log_cdf_upper = F.logsigmoid(upper)                    # log F(x + 1/510): level 0's cell reaches -inf
        log_survival_lower = F.logsigmoid(-lower)              # log (1 - F(x - 1/510)): level 255's reaches +inf
        log_cell = log_cdf_upper + log_survival_lower + torch.log(-torch.expm1(-inv_s / 255))
        return torch.where(x < self.half_bin, log_cdf_upper,
                           torch.where(x > 1 - self.half_bin, log_survival_lower, log_cell))

    def mean(self, params: Tensor) -> Tensor:
        """The location mu clamped to [0, 1] (the mode of the binned logistic when mu is inside)."""
        return params[:, 0].clamp(0, 1)

    def sample(self, params: Tensor) -> Tensor:
        mu, log_s = params[:, 0], params[:, 1].clamp_min(self.min_log_scale)
        u = torch.rand_like(mu).clamp(1e-6, 1 - 1e-6)
        x = mu + torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))
        return (x.clamp(0, 1) * 255).round() / 255

    def extra_repr(self) -> str:
        return f"min_log_scale={self.min_log_scale}"


#: Registered likelihoods by name (the ``--likelihood`` choices).
LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": Bernoulli, "continuous-bernoulli": ContinuousBernoulli, "beta": Beta,
    "gaussian": Gaussian, "gaussian-learned": GaussianLearnedSigma, "gaussian-pixel": GaussianPixelSigma,
    "gaussian-predicted": GaussianPredictedSigma, "gaussian-optimal-pixel": GaussianOptimalPixelSigma,
    "gaussian-optimal-image": GaussianOptimalImageSigma, "laplace": Laplace,
    "discretized-logistic": DiscretizedLogistic}


def likelihood_options(name: str) -> tuple[str, ...]:
    """The keyword options a registered likelihood takes, e.g. ``("sigma",)`` for "gaussian".

    Raises:
        ValueError: for an unknown name.
    """
    import inspect

    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    parameters = inspect.signature(LIKELIHOODS[name].__init__).parameters
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p for p, info in parameters.items() if p not in ("self", "image_shape") and info.kind in keyword)


def check_likelihood_options(name: str, options: dict) -> None:
    """Raise ValueError for an unknown likelihood or an option it does not take; the message names the
    likelihoods that do take that option (``--sigma`` with the Bernoulli: the Gaussians)."""
    takes = likelihood_options(name)
    unknown = [key for key in options if key not in takes]
    if unknown:
        key = unknown[0]
        others = [n for n in LIKELIHOODS if key in likelihood_options(n)]
        raise ValueError(f"the {name} likelihood takes no option {key!r} "
                         f"({'its options: ' + ', '.join(takes) if takes else 'it takes none'}); "
                         + (f"{key} is an option of: {', '.join(others)}" if others else f"no likelihood takes {key}"))


def make_likelihood(name: str, image_shape: tuple[int, ...] | None = None, **options) -> Likelihood:
    """Build a registered likelihood by name, e.g. ``make_likelihood("gaussian", sigma=0.1)``.

    ``image_shape`` is passed on to the likelihoods that need it (a learned sigma per pixel) and
    ignored by the others.

    Raises:
        ValueError: for an unknown name, an option the likelihood does not take (the message names
            the likelihoods that do take it, see ``check_likelihood_options``), or a bad value.
    """
    check_likelihood_options(name, options)
    cls = LIKELIHOODS[name]
    if getattr(cls, "needs_image_shape", False) and image_shape is not None:
        options.setdefault("image_shape", tuple(image_shape))
    return cls(**options)
