"""Glow: generative flow with invertible 1x1 convolutions.

Kingma & Dhariwal 2018, arXiv 1807.03039, with the details of their released code.

- Preprocessing: x = (image + u) / 256 - 0.5 (the code's `x / n_bins - .5`; Jacobian 1).
- One step of flow (Sec. 3, Table 1, Fig. 2a): actnorm (data-dependent initialization on
  the batch `init` sees) -> invertible 1x1 convolution (LU-decomposed by default, Sec. 3.2;
  its P and sign(s) are fixed constants in the 'constants' collection; the released code's
  `invertible_1x1_conv` runs the plain one unless edited) -> affine coupling (the code's
  version: scale = sigmoid(h + 2), flows/bijectors.py GlowCoupling).
- The comparison of Fig. 3, as the code's `flow_permutation` and `flow_coupling`
  options: `permutation` 'reverse' (the channel order reversed, Real NVP's fixed
  permutation) or 'shuffle' (a fixed random channel permutation, a different one per step)
  in place of the 1x1 convolution, and `coupling` 'additive' (NICE's y_b = x_b + NN(x_a),
  log-det 0, GlowCoupling(additive=True)) in place of the affine one.
- The multi-scale architecture (Fig. 2b): L levels, each a squeeze, K steps of flow and,
  except at the last level, a split: half of the channels z2 are factored out with a
  learned conditional prior N(mu, sigma^2), [mu, log sigma] = Conv2dZeros(z1), a
  zero-initialized 3x3 convolution of the kept half (the code's `split2d`). At the top,
  `learn_top` gives the last latent a learned per-channel mean and log-scale (the code's
  `learntop`, which is a zero-initialized convolution of zeros).

Latents are returned standardized: a factored-out z2 as eps2 = (z2 - mu) / sigma (log-det
-sum log sigma), so the whole latent is N(0, I) under the model and sampling at
temperature T draws z2 = mu + T * sigma * eps2 (flows/models.py). The latent of `encode`
is [eps of level 0's split, ..., level L-2's, the top], each flattened.

Glow reports 3.35 bits/dim on CIFAR-10 (L=3, K=32, 512 hidden channels, affine coupling,
Table 2). The Glow paper has no MNIST result; 1.05 bits/dim for Glow on MNIST is the figure
Grathwohl et al. 2019 (FFJORD, arXiv 1810.01367, Table 2) report. The released code pads
MNIST to 32x32 for three levels; we keep 28x28 (D = 784 exactly) and use two levels
(28 -> 14 -> 7).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from flows import bijectors as fb
from flows.models import ImageFlow, flatten_latents, split_latents


class Conv2dZeros(nn.Module):
  """Glow's zero-initialized 3x3 convolution with the exp(3 * logs) output rescaling."""
  features: int

  @nn.compact
  def __call__(self, x):
    return fb.Conditioner((), self.features, output_kernel_size=3,
                          output_logscale_factor=3.0, name='conv')(x)


class SplitPrior(nn.Module):
  """log p(z2 | z1) by standardizing: returns eps2 = (z2 - mu) * exp(-logs) and
  log_det = -sum logs (forward), or z2 = mu + exp(logs) * eps2 (inverse)."""

  @nn.compact
  def __call__(self, z1, z2, inverse=False):
    h = Conv2dZeros(2 * z2.shape[-1], name='prior')(z1)
    mean, logs = h[..., 0::2], h[..., 1::2]
    log_det = -fb._per_example_sum(logs)  # pylint: disable=protected-access
    if inverse:
      return mean + jnp.exp(logs) * z2, -log_det
    return (z2 - mean) * jnp.exp(-logs), log_det


class TopPrior(nn.Module):
  """The top latent's prior: learned per-channel mean and log-scale (zero at the start)."""

  @nn.compact
  def __call__(self, z, inverse=False):
    c = z.shape[-1]
    mean = self.param('mean', nn.initializers.zeros, (c,))
    logs = self.param('logs', nn.initializers.zeros, (c,))
    log_det = -fb._batch_constant(z, fb._spatial_size(z) * jnp.sum(logs))  # pylint: disable=protected-access
    if inverse:
      return mean + jnp.exp(logs) * z, -log_det
    return (z - mean) * jnp.exp(-logs), log_det


COUPLINGS = ('affine', 'additive')
PERMUTATIONS = ('1x1conv', 'shuffle', 'reverse')


class Glow(ImageFlow):
  """Glow on [H, W, C] images.

  Attributes (beyond ImageFlow's image_shape, preprocessing, prior):
    num_levels: L; H and W must be divisible by 2^L.
    num_steps: K steps of flow per level.
    hidden_features: the coupling networks' hidden channels (512 in the paper).
    lu: with permutation='1x1conv', the LU-decomposed 1x1 convolution (else the plain one
      with a slogdet); the fixed permutations have no weights and ignore it.
    learn_top: a learned mean and scale for the top latent (else N(0, I)).
    coupling: 'affine' (the paper's model) or 'additive' (Fig. 3).
    permutation: '1x1conv' (the paper's model), 'shuffle' or 'reverse' (Fig. 3).
      The defaults are the layers and parameter names of runs saved before these options.

  Actnorm's data-dependent initialization needs a batch with several distinct values per
  channel at every level: the trainer initializes on an evaluation batch (hundreds of
  images). With two images and a 1x1 top level the per-channel std estimates can be
  near zero, and the initial scales then overflow float32 after a few dozen steps.
  """
  num_levels: int = 3
  num_steps: int = 32
  hidden_features: int = 512
  lu: bool = True
  learn_top: bool = True
  coupling: str = 'affine'
  permutation: str = '1x1conv'
  preprocessing: str = 'shift'
  prior: str = 'gaussian'

  def setup(self):
    self._check_config()
    h, w, c = self.image_shape
    if self.num_levels < 1 or h % 2 ** self.num_levels or w % 2 ** self.num_levels:
      raise ValueError(f'num_levels={self.num_levels} needs H and W divisible by '
                       f'2^num_levels; the images are {h}x{w}.')
    if self.coupling not in COUPLINGS:
      raise ValueError(f'coupling={self.coupling!r}; choose one of {COUPLINGS}.')
    if self.permutation not in PERMUTATIONS:
      raise ValueError(f'permutation={self.permutation!r}; choose one of {PERMUTATIONS}.')
    additive = self.coupling == 'additive'
    levels, priors, shapes = [], [], []
    for level in range(self.num_levels):
      layers = [fb.Squeeze(name=f'level{level}_squeeze')]
      h, w, c = h // 2, w // 2, 4 * c
      for k in range(self.num_steps):
        layers += [fb.ActNorm(name=f'level{level}_step{k}_actnorm'),
                   self._permutation_layer(level, k),
                   fb.GlowCoupling(self.hidden_features, additive=additive,
                                   name=f'level{level}_step{k}_coupling')]
      levels.append(fb.Chain(layers))
      if level < self.num_levels - 1:
        priors.append(SplitPrior(name=f'level{level}_split'))
        shapes.append((h, w, c - c // 2))
        c = c // 2
    shapes.append((h, w, c))
    self.levels = levels
    self.split_priors = priors
    if self.learn_top:
      self.top_prior = TopPrior()
    self.latent_shapes = tuple(shapes)
    assert sum(math.prod(s) for s in shapes) == self.num_dims

  def _permutation_layer(self, level: int, step: int) -> fb.Bijector:
    name = f'level{level}_step{step}'
    if self.permutation == 'reverse':
      return fb.Reverse(name=f'{name}_reverse')
    if self.permutation == 'shuffle':
      # One seed per step: the code seeds each step's shuffle from its scope name, so the
      # steps permute differently.
      return fb.Permute(seed=level * self.num_steps + step, name=f'{name}_shuffle')
    conv = fb.LUInvertible1x1Conv if self.lu else fb.Invertible1x1Conv
    return conv(name=f'{name}_invconv')

  def _flow(self, y, train):
    log_det = jnp.zeros((y.shape[0],), jnp.float32)
    latents = []
    for level, chain in enumerate(self.levels):
      y, ld = chain(y, inverse=False, train=train)
      log_det = log_det + ld
      if level < self.num_levels - 1:
        keep = y.shape[-1] // 2
        eps2, ld = self.split_priors[level](y[..., :keep], y[..., keep:])
        latents.append(eps2)
        log_det = log_det + ld
        y = y[..., :keep]
    if self.learn_top:
      y, ld = self.top_prior(y)
      log_det = log_det + ld
    latents.append(y)
    return flatten_latents(latents), log_det

  def _flow_inverse(self, eps):
    parts = split_latents(eps, self.latent_shapes)
    y = parts[-1]
    if self.learn_top:
      y, _ = self.top_prior(y, inverse=True)
    for level in reversed(range(self.num_levels)):
      if level < self.num_levels - 1:
        z2, _ = self.split_priors[level](y, parts[level], inverse=True)
        y = jnp.concatenate([y, z2], axis=-1)
      y, _ = self.levels[level](y, inverse=True)
    return y
