"""What every invertible image model shares: dequantization, preprocessing, the base
distribution, and the trainer's entry points (`loss`, `log_prob`, `sample`, `encode`,
`decode`). The families (flows/nice.py, flows/realnvp.py, flows/glow.py, flows/maf.py)
define only their bijection.

The density, step by step, for an 8-bit image with D = H*W*C sub-pixels:

1. Uniform dequantization (Theis, van den Oord & Bethge 2016, arXiv 1511.01844, Sec. 3.1):
   x = (image + u) / 256, u ~ U[0, 1)^D, so x lies in [0, 1)^D. For any density p on that
   cube, log P(image) >= E_u[log p(x)] - D log 256 (Jensen), and
   `likelihood.discretization_offset(D, 256, 1.0)` = D log 256 is that change of scale.
2. The paper's preprocessing y = pre(x), with its log-Jacobian in the density:
   'none' (NICE: x itself), 'shift' (Glow's code: y = x - 0.5, Jacobian 1), or
   'logit' (Real NVP Sec. 4.1 with alpha = 0.05, MAF Sec. 4.3 with lambda = 1e-6):
   y = logit(alpha + (1 - 2 alpha) x), log|dy/dx| = sum log(1 - 2 alpha) - log p - log(1 - p)
   with p = alpha + (1 - 2 alpha) x.
3. The flow eps = f(y) with its log-determinant; eps is the model's whole latent in STANDARD
   coordinates: factored-out parts with a learned conditional prior N(mu, sigma^2) (Glow)
   enter as (z - mu) / sigma, whose Jacobian is part of f. So the base is a fixed standard
   distribution, N(0, I) or the standard logistic (NICE, Sec. 3.4).

   log p(x) = log p_base(eps) + log|det df/dy| + log|dy/dx|,
   metrics['nll'] = -log p(x) + D log 256        (nats per example, of the 8-bit image)

which the trainer turns into the usual bits/dim (autoreg/likelihood.py). Note that 'logit'
and 'shift' map [0, 1)^D onto a bounded box, so the model's density restricted to the cube
integrates to slightly less than one: the reported number is still an upper bound on the
model's discrete negative log-likelihood (the mass outside the box is simply lost).

Entry points (all through `apply(..., method=...)`):
- loss(batch, train=True) -> (objective, metrics): objective is the batch's mean nll in
  bits/dim (what Glow's code minimizes); metrics hold per-example 'nll', 'log_det' (every
  log-Jacobian: preprocessing and flow) and 'log_prior' (log p_base(eps)), so a non-finite
  value names itself in the trainer's NaN message. Uses rngs {'sample'} for u.
- log_prob(x, train=False) -> [B]: log p(x) for continuous x in [0, 1)^D (the trainer's
  batch statistics where train=True and the model has batch norm).
- encode(image) -> eps [B, D]: the exact, full latent (factored-out parts included, in the
  order they are factored out, the top of the flow last), flattened. Integer images are
  placed at their bins' centres, (image + 0.5) / 256; float input is taken as x in
  [0, 1)^D already (e.g. dequantized data), so decode(encode(x)) == x.
- decode(eps, rng=None) -> x [B, H, W, C], float, on the [0, 1) scale (can leave [0, 1]
  slightly where the model puts mass outside the cube). `rng` is ignored (the decoder is
  deterministic); it is accepted so experiments/latent_pictures.py draws its pictures.
- sample(rng, shape, temperature=1.0) -> int32 images in {0..255}: decode(T * eps) with eps
  from the base, which scales the std of every prior (also Glow's learned conditional
  priors: z = mu + T * sigma * eps); T = 0 decodes the base's mean.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg import likelihood

NUM_LEVELS = 256
PREPROCESSING = ('none', 'shift', 'logit')
PRIORS = ('gaussian', 'logistic')


def _sum(a) -> jnp.ndarray:
  a = a.astype(jnp.float32)
  return a.reshape(a.shape[0], -1).sum(axis=-1)


def preprocess(x, kind: str, alpha: float = 0.05):
  """x in [0, 1)^D -> (y, log|dy/dx| [B]) for 'none', 'shift' or 'logit'."""
  if kind == 'none':
    return x, jnp.zeros((x.shape[0],), jnp.float32)
  if kind == 'shift':
    return x - 0.5, jnp.zeros((x.shape[0],), jnp.float32)
  if kind == 'logit':
    p = alpha + (1.0 - 2.0 * alpha) * x
    log_p, log_1mp = jnp.log(p), jnp.log1p(-p)
    log_det = _sum(math.log(1.0 - 2.0 * alpha) - log_p - log_1mp)
    return log_p - log_1mp, log_det
  raise ValueError(f'preprocessing must be one of {PREPROCESSING}, got {kind!r}')


def postprocess(y, kind: str, alpha: float = 0.05):
  """The inverse of `preprocess`: y -> x on the [0, 1) scale."""
  if kind == 'none':
    return y
  if kind == 'shift':
    return y + 0.5
  if kind == 'logit':
    return (jax.nn.sigmoid(y) - alpha) / (1.0 - 2.0 * alpha)
  raise ValueError(f'preprocessing must be one of {PREPROCESSING}, got {kind!r}')


def base_log_prob(eps, prior: str) -> jnp.ndarray:
  """log p_base(eps) [B] for a standard 'gaussian' or standard 'logistic' base."""
  e = eps.astype(jnp.float32)
  if prior == 'gaussian':
    return _sum(-0.5 * jnp.square(e) - 0.5 * math.log(2 * math.pi))
  if prior == 'logistic':
    # log sigmoid'(e) = -(softplus(e) + softplus(-e)) (NICE, Sec. 3.4).
    return -_sum(jax.nn.softplus(e) + jax.nn.softplus(-e))
  raise ValueError(f'prior must be one of {PRIORS}, got {prior!r}')


def base_sample(rng, shape, prior: str) -> jnp.ndarray:
  if prior == 'gaussian':
    return jax.random.normal(rng, shape, jnp.float32)
  if prior == 'logistic':
    return jax.random.logistic(rng, shape, jnp.float32)
  raise ValueError(f'prior must be one of {PRIORS}, got {prior!r}')


def quantize(x) -> jnp.ndarray:
  """x on the [0, 1) scale -> the 8-bit image whose bin holds it (clipped to {0..255})."""
  return jnp.clip(jnp.floor(x * NUM_LEVELS), 0, NUM_LEVELS - 1).astype(jnp.int32)


class ImageFlow(nn.Module):
  """Base of the image flows; subclasses set the fields' defaults and implement

    _flow(y, train) -> (eps [B, D], log_det [B])    the bijection on the preprocessed data
    _flow_inverse(eps [B, D]) -> y [B, H, W, C]     its inverse (eval mode)

  in `setup`-style modules. See the module docstring for the density and entry points.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  preprocessing: str = 'none'
  alpha: float = 0.05
  prior: str = 'gaussian'

  # -- What subclasses define -----------------------------------------------------------

  def _flow(self, y, train: bool):
    raise NotImplementedError

  def _flow_inverse(self, eps):
    raise NotImplementedError

  # -- Shared ---------------------------------------------------------------------------

  @property
  def num_dims(self) -> int:
    return int(math.prod(self.image_shape))

  def _check_config(self):
    if self.preprocessing not in PREPROCESSING:
      raise ValueError(f'preprocessing={self.preprocessing!r}; choose one of {PREPROCESSING}.')
    if self.prior not in PRIORS:
      raise ValueError(f'prior={self.prior!r}; choose one of {PRIORS}.')
    if self.preprocessing == 'logit' and not 0.0 < self.alpha < 0.5:
      raise ValueError(f'alpha={self.alpha} must lie in (0, 0.5) for the logit transform.')

  def _check_images(self, x):
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'{type(self).__name__} was built for images of shape '
                       f'{tuple(self.image_shape)}, got a batch of shape {tuple(x.shape)}.')

  def dequantize(self, image):
    """x = (image + u) / 256, u ~ U[0, 1), with the 'sample' rng."""
    u = jax.random.uniform(self.make_rng('sample'), image.shape, jnp.float32)
    return (image.astype(jnp.float32) + u) / NUM_LEVELS

  def _log_prob_parts(self, x, train: bool):
    self._check_images(x)
    y, ld_pre = preprocess(x.astype(jnp.float32), self.preprocessing, self.alpha)
    eps, ld_flow = self._flow(y, train)
    return base_log_prob(eps, self.prior), ld_pre + ld_flow

  def log_prob(self, x, train: bool = False):
    """log p(x) [B] in nats for x in [0, 1)^D (NHWC)."""
    log_prior, log_det = self._log_prob_parts(x, train)
    return log_prior + log_det

  def loss(self, batch, train: bool = True):
    image = batch['image']
    x = self.dequantize(image)
    log_prior, log_det = self._log_prob_parts(x, train)
    nll = -(log_prior + log_det) + likelihood.discretization_offset(
        self.num_dims, NUM_LEVELS, 1.0)
    objective = jnp.mean(likelihood.bits_per_dim(nll, self.num_dims))
    return objective, {'nll': nll, 'log_det': log_det, 'log_prior': log_prior}

  def encode(self, image):
    """The full latent eps [B, D]; integers go to their bins' centres, floats are x."""
    if jnp.issubdtype(image.dtype, jnp.integer):
      x = (image.astype(jnp.float32) + 0.5) / NUM_LEVELS
    else:
      x = image.astype(jnp.float32)
    self._check_images(x)
    y, _ = preprocess(x, self.preprocessing, self.alpha)
    return self._flow(y, False)[0]

  def decode(self, eps, rng=None):
    """x [B, H, W, C] on the [0, 1) scale for latents eps [B, D]."""
    del rng  # deterministic
    eps = jnp.asarray(eps, jnp.float32).reshape(eps.shape[0], self.num_dims)
    y = self._flow_inverse(eps).reshape((eps.shape[0],) + tuple(self.image_shape))
    return postprocess(y, self.preprocessing, self.alpha)

  def sample(self, rng, shape, temperature=1.0):
    """Integer images [N, H, W, C] in {0..255} at the given temperature."""
    n, *rest = shape
    if tuple(rest) != tuple(self.image_shape):
      raise ValueError(f'{type(self).__name__} samples images of shape '
                       f'{tuple(self.image_shape)}, asked for {tuple(shape)}.')
    eps = temperature * base_sample(rng, (n, self.num_dims), self.prior)
    return quantize(self.decode(eps))


# -- Latent bookkeeping for multi-scale flows --------------------------------------------

def flatten_latents(parts) -> jnp.ndarray:
  """[B, ...] pieces -> one [B, D] vector, in order."""
  return jnp.concatenate([p.reshape(p.shape[0], -1) for p in parts], axis=-1)


def split_latents(eps, shapes) -> list:
  """The inverse of `flatten_latents` for pieces of the given per-example shapes."""
  out, start = [], 0
  for s in shapes:
    size = int(math.prod(s))
    out.append(eps[:, start:start + size].reshape((eps.shape[0],) + tuple(s)))
    start += size
  if start != eps.shape[-1]:
    raise ValueError(f'latent of size {eps.shape[-1]}, the model has {start} dimensions')
  return out
