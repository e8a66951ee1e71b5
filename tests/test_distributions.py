"""Discretized logistic mixture: a proper distribution over {0..L-1}^C, and its sampler."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg import distributions as D


@pytest.mark.parametrize('num_channels,num_levels', [(1, 256), (3, 5), (1, 2)])
def test_probabilities_sum_to_one_over_all_values(num_channels, num_levels):
  k = 3
  params = 2.0 * jax.random.normal(jax.random.key(0), (1, 1, 1, D.num_params(num_channels, k)))
  values = np.array(list(itertools.product(range(num_levels), repeat=num_channels)))
  x = jnp.asarray(values).reshape(-1, 1, 1, num_channels)
  lp = jax.jit(lambda x: D.log_prob(jnp.broadcast_to(params, (x.shape[0], 1, 1, params.shape[-1])),
                                    x, num_levels, k))(x)
  np.testing.assert_allclose(jnp.exp(lp).sum(), 1.0, atol=2e-4)


def test_samples_follow_the_probabilities():
  num_levels, k = 4, 2
  params = jax.random.normal(jax.random.key(1), (D.num_params(3, k),))
  values = np.array(list(itertools.product(range(num_levels), repeat=3)))
  probs = np.exp(D.log_prob(jnp.broadcast_to(params, (len(values), 1, 1, params.size)),
                            jnp.asarray(values).reshape(-1, 1, 1, 3), num_levels, k))
  draws = jax.jit(lambda r: D.sample(r, jnp.broadcast_to(params, (20000, params.size)), 3,
                                     num_levels, k))(jax.random.key(2))
  codes = np.asarray(draws) @ np.array([num_levels ** 2, num_levels, 1])
  freq = np.bincount(codes, minlength=num_levels ** 3) / 20000
  np.testing.assert_allclose(freq, probs, atol=0.012)


def test_green_depends_on_red_only_through_the_coupling():
  k = 1
  params = jnp.zeros((1, 1, 1, D.num_params(3, k))).at[..., -3].set(5.0)  # c_0 large
  lp_r_low = D.log_prob(params, jnp.array([[[[0, 0, 2]]]]), 5, k)
  lp_r_high = D.log_prob(params, jnp.array([[[[4, 0, 2]]]]), 5, k)
  assert lp_r_low != lp_r_high
