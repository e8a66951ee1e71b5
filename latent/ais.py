"""Annealed importance sampling (AIS) for the log-likelihood of decoder-based models, and
bidirectional Monte Carlo (BDMC) to bound its error on simulated data.

Wu, Burda, Salakhutdinov & Grosse, "On the Quantitative Analysis of Decoder-Based Generative
Models", ICLR 2017, arXiv 1611.04273 (Sec. 2.2-2.3, 3, 5.3.1); Neal, "Annealed Importance
Sampling", 2001; Grosse, Ghahramani & Adams, "Sandwiching the marginal likelihood using
bidirectional Monte Carlo", 2015, arXiv 1511.02543.

For a model z ~ p(z) = N(0, I_d), x ~ p(x | z), AIS anneals from the prior to the
unnormalized posterior along the geometric path (Wu et al., Eq. 5)

  f_t(z) = p(z) p(x | z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1,

with z_0 ~ p(z), the weight update log w += (beta_t - beta_{t-1}) log p(x | z_{t-1}) and then
one HMC transition leaving f_t invariant (Eq. 4). exp(log w) is an unbiased estimate of
p(x) (the prior is normalized, so Z_0 = 1), and the logmeanexp over C independent chains is
a stochastic lower bound on log p(x): E[log p_hat] <= log p(x) and
P(log p_hat > log p(x) + b) < e^-b.

Reverse AIS (BDMC) runs the same chain from beta = 1 down to 0, started at an exact posterior
sample z* ~ p(z | x). Its weight is an unbiased estimate of 1/p(x), so minus its logmeanexp
is a stochastic upper bound on log p(x). For data simulated from the model (z* ~ p(z),
x ~ p(x | z*)) z* is such a sample; the gap between the two bounds bounds the error of
forward AIS on that data (Wu et al., Sec. 2.3 and 5.3.1).

The transition is Wu et al.'s: one HMC trajectory of `leapfrog_steps` leapfrog steps (10 in
the paper) with an identity mass matrix; the step size starts at 0.01 and after each
transition is multiplied by 1.02 if a moving average (weight 0.1 on the newest) of the
acceptance rate is above the target 0.65, else by 0.98, clipped to [1e-4, 0.5] (their code,
github.com/tonywu95/eval_gen sampling/samplers.py and the Theano HMC it uses). Here each
example has its own step size, adapted on the acceptance of its own chains, where theirs is
one step size for the whole batch. Adapting on the chain's own history makes the
transition at step t depend on the past, which the textbook unbiasedness argument does not
cover; `adapt_step_size=False` keeps the step size fixed and the estimator exact in that
sense (the tests check both bounds with adaptation on).

The schedule (beta_t) is the sigmoid one of Wu et al.'s code (from Grosse et al. 2015):
gamma_t = sigmoid(rad * (2t/T - 1)), rad = 4, rescaled to run from 0 to 1, which puts more
distributions near beta = 0 and 1; 'linear' is also offered. `num_steps` is T, the number
of intermediate distributions after the prior (10,000 in the paper), each costing one HMC
trajectory. Everything is one `jax.lax.scan` over t (and one over the leapfrog steps), so
the compiled program does not grow with T; a batch of B examples runs B x C chains at once.
"""
from __future__ import annotations

import math
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ('sigmoid', 'linear')

# A log-likelihood function: (z [B, C, d], x) -> log p(x | z) [B, C], where x holds B examples.
LogLikelihoodFn = Callable[[jax.Array, object], jax.Array]


@flax.struct.dataclass
class AISResult:
  """What one AIS run returns, per example b of the batch and chain c.

  log_px: [B] the estimate of log p(x): logmeanexp_c log_weights (forward), a stochastic
    lower bound; for reverse AIS -logmeanexp_c log_weights, a stochastic upper bound.
  log_weights: [B, C] each chain's log weight. Forward: E[exp] = p(x). Reverse:
    E[exp] = 1 / p(x).
  acceptance_rate: [B] the HMC acceptance rate averaged over transitions and chains.
  step_size: [B] the leapfrog step size at the end.
  z: [B, C, d] the chains' final states: approximate posterior samples (forward) or prior
    samples (reverse).
  """
  log_px: jax.Array
  log_weights: jax.Array
  acceptance_rate: jax.Array
  step_size: jax.Array
  z: jax.Array


def schedule(num_steps: int, kind: str = 'sigmoid', rad: float = 4.0) -> np.ndarray:
  """beta_0 = 0 < ... < beta_T = 1, T = num_steps, as float64 [T + 1]."""
  if num_steps < 1:
    raise ValueError(f'AIS needs num_steps >= 1 intermediate distributions, got {num_steps}.')
  if kind not in SCHEDULES:
    raise ValueError(f'AIS schedule={kind!r}; choose one of {SCHEDULES}.')
  if kind == 'linear' or num_steps == 1:
    return np.linspace(0.0, 1.0, num_steps + 1)
  s = 1.0 / (1.0 + np.exp(-np.linspace(-rad, rad, num_steps + 1)))
  betas = (s - s[0]) / (s[-1] - s[0])
  betas[0], betas[-1] = 0.0, 1.0
  return betas


def _logmeanexp(a, axis: int = -1):
  return jax.nn.logsumexp(a, axis=axis) - math.log(a.shape[axis])


def _batch_size(x) -> int:
  leaves = jax.tree.leaves(x)
  if not leaves:
    raise ValueError('AIS needs the data x (B examples) to infer the batch size.')
  return leaves[0].shape[0]


def _check(num_chains, num_steps, leapfrog_steps, init_step_size, target_accept):
  if num_chains < 1 or leapfrog_steps < 1 or num_steps < 1:
    raise ValueError(f'AIS needs num_chains, num_steps and leapfrog_steps >= 1, got '
                     f'{num_chains}, {num_steps}, {leapfrog_steps}.')
  if not init_step_size > 0 or not 0 < target_accept < 1:
    raise ValueError(f'AIS needs init_step_size > 0 and 0 < target_accept < 1, got '
                     f'{init_step_size}, {target_accept}.')


def _anneal(log_likelihood_fn: LogLikelihoodFn, x, z0, betas, rng, *, leapfrog_steps: int,
            init_step_size: float, target_accept: float, adapt_step_size: bool,
            step_size_range: tuple[float, float]):
  """Runs the chains z0 [B, C, d] along betas [T + 1] (increasing: forward; decreasing:
  reverse). Returns (log weights [B, C], acceptance rate [B], step size [B], final z)."""
  b, c, _ = z0.shape
  dtype = z0.dtype

  def loglik_and_grad(z):
    def total(z):
      ll = log_likelihood_fn(z, x)
      return ll.sum(), ll
    # Chain (b, c)'s log-likelihood depends on z[b, c] only, so the gradient of the sum is
    # every chain's own gradient.
    (_, ll), g = jax.value_and_grad(total, has_aux=True)(z)
    return ll.astype(dtype), g.astype(dtype)

  def hmc(z, ll, g, beta, eps, key):
    """One HMC trajectory for the energy U(z) = |z|^2 / 2 - beta log p(x | z)."""
    k_mom, k_acc = jax.random.split(key)
    e = eps[:, None, None]
    p0 = jax.random.normal(k_mom, z.shape, dtype)
    p = p0 - 0.5 * e * (z - beta * g)

    def leap(carry, i):
      zz, pp, _, _ = carry
      zz = zz + e * pp
      ll_new, g_new = loglik_and_grad(zz)
      # Full momentum steps between position steps, a half step at the end.
      scale = jnp.where(i == leapfrog_steps - 1, 0.5, 1.0).astype(dtype)
      pp = pp - scale * e * (zz - beta * g_new)
      return (zz, pp, ll_new, g_new), None

    (z1, p1, ll1, g1), _ = jax.lax.scan(leap, (z, p, ll, g), jnp.arange(leapfrog_steps))
    h0 = 0.5 * jnp.sum(z ** 2, -1) - beta * ll + 0.5 * jnp.sum(p0 ** 2, -1)
    h1 = 0.5 * jnp.sum(z1 ** 2, -1) - beta * ll1 + 0.5 * jnp.sum(p1 ** 2, -1)
    log_u = jnp.log(jax.random.uniform(k_acc, h0.shape, dtype))
    accept = log_u < h0 - h1            # False where the proposal is NaN
    keep = accept[..., None]
    return (jnp.where(keep, z1, z), jnp.where(accept, ll1, ll), jnp.where(keep, g1, g),
            accept.astype(dtype))

  lo, hi = step_size_range

  def step(carry, inputs):
    z, ll, g, log_w, eps, avg_acc, acc_sum = carry
    d_beta, beta_next, t = inputs
    log_w = log_w + d_beta * ll
    z, ll, g, accept = hmc(z, ll, g, beta_next, eps, jax.random.fold_in(rng, t))
    if adapt_step_size:
      # As Wu et al.'s code: the step size moves on the moving average before this update.
      eps = jnp.clip(eps * jnp.where(avg_acc > target_accept, 1.02, 0.98), lo, hi).astype(dtype)
      avg_acc = 0.9 * avg_acc + 0.1 * accept.mean(-1)
    return (z, ll, g, log_w, eps, avg_acc, acc_sum + accept.mean(-1)), None

  ll0, g0 = loglik_and_grad(z0)
  betas = np.asarray(betas, np.float64)
  num_steps = betas.shape[0] - 1
  # The increments in float64 before the cast, so near-zero ones near beta = 0 and 1 keep
  # their precision.
  d_betas = jnp.asarray(np.diff(betas), dtype)
  init = (z0, ll0, g0, jnp.zeros((b, c), dtype), jnp.full((b,), init_step_size, dtype),
          jnp.full((b,), target_accept, dtype), jnp.zeros((b,), dtype))
  (z, _, _, log_w, eps, _, acc_sum), _ = jax.lax.scan(
      step, init, (d_betas, jnp.asarray(betas[1:], dtype), jnp.arange(num_steps)))
  return log_w, acc_sum / num_steps, eps, z


def ais(log_likelihood_fn: LogLikelihoodFn, x, rng, *, latent_dim: int, num_chains: int,
        num_steps: int, leapfrog_steps: int = 10, init_step_size: float = 0.01,
        target_accept: float = 0.65, schedule: str = 'sigmoid',  # noqa: A002 (the paper's word)
        adapt_step_size: bool = True, step_size_range: tuple[float, float] = (1e-4, 0.5),
        dtype=jnp.float32) -> AISResult:
  """Forward AIS from the prior N(0, I_latent_dim) to p(z | x) for each of the B examples in
  x, with num_chains chains each: log_px is a stochastic lower bound on log p(x) [B].

  log_likelihood_fn(z [B, C, d], x) -> log p(x | z) [B, C]; it must be differentiable in z.
  Jittable: every argument but x and rng is a static Python value.
  """
  _check(num_chains, num_steps, leapfrog_steps, init_step_size, target_accept)
  betas = _schedule(num_steps, schedule)
  k_init, k_run = jax.random.split(rng)
  z0 = jax.random.normal(k_init, (_batch_size(x), num_chains, latent_dim), dtype)
  log_w, acc, eps, z = _anneal(log_likelihood_fn, x, z0, betas, k_run,
                               leapfrog_steps=leapfrog_steps, init_step_size=init_step_size,
                               target_accept=target_accept, adapt_step_size=adapt_step_size,
                               step_size_range=step_size_range)
  return AISResult(log_px=_logmeanexp(log_w), log_weights=log_w, acceptance_rate=acc,
                   step_size=eps, z=z)


def reverse_ais(log_likelihood_fn: LogLikelihoodFn, x, z_exact, rng, *, num_chains: int,
                num_steps: int, leapfrog_steps: int = 10, init_step_size: float = 0.01,
                target_accept: float = 0.65, schedule: str = 'sigmoid',  # noqa: A002
                adapt_step_size: bool = True,
                step_size_range: tuple[float, float] = (1e-4, 0.5),
                dtype=jnp.float32) -> AISResult:
  """Reverse AIS from exact posterior samples z_exact [B, d] (one per example of x; every
  chain of an example starts there) down to the prior: log_px = -logmeanexp_c log_weights,
  a stochastic upper bound on log p(x) [B] (BDMC; Grosse et al. 2015).

  For data simulated from the model, z_exact are the latents that generated x.
  """
  _check(num_chains, num_steps, leapfrog_steps, init_step_size, target_accept)
  betas = _schedule(num_steps, schedule)[::-1]
  z0 = jnp.broadcast_to(jnp.asarray(z_exact, dtype)[:, None, :],
                        (z_exact.shape[0], num_chains, z_exact.shape[-1]))
  log_w, acc, eps, z = _anneal(log_likelihood_fn, x, z0, betas.copy(), rng,
                               leapfrog_steps=leapfrog_steps, init_step_size=init_step_size,
                               target_accept=target_accept, adapt_step_size=adapt_step_size,
                               step_size_range=step_size_range)
  return AISResult(log_px=-_logmeanexp(log_w), log_weights=log_w, acceptance_rate=acc,
                   step_size=eps, z=z)


_schedule = schedule   # `ais` and `reverse_ais` take a keyword of the same name


# -- Observation models ------------------------------------------------------------------

def _event_sum(a, lead: int):
  return a.reshape(a.shape[:lead] + (-1,)).sum(-1)


def gaussian_log_likelihood(mean_fn: Callable, obs_std: float) -> LogLikelihoodFn:
  """log N(x; mean_fn(z), obs_std^2 I) summed over x's event axes: the observation model
  Wu et al. give GANs and GMMNs (Sec. 3; obs_std chosen on validation data).

  mean_fn(z [B, C, d]) -> [B, C, *event]; x is [B, *event]."""
  if not obs_std > 0:
    raise ValueError(f'The Gaussian observation model needs obs_std > 0, got {obs_std}.')
  log_norm = math.log(obs_std) + 0.5 * math.log(2 * math.pi)

  def log_likelihood(z, x):
    mean = mean_fn(z)
    r = (x[:, None] - mean) / obs_std
    return _event_sum(-0.5 * r ** 2 - log_norm, 2)

  return log_likelihood


def bernoulli_log_likelihood(logits_fn: Callable) -> LogLikelihoodFn:
  """log Bernoulli(x; sigmoid(logits_fn(z))) summed over x's event axes, x in {0, 1}.

  logits_fn(z [B, C, d]) -> [B, C, *event]; x is [B, *event]."""

  def log_likelihood(z, x):
    logits = logits_fn(z)
    xx = x[:, None].astype(logits.dtype)
    return _event_sum(xx * logits - jax.nn.softplus(logits), 2)

  return log_likelihood


def gaussian_decoder_log_prob(decode, z, image, obs_std: float, num_levels: int, who: str):
  """log N(x; decode(z), obs_std^2 I) on the [0, 1] pixel scale (Wu et al. 2017's observation
  model for a generator), z [B, C, d], integer image [B, H, W, Ch] -> [B, C]."""
  if not obs_std or obs_std <= 0:
    raise ValueError(f'{who}.decoder_log_prob needs obs_std > 0 (the Gaussian observation '
                     'model of Wu et al. 2017): pass --ais_obs_std or set config.model.obs_std.')
  b, c, d = z.shape
  x = image.astype(jnp.float32) / (num_levels - 1)

  def mean_fn(zz):
    return decode(zz.reshape(b * c, d)).reshape((b, c) + x.shape[1:])
  return gaussian_log_likelihood(mean_fn, obs_std)(z, x)


def gaussian_decoder_sample(decode, rng, z, obs_std: float, num_levels: int, who: str):
  """x ~ N(decode(z), obs_std^2 I) on [0, 1], clipped and rounded to integer levels: the
  observation model of gaussian_decoder_log_prob, for BDMC's simulated data."""
  if not obs_std or obs_std <= 0:
    raise ValueError(f'{who}.decoder_sample needs obs_std > 0: pass --ais_obs_std or set '
                     'config.model.obs_std.')
  mean = decode(z)
  x = mean + obs_std * jax.random.normal(rng, mean.shape)
  return jnp.round(jnp.clip(x, 0.0, 1.0) * (num_levels - 1)).astype(jnp.int32)
