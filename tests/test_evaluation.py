"""companion.evaluation: shapes, bad input, and agreement between the estimators and the grid."""

import math

import pytest
import torch

from companion import evaluation
from companion.models import VAE, VAEConfig


@pytest.fixture(scope="module")
def model_2d():
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=2, hidden=(32,), likelihood="gaussian", likelihood_options={"sigma": 0.5})).eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(3, 1, 28, 28)


def test_log_mean_exp_is_stable():
    a = torch.tensor([[-1000.0, -1001.0], [800.0, 800.0]], dtype=torch.float64)
    expected = torch.tensor([-1000 + math.log((1 + math.exp(-1)) / 2), 800.0], dtype=torch.float64)
    torch.testing.assert_close(evaluation.log_mean_exp(a, 1), expected)


def test_log_likelihood_matrix_matches_pairwise_log_probs(model_2d, images):
    z = torch.randn(2500, 2)  # more than one chunk
    matrix = evaluation.log_likelihood_matrix(model_2d, images, z, chunk=1000)
    assert matrix.shape == (3, 2500) and torch.isfinite(matrix).all()
    pairwise = model_2d.likelihood.log_prob(images[1:2].expand(5, -1, -1, -1), model_2d.decode(z[1998:2003]))
    torch.testing.assert_close(matrix[1, 1998:2003], pairwise)


def test_estimator_shapes_and_bad_input(model_2d, images):
    g = torch.Generator().manual_seed(0)
    assert evaluation.log_evidence_prior(model_2d, images, 10, 4, generator=g).shape == (3, 4)
    assert evaluation.log_evidence_importance(model_2d, images, 10, 4, generator=g).shape == (3, 4)
    for fn in (evaluation.log_evidence_prior, evaluation.log_evidence_importance):
        with pytest.raises(ValueError):
            fn(model_2d, images, 0)
    with pytest.raises(ValueError, match="two-dimensional"):
        evaluation.log_evidence_grid(VAE(VAEConfig(latent_dim=3, hidden=(8,))), images)
    with pytest.raises(ValueError):
        evaluation.log_likelihood_matrix(model_2d, torch.rand(3, 784), torch.randn(4, 2))


def test_estimators_agree_with_grid_integration(model_2d, images):
    """Both estimators are consistent: with many samples they approach the grid value, from below on average."""
    g = torch.Generator().manual_seed(2)
    grid = evaluation.log_evidence_grid(model_2d, images, points=301, width=12)
    finer = evaluation.log_evidence_grid(model_2d, images, points=401, width=16)
    torch.testing.assert_close(grid, finer, atol=1e-3, rtol=0)
    importance = evaluation.log_evidence_importance(model_2d, images, 2000, 10, generator=g)
    assert ((importance.mean(1) - grid).abs() < 0.05).all()
    one_sample = evaluation.log_evidence_importance(model_2d, images, 1, 400, generator=g).mean(1)
    assert (one_sample < grid).all()  # Jensen: the one-sample bound (the ELBO) lies below log p(x)
