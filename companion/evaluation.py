"""Estimates of the evidence log p(x) of a VAE, in nats per image.

- ``log_evidence_prior``: naive Monte Carlo, log (1/S) sum_s p(x | z_s) with z_s ~ p(z);
- ``log_evidence_importance``: importance sampling with the encoder as proposal,
  log (1/S) sum_s p(x | z_s) p(z_s) / q(z_s | x) with z_s ~ q(z | x) (the IWAE bound of Burda et al.,
  2016, for S = k samples);
- ``iwae_bound`` and ``evaluate_nll``: the same estimate batched over images and samples for whole
  test sets (k = 5000 on 10,000 images in a few hundred MB), with ``bits_per_dim`` to convert;
- ``evaluate_elbo``: the ELBO and its two terms on any split;
- ``log_evidence_grid``: numerical integration on a grid, for two-dimensional latents only, as a
  reference the estimators can be judged against.

All work in log space with ``torch.logsumexp`` and in chunks, so memory stays bounded whatever S is.

See: chapters "Latent-variable models and the evidence" and "Evaluating a VAE".
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .data import Batches, ImageData, check_uint8_images, to_float
from .models.vae import VAE, VAEConfig
from .training import _fixed_rng, evaluate

__all__ = ["log_likelihood_matrix", "latent_usage", "log_mean_exp", "log_evidence_prior", "log_evidence_importance", "log_evidence_grid",
           "log_importance_weights", "iwae_bound", "evaluate_nll", "NLLResult", "bits_per_dim", "evaluate_elbo",
           "linear_gaussian_vae"]

LOG_2PI = math.log(2 * math.pi)


def log_mean_exp(a: Tensor, dim: int = -1) -> Tensor:
    """log(mean(exp(a))) along ``dim``, computed stably as logsumexp(a) - log(n)."""
    return torch.logsumexp(a, dim=dim) - math.log(a.shape[dim])


@torch.no_grad()
def log_likelihood_matrix(model: VAE, x: Tensor, z: Tensor, chunk: int = 1024) -> Tensor:
    """log p(x_b | z_s) for every image b and latent s, in nats.

    Arguments:
        model: a VAE. x: images (B, C, H, W). z: latents (S, Z), shared by all images.
        chunk: latents decoded at a time (memory is about chunk * D floats).
    Returns:
        (B, S) tensor.
    Raises:
        ValueError: for latents of the wrong width or images of the wrong shape.
    """
    model._check_input(x)
    # One preallocated output: appending many small results between large temporaries fragments
    # the CPU heap (measured: +3 MB of resident memory per chunk), this keeps memory flat.
    out = torch.empty(len(x), len(z), device=x.device)
    for start in range(0, len(z), chunk):
        params = model.decode(z[start:start + chunk])  # (s, P, C, H, W)
        s = params.shape[0]
        xs = x.unsqueeze(1).expand(-1, s, *x.shape[1:]).reshape(-1, *x.shape[1:])       # (B*s, C, H, W)
        ps = params.unsqueeze(0).expand(len(x), *params.shape).reshape(-1, *params.shape[1:])
        out[:, start:start + s] = model.likelihood.log_prob(xs, ps).view(len(x), s)
    return out


@torch.no_grad()
def log_evidence_prior(model: VAE, x: Tensor, samples: int, repeats: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Naive Monte Carlo estimates of log p(x) from prior samples: shape (B, repeats).

    Each estimate uses its own ``samples`` draws z ~ N(0, I). Unbiased for p(x), biased low for
    log p(x) (Jensen), and with a variance that explodes when the posterior is small compared with
    the prior. Raises ValueError for samples or repeats < 1.
    """
    if samples < 1 or repeats < 1:
        raise ValueError(f"samples and repeats must be >= 1, got {samples}, {repeats}")
    device = next(model.parameters()).device
    z = torch.randn(repeats * samples, model.latent_dim, generator=generator).to(device)
    return log_mean_exp(log_likelihood_matrix(model, x, z).view(len(x), repeats, samples))


def _standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.square() + LOG_2PI).sum(-1)


@torch.no_grad()
def log_importance_weights(model: VAE, x: Tensor, k: int, max_latents: int = 16384,
                           generator: torch.Generator | None = None) -> Tensor:
    """log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x) for k draws z_i ~ q(z | x) per image.

    The encoder runs once; the k samples are drawn and decoded in chunks of at most ``max_latents``
    latents (all images together), so memory is about ``max_latents`` times the decoder's
    activations and output, whatever k is. Noise comes from ``generator`` (drawn on its device)
    or from torch's global generator on the model's device.

    Arguments:
        model: a VAE. x: images (B, C, H, W). k: samples per image (>= 1).
    Returns:
        (B, k) tensor in nats, in the model's dtype.
    Raises:
        ValueError: for k or max_latents < 1, or images of the wrong shape.
    See: Burda, Grosse & Salakhutdinov (2016); chapter "Evaluating a VAE".
    """
    if k < 1 or max_latents < 1:
        raise ValueError(f"k and max_latents must be >= 1, got {k}, {max_latents}")
    mu, logvar = model.encode(x)                                             # (B, Z) each
    std = torch.exp(0.5 * logvar)
    (b, z_dim), device = mu.shape, mu.device
    out = torch.empty(b, k, dtype=mu.dtype, device=device)
    step = max(1, max_latents // b)                                         # samples per image per chunk
    step = -(-k // -(-k // step))   # equal chunks (5000 -> 2 x 2500, not 4096 + 904): same-sized temporaries
    for start in range(0, k, step):                                         # are reused, the heap stays flat
        c = min(step, k - start)
        if generator is None:
            eps = torch.randn(b, c, z_dim, dtype=mu.dtype, device=device)
        else:
            eps = torch.randn(b, c, z_dim, dtype=mu.dtype, device=generator.device, generator=generator).to(device)
        z = mu[:, None] + std[:, None] * eps                                 # (B, c, Z)
        log_q = _standard_normal_log_prob(eps) - torch.log(std).sum(-1, keepdim=True)
        params = model.decode(z.reshape(b * c, z_dim))                       # (B*c, P, C, H, W)
        xs = x.unsqueeze(1).expand(b, c, *x.shape[1:]).reshape(b * c, *x.shape[1:])
        log_likelihood = model.likelihood.log_prob(xs, params).view(b, c)
        out[:, start:start + c] = log_likelihood + _standard_normal_log_prob(z) - log_q
    return out


@torch.no_grad()
def iwae_bound(model: VAE, x: Tensor, k: int, max_latents: int = 16384,
               generator: torch.Generator | None = None) -> Tensor:
    """The importance-weighted estimate of log p(x) with k samples, per image, in nats: shape (B,).

    log (1/k) sum_i w_i with w_i = p(x, z_i) / q(z_i | x), z_i ~ q(z | x), computed by log-sum-exp.
    Its expectation is the IWAE bound L_k: L_1 is the ELBO, L_k <= L_{k+1} <= log p(x), and L_k
    tends to log p(x) as k grows (Burda et al., 2016, theorem 1). Images are processed in groups
    so that one chunk never holds more than ``max_latents`` latents.

    Arguments:
        model: a VAE. x: float images (B, C, H, W) in [0, 1], in the model's dtype (``to_float``
            converts uint8 images). k: samples per image. max_latents: see above.
    Raises:
        ValueError: as ``log_importance_weights``. TypeError: for integer images (uint8 must go
            through ``to_float`` first) or images of another dtype than the model's weights.
    """
    model._check_input(x)
    if k < 1 or max_latents < 1:
        raise ValueError(f"k and max_latents must be >= 1, got {k}, {max_latents}")
    group = max(1, max_latents // k)
    out = torch.empty(len(x), dtype=x.dtype, device=x.device)   # preallocated: see log_likelihood_matrix
    for i in range(0, len(x), group):
        out[i:i + group] = log_mean_exp(log_importance_weights(model, x[i:i + group], k, max_latents, generator))
    return out


def bits_per_dim(nats: float | Tensor, num_dims: int) -> float | Tensor:
    """Convert nats per example to bits per dimension: nats / (D ln 2).

    A negative log-likelihood of 80 nats on a 784-pixel image is 80 / (784 ln 2) = 0.147 bits/dim.
    Raises ValueError if ``num_dims`` < 1. See: chapter "Evaluating a VAE".
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    return nats / (num_dims * math.log(2))


def _peak_memory_mb(device: torch.device) -> tuple[float | None, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    try:
        import resource   # POSIX only
    except ImportError:
        return None, "not measured (no resource module on this platform)"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10), "process peak resident memory"


@dataclass
class NLLResult:
    """What ``evaluate_nll`` measured.

    Attributes:
        nll_nats: mean of -log p(x) over the images (nats per image; lower is better).
        std_error: its standard error over images.
        bits_per_dim: ``nll_nats`` / (D ln 2).
        k: importance samples per image. num_images: how many images.
        wall_time_s: seconds for the evaluation.
        peak_memory_mb: peak memory, of kind ``memory_kind`` (None where it cannot be measured: a CPU
            without the POSIX ``resource`` module, i.e. Windows; on CUDA the evaluation's own peak; on
            a CPU the process's peak resident memory, which includes everything loaded before).
        log_px: per-image estimates of log p(x), (N,), on the CPU.
    """

    nll_nats: float
    std_error: float
    bits_per_dim: float
    k: int
    num_images: int
    wall_time_s: float
    peak_memory_mb: float | None
    memory_kind: str
    log_px: Tensor = field(repr=False)


@torch.no_grad()
def evaluate_nll(model: VAE, images: Tensor, k: int = 5000, *, binarize: bool = True, seed: int = 0,
                 max_latents: int = 4096, progress: bool = False) -> NLLResult:
    """Test negative log-likelihood by the IWAE estimate with k samples, for a whole split.

    Arguments:
        model: a trained VAE (put in eval mode here and restored afterwards).
        images: uint8 images (N, C, H, W), grey levels 0..255, on any device (moved to the model's).
        k: importance samples per image (5000 in Burda et al., 2016).
        binarize: draw one binarisation of the images (seeded by ``seed``, the same for every k), for
            models of binarised data.
        seed: seeds the binarisation and the samples; torch's generators are restored afterwards.
        max_latents: latents decoded at once, the memory knob: memory grows with it times the
            decoder's activations per latent (4096 keeps an MLP decoder near 100 MB; a convolutional
            one keeps 28 x 28 feature maps per latent and wants about 1024; a GPU can take more).
        progress: show a tqdm bar over the groups of images.
    Returns:
        An ``NLLResult`` (nats per image, bits per dimension, time, peak memory), computed in the
        model's dtype (float32, or float64 for a model converted with ``.double()``).
    Raises:
        TypeError: for images that are not uint8. ValueError: for k < 1, an empty set, images of the
            wrong shape, or uint8 images that hold only 0s and 1s (``check_uint8_images``).
    See: chapter "Evaluating a VAE".
    """
    from tqdm.auto import tqdm

    if k < 1 or max_latents < 1:
        raise ValueError(f"k and max_latents must be >= 1, got {k}, {max_latents}")
    check_uint8_images(images, "evaluate_nll")
    if len(images) == 0:
        raise ValueError("evaluate_nll: no images to evaluate (the set is empty)")
    parameter = next(model.parameters())
    device = parameter.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    group = max(1, max_latents // k)
    was_training, start = model.training, time.perf_counter()
    model.eval()
    try:
        with _fixed_rng(seed, device):
            # One binarisation of the whole set first, so that it is the same whatever k (and group) is.
            x_all = to_float(images.to(device), binarize, parameter.dtype)
            log_px = torch.empty(len(x_all), dtype=torch.float64)
            for i in tqdm(range(0, len(x_all), group), disable=not progress, desc=f"IWAE k={k}"):
                log_px[i:i + group] = iwae_bound(model, x_all[i:i + group], k, max_latents).double().cpu()
    finally:
        model.train(was_training)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    memory, kind = _peak_memory_mb(device)
    nll = -log_px.mean().item()
    return NLLResult(nll_nats=nll, std_error=log_px.std().item() / math.sqrt(len(log_px)) if len(log_px) > 1 else float("nan"),
                     bits_per_dim=bits_per_dim(nll, math.prod(images.shape[1:])), k=k, num_images=len(log_px),
                     wall_time_s=wall, peak_memory_mb=memory, memory_kind=kind, log_px=log_px)


def evaluate_elbo(model: VAE, data: ImageData | Tensor, split: str = "test", *, binarize: bool = True,
                  seed: int = 0, batch_size: int = 1000) -> dict[str, float]:
    """The one-sample ELBO and its terms averaged over a split, in nats per image.

    Arguments:
        model: a VAE. data: an ``ImageData`` (then ``split`` picks "train", "val" or "test") or a uint8
            image tensor (N, C, H, W). binarize: dynamic binarisation, seeded by ``seed``.
    Returns:
        ``{"elbo", "reconstruction", "kl", "loss"}`` as floats (elbo = reconstruction - kl; loss is
        the training loss, which differs from -elbo when beta != 1 or reduction is "mean").
    Raises:
        ValueError: for an unknown split, an empty one, or uint8 images holding only 0s and 1s.
        TypeError: for images that are not uint8.
    """
    images = data.split(split)[0] if isinstance(data, ImageData) else data
    parameter = next(model.parameters())
    return evaluate(model, Batches(images.to(parameter.device), batch_size, binarize=binarize, dtype=parameter.dtype),
                    seed=seed)


@torch.no_grad()
def latent_usage(model: VAE, images: Tensor, *, binarize: bool = True, seed: int = 0, batch_size: int = 1000,
                 threshold: float = 0.01) -> dict:
    """How much each latent dimension is used: its average KL and its activity.

    Arguments:
        model: a VAE. images: uint8 images (N, C, H, W). binarize: seeded dynamic binarisation.
        threshold: a dimension u is *active* when A_u = Cov_x(E_q[z_u | x]) > threshold (Burda et
            al., 2016, section 5.2, with 0.01): an inactive dimension's posterior mean does not move
            with x, so it carries no information about the image.
    Returns:
        ``{"kl_per_dim": [Z floats, nats], "activity": [Z floats], "active_units": int}``; the
        entries of ``kl_per_dim`` sum to the average KL of the ELBO.
    Raises:
        TypeError: for images that are not uint8. ValueError: for fewer than two images (the
            activity is a variance) or uint8 images holding only 0s and 1s.
    See: chapter "beta-VAE, blur and posterior collapse".
    """
    from .divergences import gaussian_kl_per_dim

    check_uint8_images(images, "latent_usage")
    if len(images) < 2:
        raise ValueError(f"latent_usage needs at least two images (the activity is a variance over them), "
                         f"got {len(images)}")
    parameter = next(model.parameters())
    device = parameter.device
    was_training = model.training
    model.eval()
    mus, kls = [], []
    try:
        with _fixed_rng(seed, device):
            for start in range(0, len(images), batch_size):
                x = to_float(images[start:start + batch_size].to(device), binarize, parameter.dtype)
                mu, logvar = model.encode(x)
                mus.append(mu.double().cpu())
                kls.append(gaussian_kl_per_dim(mu, logvar).double().sum(0).cpu())
    finally:
        model.train(was_training)
    mu = torch.cat(mus)
    activity = mu.var(0)
    return {"kl_per_dim": (torch.stack(kls).sum(0) / len(mu)).tolist(), "activity": activity.tolist(),
            "active_units": int((activity > threshold).sum())}


def log_evidence_importance(model: VAE, x: Tensor, samples: int, repeats: int = 1,
                            generator: torch.Generator | None = None) -> Tensor:
    """Importance-sampling estimates of log p(x) with the encoder q(z|x) as proposal: shape (B, repeats).

    log (1/S) sum_s [log p(x|z_s) + log p(z_s) - log q(z_s|x)], z_s ~ q(z|x). Its expectation is a
    lower bound on log p(x) that tightens as S grows (Burda et al., 2016). Images are handled one at
    a time, latents in chunks. Raises ValueError for samples or repeats < 1.
    """
    if samples < 1 or repeats < 1:
        raise ValueError(f"samples and repeats must be >= 1, got {samples}, {repeats}")
    if generator is None:
        generator = torch.default_generator
    n = repeats * samples
    out = [log_importance_weights(model, x[b:b + 1], n, max_latents=4096, generator=generator).view(repeats, samples)
           for b in range(len(x))]
    return log_mean_exp(torch.stack(out))


@torch.no_grad()
def log_evidence_grid(model: VAE, x: Tensor, points: int = 201, width: float = 10.0) -> Tensor:
    """log p(x) by integrating p(x|z) p(z) over a square grid around each posterior mean (Z = 2 only).

    The grid has ``points`` x ``points`` nodes spanning ``width`` encoder standard deviations (the
    larger of the two) on each side of the encoder's mean: the integrand is negligible far from the
    posterior, and the encoder's mean and spread say where that is. This assumes the encoder is a
    fair guide to the posterior's location and scale; compare two settings of ``points`` and
    ``width`` to check convergence. Returns shape (B,). Raises ValueError unless Z = 2.
    """
    if model.latent_dim != 2:
        raise ValueError(f"grid integration is for two-dimensional latents, this model has {model.latent_dim}")
    mu, logvar = model.encode(x)
    half = width * torch.exp(0.5 * logvar).max(dim=1).values                   # (B,)
    out = []
    for b in range(len(x)):
        axis = torch.linspace(-1.0, 1.0, points, device=mu.device) * half[b]
        z1, z2 = torch.meshgrid(mu[b, 0] + axis, mu[b, 1] + axis, indexing="ij")
        z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)
        log_joint = log_likelihood_matrix(model, x[b:b + 1], z)[0] + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        cell = (axis[1] - axis[0]) ** 2
        out.append(torch.logsumexp(log_joint, 0) + torch.log(cell))
    return torch.stack(out)


def linear_gaussian_vae(exact_posterior: bool = True, sigma: float = 0.5) -> tuple[VAE, Tensor, Tensor]:
    """A VAE whose evidence is known exactly, to test evidence estimators against (float64).

    p(z) = N(0, I_2), p(x | z) = N(W z + b, sigma^2 I_4) with linear decoder and encoder (``hidden=()``,
    images of shape (1, 2, 2)). W has orthogonal columns, so the true posterior
    N(S W^T (x - b) / sigma^2, S) with S = (I + W^T W / sigma^2)^-1 is diagonal, and with
    ``exact_posterior`` the encoder is set to it: then every importance weight equals p(x) and the
    IWAE estimate is exact for any k. Otherwise the encoder returns the prior, a poor proposal.

    Returns:
        ``(model, x, log_px)``: the model in eval mode, two images x (2, 1, 2, 2) and their exact
        log p(x) (2,) in nats, from ``torch.distributions.MultivariateNormal(b, W W^T + sigma^2 I)``.
    See: chapter "Evaluating a VAE"; Burda et al. (2016).
    """
    model = VAE(VAEConfig(image_shape=(1, 2, 2), latent_dim=2, hidden=(), likelihood="gaussian",
                          likelihood_options={"sigma": sigma})).double().eval()
    f64 = dict(dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, -1.0]], **f64)      # orthogonal columns
    b = torch.tensor([0.3, -0.2, 0.1, 0.4], **f64)
    s = torch.linalg.inv(torch.eye(2, **f64) + w.T @ w / sigma**2)                    # posterior covariance
    dec, enc = model.decoder.net[0], model.encoder.net[0]
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
        enc.weight.zero_()
        enc.bias.zero_()                                                               # q(z|x) = N(0, I)
        if exact_posterior:
            enc.weight[:2] = s @ w.T / sigma**2
            enc.bias[:2] = -(s @ w.T @ b) / sigma**2
            enc.bias[2:] = torch.log(torch.diagonal(s))
    x = torch.tensor([[0.5, 1.0, -0.3, 0.2], [2.0, -1.5, 1.0, 0.0]], **f64)
    log_px = torch.distributions.MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(4, **f64)).log_prob(x)
    return model, x.view(2, 1, 2, 2), log_px
