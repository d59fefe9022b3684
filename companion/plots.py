"""Figures for the chapters: image grids (torchvision's make_grid), learning curves, latent tools.

Latent-space tools: ``encode_means`` (posterior means of a set of images), ``latent_scatter``
(those means coloured by class), ``interpolate`` (decoded straight lines between two images' codes),
``manifold_latents`` (a grid over a 2-D latent space), and ``LatentExplorer`` (ipywidgets sliders
over z with the decoded image updating; a static picture where no kernel runs).

See: chapter "Training a VAE".
"""

from __future__ import annotations

import io
import os

import matplotlib.pyplot as plt
import torch
from torch import Tensor
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid, save_image

from .data import to_float

__all__ = ["show_grid", "save_grid", "plot_history", "manifold_latents", "encode_means", "latent_scatter",
           "interpolate", "latent_path", "LatentExplorer", "show_beta_decoder_maps"]


def _check_images(images: Tensor) -> Tensor:
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    return images.detach().float().cpu().clamp(0, 1)


def show_grid(images: Tensor, nrow: int = 8, ax=None, title: str | None = None, padding: int = 2):
    """Draw images (N, C, H, W) with values in [0, 1] as one grid on a matplotlib axis.

    Returns:
        The axis. Raises ValueError for a tensor that is not 4-D.
    """
    grid = make_grid(_check_images(images), nrow=nrow, padding=padding, pad_value=1.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * nrow + 0.5, 0.45 * -(-len(images) // nrow) + 0.5))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def save_grid(images: Tensor, path: str | os.PathLike, nrow: int = 8) -> None:
    """Save images (N, C, H, W) in [0, 1] as one PNG grid (torchvision's ``save_image``)."""
    save_image(_check_images(images), str(path), nrow=nrow, padding=2, pad_value=1.0)


def plot_history(history: list[dict], term: str = "elbo", ax=None, label: str = "", **style):
    """Train and validation curves of one logged term against the epoch.

    Arguments:
        history: ``Trainer.fit``'s list of per-epoch dicts.
        term: e.g. "elbo", "kl", "reconstruction" (plotted as ``train/<term>`` and ``val/<term>``).
    Raises:
        KeyError: if the history never logged ``train/<term>``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [r["epoch"] for r in history]
    if not history or f"train/{term}" not in history[0]:
        raise KeyError(f"history has no 'train/{term}'; it logged {sorted(history[0]) if history else 'nothing'}")
    line, = ax.plot(epochs, [r[f"train/{term}"] for r in history], label=f"{label} train".strip(), **style)
    if f"val/{term}" in history[0]:
        ax.plot(epochs, [r[f"val/{term}"] for r in history], "--", color=line.get_color(),
                label=f"{label} validation".strip())
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{term} (nats per image)")
    ax.legend(fontsize=8)
    return ax


def manifold_latents(n: int = 15, quantile: float = 0.05) -> Tensor:
    """An n x n grid of 2-D latents at evenly spaced quantiles of N(0, 1), shape (n*n, 2).

    Row-major with z_2 decreasing down the rows and z_1 increasing along them, so decoding and
    ``show_grid(..., nrow=n)`` draws the plane as a map. Spacing by quantiles (Kingma & Welling,
    2014, figure 4) gives equal prior mass between neighbours.

    Raises:
        ValueError: if n < 2 or quantile is not in (0, 0.5).
    """
    if n < 2 or not 0 < quantile < 0.5:
        raise ValueError(f"need n >= 2 and 0 < quantile < 0.5, got n={n}, quantile={quantile}")
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(quantile, 1 - quantile, n))
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


@torch.no_grad()
def encode_means(model, images: Tensor, *, binarize: bool = False, batch_size: int = 1000) -> Tensor:
    """Posterior means mu(x) of uint8 images (N, C, H, W), shape (N, Z), on the CPU.

    Raises TypeError for images that are not uint8 and ValueError for the wrong image shape.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"encode_means expects uint8 images, got {images.dtype}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        parts = [model.encode(to_float(images[i:i + batch_size].to(device), binarize))[0].cpu()
                 for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def latent_scatter(model, images: Tensor, labels: Tensor, classes: tuple[str, ...] | None = None, ax=None,
                   binarize: bool = False, s: float = 3):
    """Scatter the posterior means of ``images`` coloured by ``labels``.

    For Z = 2 the axes are z_1 and z_2; for larger Z the means are projected on their first two
    principal components (``torch.pca_lowrank``), which the axis labels say.

    Arguments:
        model: a VAE. images: uint8 (N, C, H, W). labels: (N,) class indices. classes: names for the legend.
    Returns:
        The axis. Raises ValueError if labels and images differ in number.
    """
    if len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    means = encode_means(model, images, binarize=binarize)
    if means.shape[1] == 2:
        points, names = means, ("$z_1$", "$z_2$")
    else:
        centred = means - means.mean(0)
        _, _, v = torch.pca_lowrank(centred, q=2, center=False)
        points, names = centred @ v, ("first principal component of $\\mu(x)$", "second principal component")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5))
    scatter = ax.scatter(*points.T.numpy(), c=labels.cpu().numpy(), cmap="tab10", s=s, vmin=-0.5, vmax=9.5)
    handles, values = scatter.legend_elements()
    if classes is not None:
        values = [classes[int(i)] for i in sorted(labels.unique().tolist())]
    ax.legend(handles, values, fontsize=7, markerscale=0.8, loc="upper right", framealpha=0.8)
    ax.set(xlabel=names[0], ylabel=names[1])
    return ax


def latent_path(z_a: Tensor, z_b: Tensor, steps: int = 10, spherical: bool = False) -> Tensor:
    """Points from z_a to z_b (each shape (Z,)): shape (steps, Z).

    Linear: z_a + t (z_b - z_a). Spherical ("slerp", White 2016): the great-circle path, which keeps
    the norm near sqrt(Z), where a Gaussian prior's samples lie; the midpoint of a straight line
    between two samples has a norm near sqrt(Z / 2), a region the generator rarely saw in training.

    Raises:
        ValueError: for steps < 2 or shapes that differ.
    See: chapter "GANs" (the interpolation figure).
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if z_a.shape != z_b.shape or z_a.dim() != 1:
        raise ValueError(f"expected two latents of the same shape (Z,), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    t = torch.linspace(0, 1, steps, device=z_a.device, dtype=z_a.dtype)[:, None]
    if not spherical:
        return z_a + t * (z_b - z_a)
    cos = torch.dot(z_a, z_b) / (z_a.norm() * z_b.norm())
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)


@torch.no_grad()
def interpolate(model, x_a: Tensor, x_b: Tensor, steps: int = 10) -> Tensor:
    """Decode the straight line between the posterior means of two images.

    Arguments:
        model: a VAE. x_a, x_b: float images (C, H, W) or (1, C, H, W) in [0, 1]. steps: points (>= 2).
    Returns:
        (steps, C, H, W): the likelihood's mean at mu(x_a) + t (mu(x_b) - mu(x_a)), t from 0 to 1.
    Raises:
        ValueError: for steps < 2 or images of the wrong shape.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    x = torch.stack([x_a.reshape(-1, *x_a.shape[-3:])[0], x_b.reshape(-1, *x_b.shape[-3:])[0]])
    was_training = model.training
    model.eval()
    try:
        mu, _ = model.encode(x.to(next(model.parameters()).device))
        t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
        return model.generate(z=mu[0] + t * (mu[1] - mu[0]))
    finally:
        model.train(was_training)


class LatentExplorer:
    """Sliders over latent coordinates; the decoded image updates as they move (ipywidgets).

    ``show()`` displays the image for the starting z as an ordinary PNG output and the sliders below
    it; moving a slider replaces that output (an IPython display handle). Where no kernel runs, in
    the rendered book, the PNG stays as a static picture of the starting point.

    Arguments:
        model: a VAE. z0: the starting latent (Z,) (default: zeros, the prior's mode).
        dims: which coordinates get sliders (default: all, up to 8). limit: sliders span [-limit, limit].
        scale: pixels per image pixel in the picture.
    Raises:
        ValueError: for z0 of the wrong size or dims outside 0..Z-1.
    See: chapter "Training a VAE".
    """

    def __init__(self, model, z0: Tensor | None = None, dims=None, limit: float = 3.0, scale: int = 6):
        import ipywidgets as widgets

        self.model, self.scale = model, scale
        latent_dim = model.latent_dim
        self.z = torch.zeros(latent_dim) if z0 is None else z0.detach().flatten().float().cpu().clone()
        if self.z.shape != (latent_dim,):
            raise ValueError(f"z0 must have {latent_dim} entries, got {tuple(self.z.shape)}")
        self.dims = list(range(min(latent_dim, 8))) if dims is None else list(dims)
        if any(not 0 <= d < latent_dim for d in self.dims):
            raise ValueError(f"dims must lie in 0..{latent_dim - 1}, got {self.dims}")
        self.sliders = [widgets.FloatSlider(value=float(self.z[d]), min=-limit, max=limit, step=0.05,
                                            description=f"z[{d}]", continuous_update=True,
                                            layout=widgets.Layout(width="320px")) for d in self.dims]
        for d, slider in zip(self.dims, self.sliders):
            slider.observe(lambda change, d=d: self._move(d, change["new"]), names="value")
        self.handle = None

    @torch.no_grad()
    def image(self) -> Tensor:
        """The decoded mean for the current z, shape (C, H, W), on the CPU."""
        self.model.eval()
        z = self.z.to(next(self.model.parameters()).device)[None]
        return self.model.generate(z=z)[0].clamp(0, 1).cpu()

    def png(self) -> bytes:
        """The current image as PNG bytes, enlarged ``scale`` times (nearest neighbour)."""
        picture = to_pil_image(self.image())
        picture = picture.resize((picture.width * self.scale, picture.height * self.scale), resample=0)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    def _move(self, d: int, value: float) -> None:
        self.z[d] = value
        if self.handle is not None:
            from IPython.display import Image

            self.handle.update(Image(self.png()))

    def show(self) -> None:
        """Display the picture and the sliders (in a notebook)."""
        import ipywidgets as widgets
        from IPython.display import Image, display

        self.handle = display(Image(self.png()), display_id=True)
        display(widgets.VBox(self.sliders))


def show_beta_decoder_maps(images: Tensor, mean: Tensor, concentration: Tensor, *, figsize=(9.5, 4.6)):
    """Three labelled rows for a Beta decoder: the images, the decoder's mean, log10 of its concentration.

    Each row has its own colour scale and a colour bar: the images and means on [0, 1] (grey), the
    concentration kappa on a log10 scale from its smallest to its largest value in the figure (viridis).

    Arguments:
        images, mean, concentration: tensors of shape (B, 1, H, W) (values in [0, 1] for the first two,
            kappa > 0 for the third); one column per image.
        figsize: the figure size in inches.
    Returns:
        The matplotlib figure.
    See: chapter "The Beta likelihood".
    """
    import matplotlib.pyplot as plt

    log_kappa = concentration.detach().double().log10().cpu()
    rows = [("data", images.detach().cpu(), dict(cmap="gray", vmin=0, vmax=1), "pixel value"),
            ("decoder mean m", mean.detach().cpu(), dict(cmap="gray", vmin=0, vmax=1), "m"),
            (r"$\log_{10}\kappa$", log_kappa,
             dict(cmap="viridis", vmin=log_kappa.min().item(), vmax=log_kappa.max().item()), r"$\log_{10}\kappa$")]
    columns = images.shape[0]
    fig, axes = plt.subplots(3, columns, figsize=figsize, squeeze=False)
    for row, (name, values, style, label) in enumerate(rows):
        for col in range(columns):
            shown = axes[row, col].imshow(values[col, 0], **style)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=10)
        fig.colorbar(shown, ax=list(axes[row]), fraction=0.02, pad=0.01, label=label)
    return fig

