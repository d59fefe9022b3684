"""companion.estimators: shapes, bad input, and the variance ordering the chapter reports."""

import pytest
import torch

from companion.estimators import pathwise_gradient, score_function_gradient

F = lambda z: (z - 3) ** 2 + torch.exp(z / 2)


@pytest.mark.parametrize("estimator", [score_function_gradient, pathwise_gradient])
def test_shapes_and_dtype(estimator):
    out = estimator(F, 0.5, 1.2, samples=7, repeats=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, 2) and out.dtype == torch.float64 and torch.isfinite(out).all()


@pytest.mark.parametrize("estimator", [score_function_gradient, pathwise_gradient])
@pytest.mark.parametrize("sigma, samples", [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bad_input(estimator, sigma, samples):
    with pytest.raises(ValueError):
        estimator(F, 0.0, sigma, samples=samples)


def test_pathwise_has_lower_variance_on_this_objective():
    g = torch.Generator().manual_seed(1)
    score = score_function_gradient(F, 0.5, 1.2, samples=10, repeats=5000, generator=g)
    path = pathwise_gradient(F, 0.5, 1.2, samples=10, repeats=5000, generator=g)
    assert (path.var(0) * 5 < score.var(0)).all()


def test_variance_falls_like_one_over_samples():
    g = torch.Generator().manual_seed(2)
    v1 = pathwise_gradient(F, 0.5, 1.2, samples=1, repeats=20000, generator=g).var(0)
    v16 = pathwise_gradient(F, 0.5, 1.2, samples=16, repeats=20000, generator=g).var(0)
    ratio = v1 / v16
    assert ((ratio > 12) & (ratio < 21)).all(), ratio
