"""companion.plots: the latent-space tools (shapes, bad input, the explorer's updates)."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from companion.models import VAE, VAEConfig
from companion.plots import LatentExplorer, encode_means, interpolate, latent_scatter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=3, hidden=(32,)))


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)


def test_encode_means(model, images):
    means = encode_means(model, images, batch_size=16)
    assert means.shape == (40, 3) and torch.isfinite(means).all()
    with pytest.raises(TypeError, match="uint8"):
        encode_means(model, images.float())


def test_latent_scatter_projects_larger_latents(model, images):
    labels = torch.arange(40) % 10
    ax = latent_scatter(model, images, labels, classes=tuple("abcdefghij"))
    assert "principal component" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list("abcdefghij")
    with pytest.raises(ValueError, match="labels"):
        latent_scatter(model, images, labels[:5])


def test_interpolate_ends_at_the_two_reconstructions(model, images):
    x = images[:2].float() / 255
    path = interpolate(model, x[0], x[1], steps=6)
    assert path.shape == (6, 1, 28, 28)
    torch.testing.assert_close(path[[0, -1]], model.reconstruct(x))
    with pytest.raises(ValueError, match="steps"):
        interpolate(model, x[0], x[1], steps=1)


def test_latent_explorer_updates_the_picture(model):
    explorer = LatentExplorer(model, dims=[0, 2])
    before = explorer.image()
    explorer.sliders[1].value = 2.5                       # the slider of z[2]
    assert explorer.z.tolist() == [0.0, 0.0, 2.5]
    assert not torch.equal(before, explorer.image())
    assert explorer.png().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="dims"):
        LatentExplorer(model, dims=[3])
    with pytest.raises(ValueError, match="z0"):
        LatentExplorer(model, z0=torch.zeros(2))


def test_show_beta_decoder_maps_draws_three_labelled_rows_with_colour_bars():
    import matplotlib.pyplot as plt

    from companion.plots import show_beta_decoder_maps

    images = torch.rand(4, 1, 28, 28)
    kappa = 10 ** (3 * torch.rand(4, 1, 28, 28))
    fig = show_beta_decoder_maps(images, images.clamp(0.1, 0.9), kappa)
    axes = fig.axes
    assert len(axes) == 3 * 4 + 3                                       # the maps and one colour bar per row
    assert [axes[4 * row].get_ylabel() for row in range(3)] == ["data", "decoder mean m", r"$\log_{10}\kappa$"]
    low, high = axes[8].images[0].get_clim()
    assert low == pytest.approx(kappa.log10().min().item()) and high == pytest.approx(kappa.log10().max().item())
    plt.close(fig)
