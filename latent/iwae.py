"""Importance-weighted bounds and the importance-sampled log-likelihood estimate.

Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", 2016, arXiv 1509.00519.
With log weights log w_i = log p(x, h_i) - log q(h_i | x), h_i ~ q(h | x) i.i.d.,

  L_k = E[ log (1/k) sum_i w_i ]                                       (Eq. 8)

is a lower bound on log p(x) that increases with k (Theorem 1) and tends to log p(x) as
k -> infinity when w is bounded. L_1 is the ELBO. For evaluation the same estimator with
k = 5000 is the standard importance-sampled log-likelihood (Sec. 5); `log_likelihood`
computes it for any model that gives log weights, in chunks of samples with a running
logsumexp so memory does not grow with k.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp


def iwae_bound(log_w, axis: int = 0):
  """log (1/k) sum_i exp(log_w_i) along `axis` (the k samples), computed stably."""
  k = log_w.shape[axis]
  return jax.nn.logsumexp(log_w, axis=axis) - math.log(k)


def log_likelihood(log_weights_fn: Callable, rng, num_samples: int, chunk_size: int = 100):
  """Importance-sampled estimate of log p(x) per example: L_k with k = num_samples.

  log_weights_fn(rng, n) -> [n, B] log weights of n fresh samples for each of the B
  examples. The k samples are drawn in chunks of `chunk_size` under a lax.scan; each chunk
  adds its logsumexp to a running one, so memory is that of one chunk.
  """
  chunk_size = min(chunk_size, num_samples)
  if num_samples % chunk_size:
    raise ValueError(f'num_samples={num_samples} must be a multiple of chunk_size={chunk_size}.')
  num_chunks = num_samples // chunk_size

  def body(acc, i):
    lw = log_weights_fn(jax.random.fold_in(rng, i), chunk_size)
    return jnp.logaddexp(acc, jax.nn.logsumexp(lw, axis=0)), None

  first = jax.nn.logsumexp(log_weights_fn(jax.random.fold_in(rng, 0), chunk_size), axis=0)
  if num_chunks > 1:
    first, _ = jax.lax.scan(body, first, jnp.arange(1, num_chunks))
  return first - math.log(num_samples)
