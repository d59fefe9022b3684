"""companion.models.flow: inversion, log-determinants against autograd, a density that integrates to 1.

The log-det tests compare each layer's log |det J| with ``torch.linalg.slogdet`` of the Jacobian
that autograd computes on small inputs (chapter "Normalizing flows", the change of variables).
"""

import math

import pytest
import torch

from companion.models.flow import (AffineCoupling, FlowConfig, LogitTransform, RealNVP, SequentialFlow, Squeeze,
                                   channel_mask, checkerboard_mask, coupling_net, dequantize, mlp_coupling_net)


def _perturb(module, scale=0.1, seed=0):
    """Zero-initialised couplings are the identity; random weights make the tests meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _layers():
    shape = (2, 4, 4)
    return {
        "checkerboard": AffineCoupling(checkerboard_mask(shape, 0), coupling_net(2, 8, 1)),
        "checkerboard-odd": AffineCoupling(checkerboard_mask(shape, 1), coupling_net(2, 8, 1)),
        "channel": AffineCoupling(channel_mask(shape, 0), coupling_net(2, 8, 1)),
        "channel-second": AffineCoupling(channel_mask(shape, 1), coupling_net(2, 8, 1)),
        "squeeze": Squeeze(),
        "logit": LogitTransform(0.05),
    }


def _log_abs_det_autograd(layer, x):
    """slogdet of the autograd Jacobian of one example's output with respect to its input."""
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, *x.shape))[0].flatten(), x.flatten())
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    return logabs


@pytest.mark.parametrize("name", list(_layers()))
def test_each_layer_log_det_equals_autograd_jacobian(name):
    layer = _perturb(_layers()[name]).double()
    torch.manual_seed(1)
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    _, log_det = layer(x)
    assert log_det.shape == (3,)
    for i in range(3):
        assert log_det[i].item() == pytest.approx(_log_abs_det_autograd(layer, x[i]).item(), abs=1e-9)


@pytest.mark.parametrize("name", list(_layers()))
@pytest.mark.parametrize("batch", [1, 5])
def test_each_layer_inverts(name, batch):
    layer = _perturb(_layers()[name]).double()
    x = torch.rand(batch, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.9 + 0.05
    y, _ = layer(x)
    assert (layer.inverse(y) - x).abs().max().item() < 1e-10


@pytest.mark.parametrize("scales", [1, 2, 3])
def test_realnvp_inverts_within_1e_5_and_its_log_det_matches_autograd(scales):
    model = _perturb(RealNVP(FlowConfig(image_shape=(1, 8, 8), scales=scales, hidden=8, blocks=1)), 0.05).double()
    y = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.98 + 0.01
    z, log_det = model(y)
    assert z.shape == (4, 64)
    assert (model.inverse(z) - y).abs().max().item() < 1e-5
    assert log_det[0].item() == pytest.approx(_log_abs_det_autograd(model, y[0]).item(), abs=1e-8)


def test_realnvp_at_initialisation_is_the_logit_transform_alone():
    """Zero-initialised couplings are the identity, so log p(y) is N(logit(y)) times the logit's Jacobian."""
    model = RealNVP(FlowConfig(image_shape=(1, 4, 4), hidden=4, blocks=0)).double()
    y = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    x, ld = LogitTransform(model.config.alpha)(y)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1) + ld
    assert torch.allclose(model.log_prob(y), expected, atol=1e-10)


def test_toy_density_integrates_to_one():
    """A 2-D flow of four MLP couplings: the trapezoid rule on an 801 x 801 grid over [-10, 10]^2 gives 1."""
    torch.manual_seed(0)
    flow = SequentialFlow(*[AffineCoupling(torch.tensor([[1.0, 0.0]]) if i % 2 == 0 else torch.tensor([[0.0, 1.0]]),
                                           mlp_coupling_net(2, 32)) for i in range(4)])
    flow = _perturb(flow, 0.2).double()
    grid = torch.linspace(-10, 10, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    with torch.no_grad():
        density = flow.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().view(801, 801)
    total = torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid).item()
    assert total == pytest.approx(1.0, abs=1e-3)
    # and the flow is not the identity: the density differs from the standard normal's
    normal = torch.exp(-(xx ** 2 + yy ** 2) / 2) / (2 * math.pi)
    assert (density - normal).abs().max().item() > 1e-2


def test_loss_is_bits_per_dim_on_the_0_255_scale():
    model = RealNVP(FlowConfig(image_shape=(1, 4, 4), hidden=4, blocks=0))
    x = torch.randint(0, 256, (8, 1, 4, 4)).float() / 255
    torch.manual_seed(5)
    loss, terms = model.loss(x)
    torch.manual_seed(5)
    y = dequantize(x)
    expected = -(model.log_prob(y) - 16 * math.log(256)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["bits_per_dim"].item() == pytest.approx(expected.item() / (16 * math.log(2)), rel=1e-6)


def test_dequantize_stays_in_the_cell_of_each_grey_level():
    k = torch.arange(256).float().view(1, 1, 16, 16)
    y = dequantize(k / 255)
    assert ((y * 256).floor() == k).all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="float"):
        dequantize(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="grey levels"):
        dequantize(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        LogitTransform(0.5)
    with pytest.raises(ValueError, match="even"):
        channel_mask((3, 4, 4))
    with pytest.raises(ValueError, match="divisible"):
        FlowConfig(image_shape=(1, 28, 28), scales=4)
    model = RealNVP(FlowConfig(image_shape=(1, 4, 4), hidden=4, blocks=0))
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match="latents"):
        model.inverse(torch.randn(2, 15))


def test_samples_are_images_in_the_unit_interval():
    model = RealNVP(FlowConfig(image_shape=(1, 8, 8), hidden=4, blocks=0))
    images = model.generate(6)
    assert images.shape == (6, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
