"""companion.frechet: the Frechet distance formula, its properties on real features, and the recorded
classifiers' accuracy (MNIST >= 99 %, Fashion-MNIST >= 90 %, re-measured from the shipped weights)."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from companion.data import load_dataset
from companion.frechet import accuracy, classifier_frechet_distance, frechet_distance, load_classifier
from companion.paths import RESULTS


def _random_gaussian(rng, dim):
    a = rng.normal(size=(dim, dim))
    return rng.normal(size=dim), a @ a.T + 0.1 * np.eye(dim)


def test_frechet_distance_matches_the_sqrtm_formula_and_is_symmetric():
    rng = np.random.default_rng(0)
    (m1, s1), (m2, s2) = _random_gaussian(rng, 6), _random_gaussian(rng, 6)
    reference = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(m2, s2, m1, s1) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(4 + 1)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes disagree"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))


def test_frechet_distance_checks_its_covariances():
    """A NaN covariance was called "not symmetric" and a negative-definite one gave 0.0; float32
    statistics symmetric to rounding (2e-8) were refused, where pytorch-fid accepts them."""
    with pytest.raises(ValueError, match="cov1 contains NaN"):
        frechet_distance(np.zeros(2), np.array([[1.0, np.nan], [np.nan, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="mu2 contains NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, np.inf]), np.eye(2))
    with pytest.raises(ValueError, match="cov2 is not positive semi-definite: its smallest eigenvalue is -3"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), -np.diag([1.0, 3.0]))
    with pytest.raises(ValueError, match="cov1 is not positive semi-definite"):
        frechet_distance(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]), np.zeros(2), np.eye(2))   # eigenvalues 3, -1
    rng = np.random.default_rng(1)
    (m1, s1), (m2, s2) = _random_gaussian(rng, 8), _random_gaussian(rng, 8)
    s1_32 = s1.astype(np.float32)
    s1_32[0, 1] += 2e-8 * np.abs(s1_32).max()                       # symmetric only to float32 rounding
    reference = frechet_distance(m1, s1, m2, s2)
    assert frechet_distance(m1.astype(np.float32), s1_32, m2, s2) == pytest.approx(reference, rel=1e-5)
    singular = np.diag([2.0, 1.0, 0.0])                               # dead features: PSD, not definite
    assert frechet_distance(np.zeros(3), singular, np.zeros(3), singular) == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def mnist_test(data_root):
    data = load_dataset("mnist", data_root, val_size=0)
    return data.test.float() / 255


@pytest.fixture(scope="module")
def classifier():
    return load_classifier("mnist")


def test_classifier_frechet_distance_properties(mnist_test, classifier):
    first, second = mnist_test[:5000], mnist_test[5000:]
    same = classifier_frechet_distance(first, first, classifier)
    halves = classifier_frechet_distance(first, second, classifier)
    halves_reversed = classifier_frechet_distance(second, first, classifier)
    noise = classifier_frechet_distance(torch.rand(5000, 1, 28, 28, generator=torch.Generator().manual_seed(0)), second, classifier)
    blurred = classifier_frechet_distance(torch.nn.functional.avg_pool2d(first, 3, 1, 1), second, classifier)
    assert same == pytest.approx(0.0, abs=1e-6)
    assert halves == pytest.approx(halves_reversed, rel=1e-6)
    assert 0 < halves < 0.02 * noise            # two halves of the test set are close; noise is far
    assert halves < blurred < noise             # and blur sits in between


def test_classifier_frechet_distance_rejects_bad_images(mnist_test, classifier):
    good = mnist_test[:10]
    with pytest.raises(ValueError, match="shape"):
        classifier_frechet_distance(good.view(10, 784), good, classifier)
    with pytest.raises(TypeError, match="uint8|float"):
        classifier_frechet_distance((good * 255).to(torch.uint8), good, classifier)
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        classifier_frechet_distance(bad, good, classifier)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classifier_frechet_distance(good * 255, good, classifier)


def test_missing_classifier_says_how_to_train_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="reproduce classifier-mnist"):
        load_classifier("mnist", root=tmp_path)


@pytest.mark.parametrize("dataset, target", [("mnist", 0.99), ("fashion-mnist", 0.90)])
def test_recorded_classifiers_reach_their_accuracy(dataset, target, data_root):
    """The shipped weights, re-measured on the test set: the accuracy in metrics.json is what they give."""
    recorded = json.loads((RESULTS / f"classifier-{dataset}" / "metrics.json").read_text())
    data = load_dataset(dataset, data_root, val_size=0)
    measured = accuracy(load_classifier(dataset), data.test, data.test_labels)
    assert measured == pytest.approx(recorded["test_accuracy"], abs=1e-4)
    assert measured >= target


def test_frechet_bootstrap_matches_the_spread_over_fresh_samples():
    """The bootstrap SD from one sample set estimates the SD of the distance over independent sample
    sets of the same size (a property of the estimator that the bootstrap must reproduce)."""
    from companion.frechet import feature_statistics, frechet_bootstrap

    rng = np.random.default_rng(0)
    dim, n = 6, 1500
    reference = (np.zeros(dim), np.eye(dim))
    shift, scale = np.full(dim, 0.3), np.linspace(0.8, 1.3, dim)
    draw = lambda: shift + scale * rng.normal(size=(n, dim))  # noqa: E731
    fresh = np.std([frechet_distance(*feature_statistics(draw()), *reference) for _ in range(60)], ddof=1)
    boot = frechet_bootstrap(draw(), reference, resamples=200, seed=1)
    assert boot.shape == (200,)
    assert 0.7 < boot.std(ddof=1) / fresh < 1.4, (boot.std(ddof=1), fresh)
    with pytest.raises(ValueError, match="resamples"):
        frechet_bootstrap(draw(), reference, resamples=1)


def test_score_vae_samples_with_bootstrap_gives_the_same_distances(mnist_test, classifier):
    from companion.frechet import score_vae_samples
    from companion.models import VAE, VAEConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=4, hidden=(32,), likelihood="continuous-bernoulli"))
    plain = score_vae_samples(model, mnist_test[:2000], classifier, samples=1000, seed=3)
    booted = score_vae_samples(model, mnist_test[:2000], classifier, samples=1000, seed=3, bootstrap=20)
    for key in ("mean", "params"):
        assert booted[key] == pytest.approx(plain[key], rel=1e-9)
        assert 0 < booted[f"{key}_sd"] < 0.2 * booted[key]
    assert "mean_sd" not in plain
