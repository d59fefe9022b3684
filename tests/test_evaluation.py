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


# --- the IWAE bound on a linear-Gaussian model whose evidence is known exactly -------------------

SIGMA = 0.5
_linear_gaussian = evaluation.linear_gaussian_vae


def test_iwae_equals_log_evidence_when_the_proposal_is_the_posterior():
    model, x, log_px = _linear_gaussian(exact_posterior=True)
    for k in (1, 7, 100):
        torch.testing.assert_close(evaluation.iwae_bound(model, x, k), log_px, rtol=0, atol=1e-10)


def test_iwae_is_below_the_evidence_and_tightens_with_k():
    model, x, log_px = _linear_gaussian(exact_posterior=False)  # q(z|x) = p(z): a poor proposal
    torch.manual_seed(0)
    means = {}
    for k in (1, 10, 100, 5000):
        est = torch.stack([evaluation.iwae_bound(model, x, k, max_latents=3000) for _ in range(40)])  # (40, 2)
        se = est.std(0) / math.sqrt(len(est))
        means[k] = est.mean(0)
        assert (means[k] <= log_px + 3 * se + 1e-9).all(), (k, means[k], log_px)          # a bound, up to MC error
    assert (means[1] < means[10]).all() and (means[10] < means[100]).all() and (means[100] < means[5000]).all()
    assert (log_px - means[5000]).abs().max() < 0.03 < 1.0 < (log_px - means[1]).abs().min()


def test_iwae_bound_with_k_1_is_the_elbo_in_expectation():
    model, x, _ = _linear_gaussian(exact_posterior=False)   # q(z|x) = p(z), so KL = 0 and the ELBO is exact:
    w, b = model.decoder.net[0].weight, model.decoder.net[0].bias
    residual = (x.flatten(1) - b).square().sum(1) + w.square().sum()   # E_z ||x - W z - b||^2, z ~ N(0, I)
    elbo = -residual / (2 * SIGMA**2) - 4 * math.log(SIGMA) - 2 * math.log(2 * math.pi)
    torch.manual_seed(1)
    iwae_1 = torch.stack([evaluation.iwae_bound(model, x, 1) for _ in range(4000)])
    se = iwae_1.std(0) / math.sqrt(len(iwae_1))
    assert ((iwae_1.mean(0) - elbo).abs() < 4 * se).all(), (iwae_1.mean(0), elbo, se)
    torch.testing.assert_close(model.elbo_terms(x)["kl"], torch.zeros(2, dtype=torch.float64))


def test_iwae_chunking_does_not_change_the_result(model_2d, images):
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    w_one = evaluation.log_importance_weights(model_2d, images, 64, max_latents=10**6, generator=g1)
    w_chunks = evaluation.log_importance_weights(model_2d, images, 64, max_latents=3 * 64, generator=g2)
    assert w_one.shape == (3, 64) and torch.isfinite(w_one).all()
    torch.testing.assert_close(w_one, w_chunks)


def test_iwae_bad_input(model_2d, images):
    with pytest.raises(ValueError, match="k and max_latents"):
        evaluation.iwae_bound(model_2d, images, 0)
    with pytest.raises(ValueError, match="expected a batch of images"):
        evaluation.iwae_bound(model_2d, images[0], 5)
    with pytest.raises(TypeError, match="uint8"):
        evaluation.evaluate_nll(model_2d, images, k=2)


def test_bits_per_dim():
    assert evaluation.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert evaluation.bits_per_dim(80.0, 784) == pytest.approx(0.1472, abs=1e-4)
    with pytest.raises(ValueError):
        evaluation.bits_per_dim(1.0, 0)


def test_evaluate_nll_and_elbo_on_uint8_images(model_2d):
    torch.manual_seed(3)
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    result = evaluation.evaluate_nll(model_2d, images, k=50, binarize=False, max_latents=128)
    again = evaluation.evaluate_nll(model_2d, images, k=50, binarize=False, max_latents=128)
    assert result.log_px.shape == (10,) and torch.isfinite(result.log_px).all()
    assert result.nll_nats == again.nll_nats                                       # seeded
    assert result.bits_per_dim == pytest.approx(result.nll_nats / (784 * math.log(2)))
    assert result.k == 50 and result.num_images == 10 and result.peak_memory_mb > 0
    elbo = evaluation.evaluate_elbo(model_2d, images, binarize=False)
    assert elbo["elbo"] == pytest.approx(elbo["reconstruction"] - elbo["kl"], abs=1e-3)
    assert -result.nll_nats >= elbo["elbo"] - 1.0                                   # k = 50 is no worse than the ELBO
    with pytest.raises(ValueError, match="split"):
        from companion.data import ImageData
        data = ImageData("mnist", "test", images, torch.zeros(10), images[:0], torch.zeros(0), images, torch.zeros(10))
        evaluation.evaluate_elbo(model_2d, data, "validation")


def test_latent_usage_counts_a_dead_dimension_and_sums_to_the_kl():
    from companion.evaluation import evaluate_elbo, latent_usage
    from companion.models import VAE, VAEConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(image_shape=(1, 4, 4), hidden=(8,), latent_dim=3))
    with torch.no_grad():
        last = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
        # the encoder's last layer outputs (mu, logvar); zero the rows of mu_0 so it ignores the image
        last.weight[0].zero_()
        last.bias[0] = 0.3
    images = (torch.rand(500, 1, 4, 4) * 255).to(torch.uint8)
    usage = latent_usage(model, images, binarize=False)
    assert usage["activity"][0] < 1e-10 and usage["active_units"] == sum(a > 0.01 for a in usage["activity"]) < 3
    kl = evaluate_elbo(model, images, binarize=False)["kl"]
    assert sum(usage["kl_per_dim"]) == pytest.approx(kl, rel=1e-5)


def test_evaluation_refuses_uint8_images_that_hold_only_zeros_and_ones():
    """Already binarised images stored as uint8 0/1 became nearly black after to_float's division by
    255 and were scored far too well; they are refused with a message that says what was expected."""
    from companion.evaluation import evaluate_elbo, evaluate_nll, latent_usage

    model = VAE(VAEConfig(latent_dim=2, hidden=(8,))).eval()
    binary = (torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.8).to(torch.uint8)
    for evaluate in (lambda x: evaluate_nll(model, x, k=2), lambda x: latent_usage(model, x),
                     lambda x: evaluate_elbo(model, x)):
        with pytest.raises(ValueError, match="only 0s and 1s.*0..255"):
            evaluate(binary)
        evaluate(binary * 255)                                     # the same images as grey levels work


def test_empty_sets_and_integer_images_give_clear_errors(model_2d):
    from companion.evaluation import evaluate_elbo, evaluate_nll, latent_usage

    empty = torch.zeros(0, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="empty"):
        evaluate_nll(model_2d, empty, k=2)
    with pytest.raises(ValueError, match="no batches"):
        evaluate_elbo(model_2d, empty)
    with pytest.raises(ValueError, match="at least two images"):
        latent_usage(model_2d, empty)
    with pytest.raises(TypeError, match="to_float"):
        evaluation.iwae_bound(model_2d, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 5)


def test_a_float64_model_is_evaluated_in_float64():
    """to_float used to return float32 whatever the model, so a model converted with .double() failed
    deep inside torch; now every evaluation follows the model's dtype."""
    from companion.evaluation import evaluate_elbo, evaluate_nll, latent_usage, linear_gaussian_vae

    # The linear Gaussian VAE with its exact posterior: every importance weight is p(x), so the IWAE
    # estimate equals the exact log-evidence for any k, here on images read from uint8.
    model, _, _ = linear_gaussian_vae()
    images = torch.tensor([[0, 255, 128, 40], [200, 10, 99, 7]], dtype=torch.uint8).view(2, 1, 2, 2)
    x = images.double().view(2, 4) / 255
    w = model.decoder.net[0].weight
    exact = torch.distributions.MultivariateNormal(model.decoder.net[0].bias, w @ w.T + 0.25 * torch.eye(4,
                                                   dtype=torch.float64)).log_prob(x)
    result = evaluate_nll(model, images, k=3, binarize=False)
    assert result.log_px.dtype == torch.float64
    torch.testing.assert_close(result.log_px, exact.detach(), rtol=1e-12, atol=1e-12)
    # the deterministic parts (the encoder's KL) agree with the same network in float32
    torch.manual_seed(0)
    model32 = VAE(VAEConfig(latent_dim=2, hidden=(16,))).eval()
    model64 = VAE(model32.config).double().eval()
    model64.load_state_dict(model32.state_dict())
    digits = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    kl32, kl64 = (evaluate_elbo(m, digits, binarize=False)["kl"] for m in (model32, model64))
    assert kl64 == pytest.approx(kl32, rel=1e-5)
    assert latent_usage(model64, digits, binarize=False)["kl_per_dim"] == pytest.approx(
        latent_usage(model32, digits, binarize=False)["kl_per_dim"], rel=1e-5)
    with pytest.raises(TypeError, match="float32 but the model's weights are torch.float64"):
        model64.loss(torch.rand(2, 1, 28, 28))
