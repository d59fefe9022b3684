"""Draw the course's teaser figure (book/figures/teaser.png) from the recorded full runs in book/results.

    python book/figures/make_teaser.py            # rewrites teaser.png next to this script
    python book/figures/make_teaser.py --out DIR  # somewhere else

The figure composes image grids that ``python -m companion reproduce`` saved with each recorded run
(no model is loaded or run): a VAE's reconstructions of test digits and its samples (run
``vae-mlp-mnist``, chapters "Training a VAE" and "Evaluating a VAE"), the decoded 2-D latent plane
(``vae-mlp-mnist-z2``), and samples of the GAN and the normalizing flow of chapter "Head to head"
(``h2h-gan-mnist``, ``h2h-flow-mnist``). Output is deterministic for a given matplotlib (no
software or date in the PNG's metadata), so rerunning the script changes the file only when an
input grid or the drawing changed.

See: the book's introduction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
#: Grid cell of the saved image grids: a 28-pixel image plus torchvision's 2-pixel padding.
CELL, PAD = 30, 2

#: The four square panels of the bottom row: (run, file, title).
PANELS = (
    ("vae-mlp-mnist", "samples.png", "VAE: samples\n(chapters 8, 9)"),
    ("vae-mlp-mnist-z2", "manifold.png", "VAE with 2 latents:\nthe decoded latent plane (ch. 8)"),
    ("h2h-gan-mnist", "samples.png", "GAN: samples\n(chapters 15, 17)"),
    ("h2h-flow-mnist", "samples.png", "normalizing flow: samples\n(chapters 16, 17)"),
)


def _grid(run: str, name: str):
    path = RESULTS / run / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: record the run with `python -m companion reproduce {run}`")
    return mpimg.imread(path)


#: Rows and columns of the 20 x 20 latent plane shown in the teaser: every third one, symmetric about
#: the centre (grid indices 2, 5, ..., 17 of quantiles 0.05 ... 0.95 of N(0, 1), i.e. z from -1.06 to
#: 1.06), so that the 6 x 6 digits are readable at page width.
PLANE_SIZE, PLANE_KEEP = 20, range(2, 18, 3)


def _subgrid(grid, keep):
    """The cells ``keep`` x ``keep`` of a saved image grid, re-assembled with the same padding."""
    n, size = len(keep), CELL - PAD
    out = np.empty((n * CELL + PAD, n * CELL + PAD, grid.shape[2]), dtype=grid.dtype)
    out[...] = grid[0, 0]  # the padding colour
    for i, row in enumerate(keep):
        for j, col in enumerate(keep):
            out[PAD + i * CELL:PAD + i * CELL + size, PAD + j * CELL:PAD + j * CELL + size] = \
                grid[PAD + row * CELL:PAD + row * CELL + size, PAD + col * CELL:PAD + col * CELL + size]
    return out


def teaser(out: Path) -> Path:
    """Top: 16 binarised test digits and the VAE's reconstructions. Bottom: samples and the latent plane."""
    fig = plt.figure(figsize=(10, 4.7))
    spec = fig.add_gridspec(2, 4, height_ratios=(1, 1.85), hspace=0.3, wspace=0.12)
    top = fig.add_subplot(spec[0, :])
    pairs = _grid("vae-mlp-mnist", "reconstructions.png")[: 2 * CELL + PAD]  # rows: images, reconstructions
    top.imshow(pairs, interpolation="nearest")
    top.set_xticks([])
    top.set_yticks([PAD + 14, CELL + PAD + 14], ["test digit", "reconstruction"], fontsize=9)
    top.tick_params(length=0)
    top.set_title("VAE (784-500-500-50, Bernoulli decoder): test digits and their reconstructions",
                  fontsize=10)
    for column, (run, name, title) in enumerate(PANELS):
        ax = fig.add_subplot(spec[1, column])
        grid = _grid(run, name)
        if name == "manifold.png":
            assert grid.shape[0] == PLANE_SIZE * CELL + PAD, grid.shape
            grid = _subgrid(grid, PLANE_KEEP)
        ax.imshow(grid, interpolation="antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
        if name == "manifold.png":  # companion.plots.manifold_latents: z_1 to the right, z_2 upwards
            ax.set_xlabel("$z_1$: $-1.06 \\to 1.06$ (prior 14% to 86%)", fontsize=8)
            ax.set_ylabel("$z_2$ (upwards)", fontsize=8)
    path = out / "teaser.png"
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write teaser.png to (default: here)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = teaser(args.out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
