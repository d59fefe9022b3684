"""companion.checks: each check accepts a correct implementation and explains typical mistakes."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from companion.checks import CheckFailed, check_elbo_estimator, check_gaussian_kl, check_kl_full_covariance
from companion import checks, evaluation
from companion.divergences import gaussian_kl
from companion.models import VAE, VAEConfig, reparameterize


def not_implemented(*args, **kwargs):
    raise NotImplementedError("exercise: not implemented yet")


def test_gaussian_kl_check():
    check_gaussian_kl(gaussian_kl)
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_gaussian_kl(not_implemented)
    with pytest.raises(CheckFailed, match=r"returned shape \(\), expected \(3,\)"):
        check_gaussian_kl(lambda mu, logvar: gaussian_kl(mu, logvar).sum())
    with pytest.raises(CheckFailed, match="mu = 1, logvar = 0.*is 1, expected 0.5"):
        check_gaussian_kl(lambda mu, logvar: (mu**2 + logvar.exp() - 1 - logvar).sum(-1))  # forgot the 1/2
    with pytest.raises(CheckFailed, match="returned list"):
        check_gaussian_kl(lambda mu, logvar: [0.0])
    with pytest.raises(CheckFailed, match="raised RuntimeError"):
        check_gaussian_kl(lambda mu, logvar: mu @ logvar)


def test_kl_full_covariance_check():
    def reference(m1, c1, m2, c2):
        return kl_divergence(MultivariateNormal(m1, c1), MultivariateNormal(m2, c2))

    check_kl_full_covariance(reference)
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_kl_full_covariance(not_implemented)
    with pytest.raises(CheckFailed, match="1-dimensional Gaussians"):
        check_kl_full_covariance(lambda m1, c1, m2, c2: reference(m2, c2, m1, c1))  # arguments swapped


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=4, hidden=(32,))), torch.rand(16, 1, 28, 28).round()


def k_sample_elbo(model, x, k):
    mu, logvar = model.encode(x)
    ll = torch.stack([model.likelihood.log_prob(x, model.decode(reparameterize(mu, logvar))) for _ in range(k)])
    return ll.mean(0) - gaussian_kl(mu, logvar)


def test_elbo_estimator_check(model_and_batch):
    model, x = model_and_batch
    check_elbo_estimator(k_sample_elbo, model, x)
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_elbo_estimator(not_implemented, model, x)
    with pytest.raises(CheckFailed, match="divide it by about 16"):
        check_elbo_estimator(lambda m, x, k: k_sample_elbo(m, x, 1), model, x)  # ignores k
    def summed(m, x, k):  # sums the k log-likelihoods instead of averaging them
        mu, logvar = m.encode(x)
        ll = torch.stack([m.likelihood.log_prob(x, m.decode(reparameterize(mu, logvar))) for _ in range(k)])
        return ll.sum(0) - gaussian_kl(mu, logvar)

    with pytest.raises(CheckFailed, match="summed instead of averaged"):
        check_elbo_estimator(summed, model, x)
    with pytest.raises(CheckFailed, match=r"gap -5\.\d\d"):
        check_elbo_estimator(lambda m, x, k: k_sample_elbo(m, x, k) - 5.0, model, x)  # biased by 5 nats
    with pytest.raises(CheckFailed, match="same value for every seed"):
        check_elbo_estimator(lambda m, x, k: m.likelihood.log_prob(x, m.decode(m.encode(x)[0])) - gaussian_kl(*m.encode(x)), model, x)
    with pytest.raises(CheckFailed, match="expected \\(16,\\)"):
        check_elbo_estimator(lambda m, x, k: k_sample_elbo(m, x, k).mean(), model, x)


def _reference_log_weights(model, x, k):
    return evaluation.log_importance_weights(model, x, k)


def _log_weights_without_prior(model, x, k):
    mu, logvar = model.encode(x)
    eps = torch.randn(len(x), k, mu.shape[1], dtype=mu.dtype)
    z = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
    log_q = torch.distributions.Normal(mu[:, None], torch.exp(0.5 * logvar)[:, None]).log_prob(z).sum(-1)
    params = model.decode(z.flatten(0, 1))
    log_lik = model.likelihood.log_prob(x.repeat_interleave(k, 0), params).view(len(x), k)
    return log_lik - log_q


def test_check_importance_weights():
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=4, hidden=(32,))).eval()
    x = torch.rand(6, 1, 28, 28).round()
    checks.check_importance_weights(_reference_log_weights, model, x)
    with pytest.raises(checks.CheckFailed, match="log p"):
        checks.check_importance_weights(_log_weights_without_prior, model, x)


def test_check_equivalent_sigma():
    checks.check_equivalent_sigma(lambda w, d: math.sqrt(w * d / 2))
    with pytest.raises(checks.CheckFailed, match="weighs the KL"):
        checks.check_equivalent_sigma(lambda w, d: math.sqrt(w * d))
    with pytest.raises(checks.CheckFailed, match="not implemented"):
        checks.check_equivalent_sigma(lambda w, d: (_ for _ in ()).throw(NotImplementedError))


def test_check_gan_value():
    import torch.nn.functional as F

    checks.check_gan_value(lambda real, fake: F.logsigmoid(real).mean() + F.logsigmoid(-fake).mean())
    with pytest.raises(checks.CheckFailed, match="confident logits"):     # through probabilities: -inf
        checks.check_gan_value(lambda real, fake: torch.log(torch.sigmoid(real)).mean()
                               + torch.log(1 - torch.sigmoid(fake)).mean())
    with pytest.raises(checks.CheckFailed, match="moderate"):             # the discriminator's loss, not V
        checks.check_gan_value(lambda real, fake: -F.logsigmoid(real).mean() - F.logsigmoid(-fake).mean())


def _coupling(x, mask, scale_shift, restrict=True):
    s, t = scale_shift(mask * x)
    if restrict:
        s, t = (1 - mask) * s, (1 - mask) * t
    return mask * x + (1 - mask) * (x * torch.exp(s) + t), ((1 - mask) * s if not restrict else s).flatten(1).sum(1)


def test_check_coupling_forward():
    checks.check_coupling_forward(_coupling)
    with pytest.raises(checks.CheckFailed, match="log_det"):   # summing s over the masked entries too
        checks.check_coupling_forward(lambda x, m, f: (_coupling(x, m, f)[0], f(m * x)[0].flatten(1).sum(1)))
    with pytest.raises(checks.CheckFailed, match="pair"):
        checks.check_coupling_forward(lambda x, m, f: x)


def test_check_bits_per_dim():
    checks.check_bits_per_dim(lambda log_p, d: -(log_p - d * math.log(256)) / (d * math.log(2)))
    with pytest.raises(checks.CheckFailed, match="off by 8"):
        checks.check_bits_per_dim(lambda log_p, d: -log_p / (d * math.log(2)))


def test_check_negative_elbo_accepts_the_loss_and_names_the_usual_mistakes():
    import torch.nn.functional as F

    from companion.checks import check_negative_elbo
    from companion.divergences import gaussian_kl
    from companion.models import VAE, VAEConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=4, hidden=(32,)))
    with torch.no_grad():                    # a posterior far from the prior, so that every term matters
        model.encoder.net[-1].weight.mul_(20)
    x = torch.bernoulli(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1)))

    def make(std=lambda lv: torch.exp(0.5 * lv), pixels="sum", kl=True, sign=1.0, batch="mean"):
        def negative_elbo(model, x, eps):
            mu, logvar = model.encode(x)
            logits = model.decode(mu + std(logvar) * eps)[:, 0]
            bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1)
            per_image = (bce.sum(1) if pixels == "sum" else bce.mean(1)) + (gaussian_kl(mu, logvar) if kl else 0)
            return sign * (per_image.mean() if batch == "mean" else per_image.sum())
        return negative_elbo

    check_negative_elbo(make(), model, x)
    for wrong, message in ((make(kl=False), "KL term is missing"), (make(sign=-1.0), "sign is flipped"),
                           (make(batch="sum"), "batch is summed"), (make(pixels="mean"), "pixels are averaged"),
                           (make(std=torch.exp), "exp\\(logvar / 2\\)")):
        with pytest.raises(CheckFailed, match=message):
            check_negative_elbo(wrong, model, x)

    def detached(model, x, eps):
        return make()(model, x, eps).detach()

    with pytest.raises(CheckFailed, match="no gradient"):
        check_negative_elbo(detached, model, x)

    def stub(model, x, eps):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_negative_elbo(stub, model, x)
