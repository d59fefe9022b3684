"""A classifier Frechet distance: how far generated images are from real ones, in a classifier's features.

FID (Heusel et al., 2017) fits a Gaussian to the Inception-v3 features of real images and another to
those of generated images and reports the Frechet (2-Wasserstein) distance between the two
Gaussians,

    d^2 = ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)).

Inception-v3 was trained on colour photographs and its weights cannot be downloaded here, so, as
the seed post did for MNIST, the course uses the same distance in the 128-dimensional penultimate
layer of a small CNN trained by the companion on each dataset (``Classifier``). Its values are
**not** comparable with published FIDs: the features, their dimension and their scale are all
different (a published FID of 5 and a classifier Frechet distance of 5 say nothing about each
other). They are comparable with each other, for one dataset and one classifier.

    python -m companion reproduce classifier-mnist          # trains and records the classifier
    fd = classifier_frechet_distance(samples, test_images, load_classifier("mnist"))

See: chapter "Is the continuous Bernoulli better?"; Heusel et al. (2017); Frechet (1957); Dowson &
Landau (1982) for the closed form between Gaussians.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from .paths import RESULTS

__all__ = ["Classifier", "train_classifier", "load_classifier", "feature_statistics", "frechet_distance",
           "classifier_frechet_distance", "frechet_bootstrap", "score_vae_samples", "score_samples", "accuracy", "save_classifier", "CLASSIFIER_FILE"]

CLASSIFIER_FILE = "classifier.pt"


class Classifier(nn.Module):
    """A small CNN for 28 x 28 grey images: two conv blocks, a 128-unit feature layer, 10 logits.

    conv 3x3 (32) - batch norm - ReLU - max-pool - conv 3x3 (64) - batch norm - ReLU - max-pool -
    linear (128) - ReLU - dropout 0.25 - linear (10). ``features`` returns the 128 post-ReLU activations before dropout,
    which the Frechet distance uses.

    Input: images (B, 1, 28, 28) in [0, 1]. Output: logits (B, 10).
    """

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, self.feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(self.feature_dim, 10))

    def features(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) -> (B, 128)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _check_images(x: Tensor, name: str) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name}: expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name}: expected float images in [0, 1], got dtype {x.dtype} (divide uint8 data by 255)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: the images contain NaN or infinite values")
    if x.min() < -1e-6 or x.max() > 1 + 1e-6:
        raise ValueError(f"{name}: pixel values must lie in [0, 1], got [{x.min().item():.3g}, {x.max().item():.3g}]")


@torch.no_grad()
def accuracy(model: Classifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``images`` (uint8, (N, 1, 28, 28)) whose predicted class equals ``labels``."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device).float() / 255
        correct += (model(x).argmax(1).cpu() == labels[start:start + batch_size].cpu()).sum().item()
    return correct / len(images)


def train_classifier(dataset: str, *, data_root: str | os.PathLike | None = None, epochs: int = 5,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device: str | torch.device = "cpu",
                     progress: bool = True) -> tuple[Classifier, dict]:
    """Train ``Classifier`` on the training split (50,000 images) of ``dataset`` with Adam.

    Small random shifts (up to 2 pixels, by padding and cropping) are the only augmentation.

    Returns:
        ``(model, metrics)`` with ``test_accuracy``, ``val_accuracy``, ``epochs``, ``wall_time_s``,
        ``dataset``, ``device``.
    Raises:
        DataNotFoundError: if the data are nowhere (see ``companion.data.locate``).
        ValueError: for a negative number of epochs (0 evaluates the untrained network).
    """
    from tqdm.auto import tqdm

    from .data import Batches, load_dataset

    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    device = torch.device(device)
    torch.manual_seed(seed)
    data = load_dataset(dataset, data_root, device=device)
    model = Classifier().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1))
    start = time.perf_counter()
    for epoch in tqdm(range(epochs), desc=f"classifier {dataset}", disable=not progress):
        model.train()
        for x, y in Batches(data.train, batch_size, shuffle=True, labels=data.train_labels):
            shift = torch.randint(-2, 3, (2,)).tolist()
            x = torch.roll(x, shifts=shift, dims=(2, 3))   # the border is background, so a roll is a shift
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
    wall = time.perf_counter() - start
    metrics = {"dataset": dataset, "epochs": epochs, "wall_time_s": round(wall, 1),
               "val_accuracy": accuracy(model, data.val, data.val_labels),
               "test_accuracy": accuracy(model, data.test, data.test_labels), "parameters":
               sum(p.numel() for p in model.parameters())}
    model.eval()
    return model.cpu(), metrics


def load_classifier(dataset: str, root: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Classifier:
    """The recorded classifier of ``dataset`` from ``book/results/classifier-DATASET/classifier.pt``.

    Raises:
        FileNotFoundError: if it has not been trained; the message gives the command that trains it.
        ValueError: if the one in ``book/results`` was not recorded with the registered settings.
    """
    path = Path(root or RESULTS) / f"classifier-{dataset}" / CLASSIFIER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no classifier for {dataset!r} at {path}; train and record it with "
                                f"`python -m companion reproduce classifier-{dataset}` (about a minute per epoch on a CPU)")
    metrics = path.with_name("metrics.json")
    if root is None and (not metrics.is_file() or json.loads(metrics.read_text()).get("registered") is not True):
        raise ValueError(f"{path} is not the registered classifier ({metrics} is missing or says "
                         f"\"registered\": false); rerun `python -m companion reproduce classifier-{dataset}`")
    model = Classifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


@torch.no_grad()
def _features(classifier: Classifier, images: Tensor, batch_size: int) -> np.ndarray:
    device = next(classifier.parameters()).device
    classifier.eval()
    out = [classifier.features(images[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) of features (N, F), in float64; N must be at least 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"expected features of shape (N >= 2, F), got {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


#: Relative tolerance of the covariance checks: a covariance computed or stored in float32 is symmetric
#: and positive semi-definite only up to its rounding (float32's epsilon is 1.2e-7), with room to spare.
COVARIANCE_RTOL = 1e-5


def _checked_covariance(cov: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The symmetric part of ``cov`` and its eigendecomposition, after checking that ``cov`` is a covariance.

    Raises:
        ValueError: for non-finite entries, asymmetry beyond ``COVARIANCE_RTOL`` times the largest
            entry, or an eigenvalue below -``COVARIANCE_RTOL`` times the largest magnitude.
    """
    if not np.isfinite(cov).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    scale = float(np.abs(cov).max())
    asymmetry = float(np.abs(cov - cov.T).max())
    if asymmetry > COVARIANCE_RTOL * scale:
        raise ValueError(f"{name} is not symmetric: the largest |C - C^T| is {asymmetry:.3g}, "
                         f"{asymmetry / scale:.2g} of the largest entry (rounding allows {COVARIANCE_RTOL:g})")
    cov = (cov + cov.T) / 2
    values, vectors = scipy.linalg.eigh(cov)
    if values.size and values[0] < -COVARIANCE_RTOL * max(float(np.abs(values).max()), 1e-300):
        raise ValueError(f"{name} is not positive semi-definite: its smallest eigenvalue is {values[0]:.4g} "
                         f"(largest {values[-1]:.4g}); a covariance has none below 0")
    return cov, values, vectors


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The squared Frechet distance between N(mu1, cov1) and N(mu2, cov2), in squared feature units.

    d^2 = ||mu1 - mu2||^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)).

    The trace of the square root is computed from symmetric matrices only: with R = cov1^(1/2)
    (``scipy.linalg.eigh``, negative round-off eigenvalues set to 0), cov1 cov2 is similar to
    R cov2 R, which is symmetric positive semi-definite, so tr((cov1 cov2)^(1/2)) is the sum of the
    square roots of its eigenvalues. Unlike ``scipy.linalg.sqrtm`` of the non-symmetric product,
    this never produces complex numbers on the singular covariances that dead ReLU features give.

    The inputs are checked first: finite, covariances symmetric and positive semi-definite up to
    rounding (``COVARIANCE_RTOL``, so float32 statistics pass, as they do in pytorch-fid); the
    symmetric part of each covariance is used.

    Raises:
        ValueError: if the shapes disagree, a mean is not finite, or a covariance has non-finite
            entries, is not symmetric, or is not positive semi-definite.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, dtype=np.float64)), np.atleast_2d(np.asarray(cov2, dtype=np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes disagree: mu {mu1.shape}, {mu2.shape}; cov {cov1.shape}, {cov2.shape}")
    if mu1.size == 0:
        raise ValueError("no features: the means are empty")
    for name, mu in (("mu1", mu1), ("mu2", mu2)):
        if not np.isfinite(mu).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    cov1, values, vectors = _checked_covariance(cov1, "cov1")
    cov2, _, _ = _checked_covariance(cov2, "cov2")
    root1 = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    inner = scipy.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_root = np.sqrt(inner.clip(min=0)).sum()
    d2 = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)
    return max(d2, 0.0)


def classifier_frechet_distance(images_a: Tensor, images_b: Tensor, classifier: Classifier,
                                batch_size: int = 250) -> float:
    """The Frechet distance between two sets of images in ``classifier``'s feature space.

    Arguments:
        images_a, images_b: float tensors (N, 1, 28, 28) in [0, 1] (N may differ; at least 2 each,
            and in practice thousands: the covariance of 128 features needs many samples, and the
            estimate is biased upwards for small N).
        classifier: a ``Classifier`` (see ``load_classifier``).
        batch_size: images per forward pass (250 keeps the convolutional activations near 80 MB).
    Returns:
        The squared Frechet distance (a float >= 0; 0 for identical sets). Not comparable with
        published FIDs (see the module docstring).
    Raises:
        ValueError: for wrong shapes, values outside [0, 1] or non-finite values. TypeError: for
        integer images.
    """
    _check_images(images_a, "images_a")
    _check_images(images_b, "images_b")
    stats_a = feature_statistics(_features(classifier, images_a, batch_size))
    stats_b = feature_statistics(_features(classifier, images_b, batch_size))
    return frechet_distance(*stats_a, *stats_b)


def frechet_bootstrap(features: np.ndarray, reference: tuple[np.ndarray, np.ndarray], resamples: int = 100,
                      seed: int = 0) -> np.ndarray:
    """Bootstrap of the Frechet distance over the generated samples: ``resamples`` values of the
    distance, each between a resample (with replacement, same size) of ``features`` and the fixed
    ``reference`` statistics (mean, covariance). Their standard deviation is the sampling error of
    the distance for this number of samples; it does not include the spread between training seeds,
    which is usually larger (chapter "Is the continuous Bernoulli better?" measures both).

    Arguments:
        features: (N, F) features of the generated images. reference: ``feature_statistics`` of the
            real images. resamples: how many bootstrap draws. seed: seeds numpy's generator.
    Returns:
        (resamples,) squared distances. Raises: ValueError as ``frechet_distance``, or for resamples < 2.
    """
    if resamples < 2:
        raise ValueError(f"resamples must be at least 2, got {resamples}")
    features = np.asarray(features, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(features)
    return np.array([frechet_distance(*feature_statistics(features[rng.integers(0, n, n)]), *reference)
                     for _ in range(resamples)])


@torch.no_grad()
def score_vae_samples(model, real: Tensor, classifier: Classifier, samples: int = 10_000, seed: int = 0,
                      bootstrap: int = 0) -> dict:
    """Classifier Frechet distances of a VAE's samples from the prior to the real images ``real``.

    ``samples`` latents z ~ N(0, I) are decoded (1000 at a time) and turned into images two ways:

    - ``"mean"``: the likelihood's mean E[x | z] (what the model predicts), clamped to [0, 1];
    - ``"params"``: the decoder's first output as an image, the sigmoid of the logit for the
      Bernoulli, continuous Bernoulli and Beta, the clamped mean for the Gaussians and the Laplace
      (the "parameters as images" of chapter "Bernoulli on grey pixels, and the continuous Bernoulli").

    Arguments:
        model: a ``companion.models.VAE``. real: float images (N, 1, 28, 28) in [0, 1].
        classifier: see ``load_classifier``. samples: how many; the estimate is biased upwards for
            small numbers, so compare only values computed with the same number.
        seed: seeds the latents (torch's global generator is restored afterwards).
        bootstrap: if > 0, also the standard deviations ``"mean_sd"`` and ``"params_sd"`` of that many
            bootstrap resamples of the samples (``frechet_bootstrap``).
    Returns:
        ``{"mean": float, "params": float, "samples": int}`` (plus the two ``_sd`` with ``bootstrap``).
    """
    from .likelihoods import Beta, Bernoulli, ContinuousBernoulli

    device = next(model.parameters()).device
    z = torch.randn(samples, model.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    was_training = model.training
    model.eval()
    try:
        params = torch.cat([model.decode(z[i:i + 1000]) for i in range(0, samples, 1000)])
    finally:
        model.train(was_training)
    means = model.likelihood.mean(params).clamp(0, 1)
    logit_based = isinstance(model.likelihood, (Bernoulli, ContinuousBernoulli, Beta))
    logits = model.likelihood._logits(params) if isinstance(model.likelihood, ContinuousBernoulli) else params[:, 0]
    as_params = torch.sigmoid(logits) if logit_based else params[:, 0].clamp(0, 1)
    if not bootstrap:
        return {"mean": classifier_frechet_distance(means, real, classifier),
                "params": classifier_frechet_distance(as_params, real, classifier), "samples": samples}
    for images, name in ((means, "means"), (as_params, "params"), (real, "real")):
        _check_images(images, name)
    reference = feature_statistics(_features(classifier, real, 250))
    out = {"samples": samples}
    for key, images in (("mean", means), ("params", as_params)):
        features = _features(classifier, images, 250)
        out[key] = frechet_distance(*feature_statistics(features), *reference)
        out[f"{key}_sd"] = float(frechet_bootstrap(features, reference, bootstrap, seed=seed).std(ddof=1))
    return out


@torch.no_grad()
def score_samples(model, real: Tensor, classifier: Classifier, samples: int = 10_000, seed: int = 0) -> float:
    """Classifier Frechet distance of ``samples`` images from ``model.generate`` to the real images.

    For any model with ``generate(n) -> (n, 1, 28, 28) in [0, 1]`` (the GAN and the flow; the VAE's
    ``generate`` gives the likelihood's mean, as ``score_vae_samples``'s "mean"). Images are drawn
    1000 at a time with torch's generators seeded to ``seed`` and restored afterwards.

    Returns:
        The squared distance (float >= 0); compare only values computed with the same ``samples``.
    See: chapter "Head to head".
    """
    device = next(model.parameters()).device
    on_cuda = {"devices": [device], "device_type": "cuda"} if device.type == "cuda" else {"devices": []}
    with torch.random.fork_rng(**on_cuda):
        torch.manual_seed(seed)
        images = torch.cat([model.generate(min(1000, samples - i)) for i in range(0, samples, 1000)])
    return classifier_frechet_distance(images.clamp(0, 1), real, classifier)


def save_classifier(model: Classifier, metrics: dict, out: str | os.PathLike) -> None:
    """Write ``classifier.pt`` (the state dict, about 1.6 MB) and ``metrics.json`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / CLASSIFIER_FILE)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

