"""Deep AutoRegressive Networks (DARN): binary latents with autoregressive structure.

Gregor, Danihelka, Mnih, Blundell & Wierstra, "Deep AutoRegressive Networks", 2014, arXiv
1310.8499, Sec. 2 (one stochastic layer):

  p(h) = prod_j p(h_j | h_<j),         p(h_j = 1 | h_<j) = sigmoid(b_j + sum_{k<j} W_jk h_k)
  p(x | h) = prod_i p(x_i | x_<i, h),  p(x_i = 1 | x_<i, h) = sigmoid(c_i + (U h)_i
                                                                      + sum_{k<i} A_ik x_k)

The autoregressive maps are MADE layers (autoreg/made.py; Germain et al. 2015): with no
hidden layers (prior_hidden = (), decoder_hidden = ()) exactly the linear autoregressive
connections above, with hidden layers their deep MADE form; h enters the decoder through
unmasked weights at every layer (MADE's context). autoregressive_x=False gives the factorial
decoder sigmoid(c + U h) (the DARN paper's "no autoregressive connections in the visibles").
The recognition network q(h | x) is factorial, sigmoid(MLP(x)), so h ~ q is one pass and the
k = 5000 importance-sampled evaluation stays affordable.

Training: by the score-function estimators of latent/estimators.py (NVIL by default), not
the DARN paper's own gradient, which back-propagates through the binary units with a
first-order (Taylor) approximation of the change in the description length.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg.made import MADE
from latent import estimators as est
from latent.sbn import EstimatedLoss, check_dims


class DARN(EstimatedLoss, nn.Module):
  """Attributes:
    image_shape: (H, W, C) of the binary data.
    latent_dims: (H_latent,), one stochastic layer.
    prior_hidden: hidden layers of the prior's MADE (() = linear autoregressive).
    decoder_hidden: hidden layers of the decoder's MADE over x (() = linear).
    encoder_hidden: hidden tanh layers of the factorial recognition network (() = linear).
    autoregressive_x: autoregressive decoder (True) or factorial (False).
    estimator, num_samples, rws_q_update, baseline_*, centering, variance_normalization,
    eval_num_samples, eval_chunk_size: as in latent/sbn.py.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  latent_dims: Sequence[int] = (200,)
  prior_hidden: Sequence[int] = ()
  decoder_hidden: Sequence[int] = ()
  encoder_hidden: Sequence[int] = ()
  autoregressive_x: bool = True
  estimator: str = 'nvil'
  num_samples: int = 1
  rws_q_update: str = 'wake'
  baseline_hidden: int = 100
  baseline_decay: float = 0.8
  centering: bool = True
  variance_normalization: bool = True
  eval_num_samples: int = 0
  eval_chunk_size: int = 100

  def setup(self):
    check_dims('latent_dims', self.latent_dims)
    if len(self.latent_dims) != 1:
      raise ValueError(f'DARN here has one stochastic layer: latent_dims='
                       f'{tuple(self.latent_dims)}; give one size, e.g. "(200,)".')
    est.check_estimator(self.estimator, self.num_samples, self.rws_q_update)
    self.prior = MADE(tuple(self.prior_hidden), activation=jnp.tanh, hidden_order='sequential')
    # The prior's first unit has no parents: its logit is the MADE's bias alone.
    if self.autoregressive_x:
      self.decoder = MADE(tuple(self.decoder_hidden), activation=jnp.tanh,
                          hidden_order='sequential')
    else:
      self.decoder = nn.Dense(self.num_dims, name='p_x')
    self.enc_hidden = [nn.Dense(h) for h in self.encoder_hidden]
    self.enc_out = nn.Dense(self.latent_dims[0])
    if self.estimator == 'nvil':
      self.baseline = est.NVILBaseline(self.baseline_hidden, self.baseline_decay,
                                       self.centering, self.variance_normalization)

  # -- Densities --------------------------------------------------------------------------

  def _q_logits(self, x):
    for layer in self.enc_hidden:
      x = jnp.tanh(layer(x))
    return self.enc_out(x)

  def q_sample(self, x, rng, num_samples: int):
    logits = self._q_logits(jnp.broadcast_to(x, (num_samples,) + x.shape))
    h = est.bernoulli_sample(rng, logits)
    return [h], est.bernoulli_log_prob(h, logits)

  def q_log_prob(self, x, hs):
    return est.bernoulli_log_prob(hs[0], self._q_logits(x))

  def _prior_logits(self, h):
    return self.prior(h)[..., 0]

  def _x_logits(self, x, h1):
    if self.autoregressive_x:
      return self.decoder(x, context=h1)[..., 0]
    return self.decoder(h1)

  def log_px(self, x, h1):
    x = jnp.broadcast_to(x, h1.shape[:-1] + x.shape[-1:])
    return est.bernoulli_log_prob(x, self._x_logits(x, h1))

  def joint_log_prob(self, x, hs):
    h = hs[0]
    return est.bernoulli_log_prob(h, self._prior_logits(h)) + self.log_px(x, h)

  def _ancestral(self, rng, logits_fn, n: int, dims: int):
    """Binary v [n, dims] drawn one unit at a time from logits_fn(v)[:, i] (a scan over the
    units: unit i's logit depends only on units < i, so filling them in order is exact)."""
    u = jax.random.uniform(rng, (dims, n))

    def body(v, i):
      p = jax.nn.sigmoid(logits_fn(v)[:, i])
      v = v.at[:, i].set((u[i] < p).astype(v.dtype))
      return v, None

    v, _ = jax.lax.scan(body, jnp.zeros((n, dims), jnp.float32), jnp.arange(dims))
    return jax.lax.stop_gradient(v)

  def _sample_x(self, rng, h1):
    if self.autoregressive_x:
      return self._ancestral(rng, lambda x: self._x_logits(x, h1), h1.shape[0], self.num_dims)
    return est.bernoulli_sample(rng, self._x_logits(None, h1))

  def dream(self, rng, n: int):
    k_h, k_x = jax.random.split(rng)
    h = self._ancestral(k_h, self._prior_logits, n, self.latent_dims[0])
    return [h], self._sample_x(k_x, h)

  # -- Pictures and samples ---------------------------------------------------------------

  def encode(self, image):
    """q(h = 1 | x) [B, H_latent]."""
    return jax.nn.sigmoid(self._q_logits(self._flat(image)))

  def decode(self, h1, rng):
    """A sampled image x ~ p(x | h) on [0, 1] (the decoder is autoregressive, so it has no
    mean image in closed form); h1 is rounded to binary units."""
    h = (h1 > 0.5).astype(jnp.float32)
    x = self._sample_x(rng, h)
    return x.reshape(h1.shape[:-1] + tuple(self.image_shape))

  def sample(self, rng, shape, temperature: float = 1.0):
    """Binary images [N, H, W, C] drawn ancestrally: h unit by unit, then x pixel by pixel."""
    del temperature
    if tuple(shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'DARN samples have shape [N, {tuple(self.image_shape)}], '
                       f'asked for {shape}.')
    _, x = self.dream(rng, shape[0])
    return x.reshape(tuple(shape)).astype(jnp.int32)
