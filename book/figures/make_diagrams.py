"""Draw the book's diagrams into book/figures/ (SVG): the VAE, its graphical model, the reparameterization.

    python book/figures/make_diagrams.py            # rewrites the SVG files next to this script
    python book/figures/make_diagrams.py --out DIR  # somewhere else (the tests do this)

The graphical model is drawn with daft-pgm, the library textbooks use for plate diagrams (``pip install
daft-pgm``, in the book extra); the two computation diagrams with matplotlib's patches. The chapters
show the SVG files, so reading or running a chapter needs neither. Output is deterministic (no date in
the metadata, a fixed hash salt), so rerunning the script changes a file only when its drawing changed.

See: chapters "Latent-variable models and the evidence", "The evidence lower bound", "The
reparameterization trick" and "Training a VAE".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HERE = Path(__file__).resolve().parent
BLUE, ORANGE, GREY, RED = "#dbe8f6", "#fde3c8", "#eeeeee", "#c0392b"
plt.rcParams.update({"svg.hashsalt": "vae-course", "font.size": 11, "mathtext.fontset": "cm"})


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return path


def _box(ax, xy, width, height, text, color, fontsize=11, style="round,pad=0.02,rounding_size=0.08"):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle=style,
                                facecolor=color, edgecolor="black", linewidth=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax, start, end, color="black", style="-|>", dashed=False, curve=0.0, width=1.2):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color, linewidth=width,
                                 linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={curve}",
                                 shrinkA=2, shrinkB=2))


def vae_architecture(out: Path) -> Path:
    """Encoder, the two posterior parameters, the noise, the sample, decoder, likelihood, and the two ELBO terms."""
    fig, ax = plt.subplots(figsize=(10.5, 4.2))
    ax.set(xlim=(0, 10.5), ylim=(-0.2, 4.0))
    ax.axis("off")
    _box(ax, (0.6, 2.3), 0.9, 0.75, "image\n$x$", GREY)
    _box(ax, (2.0, 2.3), 1.1, 1.3, "encoder\n$\\phi$", BLUE)
    _box(ax, (3.55, 2.95), 1.1, 0.55, "$\\mu_\\phi(x)$", BLUE)
    _box(ax, (3.55, 1.65), 1.1, 0.55, "$\\log\\sigma^2_\\phi(x)$", BLUE)
    _box(ax, (5.05, 3.55), 1.3, 0.5, "$\\varepsilon \\sim \\mathcal{N}(0, I)$", GREY)
    _box(ax, (5.05, 2.3), 1.55, 0.7, "$z = \\mu + \\sigma \\odot \\varepsilon$", ORANGE)
    _box(ax, (6.75, 2.3), 1.1, 1.3, "decoder\n$\\theta$", ORANGE)
    _box(ax, (8.75, 2.3), 1.85, 0.8, "$p_\\theta(x \\mid z)$\none logit per pixel", ORANGE, fontsize=10)
    for start, end in (((1.05, 2.3), (1.45, 2.3)), ((2.55, 2.55), (3.0, 2.95)), ((2.55, 2.05), (3.0, 1.65)),
                       ((4.1, 2.95), (4.3, 2.45)), ((4.1, 1.65), (4.3, 2.15)), ((5.05, 3.3), (5.05, 2.65)),
                       ((5.83, 2.3), (6.2, 2.3)), ((7.3, 2.3), (7.82, 2.3))):
        _arrow(ax, start, end)
    ax.text(2.0, 3.45, "$q_\\phi(z \\mid x) = \\mathcal{N}(\\mu_\\phi(x), \\operatorname{diag}\\sigma^2_\\phi(x))$",
            ha="center", va="center", fontsize=10)
    # The two terms of the ELBO, and the image entering the reconstruction term.
    _box(ax, (8.75, 0.75), 2.2, 0.75, "reconstruction\n$\\log p_\\theta(x \\mid z)$", "white", fontsize=10)
    _box(ax, (3.55, 0.75), 2.6, 0.75, "$\\mathrm{KL}(q_\\phi(z \\mid x) \\,\\|\\, p(z))$\nin closed form", "white",
         fontsize=10)
    _arrow(ax, (8.75, 1.9), (8.75, 1.13))
    _arrow(ax, (3.55, 1.37), (3.55, 1.13))
    ax.text(6.15, 0.75, "ELBO $=$ reconstruction $-$ KL", ha="center", va="center", fontsize=11)
    ax.plot([0.6, 0.6, 10.0, 10.0], [1.92, -0.05, -0.05, 0.45], color="0.4", linestyle="--", linewidth=1.1)
    _arrow(ax, (10.0, 0.45), (9.86, 0.6), color="0.4", dashed=True)
    ax.text(5.3, 0.08, "the image $x$ itself is scored under the decoder's distribution", ha="center",
            fontsize=9, color="0.35")
    return _save(fig, out / "vae_architecture.svg")


def graphical_model(out: Path) -> Path:
    """Kingma & Welling's figure 1: z -> x with generative theta (solid) and inference phi (dashed), plate N."""
    import daft

    pgm = daft.PGM(grid_unit=1.9, node_unit=1.1)
    pgm.add_node("phi", r"$\phi$", 0.1, 2.1, fixed=True, offset=(-10, 0))
    pgm.add_node("z", r"$z_n$", 1.3, 2.1)
    pgm.add_node("x", r"$x_n$", 1.3, 0.8, observed=True)
    pgm.add_node("theta", r"$\theta$", 2.55, 0.8, fixed=True, offset=(10, 0))
    pgm.add_edge("z", "x")
    pgm.add_edge("theta", "x")
    pgm.add_edge("phi", "z", plot_params={"linestyle": "--", "color": "0.35"})
    pgm.add_plate([0.6, 0.05, 1.45, 2.65], label=r"$n = 1, \dots, N$", position="bottom right", fontsize=9)
    pgm.render()
    # The encoder's arrow x -> z, curved to the left of the generative one (daft draws straight edges only).
    ctx = pgm._ctx
    start, end = ctx.convert(1.05, 0.98), ctx.convert(1.05, 1.92)
    pgm.ax.add_patch(FancyArrowPatch(tuple(start), tuple(end), arrowstyle="-|>", mutation_scale=10, color="0.35",
                                     linestyle="--", connectionstyle="arc3,rad=0.45", linewidth=1.0))
    fig = pgm.figure
    fig.text(0.5, -0.12, "solid: the generative model $p(z)\\,p_\\theta(x \\mid z)$\n"
             "dashed: the encoder's approximate posterior $q_\\phi(z \\mid x)$", ha="center", va="top", fontsize=9)
    return _save(fig, out / "graphical_model.svg")


def reparameterization(out: Path) -> Path:
    """Left: z sampled from N(mu, sigma^2) blocks the gradient. Right: z = mu + sigma eps lets it through."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    titles = ("sampling $z \\sim \\mathcal{N}(\\mu, \\sigma^2)$ directly",
              "reparameterized: $z = \\mu + \\sigma\\,\\varepsilon$")
    for ax, title in zip(axes, titles):
        ax.set(xlim=(0, 5), ylim=(0, 4))
        ax.axis("off")
        ax.set_title(title, fontsize=11)
        _box(ax, (0.7, 2.0), 0.9, 0.6, "$\\phi$", BLUE)
        _box(ax, (2.0, 2.8), 0.8, 0.5, "$\\mu$", BLUE)
        _box(ax, (2.0, 1.2), 0.8, 0.5, "$\\sigma$", BLUE)
        _box(ax, (4.3, 2.0), 0.9, 0.6, "$f(z)$", "white")
        _arrow(ax, (1.15, 2.15), (1.6, 2.7))
        _arrow(ax, (1.15, 1.85), (1.6, 1.3))
    left, right = axes
    _box(left, (3.2, 2.0), 0.85, 0.85, "$z$", ORANGE, style="circle,pad=0.1")
    _arrow(left, (2.4, 2.8), (2.8, 2.2))
    _arrow(left, (2.4, 1.2), (2.8, 1.8))
    _arrow(left, (3.65, 2.0), (3.85, 2.0))
    _arrow(left, (3.85, 2.35), (3.5, 2.55), color=RED, dashed=True, curve=0.3)
    left.text(3.2, 3.35, "random node:\n$\\partial z / \\partial \\mu$ is not defined", ha="center", fontsize=9,
              color=RED)
    left.text(2.6, 0.35, "gradient stops at the sample", ha="center", fontsize=9, color=RED)
    _box(right, (3.2, 2.0), 0.85, 0.85, "$z$", ORANGE, style="round,pad=0.05")
    _box(right, (3.2, 3.45), 1.0, 0.5, "$\\varepsilon \\sim \\mathcal{N}(0, 1)$", GREY, fontsize=9)
    _arrow(right, (3.2, 3.2), (3.2, 2.45))
    _arrow(right, (2.4, 2.8), (2.8, 2.2))
    _arrow(right, (2.4, 1.2), (2.8, 1.8))
    _arrow(right, (3.65, 2.0), (3.85, 2.0))
    for start, end in (((3.85, 1.75), (3.45, 1.55)), ((2.75, 1.6), (2.35, 1.05)), ((2.75, 2.35), (2.35, 2.95)),
                       ((1.6, 1.05), (1.1, 1.6)), ((1.6, 2.95), (1.1, 2.4))):
        _arrow(right, start, end, color=RED, dashed=True, curve=-0.25)
    right.text(2.6, 0.35, "gradients flow back through $\\mu$ and $\\sigma$", ha="center", fontsize=9, color=RED)
    right.text(4.2, 3.45, "noise is an input,\nnot a node to\ndifferentiate", ha="left", va="center", fontsize=8.5,
               color="0.35")
    fig.text(0.5, 0.06, "black: the forward computation;  red dashed: the backward pass (gradients)", ha="center",
             fontsize=9)
    return _save(fig, out / "reparameterization.svg")


DIAGRAMS = (vae_architecture, graphical_model, reparameterization)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the SVG files to (default: here)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = [draw(args.out) for draw in DIAGRAMS]
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
