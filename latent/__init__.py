"""Latent-variable models (VAE family, belief nets, GAN). See the issues for what lands here."""
