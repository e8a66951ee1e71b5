"""Discretized logistic (mixture) of PixelCNN++ (Salimans et al. 2017, arXiv 1701.05517,
Eq. 2-3): a proper distribution over {0..L-1}^C, exact in its tails, and a sampler that
draws from the density log_prob scores."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg import distributions as D
from latent import distributions as latent_dist


def _log_sigmoid64(t):
  return -np.logaddexp(0.0, -t)


def _exact_log_mass(v, mean, log_scale, num_levels):
  """float64 log P(v) for a discretized logistic, by the difference of cdfs taken in the
  tail where it does not cancel: F(a) - F(b) below the mean, S(b) - S(a) above it (S = 1 -
  F), each as log F(a) + log1p(-exp(log F(b) - log F(a)))."""
  v, mean, log_scale = np.broadcast_arrays(*(np.asarray(t, np.float64)
                                             for t in (v, mean, log_scale)))
  top = (2.0 * v + 1.0) / (num_levels - 1) - 1.0
  bottom = (2.0 * v - 1.0) / (num_levels - 1) - 1.0
  a, b = (top - mean) / np.exp(log_scale), (bottom - mean) / np.exp(log_scale)
  with np.errstate(divide='ignore', invalid='ignore'):
    lower = _log_sigmoid64(a) + np.log1p(-np.exp(_log_sigmoid64(b) - _log_sigmoid64(a)))
    upper = _log_sigmoid64(-b) + np.log1p(-np.exp(_log_sigmoid64(-a) - _log_sigmoid64(-b)))
  interior = np.where(b > 0, upper, lower)
  return np.where(v == 0, _log_sigmoid64(a),
                  np.where(v == num_levels - 1, _log_sigmoid64(-b), interior))


MEANS = np.array([-40.0, -5.0, -1.7, -1.0, -0.93, -0.5, -0.11, 0.0, 0.05, 0.37, 0.8, 0.999,
                  1.0, 1.3, 3.0, 40.0], np.float32)
# Nats, against exact float64 values of float32 inputs.
TOL_ABS, TOL_REL = 1e-5, 1e-6


@pytest.mark.parametrize('num_levels', [2, 3, 4, 5, 8, 16, 256])
def test_log_mass_matches_float64_in_both_tails(num_levels):
  """Every level, means far outside [-1, 1], scales from e^3 down to autoreg's clamp and
  below it (where autoreg must score as at the clamp, and latent, which has no clamp, still
  exactly)."""
  log_scales = np.concatenate([np.linspace(-7.0, 3.0, 21), [-9.0, -8.0]]).astype(np.float32)
  v, mean, log_s = (t.ravel() for t in np.meshgrid(np.arange(num_levels), MEANS, log_scales,
                                                   indexing='ij'))
  def tol(ref):
    return TOL_ABS + TOL_REL * np.abs(ref)

  # latent: one logistic per sub-pixel, no clamp.
  latent_lp = jax.jit(lambda v, m, s: latent_dist.discretized_logistic_log_prob(
      v[:, None], m[:, None], s[:, None], num_levels))
  # autoreg: a one-component mixture over grey pixels, log_scale clamped at LOG_SCALE_MIN.
  def autoreg_lp(v, m, s):
    return D.log_prob(
        jnp.stack([jnp.zeros_like(m), m, s], -1).reshape(-1, 1, 1, 3), v.reshape(-1, 1, 1, 1),
        num_levels, 1)
  args = jnp.asarray(v), jnp.asarray(mean), jnp.asarray(log_s)
  report = []
  for name, fn, ref in [
      ('latent', latent_lp, _exact_log_mass(v, mean, log_s, num_levels)),
      ('autoreg', jax.jit(autoreg_lp),
       _exact_log_mass(v, mean, np.maximum(log_s, D.LOG_SCALE_MIN), num_levels))]:
    got = np.asarray(fn(*args), np.float64)
    err = np.abs(got - ref)
    i = np.argmax(err / tol(ref))
    moderate = np.abs(ref) < 30
    report.append((name, err[i] / tol(ref[i])))
    print(f'L={num_levels} {name}: worst |error| / ({TOL_ABS:g} + {TOL_REL:g} |log p|) = '
          f'{err[i] / tol(ref[i]):.3g} at level {v[i]}, mean {mean[i]:.3g}, log_scale '
          f'{log_s[i]:.3g} ({got[i]:.7g} vs {ref[i]:.7g}); worst |error| where |log p| < 30: '
          f'{err[moderate].max():.2g} nats')
  assert all(r <= 1.0 for _, r in report), report
  grads = jax.jit(jax.grad(lambda v, m, s: autoreg_lp(v, m, s).sum(), argnums=(1, 2)))(*args)
  assert all(bool(jnp.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize('num_levels', [2, 3, 4, 5, 8, 16, 256])
def test_masses_over_the_levels_sum_to_one_in_float32(num_levels):
  log_scales = np.linspace(-7.0, 3.0, 21, dtype=np.float32)
  mean, log_s = (jnp.asarray(t.ravel()) for t in np.meshgrid(MEANS, log_scales))
  levels = jnp.arange(num_levels)[:, None]
  total = np.asarray(jax.jit(lambda: jax.nn.logsumexp(latent_dist.discretized_logistic_log_prob(
      jnp.broadcast_to(levels, (num_levels, mean.size))[..., None], mean[:, None],
      log_s[:, None], num_levels, batch_ndim=2), axis=0))())
  print(f'L={num_levels}: worst |log sum_v P(v)| = {np.abs(total).max():.3g}')
  np.testing.assert_allclose(total, 0.0, atol=4e-6)


@pytest.mark.parametrize('num_channels,num_levels', [(1, 256), (3, 5), (1, 2)])
def test_probabilities_sum_to_one_over_all_values(num_channels, num_levels):
  k = 3
  params = 2.0 * jax.random.normal(jax.random.key(0), (1, 1, 1, D.num_params(num_channels, k)))
  values = np.array(list(itertools.product(range(num_levels), repeat=num_channels)))
  x = jnp.asarray(values).reshape(-1, 1, 1, num_channels)
  lp = jax.jit(lambda x: D.log_prob(jnp.broadcast_to(params, (x.shape[0], 1, 1, params.shape[-1])),
                                    x, num_levels, k))(x)
  np.testing.assert_allclose(jnp.exp(lp).sum(), 1.0, atol=2e-5)


def _rgb_params(means, log_scale, coeffs):
  """One pixel's parameters for K = 2 components; coeffs given after the tanh."""
  k = 2
  return np.concatenate([np.array([0.3, -0.3]), np.asarray(means, np.float64).ravel(),
                         np.full(3 * k, log_scale),
                         np.arctanh(np.asarray(coeffs, np.float64)).ravel()]).astype(np.float32)


@pytest.mark.parametrize('num_levels', [2, 4, 8])
def test_rgb_samples_follow_exp_log_prob(num_levels):
  """Total variation between 200k draws and exp(log_prob) over all L^3 level triples, with
  sharp scales and couplings near +-1, where coupling G and B on R's continuous draw
  rather than its level shows (TV 0.04 to 0.26 here). The bound is twice the TV that
  sampling noise alone gives in expectation, sum_v sqrt(2 p_v (1 - p_v) / (pi n)) / 2, plus
  0.001 for the few-cell cases, where that normal approximation is loose."""
  n, k = 200_000, 2
  values = np.array(list(itertools.product(range(num_levels), repeat=3)))
  def codes_of(x):
    return np.asarray(x) @ np.array([num_levels ** 2, num_levels, 1])
  probs_of = jax.jit(lambda p: jnp.exp(D.log_prob(
      jnp.broadcast_to(p, (len(values), 1, 1, p.size)),
      jnp.asarray(values).reshape(-1, 1, 1, 3), num_levels, k)))
  draw = jax.jit(lambda r, p: D.sample(r, jnp.broadcast_to(p, (n, p.size)), 3, num_levels, k))
  means = [[0.1, -0.6], [-0.2, 0.4], [0.3, 0.0]]             # [channel, component]
  coeffs = [[0.95, -0.95], [-0.95, 0.95], [0.95, 0.95]]      # c_0, c_1, c_2 per component
  passed = []
  for log_scale in (-1.5, -2.5):
    p = jnp.asarray(_rgb_params(means, log_scale, coeffs))
    probs = np.asarray(probs_of(p), np.float64)
    freq = np.bincount(codes_of(draw(jax.random.key(0), p)), minlength=num_levels ** 3) / n
    tv = 0.5 * np.abs(freq - probs).sum()
    bound = np.sqrt(2.0 * probs * (1.0 - probs) / (np.pi * n)).sum() + 0.001
    print(f'L={num_levels} log_scale={log_scale}: TV {tv:.4f}, bound {bound:.4f}')
    passed.append(tv <= bound)
  assert all(passed)


def test_green_depends_on_red_only_through_the_coupling():
  k = 1
  params = jnp.zeros((1, 1, 1, D.num_params(3, k))).at[..., -3].set(5.0)  # c_0 large
  lp_r_low = D.log_prob(params, jnp.array([[[[0, 0, 2]]]]), 5, k)
  lp_r_high = D.log_prob(params, jnp.array([[[[4, 0, 2]]]]), 5, k)
  assert lp_r_low != lp_r_high
