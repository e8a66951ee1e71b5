"""Densities the latent-variable models share: diagonal Gaussians (posteriors, priors and
decoders), Bernoulli decoders over binary images, and a single discretized logistic per
sub-pixel over 8-bit images (Kingma et al. 2016, arXiv 1606.04934, Sec. 5; Salimans,
Karpathy, Chen & Kingma 2017, arXiv 1701.05517, Eq. 2 without the mixture, whose bin masses
come from autoreg.distributions so both packages score a bin the same way).

All log-densities are summed over every non-batch axis and returned in nats per example.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from autoreg.distributions import discretized_logistic_log_mass

LOG_2PI = math.log(2 * math.pi)


def _sum_event(x, batch_ndim: int):
  return x.reshape(x.shape[:batch_ndim] + (-1,)).sum(-1)


def gaussian_log_prob(x, mean, log_var, batch_ndim: int = 1):
  """log N(x; mean, diag(exp(log_var))) summed over the event axes."""
  lp = -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * jnp.exp(-log_var))
  return _sum_event(lp, batch_ndim)


def standard_normal_log_prob(x, batch_ndim: int = 1):
  return _sum_event(-0.5 * (LOG_2PI + x ** 2), batch_ndim)


def gaussian_kl_to_standard(mean, log_var, batch_ndim: int = 1):
  """KL(N(mean, diag exp(log_var)) || N(0, I)) in closed form (Kingma & Welling 2014,
  Appendix B): -1/2 sum(1 + log_var - mean^2 - exp(log_var))."""
  kl = -0.5 * (1.0 + log_var - mean ** 2 - jnp.exp(log_var))
  return _sum_event(kl, batch_ndim)


def reparameterize(rng, mean, log_var, sample_shape=()):
  """z = mean + sigma * eps, eps ~ N(0, I): the reparameterization trick (Kingma & Welling
  2014, Sec. 2.4). sample_shape is prepended to mean's shape."""
  eps = jax.random.normal(rng, tuple(sample_shape) + mean.shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_var) * eps


def bernoulli_log_prob(x, logits, batch_ndim: int = 1):
  """log Bernoulli(x; sigmoid(logits)), x in {0, 1}, stable for any logits:
  x * logits - softplus(logits)."""
  x = x.astype(logits.dtype)
  return _sum_event(x * logits - jax.nn.softplus(logits), batch_ndim)


def discretized_logistic_log_prob(x_int, mean, log_scale, num_levels: int = 256,
                                  batch_ndim: int = 1):
  """log P(x_int) for x_int in {0..L-1} under a logistic(mean, exp(log_scale)) on [-1, 1],
  discretized into L bins; the edge bins take the tails (PixelCNN++'s Eq. 2, computed
  exactly in both tails by autoreg.distributions.discretized_logistic_log_mass)."""
  return _sum_event(discretized_logistic_log_mass(x_int, mean, log_scale, num_levels),
                    batch_ndim)


def logistic_mean_to_levels(mean, num_levels: int = 256):
  """The integer image nearest a logistic mean on [-1, 1]."""
  levels = jnp.round((mean + 1.0) * (num_levels - 1) / 2.0)
  return jnp.clip(levels, 0, num_levels - 1).astype(jnp.int32)
