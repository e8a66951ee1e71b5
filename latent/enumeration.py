"""Exact references for models with few binary latents, by enumerating every latent state.

For a one-layer SBN or DARN with n binary latents (n <= ~12), every quantity the
estimators of latent/estimators.py target is a finite sum over the 2^n states h:

  log p(x)          = logsumexp_h log p(x, h)
  ELBO(x)           = sum_h q(h|x) (log p(x, h) - log q(h|x))
  L_2(x)            = sum_{h, h'} q(h|x) q(h'|x) log ((w(h) + w(h')) / 2)    (VIMCO, K = 2)
  RWS wake-q target = -sum_h p(h|x) log q(h|x)   (its gradient: that of KL(p(h|x) || q))
  sleep target      = -sum_{x, h} p(x, h) log q(h|x)   (all 2^D images too: tiny D only)

so their exact gradients are `jax.grad` of these sums. Tests and
benchmarks/estimator_gradients.py hold each estimator's Monte-Carlo mean against them.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def binary_states(n: int) -> jnp.ndarray:
  """All 2^n binary vectors [2^n, n] (float32), in lexicographic order."""
  if n > 20:
    raise ValueError(f'2^{n} states is too many to enumerate.')
  return jnp.asarray(np.array(list(itertools.product([0.0, 1.0], repeat=n)), np.float32))


def _tables(model, variables, x):
  """log p(x, h) and log q(h | x), both [2^n, B], for x [B, D] flat floats."""
  n = model.latent_dims[0]
  h = binary_states(n)[:, None, :]
  h = jnp.broadcast_to(h, (h.shape[0], x.shape[0], n))
  log_p = model.apply(variables, x, [h], method='joint_log_prob')
  log_q = model.apply(variables, x, [h], method='q_log_prob')
  return log_p, log_q


def _check(model):
  if len(model.latent_dims) != 1:
    raise ValueError('Enumeration is written for one stochastic layer.')


def log_marginal(model, variables, x):
  """Exact log p(x) [B]."""
  _check(model)
  return jax.nn.logsumexp(_tables(model, variables, x)[0], axis=0)


def elbo(model, variables, x):
  """Exact ELBO(x) [B] under q(h | x)."""
  _check(model)
  log_p, log_q = _tables(model, variables, x)
  return (jnp.exp(log_q) * (log_p - log_q)).sum(0)


def iwae_bound_k2(model, variables, x):
  """Exact L_2(x) [B]: the expectation over both samples' 2^n x 2^n states."""
  _check(model)
  log_p, log_q = _tables(model, variables, x)
  log_w = log_p - log_q
  pair = jnp.logaddexp(log_w[:, None], log_w[None, :]) - jnp.log(2.0)
  q = jnp.exp(log_q)
  return (q[:, None] * q[None, :] * pair).sum((0, 1))


def rws_wake_q_target(model, variables, x):
  """-sum_h p(h | x) log q(h | x) [B], with the posterior held constant: its gradient in
  the recognition parameters is that of KL(p(h|x) || q(h|x)), RWS's wake-q direction."""
  _check(model)
  log_p, log_q = _tables(model, variables, x)
  post = jax.lax.stop_gradient(jax.nn.softmax(log_p, axis=0))
  return -(post * log_q).sum(0)


def sleep_target(model, variables, num_pixels: int):
  """-E_{p(x, h)} log q(h | x), summed over every image and latent state (tiny models):
  the sleep phase's objective, whose gradient wake-sleep's sleep phase estimates."""
  _check(model)
  xs = binary_states(num_pixels)
  log_p, log_q = _tables(model, variables, xs)              # [2^n, 2^D]
  joint = jax.lax.stop_gradient(jnp.exp(log_p))
  return -(joint * log_q).sum()
