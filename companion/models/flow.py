"""A normalizing flow: RealNVP's affine couplings, multi-scale, on dequantized and logit-transformed pixels.

A flow is an invertible map f from data y to latents z = f(y) with z ~ N(0, I); the change of
variables gives the exact log-density

    log p(y) = log N(f(y); 0, I) + sum_l log |det J_l|,

the sum running over the layers of f. Every layer here returns ``(output, log_det)`` with log_det of
shape (B,), in nats, and has an ``inverse``.

- ``AffineCoupling(mask, net)``: y = x * exp(s) + t on the unmasked entries, where s and t are
  computed by ``net`` from the masked entries only, so the Jacobian is triangular and its log-det is
  the sum of s. A checkerboard mask alternates pixels, a channel mask alternates channels; one class
  does both (and the 2-D toy flows of the chapter).
- ``Squeeze``: (C, H, W) -> (4C, H/2, W/2), a permutation (log-det 0).
- ``LogitTransform``: y in (0, 1) -> logit(a + (1 - 2a) y), with its exact log-det.
- ``RealNVP``: the multi-scale architecture of Dinh et al. (2017): per scale, three checkerboard
  couplings, a squeeze, three channel couplings and half the channels factored out; four
  checkerboard couplings at the last scale.

Data: 8-bit images k in {0..255} become y = (k + u) / 256 with u ~ U[0, 1)^D (uniform
dequantization). The density of y is a density on [0, 1]^D; E_u[log p(y)] - D log 256 is a lower
bound on the log-probability of the discrete image (Theis et al., 2016), so the loss and the
reported bits/dim are upper bounds on the discrete negative log-likelihood, on the 0..255 scale of
the literature: bits/dim = -(log p(y) - D log 256) / (D log 2).

See: Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP"; Theis, van den Oord
& Bethge (2016) for dequantization; chapter "Normalizing flows".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..likelihoods import can_read_values

__all__ = ["FlowConfig", "AffineCoupling", "SequentialFlow", "Squeeze", "LogitTransform", "RealNVP", "checkerboard_mask",
           "channel_mask", "coupling_net", "mlp_coupling_net", "dequantize"]


def checkerboard_mask(shape: tuple[int, ...], parity: int = 0) -> Tensor:
    """A (1, C, H, W) float mask of 1s on pixels with (i + j) % 2 == parity, the same on every channel."""
    c, h, w = shape
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((i + j) % 2 == parity).float().expand(c, h, w).unsqueeze(0).contiguous()


def channel_mask(shape: tuple[int, ...], parity: int = 0) -> Tensor:
    """A (1, C, H, W) float mask of 1s on the first half of the channels (parity 0) or the second (1)."""
    c, h, w = shape
    if c % 2:
        raise ValueError(f"a channel mask needs an even number of channels, got {c}")
    first = torch.zeros(c)
    first[: c // 2] = 1
    mask = first if parity == 0 else 1 - first
    return mask.view(1, c, 1, 1).expand(1, c, h, w).contiguous()


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                 nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def coupling_net(channels: int, hidden: int, blocks: int) -> nn.Module:
    """The convolutional s, t network: (B, C, H, W) -> (B, 2C, H, W), a small ResNet.

    Its last convolution starts at zero, so every coupling starts as the identity (s = t = 0), a
    common trick that makes deep flows trainable from the first step.
    """
    last = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), *[_ResidualBlock(hidden) for _ in range(blocks)],
                         nn.ReLU(), last)


def mlp_coupling_net(dim: int, hidden: int = 64) -> nn.Module:
    """An s, t network for vectors: (B, dim) -> (B, 2 dim) (the chapter's 2-D toy flows)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * dim))


class AffineCoupling(nn.Module):
    """y = m * x + (1 - m) * (x * exp(s) + t), with (s, t) = net(m * x) and m a fixed 0/1 mask.

    The masked entries pass unchanged and decide the scale and shift of the others, so the Jacobian
    dy/dx is triangular (after a permutation) with diagonal 1 on the masked entries and exp(s) on the
    rest: log |det| = sum over unmasked entries of s. The inverse, x = (y - t) * exp(-s) on the
    unmasked entries, needs no inverse of ``net``. The raw output is squashed as
    s = c * tanh(raw / c) with a learned bound c > 0 per entry (``exp(log_scale_limit)``, 1 at the
    start), which keeps exp(s) bounded early in training and is the identity near 0.

    Arguments:
        mask: 0/1 tensor broadcastable to the inputs' shape without the batch, e.g. (1, C, H, W) or (1, D).
        net: maps masked inputs (B, ...) to (B, 2 * channels, ...), the raw s and t stacked on dim 1.
    Shapes: x (B, C, H, W) or (B, D) -> (y of the same shape, log_det (B,)) in nats.
    See: Dinh et al. (2017), section 3.3 and 3.4; chapter "Normalizing flows".
    """

    def __init__(self, mask: Tensor, net: nn.Module):
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = net
        self.log_scale_limit = nn.Parameter(torch.zeros(mask.shape[1:]))

    def _scale_shift(self, masked: Tensor) -> tuple[Tensor, Tensor]:
        raw_s, t = self.net(masked).chunk(2, dim=1)
        limit = self.log_scale_limit.exp()
        s = limit * torch.tanh(raw_s / limit)                         # |s| < limit, s ~ raw_s near 0
        free = 1 - self.mask
        return s * free, t * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(x * self.mask)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self._scale_shift(y * self.mask)                      # y * mask = x * mask
        return (y - t) * torch.exp(-s)


class SequentialFlow(nn.Module):
    """A stack of flow layers on vectors (B, D) with a standard normal base: the chapter's 2-D toys.

    ``forward(x) -> (z, log_det)``, ``inverse(z) -> x``, ``log_prob(x)`` in nats, shape (B,).
    """

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def log_prob(self, x: Tensor) -> Tensor:
        z, log_det = self(x)
        return _standard_normal_log_prob(z) + log_det


def _standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z ** 2).flatten(1).sum(1) - 0.5 * z[0].numel() * math.log(2 * math.pi)


class Squeeze(nn.Module):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2 x 2 block of pixels becomes four channels (log-det 0)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, y: Tensor) -> Tensor:
        b, c4, h, w = y.shape
        c = c4 // 4
        y = y.view(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(b, c, 2 * h, 2 * w)


class LogitTransform(nn.Module):
    """y in (0, 1) -> logit(a + (1 - 2a) y), so that a flow on R^D can model bounded pixels.

    Shrinking by a keeps the logit finite at y = 0 and 1. The exact log-det per example is
    sum_i [log(1 - 2a) - log(p_i) - log(1 - p_i)] with p = a + (1 - 2a) y.

    Arguments:
        alpha: a in [0, 1/2); this form with a = 1e-6 for MNIST and 0.05 for CIFAR-10 is masked
            autoregressive flow's (Papamakarios et al. 2017). Dinh et al. (2017, section 4.1) use
            logit(a + (1 - a) y) with a = 0.05 on their datasets (CIFAR-10, ImageNet, LSUN, CelebA;
            they report no MNIST result).
    """

    def __init__(self, alpha: float = 1e-6):
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * y
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        log_det = (math.log(1 - 2 * self.alpha) - log_p - log_1mp).flatten(1).sum(1)
        return log_p - log_1mp, log_det

    def inverse(self, x: Tensor) -> Tensor:
        return (torch.sigmoid(x) - self.alpha) / (1 - 2 * self.alpha)


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Grey levels x = k / 255 in [0, 1] -> y = (k + u) / 256 with u ~ U[0, 1), same shape.

    Raises:
        ValueError: if ``x`` is not a float tensor of values k / 255 in [0, 1] (up to rounding). The
            value check reads back to the host, so it is skipped while a CUDA graph is captured
            (``companion.likelihoods.can_read_values``).
    """
    if not torch.is_floating_point(x):
        raise ValueError(f"dequantize expects float images k / 255 (companion.data.to_float), got {x.dtype}")
    k = torch.round(x * 255)
    if can_read_values() and ((x < 0).any() or (x > 1).any() or (k - x * 255).abs().max() > 1e-3):
        raise ValueError("dequantize expects grey levels k / 255 in [0, 1] (8-bit images, not binarised or noisy)")
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (k + u) / 256


@dataclass(frozen=True)
class FlowConfig:
    """Settings of a RealNVP. Serialised next to every result it produces.

    Attributes:
        image_shape: (C, H, W); H and W must be divisible by 2 ** (scales - 1).
        scales: number of scales; each but the last squeezes and factors out half the channels
            (2 for 28 x 28 MNIST: 1 x 28 x 28 -> 2 x 14 x 14 kept -> four final couplings).
        hidden: channels of the coupling networks.
        blocks: residual blocks per coupling network.
        alpha: the logit transform's a.
    """

    image_shape: tuple[int, ...] = (1, 28, 28)
    scales: int = 2
    hidden: int = 64
    blocks: int = 4
    alpha: float = 1e-6

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(self.image_shape))
        if self.scales < 1 or self.hidden < 1 or self.blocks < 0:
            raise ValueError(f"need scales >= 1, hidden >= 1, blocks >= 0; got {self.scales}, {self.hidden}, {self.blocks}")
        factor = 2 ** (self.scales - 1)
        if any(side % factor for side in self.image_shape[1:]):
            raise ValueError(f"image sides {self.image_shape[1:]} must be divisible by 2 ** (scales - 1) = {factor}")

    @property
    def num_pixels(self) -> int:
        return math.prod(self.image_shape)

    @property
    def name(self) -> str:
        return f"realnvp-{self.scales}x{self.hidden}x{self.blocks}"


class _Scale(SequentialFlow):
    """Three checkerboard couplings; then (all but the last scale) squeeze and three channel couplings."""

    def __init__(self, shape: tuple[int, int, int], config: FlowConfig, last: bool):
        c, h, w = shape
        net = lambda ch: coupling_net(ch, config.hidden, config.blocks)   # noqa: E731
        layers: list[nn.Module] = [AffineCoupling(checkerboard_mask(shape, i % 2), net(c)) for i in range(4 if last else 3)]
        if not last:
            squeezed = (4 * c, h // 2, w // 2)
            layers.append(Squeeze())
            layers += [AffineCoupling(channel_mask(squeezed, i % 2), net(4 * c)) for i in range(3)]
        super().__init__(*layers)


class RealNVP(nn.Module):
    """The multi-scale RealNVP of Dinh et al. (2017) for images, with its own dequantization and loss.

    ``forward(y)`` maps y in (0, 1)^D (shape (B, C, H, W)) through the logit transform and the scales
    to z (B, D), the factored-out parts concatenated, and returns ``(z, log_det)``; ``inverse(z)``
    goes back; ``log_prob(y)`` is the exact log-density of y on [0, 1]^D in nats, shape (B,).

    ``loss(x)`` takes grey levels x = k / 255 (what ``companion.data.Batches`` yields), dequantizes
    them and returns the batch mean of -(log p(y) - D log 256), an upper bound on the discrete
    negative log-likelihood in nats per image; the terms logged are ``nll`` (nats) and
    ``bits_per_dim``.

    Arguments:
        config: a ``FlowConfig``.
    Raises:
        ValueError: from the config, or for inputs of the wrong shape.
    See: Dinh et al. (2017); chapter "Normalizing flows".
    """

    def __init__(self, config: FlowConfig = FlowConfig()):
        super().__init__()
        self.config = config
        self.logit = LogitTransform(config.alpha)
        shapes, scales = [], []
        c, h, w = config.image_shape
        for i in range(config.scales):
            last = i == config.scales - 1
            scales.append(_Scale((c, h, w), config, last))
            shapes.append((c, h, w))
            if not last:
                c, h, w = 2 * c, h // 2, w // 2       # squeeze (4c) then keep half (2c)
        self.scales = nn.ModuleList(scales)
        self.shapes = shapes

    @property
    def num_pixels(self) -> int:
        return self.config.num_pixels

    def _check(self, y: Tensor) -> None:
        if tuple(y.shape[1:]) != self.config.image_shape:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, self.config.image_shape))}), got {tuple(y.shape)}")

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """y (B, C, H, W) in (0, 1) -> z (B, D) and log |det dz/dy| (B,) in nats."""
        self._check(y)
        x, log_det = self.logit(y)
        parts = []
        for i, scale in enumerate(self.scales):
            x, ld = scale(x)
            log_det = log_det + ld
            if i < len(self.scales) - 1:
                out, x = x.chunk(2, dim=1)             # factor out half the channels
                parts.append(out.flatten(1))
        parts.append(x.flatten(1))
        return torch.cat(parts, dim=1), log_det

    def inverse(self, z: Tensor) -> Tensor:
        """z (B, D) -> y (B, C, H, W) in (0, 1)."""
        if z.dim() != 2 or z.shape[1] != self.num_pixels:
            raise ValueError(f"expected latents of shape (B, {self.num_pixels}), got {tuple(z.shape)}")
        sizes = []
        for i, (c, h, w) in enumerate(self.shapes[:-1]):
            sizes.append(2 * c * (h // 2) * (w // 2))
        c, h, w = self.shapes[-1]
        chunks = list(torch.split(z, [*sizes, c * h * w], dim=1))
        x = chunks[-1].view(-1, c, h, w)
        for i in reversed(range(len(self.scales))):
            if i < len(self.scales) - 1:
                c, h, w = self.shapes[i]
                out = chunks[i].view(-1, 2 * c, h // 2, w // 2)
                x = torch.cat([out, x], dim=1)
            x = self.scales[i].inverse(x)
        return self.logit.inverse(x)

    def log_prob(self, y: Tensor) -> Tensor:
        """Exact log-density of y in (0, 1)^D under the flow, in nats, shape (B,)."""
        z, log_det = self(y)
        return _standard_normal_log_prob(z) + log_det

    def nll(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Upper bound on -log P(k) of 8-bit images x = k / 255, one dequantization draw, nats, shape (B,)."""
        return -(self.log_prob(dequantize(x, generator)) - self.num_pixels * math.log(256))

    def loss(self, x: Tensor) -> tuple[Tensor, dict]:
        """Batch mean of ``nll`` (nats per image); terms ``nll`` and ``bits_per_dim``."""
        nll = self.nll(x).mean()
        return nll, {"nll": nll.detach(), "bits_per_dim": nll.detach() / (self.num_pixels * math.log(2))}

    @torch.no_grad()
    def generate(self, n: int | None = None, z: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        """Images y = f^{-1}(temperature * z), z ~ N(0, I), shape (n, C, H, W) in [0, 1]."""
        if z is None:
            if n is None:
                raise ValueError("give n or z")
            z = torch.randn(n, self.num_pixels, device=next(self.parameters()).device)
        return self.inverse(temperature * z).clamp(0, 1)
