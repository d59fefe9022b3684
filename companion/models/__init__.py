"""Generative models: the VAE (Parts II and III), and the GAN and normalizing flow of Part IV."""

from .flow import FlowConfig, RealNVP
from .gan import GAN, GANConfig
from .vae import VAE, VAEConfig, reparameterize

__all__ = ["VAE", "VAEConfig", "reparameterize", "GAN", "GANConfig", "RealNVP", "FlowConfig"]
