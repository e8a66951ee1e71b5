"""Gradient estimators for models with discrete latent variables, as surrogate objectives.

Each estimator is written as a surrogate: a per-example scalar whose gradient, taken by
`jax.grad` through the one train step, is the estimator's update for every parameter at
once. The samples h ~ q(h | x) (or the dreams (h, x) ~ p) enter as constants
(`jax.lax.stop_gradient`), so log p(x, h) carries gradients only to the generative
parameters and log q(h | x) only to the recognition parameters; a learning signal that
multiplies log q is a constant too. With K samples, log_p and log_q are [K, B] and
log w = log p(x, h) - log q(h | x).

- 'wake_sleep' (Hinton, Dayan, Frey & Neal 1995): wake, log p(x, h) with h ~ q(h | x) for
  training x (generative parameters); sleep, log q(h' | x') for (h', x') ~ p dreamed from
  the model (recognition parameters). Neither phase follows the gradient of one bound.
- 'rws' (Bornschein & Bengio 2015, arXiv 1406.2751, Sec. 3): self-normalized importance
  weights w~_k = w_k / sum_j w_j of K samples from q; wake p, sum_k w~_k log p(x, h_k)
  (this is exactly the gradient of L_K for p); the q update 'wake' sum_k w~_k log q(h_k | x)
  (an estimate of -grad KL(p(h|x) || q(h|x))), 'sleep' (the wake-sleep sleep phase) or
  'both' (their average).
- 'reinforce' (Williams 1992): the ELBO's score-function gradient, signal l = log w,
  surrogate log p + l log q (unbiased; E[grad log q] = 0 removes the direct term).
- 'nvil' (Mnih & Gregor 2014, arXiv 1402.0030, Sec. 3 and Algorithm 1): the same with the
  signal (l - C_psi(x) - c) / max(1, sqrt(v)), an input-dependent baseline C_psi(x) (an MLP
  trained to minimize (l - c - C_psi(x))^2) and running averages c, v of the mean and the
  variance of l - C_psi(x) (`NVILBaseline`). Every part of the signal is constant in h, so
  the estimator stays unbiased up to the positive scale 1 / max(1, sqrt(v)).
- 'vimco' (Mnih & Rezende 2016, arXiv 1602.06725, Eq. 8-10): the K-sample bound
  L = log (1/K) sum_k w_k, its gradient through log w (the importance-weighted path), plus
  sum_k (L - L_{-k}) grad log q(h_k | x), where L_{-k} replaces w_k by the geometric mean
  of the other K - 1 weights; unbiased for grad L_K.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

ESTIMATORS = ('wake_sleep', 'rws', 'reinforce', 'nvil', 'vimco')
RWS_Q_UPDATES = ('wake', 'sleep', 'both')

sg = jax.lax.stop_gradient


def check_estimator(estimator: str, num_samples: int, rws_q_update: str = 'wake') -> None:
  """ValueErrors naming the field and the choices for an estimator that cannot run."""
  if estimator not in ESTIMATORS:
    raise ValueError(f'estimator={estimator!r} is not an estimator here; choose one of '
                     f'{", ".join(ESTIMATORS)} (config.model.estimator).')
  if num_samples < 1:
    raise ValueError(f'num_samples={num_samples} must be >= 1 (config.model.num_samples).')
  if estimator == 'vimco' and num_samples < 2:
    raise ValueError(f"estimator='vimco' needs num_samples >= 2 (its baseline for each "
                     f'sample comes from the others), got num_samples={num_samples}. Set '
                     '--config.model.num_samples=5 (or more).')
  if rws_q_update not in RWS_Q_UPDATES:
    raise ValueError(f'rws_q_update={rws_q_update!r}; choose one of '
                     f'{", ".join(RWS_Q_UPDATES)} (config.model.rws_q_update).')


def with_value(value, surrogate):
  """An array equal to `value` whose gradient is that of `surrogate`."""
  return sg(value) + surrogate - sg(surrogate)


def iwae_bound(log_w):
  return jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])


def vimco_signals(log_w):
  """[K, B] learning signals L - L_{-k} of VIMCO's leave-one-out baseline (Eq. 9-10):
  L_{-k} is the bound with log w_k replaced by the mean of the other K - 1 log weights."""
  k = log_w.shape[0]
  bound = iwae_bound(log_w)
  others = (log_w.sum(0, keepdims=True) - log_w) / (k - 1)          # [K, B]
  eye = jnp.eye(k, dtype=bool)[:, :, None]                          # [K(j), K(i), 1]
  # m[j, i] = log w_i for i != j, the geometric-mean stand-in for i == j.
  m = jnp.where(eye, others[:, None, :], log_w[None, :, :])
  bound_minus = jax.nn.logsumexp(m, axis=1) - math.log(k)            # [K, B]
  return bound[None] - bound_minus


class NVILBaseline(nn.Module):
  """NVIL's variance reduction (Mnih & Gregor 2014, Sec. 3.1-3.3, Algorithm 1).

  __call__(x, log_w, train) -> (signal [K, B], baseline loss [B]). C_psi(x) is an MLP with one
  hidden layer of `hidden` tanh units (0: no input-dependent baseline); c and v are
  exponential running averages (decay `decay`) of the batch mean and variance of
  log_w - C_psi(x), kept in the 'running' collection, updated before use as in Algorithm 1,
  and only in training (evaluation reads them).
  """
  hidden: int = 100
  decay: float = 0.8
  centering: bool = True
  variance_normalization: bool = True

  @nn.compact
  def __call__(self, x, log_w, train: bool = True):
    log_w = sg(log_w)
    if self.hidden > 0:
      cx = nn.Dense(1, name='out')(jnp.tanh(nn.Dense(self.hidden, name='hidden')(x)))[..., 0]
    else:
      cx = jnp.zeros(log_w.shape[1:], log_w.dtype)
    c = self.variable('running', 'mean', lambda: jnp.zeros((), jnp.float32))
    v = self.variable('running', 'var', lambda: jnp.zeros((), jnp.float32))
    r = log_w - sg(cx)[None]
    if train and not self.is_initializing() and self.is_mutable_collection('running'):
      a = self.decay
      c.value = a * c.value + (1 - a) * r.mean()
      v.value = a * v.value + (1 - a) * r.var()
    signal = r - c.value if self.centering else r
    if self.variance_normalization:
      signal = signal / jnp.maximum(1.0, jnp.sqrt(v.value))
    target = log_w - (c.value if self.centering else 0.0)
    baseline_loss = 0.5 * ((target - cx[None]) ** 2).mean(0)
    return sg(signal), baseline_loss


def surrogate(estimator: str, log_p, log_q, *, signal=None, sleep_log_q=None,
              rws_q_update: str = 'wake'):
  """[B] surrogate to MAXIMIZE whose gradient is the estimator's update.

  log_p, log_q: [K, B], computed from samples that are constants. signal: [K, B] the
  learning signal for 'nvil' (from NVILBaseline). sleep_log_q: [B] log q(h' | x') of
  constant dreams, for 'wake_sleep' and for 'rws' with rws_q_update 'sleep' or 'both'.
  """
  log_w = log_p - log_q
  if estimator == 'wake_sleep':
    return log_p.mean(0) + sleep_log_q
  if estimator == 'rws':
    w = sg(jax.nn.softmax(log_w, axis=0))
    wake_q = (w * log_q).sum(0)
    q_term = {'wake': wake_q, 'sleep': sleep_log_q,
              'both': None if sleep_log_q is None else 0.5 * (wake_q + sleep_log_q)
              }[rws_q_update]
    return (w * log_p).sum(0) + q_term
  if estimator == 'reinforce':
    return (log_p + sg(log_w) * log_q).mean(0)
  if estimator == 'nvil':
    return (log_p + sg(signal) * log_q).mean(0)
  if estimator == 'vimco':
    return iwae_bound(log_w) + (sg(vimco_signals(log_w)) * log_q).sum(0)
  raise ValueError(f'estimator={estimator!r}; choose one of {", ".join(ESTIMATORS)}.')


def needs_dreams(estimator: str, rws_q_update: str = 'wake') -> bool:
  return estimator == 'wake_sleep' or (estimator == 'rws' and rws_q_update != 'wake')


def bernoulli_sample(rng, logits):
  """Binary h ~ Bernoulli(sigmoid(logits)) as floats, carrying no gradient."""
  return sg((jax.random.uniform(rng, logits.shape) < jax.nn.sigmoid(logits)).astype(logits.dtype))


def bernoulli_log_prob(h, logits):
  """log Bernoulli(h; sigmoid(logits)) summed over the last axis."""
  return (h * logits - jax.nn.softplus(logits)).sum(-1)
