"""VAE-GAN: Larsen, Sonderby, Larochelle & Winther, "Autoencoding beyond pixels using a
learned similarity metric", 2016, arXiv 1512.09300.

A VAE whose decoder is also a GAN's generator, with the reconstruction error measured in
the discriminator's l-th layer features (Sec. 2.2): p(Dis_l(x) | z) = N(Dis_l(x);
Dis_l(x~), I), x~ = Dec(z), z ~ q(z | x). The three losses (Eq. 9 and Algorithm 1):

  L_prior = KL(q(z | x) || p(z))
  L_llike = -E_q log p(Dis_l(x) | z) = 1/2 ||Dis_l(x) - Dis_l(Dec(z))||^2 (+ const)
  L_GAN   = log Dis(x) + log(1 - Dis(Dec(z))) + log(1 - Dis(Dec(z_p))),  z_p ~ p(z)

and the parameters each one moves (Algorithm 1):

  encoder:        L_prior + L_llike
  decoder:        gamma * L_llike - L_GAN      (the generator's side of the game)
  discriminator:  -L_GAN                       (the cross-entropy of real against both fakes)

Every term is routed by `jax.lax.stop_gradient` (CONVENTIONS.md) inside one loss: the
features Dis_l come from the discriminator on stop-gradient parameters (L_llike never moves
it), the decoder's parameters see L_llike through a copy whose parameter gradient is
scaled by gamma (sg(p) + gamma (p - sg(p)): the value is p, the encoder's gradient through
the decoder is unscaled), the GAN term reaches the decoder with z stopped (it never moves
the encoder: "we do not backpropagate the error signal from the GAN objective to the
encoder", as the authors' released code does), and the discriminator sees stop-gradient
fakes. All three players update at once from one forward pass, as in Algorithm 1, each with
an optimizer of its own (`players()`; experiments/train.py).

From the authors' released code (github.com/andersbll/autoencoding_beyond_pixels,
model/aegan.py): the discriminator's cross-entropy weighs the real images 1/2 and the two
kinds of generated images 1/2 together, and the generator's side is the minimax one (the
negated gradient of that cross-entropy); `generator_loss='non_saturating'` offers -log
Dis(Dec(z)) instead. Their equilibrium rule (skipping the discriminator's or decoder's
update when its cost leaves a band) is not implemented.

Networks: DCGAN-style (latent/gan.py) for 28x28 grey and 32x32 RGB images on [-1, 1]; the
encoder mirrors the discriminator (strided convolutions with batch norm, then a dense layer
to the Gaussian's mean and log-variance). The paper's networks are for 64x64 faces (5x5
kernels, a 2048-unit encoder layer and 128 latents); the config says how ours differ.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg.distributions import to_unit_range
from latent import distributions as dist
from latent.ais import gaussian_decoder_log_prob, gaussian_decoder_sample
from latent.gan import (
  DCGAN_INIT,
  GENERATOR_LOSSES,
  Discriminator,
  Generator,
  _batch_norm,
  _num_upsamplings,
  apply_transformed,
  bce_fake,
  bce_real,
  from_unit_range,
  game_health,
)


class Encoder(nn.Module):
  """images on [-1, 1] -> (mean, log_var) of q(z | x), each [B, latent_dim]."""
  image_shape: Sequence[int]
  latent_dim: int
  features: int = 64
  hidden: int = 512
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = x
    for i in range(_num_upsamplings(self.image_shape)):
      h = nn.Conv(self.features * 2 ** i, (4, 4), strides=(2, 2), padding='SAME',
                  kernel_init=DCGAN_INIT)(h)
      if self.batch_norm:
        h = _batch_norm(train)(h)
      h = nn.relu(h)
    h = nn.Dense(self.hidden, kernel_init=DCGAN_INIT)(h.reshape(h.shape[0], -1))
    if self.batch_norm:
      h = _batch_norm(train)(h)
    h = nn.relu(h)
    out = nn.Dense(2 * self.latent_dim, kernel_init=nn.initializers.zeros)(h)
    return out[:, :self.latent_dim], out[:, self.latent_dim:]


def scale_gradient(gamma: float):
  """x -> x in value, gamma * d/dx in gradient."""
  return lambda p: jax.lax.stop_gradient(p) + gamma * (p - jax.lax.stop_gradient(p))


class VAEGAN(nn.Module):
  """A VAE-GAN on integer images [B, H, W, C] in {0..num_levels-1}.

  gamma: the weight of L_llike against the GAN term in the decoder's update (Algorithm 1).
  feature_layer: the discriminator layer l whose activations the reconstruction compares
  (1-based convolution index; 0 for the last convolution). obs_std: the Gaussian observation
  model on [0, 1] pixels that annealed importance sampling uses (`decoder_log_prob`).
  """
  image_shape: Sequence[int] = (28, 28, 1)
  num_levels: int = 256
  latent_dim: int = 32
  encoder_features: int = 32
  encoder_hidden: int = 512
  generator_features: int = 32
  discriminator_features: int = 32
  feature_layer: int = 0
  gamma: float = 1e-2
  batch_norm: bool = True
  generator_loss: str = 'minimax'
  obs_std: float = 0.0

  def __post_init__(self):
    if self.latent_dim < 1:
      raise ValueError(f'config.model.latent_dim={self.latent_dim}: the VAE-GAN needs at least '
                       'one latent dimension.')
    if self.generator_loss not in GENERATOR_LOSSES:
      raise ValueError(f'config.model.generator_loss={self.generator_loss!r}; use '
                       f'{" or ".join(map(repr, GENERATOR_LOSSES))}.')
    if not self.gamma > 0:
      raise ValueError(f'config.model.gamma={self.gamma} must be > 0 (the weight of the '
                       "feature reconstruction in the decoder's update).")
    n = _num_upsamplings(self.image_shape)
    if not 0 <= self.feature_layer <= n:
      raise ValueError(f'config.model.feature_layer={self.feature_layer}: the discriminator has '
                       f'{n} convolutions; use 1..{n}, or 0 for the last.')
    super().__post_init__()

  def players(self) -> tuple[str, ...]:
    return ('encoder', 'decoder', 'discriminator')

  def update_phases(self):
    """One simultaneous update of all three from one forward pass (Algorithm 1)."""
    return (('all', self.players()),)

  def setup(self):
    self.encoder = Encoder(self.image_shape, self.latent_dim, self.encoder_features,
                           self.encoder_hidden, self.batch_norm)
    self.decoder = Generator(self.image_shape, self.generator_features, self.batch_norm)
    self.discriminator = Discriminator(self.image_shape, self.discriminator_features,
                                       self.batch_norm, self.feature_layer)

  def loss(self, batch, train: bool = True, phase: str | None = None):
    """The routed sum L_prior + L_llike + (gamma-scaled) + the GAN terms; metrics per
    example: kl, feature_recon (L_llike), pixel_mse (of the reconstruction on [0, 1]),
    d_loss, g_loss, the discriminator's accuracy on real, reconstructed and prior-sampled
    images, and the generated images' spread."""
    if phase not in (None, 'all'):
      raise ValueError(f"VAEGAN.loss: phase must be None or 'all', got {phase!r}.")
    x = to_unit_range(batch['image'], self.num_levels)
    b = x.shape[0]
    k_z, k_p = jax.random.split(self.make_rng('sample'))
    mean, log_var = self.encoder(x, train=train)
    z = dist.reparameterize(k_z, mean, log_var)
    z_p = jax.random.normal(k_p, z.shape)
    kl = dist.gaussian_kl_to_standard(mean, log_var)

    # The discriminator's own forward (initializes it; its loss below).
    logit_real, feat_real = self.discriminator(x, train=train)
    frozen = jax.lax.stop_gradient

    def frozen_dis(images):
      return apply_transformed(self.discriminator, frozen, images, train=train)

    # The GAN term: the decoder plays on reconstructions (z stopped) and prior samples.
    x_tilde = self.decoder(frozen(z), train=train)
    x_p = self.decoder(z_p, train=train)

    # L_llike: the encoder's gradient in full, the decoder's scaled by gamma, none to the
    # discriminator (its parameters and its features of x are stopped).
    x_tilde_llike = apply_transformed(self.decoder, scale_gradient(self.gamma), z,
                                      train=train)
    _, feat_tilde = frozen_dis(x_tilde_llike)
    feature_recon = 0.5 * jnp.sum((frozen(feat_real) - feat_tilde) ** 2, -1)

    logit_g_tilde, _ = frozen_dis(x_tilde)
    logit_g_p, _ = frozen_dis(x_p)
    if self.generator_loss == 'minimax':
      g_loss = -0.5 * (bce_fake(logit_g_tilde) + bce_fake(logit_g_p))
    else:
      g_loss = 0.5 * (bce_real(logit_g_tilde) + bce_real(logit_g_p))
    # The discriminator: real against both kinds of fakes, weighted 1/2 and 1/2.
    logit_tilde, _ = self.discriminator(frozen(x_tilde), train=train)
    logit_p, _ = self.discriminator(frozen(x_p), train=train)
    d_loss = 0.5 * bce_real(logit_real) + 0.25 * (bce_fake(logit_tilde) + bce_fake(logit_p))

    objective = kl + feature_recon + g_loss + d_loss
    spread = jnp.mean(jnp.std(x_p, 0)) / jnp.maximum(jnp.mean(jnp.std(x, 0)), 1e-6)
    metrics = {
        'kl': kl, 'feature_recon': feature_recon,
        'pixel_mse': jnp.mean(((x_tilde - x) / 2.0).reshape(b, -1) ** 2, -1),
        'd_loss': d_loss, 'g_loss': g_loss,
        'd_real_acc': (logit_real > 0).astype(jnp.float32),
        'd_recon_acc': (logit_tilde < 0).astype(jnp.float32),
        'd_fake_acc': (logit_p < 0).astype(jnp.float32),
        'fake_spread': spread * jnp.ones((b,)),
    }
    return jnp.mean(objective), metrics

  def health(self, m: dict) -> list[str]:
    return game_health(m, 'prior-sample')

  # -- the VAE side: pictures, sampling
  def encode(self, image):
    """The posterior mean [B, latent_dim]."""
    return self.encoder(to_unit_range(image, self.num_levels), train=False)[0]

  def decode(self, z):
    """The decoded image on [0, 1]."""
    return (self.decoder(z, train=False) + 1.0) / 2.0

  def reconstruct(self, image):
    return self.decode(self.encode(image))

  def sample_means(self, rng, n: int, temperature: float = 1.0):
    return self.decode(temperature * jax.random.normal(rng, (n, self.latent_dim)))

  def sample(self, rng, shape, temperature: float = 1.0):
    """Integer images [N, H, W, C]: Dec(z), z ~ N(0, temperature^2 I), at the data's levels."""
    if tuple(shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'VAE-GAN samples have shape [N, {tuple(self.image_shape)}], asked for '
                       f'{shape}.')
    z = temperature * jax.random.normal(rng, (shape[0], self.latent_dim))
    return from_unit_range(self.decoder(z, train=False), self.num_levels)

  # -- annealed importance sampling (latent/ais.py)
  def ais_latent_dim(self) -> int:
    return self.latent_dim

  def decoder_log_prob(self, z, image, obs_std=None):
    """log N(x; Dec(z), obs_std^2 I) on [0, 1] pixels; z [B, C, d] -> [B, C]."""
    return gaussian_decoder_log_prob(self.decode, z, image,
                                     self.obs_std if obs_std is None else obs_std,
                                     self.num_levels, 'VAEGAN')

  def decoder_sample(self, rng, z, obs_std=None):
    """Images x ~ p(x | z) [N, H, W, Ch] of decoder_log_prob's model, z [N, d]."""
    return gaussian_decoder_sample(self.decode, rng, z,
                                   self.obs_std if obs_std is None else obs_std,
                                   self.num_levels, 'VAEGAN')
