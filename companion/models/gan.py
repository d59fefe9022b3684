"""The generative adversarial network: an MLP generator G and discriminator D trained in alternation.

Shapes: noise z (B, Z) with z ~ N(0, I); images x (B, C, H, W) in [0, 1] (the networks see them
rescaled to [-1, 1], the range of the generator's tanh); the discriminator returns a logit (B,), and
D(x) = sigmoid(logit) is its probability that x is real.

The minimax game of Goodfellow et al. (2014),

    min_G max_D V(D, G) = E_data[log D(x)] + E_z[log(1 - D(G(z)))],

is played by alternating two gradient steps per batch. The discriminator minimises its binary
cross-entropy, which is exactly -V for the current G. The generator minimises either the
saturating loss log(1 - D(G(z))) (the game as written) or the non-saturating -log D(G(z))
(Goodfellow et al.'s fix: the same fixed point, but large gradients when D rejects the samples).
All losses are in nats per example, computed from logits with ``binary_cross_entropy_with_logits``.

The layers follow seed 001 (section 2.5): G is Z -> 128 -> 256 -> 512 -> 1024 -> D with LeakyReLU(0.2),
batch norm after every hidden layer but the first, and a tanh output; D is D -> 512 -> 256 -> 1 with
LeakyReLU(0.2) and dropout 0.3. Both use Adam with learning rate 5e-4 (``TrainConfig.lr``) and
beta1 = 0.5 (Radford et al., 2016).

See: Goodfellow et al. (2014), "Generative Adversarial Nets", sections 3 and 4; chapter "GANs".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GANConfig", "Generator", "Discriminator", "GAN", "generator_loss", "GENERATOR_LOSSES"]

GENERATOR_LOSSES = ("non-saturating", "saturating")


@dataclass(frozen=True)
class GANConfig:
    """Settings of a GAN. Serialised next to every result it produces.

    Attributes:
        image_shape: (C, H, W) of the data.
        latent_dim: Z, the size of the noise z; 100 as in Goodfellow et al. (2014) and DCGAN.
        hidden: the generator's first width h; its hidden layers are h, 2h, 4h, 8h (128 gives the
            seed's 128-256-512-1024), and the discriminator's are 4h and 2h (512 and 256).
        dropout: the discriminator's dropout probability (0.3 in the seed).
        generator_loss: "non-saturating" (-log D(G(z))) or "saturating" (log(1 - D(G(z)))).
        adam_beta1: Adam's first-moment decay for both networks; 0.5 (Radford et al., 2016) damps
            the oscillations that the default 0.9 causes in adversarial training.
    """

    image_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 100
    hidden: int = 128
    dropout: float = 0.3
    generator_loss: str = "non-saturating"
    adam_beta1: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        if self.latent_dim < 1 or self.hidden < 1:
            raise ValueError(f"latent_dim and hidden must be >= 1, got {self.latent_dim} and {self.hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, got {self.generator_loss!r}")
        if not 0 <= self.adam_beta1 < 1:
            raise ValueError(f"adam_beta1 must be in [0, 1), got {self.adam_beta1}")

    @property
    def num_pixels(self) -> int:
        return math.prod(self.image_shape)

    @property
    def name(self) -> str:
        return f"gan-mlp-{self.hidden}-z{self.latent_dim}"


class Generator(nn.Module):
    """G: z (B, Z) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        h = config.hidden
        layers: list[nn.Module] = [nn.Linear(config.latent_dim, h), nn.LeakyReLU(0.2)]
        for width in (2 * h, 4 * h, 8 * h):
            layers += [nn.Linear(h, width), nn.BatchNorm1d(width), nn.LeakyReLU(0.2)]
            h = width
        layers += [nn.Linear(h, config.num_pixels), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.image_shape = config.image_shape

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)      # (B, Z) -> (B, D) -> (B, C, H, W)


class Discriminator(nn.Module):
    """D: images (B, C, H, W) in [-1, 1] -> logits (B,); D(x) = sigmoid(logit)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        h = config.hidden
        self.net = nn.Sequential(
            nn.Linear(config.num_pixels, 4 * h), nn.LeakyReLU(0.2), nn.Dropout(config.dropout),
            nn.Linear(4 * h, 2 * h), nn.LeakyReLU(0.2), nn.Dropout(config.dropout),
            nn.Linear(2 * h, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)                     # (B, D) -> (B, 1) -> (B,)


def generator_loss(fake_logits: Tensor, kind: str = "non-saturating") -> Tensor:
    """The generator's loss per example, in nats, from the discriminator's logits on G(z), shape (B,).

    "saturating": log(1 - D(G(z))), the minimax game's own term (minimised by G);
    "non-saturating": -log D(G(z)). Both are computed from logits (log-sigmoids), never from
    probabilities, so neither overflows when D is certain.

    Raises:
        ValueError: for an unknown ``kind``.
    See: Goodfellow et al. (2014), section 3; chapter "GANs".
    """
    if kind == "non-saturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits), reduction="none")
    if kind == "saturating":
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits), reduction="none")
    raise ValueError(f"generator loss must be one of {GENERATOR_LOSSES}, got {kind!r}")


class GAN(nn.Module):
    """Generator and discriminator, with the alternating update the ``Trainer`` calls.

    ``training_step`` makes one discriminator step and one generator step per batch (fresh noise for
    each, as in the seed); ``loss`` evaluates the same quantities without updating (validation).
    The terms logged, batch means in nats: ``d_loss`` (= -V(D, G) for this batch; log 4 = 1.386 at
    the equilibrium), ``g_loss``, and ``d_real``, ``d_fake`` (mean D(x) on real and generated images;
    both 1/2 at the equilibrium).

    Arguments:
        config: a ``GANConfig``.
    Raises:
        ValueError: from the config, or for a batch of the wrong shape or outside [0, 1].
    """

    def __init__(self, config: GANConfig = GANConfig()):
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def configure_optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """One Adam per network with the trainer's learning rate and ``adam_beta1``."""
        betas = (self.config.adam_beta1, 0.999)
        return {"discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=train.lr, betas=betas),
                "generator": torch.optim.Adam(self.generator.parameters(), lr=train.lr, betas=betas)}

    def _real(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.config.image_shape:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, self.config.image_shape))}), got {tuple(x.shape)}")
        return 2 * x - 1                                             # [0, 1] -> [-1, 1], the range of tanh

    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=next(self.parameters()).device)

    def _discriminator_terms(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict]:
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        return d_loss, {"d_real": torch.sigmoid(real_logits).mean().detach(),
                        "d_fake": torch.sigmoid(fake_logits).mean().detach()}

    def training_step(self, x: Tensor, optimizers: dict) -> tuple[Tensor, dict]:
        """One discriminator step, then one generator step. Returns ``(d_loss, terms)`` (logged only)."""
        real = self._real(x)
        with torch.no_grad():
            fake = self.generator(self._noise(len(x)))
        d_loss, terms = self._discriminator_terms(real, fake)
        optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizers["discriminator"].step()

        g_loss = generator_loss(self.discriminator(self.generator(self._noise(len(x)))), self.config.generator_loss).mean()
        optimizers["generator"].zero_grad(set_to_none=True)
        g_loss.backward()                      # also fills D's gradients, which the next D step clears
        optimizers["generator"].step()
        return d_loss.detach(), {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **terms}

    def loss(self, x: Tensor) -> tuple[Tensor, dict]:
        """The same terms as ``training_step`` on one batch, without updating (for validation)."""
        fake = self.generator(self._noise(len(x)))
        d_loss, terms = self._discriminator_terms(self._real(x), fake)
        g_loss = generator_loss(self.discriminator(fake), self.config.generator_loss).mean()
        return d_loss, {"d_loss": d_loss, "g_loss": g_loss, **terms}

    @torch.no_grad()
    def generate(self, n: int | None = None, z: Tensor | None = None) -> Tensor:
        """Images G(z) in [0, 1], shape (n, C, H, W), for z ~ N(0, I) or the given z (B, Z).

        The generator is put in eval mode (batch norm uses its running statistics) and restored.
        """
        if z is None:
            if n is None:
                raise ValueError("give n or z")
            z = self._noise(n)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected noise of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        was_training = self.generator.training
        self.generator.eval()
        try:
            return (self.generator(z) + 1) / 2
        finally:
            self.generator.train(was_training)
