"""Figures for the chapters: image grids (torchvision's make_grid), learning curves, latent manifolds.

See: chapter "Training a VAE".
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

__all__ = ["show_grid", "save_grid", "plot_history", "manifold_latents"]


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
