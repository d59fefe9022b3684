"""Generative models: the VAE now; the GAN and the normalizing flow of Part IV go beside it."""

from .vae import VAE, VAEConfig, reparameterize

__all__ = ["VAE", "VAEConfig", "reparameterize"]
