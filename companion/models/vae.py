"""The variational autoencoder: Gaussian encoder q(z|x), decoder p(x|z) with a chosen likelihood, ELBO.

Shapes: images x (B, C, H, W); latents z (B, Z); decoder output ``params`` (B, P, C, H, W), where P
is the likelihood's ``num_params``.

The ELBO per example, in nats:

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)),   p(z) = N(0, I),

with the expectation estimated by one reparameterised sample z = mu + sigma * eps, eps ~ N(0, I),
and the KL in closed form. The log-likelihood is summed over pixels (not averaged), so the ELBO is a
bound on log p(x) of the whole image. ``beta`` weights the KL in the training loss only; the ELBO
reported is always the beta = 1 bound.

See: Kingma & Welling (2014), "Auto-Encoding Variational Bayes"; Rezende, Mohamed & Wierstra (2014);
Higgins et al. (2017) for beta; chapters "The evidence lower bound", "Training a VAE" and "A
convolutional VAE" (the ``conv`` architecture, after PyTorch-VAE, Subramanian 2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..divergences import gaussian_kl_per_dim
from ..likelihoods import Likelihood, check_likelihood_options, gaussian_log_density, make_likelihood

__all__ = ["VAEConfig", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "VAE", "reparameterize",
           "ARCHITECTURES", "REDUCTIONS"]

ARCHITECTURES = ("mlp", "conv")
REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class VAEConfig:
    """Settings of a VAE. Serialised next to every result it produces.

    Attributes:
        image_shape: (C, H, W) of the data; (1, 28, 28) for MNIST and Fashion-MNIST.
        latent_dim: Z, the size of z. 2 can be drawn as a plane; 20 is the choice of pytorch's
            examples/vae (Kingma & Welling, 2014, report MNIST runs from 2 to 200).
        hidden: for "mlp", widths of the hidden layers of the encoder (the decoder mirrors them);
            (400,) with latent_dim 20 is the 784-400-20 network of pytorch's examples/vae (Kingma &
            Welling, 2014, used 500 hidden units on MNIST). For "conv", channels of the stride-2 convolutions, e.g. (32, 64): each
            halves the image, so H and W must be divisible by 2 ** len(hidden).
        likelihood: a name registered in ``companion.likelihoods.LIKELIHOODS``.
        likelihood_options: keyword arguments for it, e.g. ``{"sigma": 0.1}`` for "gaussian".
        beta: weight of the KL in the loss (1 gives the ELBO; Higgins et al., 2017).
        architecture: "mlp" (fully connected, ReLU) or "conv" (convolutions with batch norm and
            LeakyReLU, the layout of PyTorch-VAE's vanilla VAE).
        reduction: how the loss combines pixels. "sum" (the default) gives the negative ELBO per
            image; "mean" divides the reconstruction term by D, the number of pixels, as
            ``F.binary_cross_entropy(..., reduction="mean")`` does, which is the same as training
            with beta multiplied by D (chapter "Training a VAE").
        free_bits: lambda >= 0 in nats per latent dimension (Kingma et al., 2016). The training
            loss charges each dimension's batch-mean KL only above lambda, max(lambda, KL_j), so a
            dimension may carry up to lambda nats of information for free: a remedy for posterior
            collapse (chapter "beta-VAE, blur and posterior collapse"). 0 (the default) is the plain
            loss; the reported ELBO never includes the free bits.
        train_iwae_k: k of the bound the model is trained on. 1 (the default) trains the ELBO;
            k > 1 trains the IWAE bound L_k = E log (1/k) sum_i p(x, z_i) / q(z_i | x) of Burda et
            al. (2016) with k reparameterized samples per image (chapter "Evaluating a VAE"). It
            needs beta = 1, no free bits and reduction "sum": L_k has no KL term to weigh.
    """

    image_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 20
    hidden: tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    likelihood_options: dict = field(default_factory=dict)
    beta: float = 1.0
    architecture: str = "mlp"
    reduction: str = "sum"
    free_bits: float = 0.0
    train_iwae_k: int = 1

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        check_likelihood_options(self.likelihood, self.likelihood_options)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {self.hidden}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")
        if not (math.isfinite(self.free_bits) and self.free_bits >= 0):
            raise ValueError(f"free_bits must be a finite number >= 0, got {self.free_bits}")
        if isinstance(self.train_iwae_k, bool) or not isinstance(self.train_iwae_k, int) or self.train_iwae_k < 1:
            raise ValueError(f"train_iwae_k must be an integer >= 1, got {self.train_iwae_k!r}")
        if self.train_iwae_k > 1 and (self.beta != 1 or self.free_bits or self.reduction != "sum"):
            raise ValueError(f"train_iwae_k = {self.train_iwae_k} trains the IWAE bound, which has no KL term to weigh: "
                             f"it needs beta = 1, free_bits = 0 and reduction 'sum' (got {self.beta}, "
                             f"{self.free_bits}, {self.reduction!r})")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.architecture == "conv":
            factor = 2 ** len(self.hidden)
            if not self.hidden or any(side % factor for side in self.image_shape[1:]):
                raise ValueError(f"the conv architecture needs at least one layer and image sides divisible by "
                                 f"2 ** len(hidden) = {factor}; got hidden={self.hidden}, image_shape={self.image_shape}")

    @property
    def num_pixels(self) -> int:
        """D, the number of dimensions of an image (C * H * W)."""
        return math.prod(self.image_shape)

    @property
    def name(self) -> str:
        """A short label, e.g. ``vae-mlp-400-z20``, ``vae-conv-32-64-z16``, or ``vae-mlp-400-z20-iwae5``
        for a model trained on the IWAE bound with k = 5."""
        iwae = f"-iwae{self.train_iwae_k}" if self.train_iwae_k > 1 else ""
        return f"vae-{self.architecture}-{'-'.join(map(str, self.hidden)) or 'linear'}-z{self.latent_dim}{iwae}"


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))): (B, C, H, W) -> mu (B, Z), logvar (B, Z)."""

    def __init__(self, image_shape: tuple[int, ...], hidden: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.net = _mlp([math.prod(image_shape), *hidden, 2 * latent_dim])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x.flatten(1)).chunk(2, dim=1)  # (B, D) -> (B, 2Z) -> 2 x (B, Z)
        return mu, logvar


class MLPDecoder(nn.Module):
    """z (B, Z) -> likelihood parameters (B, P, C, H, W)."""

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], image_shape: tuple[int, ...], num_params: int):
        super().__init__()
        self.out_shape = (num_params, *image_shape)
        self.net = _mlp([latent_dim, *reversed(hidden), math.prod(self.out_shape)])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)  # (B, P*D) -> (B, P, C, H, W)


class ConvEncoder(nn.Module):
    """q(z|x) with convolutions: (B, C, H, W) -> mu (B, Z), logvar (B, Z).

    Each layer is Conv2d(kernel 3, stride 2, padding 1) -> BatchNorm2d -> LeakyReLU, halving H and W,
    then one linear layer maps the flattened features to mu and logvar: the encoder of PyTorch-VAE's
    ``VanillaVAE`` (Subramanian, 2020) scaled to 28 x 28 images.
    """

    def __init__(self, image_shape: tuple[int, ...], channels: tuple[int, ...], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = image_shape[0]
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = [s // 2 ** len(channels) for s in image_shape[1:]]
        self.head = nn.Linear(c_in * math.prod(side), 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.features(x).flatten(1)).chunk(2, dim=1)  # (B, c*h*w) -> 2 x (B, Z)
        return mu, logvar


class ConvDecoder(nn.Module):
    """z (B, Z) -> likelihood parameters (B, P, C, H, W) with transposed convolutions.

    A linear layer makes a (channels[-1], H / 2^L, W / 2^L) feature map; each ConvTranspose2d(kernel
    3, stride 2, padding 1, output padding 1) -> BatchNorm2d -> LeakyReLU doubles its sides, walking
    the encoder's channels back; a last 3 x 3 convolution outputs P * C maps (PyTorch-VAE's
    ``final_layer``, without its tanh, since the likelihood decides what the outputs mean).
    """

    def __init__(self, latent_dim: int, channels: tuple[int, ...], image_shape: tuple[int, ...], num_params: int):
        super().__init__()
        self.out_shape = (num_params, *image_shape)
        self.side = tuple(s // 2 ** len(channels) for s in image_shape[1:])
        self.first = channels[-1]
        self.inp = nn.Linear(latent_dim, channels[-1] * math.prod(self.side))
        layers: list[nn.Module] = []
        widths = [*reversed(channels), channels[0]]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm2d(c_out), nn.LeakyReLU()]
        layers.append(nn.Conv2d(channels[0], num_params * image_shape[0], 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.inp(z).view(z.shape[0], self.first, *self.side)     # (B, c_L, H/2^L, W/2^L)
        return self.net(h).view(z.shape[0], *self.out_shape)         # (B, P*C, H, W) -> (B, P, C, H, W)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I): a sample of q(z|x) that gradients flow through.

    Arguments:
        mu, logvar: shape (B, Z).
    Returns:
        z, shape (B, Z).
    See: Kingma & Welling (2014), section 2.4; chapter "The reparameterization trick".
    """
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class VAE(nn.Module):
    """A VAE with an MLP or convolutional encoder and decoder and any registered likelihood.

    The trainer only calls ``loss``; everything else is for the chapters and the evaluation.

    Arguments:
        config: a ``VAEConfig``; ``VAE(VAEConfig(latent_dim=2))``.
        likelihood: optional ready-made likelihood (otherwise built from the config).
    Raises:
        ValueError: from the config, or when data of the wrong shape, or outside the likelihood's
            support, reaches ``encode``/``loss``.
        TypeError: for integer images, or images of another dtype than the weights.
    """

    def __init__(self, config: VAEConfig = VAEConfig(), likelihood: Likelihood | None = None):
        super().__init__()
        self.config = config
        self.likelihood = likelihood or make_likelihood(config.likelihood, config.image_shape, **config.likelihood_options)
        if config.architecture == "conv":
            self.encoder = ConvEncoder(config.image_shape, config.hidden, config.latent_dim)
            self.decoder = ConvDecoder(config.latent_dim, config.hidden, config.image_shape, self.likelihood.num_params)
        else:
            self.encoder = MLPEncoder(config.image_shape, config.hidden, config.latent_dim)
            self.decoder = MLPDecoder(config.latent_dim, config.hidden, config.image_shape, self.likelihood.num_params)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def _check_input(self, x: Tensor) -> None:
        """Raise ValueError for a batch of the wrong shape, TypeError for integer images or images whose
        dtype is not the weights' (values outside the likelihood's support are refused by it)."""
        if x.dim() != 1 + len(self.config.image_shape) or tuple(x.shape[1:]) != self.config.image_shape:
            raise ValueError(
                f"expected a batch of images of shape (B, {', '.join(map(str, self.config.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            raise TypeError(f"expected float images in [0, 1], got {x.dtype}; convert uint8 images with "
                            "companion.data.to_float (which divides by 255 and can binarise)")
        dtype = next(self.parameters()).dtype
        if x.dtype != dtype:
            raise TypeError(f"the images are {x.dtype} but the model's weights are {dtype}; convert one to the "
                            f"other (x.to({dtype}) or model.to({x.dtype}))")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters: x (B, C, H, W) -> mu (B, Z), logvar (B, Z)."""
        self._check_input(x)
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters for latents z (B, Z): shape (B, P, C, H, W)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)

    def elbo_terms(self, x: Tensor) -> dict[str, Tensor]:
        """One-sample ELBO and its two terms per example, in nats, each of shape (B,).

        Returns:
            ``{"elbo", "reconstruction", "kl"}`` with reconstruction = log p(x|z), z ~ q(z|x)
            (higher is better) and elbo = reconstruction - kl.
        """
        terms = self._terms(x)
        del terms["kl_per_dim"]
        return terms

    def epoch_summary(self) -> dict[str, float]:
        """What the trainer adds to each epoch's history: ``decoder/sigma``, the current sigma of a
        decoder that learns one global sigma ("gaussian-learned"), so that the history shows it fall
        with the reconstruction error (chapter "The Gaussian decoder's sigma"); empty otherwise."""
        learns = any(p.requires_grad for p in self.likelihood.parameters())
        sigma = getattr(self.likelihood, "sigma", None)
        return {"decoder/sigma": sigma} if learns and isinstance(sigma, float) else {}

    def _terms(self, x: Tensor) -> dict[str, Tensor]:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        reconstruction = self.likelihood.log_prob(x, self.decoder(z))
        kl_per_dim = gaussian_kl_per_dim(mu, logvar)          # (B, Z)
        kl = kl_per_dim.sum(1)
        return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl, "kl_per_dim": kl_per_dim}

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss: the batch mean of -(reconstruction / s - beta * kl), in nats per example.

        s is 1 for ``reduction="sum"`` (the negative ELBO when beta = 1) and D for "mean". With
        ``free_bits`` = lambda > 0, the KL term is sum_j max(lambda, batch mean of KL_j) instead.
        With ``train_iwae_k`` = k > 1 it is minus the batch mean of the IWAE bound L_k
        (``_iwae_loss``), and the terms gain ``iwae``.

        Returns:
            ``(loss, terms)`` where terms holds the batch means of ``elbo``, ``reconstruction`` and
            ``kl`` (what the trainer logs).
        """
        if self.config.train_iwae_k > 1:
            return self._iwae_loss(x, self.config.train_iwae_k)
        terms = self._terms(x)
        kl_per_dim, kl = terms.pop("kl_per_dim"), terms["kl"]
        scale = self.config.num_pixels if self.config.reduction == "mean" else 1
        if self.config.free_bits > 0:   # max(lambda, E_batch KL_j) per dimension (Kingma et al., 2016)
            charged = kl_per_dim.mean(0).clamp_min(self.config.free_bits).sum()
        else:
            charged = kl.mean()
        loss = -(terms["reconstruction"] / scale).mean() + self.config.beta * charged
        return loss, {name: value.mean() for name, value in terms.items()}

    def _iwae_loss(self, x: Tensor, k: int) -> tuple[Tensor, dict[str, Tensor]]:
        """-L_k, the negative IWAE bound, batch mean in nats per image, with k samples per image.

        log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x) for z_i = mu + sigma * eps_i, and
        L_k = logsumexp_i(log w_i) - log k (Burda et al., 2016, eq. 8). Gradients flow through the
        samples (reparameterization) and through the normalised weights. Terms: ``iwae`` (L_k),
        ``reconstruction`` (mean over the k samples), ``kl`` (closed form) and ``elbo``, their
        difference, an estimate of L_1 from the same samples.
        """
        mu, logvar = self.encode(x)                                           # (B, Z)
        eps = torch.randn((k, *mu.shape), dtype=mu.dtype, device=mu.device)    # (k, B, Z)
        z = mu + torch.exp(0.5 * logvar) * eps
        xs = x.expand(k, *x.shape).reshape(k * x.shape[0], *x.shape[1:])
        reconstruction = self.likelihood.log_prob(xs, self.decoder(z.flatten(0, 1))).view(k, -1)
        log_prior = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(-1)   # log N(z; 0, I)
        log_posterior = gaussian_log_density(z, mu, 0.5 * logvar).sum(-1)                         # log q(z | x)
        bound = torch.logsumexp(reconstruction + log_prior - log_posterior, 0) - math.log(k)
        kl = gaussian_kl_per_dim(mu, logvar).sum(1)
        reconstruction = reconstruction.mean(0)
        terms = {"iwae": bound, "elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
        return -bound.mean(), {name: value.detach().mean() for name, value in terms.items()}

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x | z = mu(x)]: the likelihood's mean at the posterior mean, shape of x."""
        mu, _ = self.encode(x)
        return self.likelihood.mean(self.decoder(mu))

    @torch.no_grad()
    def generate(self, n: int | None = None, z: Tensor | None = None, mean: bool = True) -> Tensor:
        """Images from the prior: z ~ N(0, I) (or the given z), then the likelihood's mean or a sample.

        Returns:
            (n, C, H, W). Showing the mean is the usual convention for image grids; a sample of a
            Bernoulli decoder is a binary image.
        """
        if z is None:
            if n is None:
                raise ValueError("give n or z")
            z = torch.randn(n, self.latent_dim, device=next(self.parameters()).device)
        params = self.decode(z)
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)
