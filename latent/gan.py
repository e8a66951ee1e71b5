"""Generative adversarial networks: Goodfellow et al., "Generative Adversarial Nets", 2014,
arXiv 1406.2661, with the DCGAN architecture of Radford, Metz & Chintala, "Unsupervised
Representation Learning with Deep Convolutional Generative Adversarial Networks", 2016,
arXiv 1511.06434.

The game (Goodfellow et al., Eq. 1): min_G max_D E_x log D(x) + E_z log(1 - D(G(z))), with
z ~ N(0, I) (a Gaussian prior, so the generator is also a decoder whose log-likelihood
annealed importance sampling can estimate; latent/ais.py). The discriminator minimizes the
cross-entropy of real against generated images,

  L_D = -log D(x) - log(1 - D(G(z))),

and the generator minimizes either the minimax loss log(1 - D(G(z))) or the
non-saturating one, -log D(G(z)) (Sec. 3: "early in learning ... log(1 - D(G(z)))
saturates"; the default).

Training is Algorithm 1 of the paper: each train step makes `discriminator_steps` updates of
D, each on fresh noise, then one update of G against the updated D. The trainer does this
from two methods (experiments/train.py): `players()` names the parameter subtrees
('generator', 'discriminator'), each with an optimizer of its own (its own Adam moments: a
zero gradient would still move a shared Adam's parameters), and `update_phases()` the order
of the updates. Each loss also reaches only its own player's parameters by
`jax.lax.stop_gradient` (CONVENTIONS.md): L_D sees stop_gradient(G(z)), and L_G runs the
discriminator on stop-gradient parameters, so `loss(phase=None)` (evaluation, batch
statistics) is the sum of two routed terms whose gradient is the simultaneous-update one.

DCGAN (Sec. 3): strided convolutions instead of pooling, batch norm in both networks except
the generator's output and the discriminator's input layer, ReLU in the generator with a tanh
output, LeakyReLU(0.2) in the discriminator, weights drawn from N(0, 0.02). The paper's
networks are for 64x64 images (a 4x4x1024 projection); for 28x28 grey and 32x32 RGB this one
projects z to a 7x7 or 4x4 map and doubles the resolution with 4x4 stride-2 transposed
convolutions, halving the features each time (the common MNIST and CIFAR-10 variants).
Images are scaled to [-1, 1].
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg.distributions import to_unit_range
from latent.ais import gaussian_decoder_log_prob, gaussian_decoder_sample

DCGAN_INIT = nn.initializers.normal(0.02)
GENERATOR_LOSSES = ('non_saturating', 'minimax')


def _num_upsamplings(image_shape) -> int:
  """Stride-2 stages between the projected map and the image: 28 -> 7 (2), 32 -> 4 (3)."""
  h, w = image_shape[0], image_shape[1]
  if h != w:
    raise ValueError(f'The DCGAN networks take square images; image_shape={tuple(image_shape)}.')
  for n in (3, 2):
    if h % (2 ** n) == 0 and h // 2 ** n >= 3:
      return n
  raise ValueError(f'image_shape={tuple(image_shape)}: the side must be a multiple of 4 (28, 32, '
                   '64, ...).')


def _batch_norm(train: bool, name=None):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class Generator(nn.Module):
  """z [B, latent_dim] -> images on [-1, 1] [B, H, W, C]."""
  image_shape: Sequence[int]
  features: int = 64          # at the last hidden stage; doubled at each coarser one
  batch_norm: bool = True

  @nn.compact
  def __call__(self, z, train: bool = True):
    n = _num_upsamplings(self.image_shape)
    side = self.image_shape[0] // 2 ** n
    width = self.features * 2 ** (n - 1)
    h = nn.Dense(side * side * width, kernel_init=DCGAN_INIT)(z)
    h = h.reshape(z.shape[0], side, side, width)
    for i in range(n):
      if self.batch_norm:
        h = _batch_norm(train)(h)
      h = nn.relu(h)
      out = self.image_shape[-1] if i == n - 1 else width // 2 ** (i + 1)
      h = nn.ConvTranspose(out, (4, 4), strides=(2, 2), padding='SAME',
                           kernel_init=DCGAN_INIT)(h)
    return jnp.tanh(h)


class Discriminator(nn.Module):
  """images on [-1, 1] -> (logit [B], features [B, F] of layer `feature_layer`).

  Features are those the VAE-GAN's reconstruction loss compares (Larsen et al. 2016, the
  l-th layer): the activations after convolution `feature_layer` (1-based; 0 for the last)."""
  image_shape: Sequence[int]
  features: int = 64          # at the first layer; doubled at each stride-2 layer
  batch_norm: bool = True
  feature_layer: int = 0

  @nn.compact
  def __call__(self, x, train: bool = True):
    n = _num_upsamplings(self.image_shape)
    h, feats = x, None
    for i in range(n):
      h = nn.Conv(self.features * 2 ** i, (4, 4), strides=(2, 2), padding='SAME',
                  kernel_init=DCGAN_INIT)(h)
      if self.batch_norm and i > 0:   # not on the input layer (DCGAN, Sec. 3)
        h = _batch_norm(train)(h)
      if self.feature_layer == i + 1 or (self.feature_layer == 0 and i == n - 1):
        feats = h.reshape(h.shape[0], -1)
      h = nn.leaky_relu(h, 0.2)
    logit = nn.Dense(1, kernel_init=DCGAN_INIT)(h.reshape(h.shape[0], -1))[:, 0]
    return logit, feats


def from_unit_range(x, num_levels: int):
  """[-1, 1] -> the nearest integer level."""
  return jnp.clip(jnp.round((x + 1.0) / 2.0 * (num_levels - 1)), 0, num_levels - 1).astype(
      jnp.int32)


def apply_transformed(module: nn.Module, transform, *args, train: bool = True):
  """Runs the bound submodule `module` on transform(each of its parameters), e.g.
  `jax.lax.stop_gradient`: its output still carries gradient to `args`, none (or a scaled
  one) to the parameters. Batch statistics are read, and this call's moves of them
  dropped."""
  variables = module.variables
  params = jax.tree.map(transform, variables['params'])
  rest = {k: v for k, v in variables.items() if k != 'params'}
  unbound = module.clone(parent=None)
  if train and rest:
    return unbound.apply({'params': params, **rest}, *args, train=train,
                         mutable=list(rest))[0]
  return unbound.apply({'params': params, **rest}, *args, train=train)


def game_health(m: dict, fake: str = 'generated') -> list[str]:
  """Warnings a person should read, from the logged means: the discriminator winning
  outright (the generator's gradient vanishes) and mode collapse."""
  out = []
  if m.get('d_fake_acc', 0) > 0.99 and m.get('d_real_acc', 0) > 0.99:
    out.append(f"the discriminator tells every image apart (accuracy real "
               f"{m['d_real_acc']:.3f}, {fake} {m['d_fake_acc']:.3f}; g_loss "
               f"{m.get('g_loss', float('nan')):.2f}): the generator's gradient may vanish. "
               'A lower discriminator learning rate or fewer discriminator_steps helps; '
               'the run goes on.')
  if 'fake_spread' in m and m['fake_spread'] < 0.2:
    out.append(f"{fake} images barely differ (per-pixel spread {m['fake_spread']:.3f} of "
               "the data's): mode collapse. The run goes on; look at the samples.")
  return out


def bce_real(logit):
  """-log sigmoid(logit): the cross-entropy of calling an image real."""
  return nn.softplus(-logit)


def bce_fake(logit):
  """-log(1 - sigmoid(logit)): the cross-entropy of calling an image generated."""
  return nn.softplus(logit)


def slerp(z0, z1, t):
  """Spherical interpolation (White 2016) for Gaussian latents; rows of z0, z1, scalar t."""
  n0 = jnp.linalg.norm(z0, axis=-1, keepdims=True)
  n1 = jnp.linalg.norm(z1, axis=-1, keepdims=True)
  cos = jnp.clip(jnp.sum(z0 * z1, -1, keepdims=True) / (n0 * n1), -1.0, 1.0)
  omega = jnp.arccos(cos)
  so = jnp.sin(omega)
  lin = (1 - t) * z0 + t * z1
  sph = (jnp.sin((1 - t) * omega) * z0 + jnp.sin(t * omega) * z1) / jnp.where(so < 1e-6, 1, so)
  return jnp.where(so < 1e-6, lin, sph)


class GAN(nn.Module):
  """A DCGAN on integer images [B, H, W, C] in {0..num_levels-1}.

  latent_dim: z ~ N(0, I) of this size (DCGAN: 100). generator_loss: 'non_saturating'
  (default) or 'minimax'. discriminator_steps: D updates per G update (Goodfellow et al.'s
  k; they used k = 1). obs_std: the standard deviation of the Gaussian observation model
  p(x | z) = N(x; G(z), obs_std^2 I) on the [0, 1] pixel scale that `decoder_log_prob`
  uses for annealed importance sampling (Wu et al. 2017 pick it on validation data); it
  does not enter training.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  num_levels: int = 256
  latent_dim: int = 100
  generator_features: int = 64
  discriminator_features: int = 64
  batch_norm: bool = True
  generator_loss: str = 'non_saturating'
  discriminator_steps: int = 1
  obs_std: float = 0.0

  def __post_init__(self):
    if self.latent_dim < 1:
      raise ValueError(f'config.model.latent_dim={self.latent_dim}: the generator needs at '
                       'least one latent dimension.')
    if self.generator_loss not in GENERATOR_LOSSES:
      raise ValueError(f'config.model.generator_loss={self.generator_loss!r}; use '
                       f'{" or ".join(map(repr, GENERATOR_LOSSES))}.')
    if self.discriminator_steps < 1:
      raise ValueError(f'config.model.discriminator_steps={self.discriminator_steps} must be '
                       '>= 1 (discriminator updates per generator update).')
    if self.num_levels < 2:
      raise ValueError(f'config.model.num_levels={self.num_levels} must be >= 2.')
    _num_upsamplings(self.image_shape)
    super().__post_init__()

  # -- the trainer's multi-player interface
  def players(self) -> tuple[str, ...]:
    return ('generator', 'discriminator')

  def update_phases(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(phase, players it updates), in order, for one train step: Algorithm 1's k
    discriminator steps, then one generator step."""
    return ((('discriminator', ('discriminator',)),) * self.discriminator_steps
            + (('generator', ('generator',)),))

  def setup(self):
    self.generator = Generator(self.image_shape, self.generator_features, self.batch_norm)
    self.discriminator = Discriminator(self.image_shape, self.discriminator_features,
                                       self.batch_norm)

  def prior(self, rng, n: int):
    return jax.random.normal(rng, (n, self.latent_dim))

  def generate(self, z, train: bool = False):
    """G(z) on [-1, 1]."""
    return self.generator(z, train=train)

  def discriminate(self, x, train: bool = False):
    """D's logit for images on [-1, 1]."""
    return self.discriminator(x, train=train)[0]

  def loss(self, batch, train: bool = True, phase: str | None = None):
    """phase 'discriminator': L_D; 'generator': L_G; None: L_D + L_G, each routed to its
    player. Metrics per example: d_loss, g_loss, d_real_acc and d_fake_acc (the
    discriminator's accuracy on real and generated images), d_real_prob and d_fake_prob
    (its mean D(x), D(G(z))); per batch: the spread of the generated images (per-pixel
    standard deviation over the batch, relative to the real batch's: near 0 is mode
    collapse)."""
    if phase not in (None, 'discriminator', 'generator'):
      raise ValueError(f"GAN.loss: phase must be None, 'discriminator' or 'generator', got "
                       f'{phase!r}.')
    real = to_unit_range(batch['image'], self.num_levels)
    z = self.prior(self.make_rng('sample'), real.shape[0])
    fake = self.generator(z, train=train)
    metrics = {}
    zero = jnp.zeros(real.shape[:1])
    d_loss = g_loss = zero
    if phase in (None, 'discriminator'):
      logit_real, _ = self.discriminator(real, train=train)
      logit_fake, _ = self.discriminator(jax.lax.stop_gradient(fake), train=train)
      d_loss = bce_real(logit_real) + bce_fake(logit_fake)
      metrics.update(d_loss=d_loss, d_real_acc=(logit_real > 0).astype(jnp.float32),
                     d_fake_acc=(logit_fake < 0).astype(jnp.float32),
                     d_real_prob=nn.sigmoid(logit_real), d_fake_prob=nn.sigmoid(logit_fake))
    if phase in (None, 'generator'):
      if self.is_initializing() and phase is not None:
        self.discriminator(real, train=train)
      logit_g, _ = apply_transformed(self.discriminator, jax.lax.stop_gradient, fake,
                                     train=train)
      g_loss = bce_real(logit_g) if self.generator_loss == 'non_saturating' else -bce_fake(logit_g)
      metrics.update(g_loss=g_loss, g_fake_prob=nn.sigmoid(logit_g))
    spread_fake = jnp.mean(jnp.std(fake, axis=0))
    spread_real = jnp.mean(jnp.std(real, axis=0))
    metrics['fake_spread'] = spread_fake / jnp.maximum(spread_real, 1e-6) * jnp.ones_like(zero)
    return jnp.mean(d_loss + g_loss), metrics

  def health(self, m: dict) -> list[str]:
    return game_health(m)

  # -- sampling and pictures
  def sample(self, rng, shape, temperature: float = 1.0):
    """Integer images [N, H, W, C]: G(temperature * z), z ~ N(0, I), rounded to the data's
    levels."""
    if tuple(shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'GAN samples have shape [N, {tuple(self.image_shape)}], asked for '
                       f'{shape}.')
    z = temperature * self.prior(rng, shape[0])
    return from_unit_range(self.generator(z, train=False), self.num_levels)

  def decode(self, z):
    """The generated image on [0, 1] for latents z [B, latent_dim]."""
    return (self.generator(z, train=False) + 1.0) / 2.0

  def sample_means(self, rng, n: int, temperature: float = 1.0):
    return self.decode(temperature * self.prior(rng, n))

  # -- annealed importance sampling (latent/ais.py)
  def ais_latent_dim(self) -> int:
    return self.latent_dim

  def decoder_log_prob(self, z, image, obs_std=None):
    """log N(x; G(z), obs_std^2 I) on the [0, 1] pixel scale, z [B, C, d], integer image
    [B, H, W, Ch] -> [B, C] (Wu et al. 2017, Sec. 4: a GAN's generator with a Gaussian
    observation model). obs_std defaults to the model's obs_std."""
    return gaussian_decoder_log_prob(self.decode, z, image,
                                     self.obs_std if obs_std is None else obs_std,
                                     self.num_levels, 'GAN')

  def decoder_sample(self, rng, z, obs_std=None):
    """Images x ~ p(x | z) [N, H, W, Ch] of decoder_log_prob's model, z [N, d]."""
    return gaussian_decoder_sample(self.decode, rng, z,
                                   self.obs_std if obs_std is None else obs_std,
                                   self.num_levels, 'GAN')
