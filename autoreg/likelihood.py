"""The one audited place where likelihoods become reported numbers.

Every model reports its negative log-likelihood (or bound) per example in nats; the
trainer turns that into bits per dimension here, so every family is measured the same way.

For continuous densities over 8-bit data (flows, Gaussian/logistic decoders) the data are
first scaled to [0, 1) or [-1, 1]; the change of variables from the integer grid
{0..255}^D to that scale contributes D * log(scale) nats, which `discretization_offset`
returns. Uniform dequantization (Theis et al. 2016, arXiv 1511.01844) makes the continuous
log-density a lower bound on the discrete log-likelihood once this offset is added.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LN2 = math.log(2.0)


def bits_per_dim(nll_nats, num_dims: int):
  """Converts a per-example NLL in nats to bits per dimension."""
  return nll_nats / (num_dims * LN2)


def discretization_offset(num_dims: int, num_levels: int = 256, data_range: float = 1.0):
  """Nats to add to a continuous NLL of data scaled from {0..L-1} to width `data_range`.

  If x_int in {0..L-1}^D is mapped to x = x_int * data_range / L, then
  -log P(x_int) = -log p(x) + D * log(L / data_range).
  """
  return num_dims * math.log(num_levels / data_range)


def categorical_log_prob(logits, x):
  """log P(x) per example for independent categoricals.

  logits: [B, ..., L] unnormalized; x: int [B, ...] in {0..L-1}. Returns [B] nats.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked.reshape(picked.shape[0], -1).sum(axis=-1)
