"""PixelCNN: causality of mask A/B by gradients (grey and RGB), likelihood, sampler."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg import likelihood
from autoreg.masked import pixelcnn_mask
from autoreg.pixelcnn import PixelCNN


def _random_params(model, shape, seed=0):
  """Initialized parameters with every bias and weight perturbed, so no connection is
  accidentally zero and a zero gradient means 'masked', not 'unlucky'."""
  @jax.jit  # one compilation instead of one per initializer
  def init(key):
    params = model.init(key, jnp.zeros(shape, jnp.int32))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [leaf + 0.3 * jax.random.normal(k, leaf.shape)
              for leaf, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, leaves)
  return init(jax.random.key(seed))


def _dependency_fn(model, params, shape):
  """f(i, j, c) -> boolean [H, W, C]: which input sub-pixels the logits at (i, j, c)
  depend on, from the gradient of those logits with respect to the input."""
  x = jax.random.uniform(jax.random.key(3), shape, minval=-1.0, maxval=1.0)

  @jax.jit
  def grad_at(i, j, c):
    def f(x):
      return model.apply(params, x)[0, i, j, c].sum()
    return jax.grad(f)(x)[0]

  return lambda i, j, c: np.asarray(jnp.abs(grad_at(i, j, c)) > 0)


def _earlier(shape, i, j, c):
  """The sub-pixels strictly before (i, j, c) in raster-then-colour order."""
  h, w, ch = shape[1:]
  out = np.zeros((h, w, ch), bool)
  for a, b, d in itertools.product(range(h), range(w), range(ch)):
    out[a, b, d] = (a, b, d) < (i, j, c)
  return out


@pytest.mark.parametrize('num_channels', [1, 3])
def test_no_output_depends_on_its_own_or_a_later_subpixel(num_channels):
  model = PixelCNN(num_levels=4, num_channels=num_channels, features=12, num_layers=2,
                   first_kernel=5, output_features=12)
  shape = (1, 6, 6, num_channels)
  params = _random_params(model, shape)
  dependencies = _dependency_fn(model, params, shape)
  for i, j, c in [(0, 0, 0), (2, 3, 0), (5, 5, num_channels - 1), (3, 0, num_channels // 2)]:
    dep = dependencies(i, j, c)
    allowed = _earlier(shape, i, j, c)
    assert not (dep & ~allowed).any(), f'output {(i, j, c)} sees a present or future input'
    # and it does see its causal neighbours: left, above, and earlier colours of itself
    if j > 0:
      assert dep[i, j - 1].all()
    if i > 0:
      assert dep[i - 1, j].all()
    assert dep[i, j, :c].all()


def test_mask_a_excludes_centre_and_mask_b_includes_own_group():
  a = pixelcnn_mask((3, 3), 3, 6, 'A', num_colors=3)
  b = pixelcnn_mask((3, 3), 6, 6, 'B', num_colors=3)
  # rows below and pixels to the right are always masked
  assert not a[2].any() and not a[1, 2].any() and not b[2].any()
  # mask A, centre: output group g (2 channels each) sees input colours < g only
  np.testing.assert_array_equal(a[1, 1], [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1],
                                          [0, 0, 0, 0, 0, 0]])
  # mask B, centre: group g sees groups <= g
  assert b[1, 1][0:2, 0:2].all() and not b[1, 1][2:4, 0:2].any() and b[1, 1][0:2, 4:6].all()


def test_log_prob_is_the_sum_of_per_subpixel_log_softmax():
  model = PixelCNN(num_levels=5, num_channels=3, features=6, num_layers=1, first_kernel=3,
                   output_features=6)
  x = jax.random.randint(jax.random.key(0), (2, 4, 4, 3), 0, 5)
  params = _random_params(model, x.shape)
  logits = model.apply(params, x)
  manual = np.zeros(2)
  lp, xs = np.asarray(jax.nn.log_softmax(logits, -1)), np.asarray(x)
  for b, i, j, c in itertools.product(range(2), range(4), range(4), range(3)):
    manual[b] += lp[b, i, j, c, xs[b, i, j, c]]
  np.testing.assert_allclose(model.apply(params, x, method='log_prob'), manual, rtol=1e-5)
  np.testing.assert_allclose(likelihood.bits_per_dim(np.log(2.0) * 48, 48), 1.0)


def test_sampler_is_deterministic_keeps_given_prefix_and_follows_the_model():
  model = PixelCNN(num_levels=3, num_channels=1, features=8, num_layers=1, first_kernel=3,
                   output_features=8)
  shape = (4, 5, 5, 1)
  params = _random_params(model, shape)
  # `start` may be traced: the loop bounds of fori_loop need not be static
  sample = jax.jit(lambda r, init, start: model.apply(params, r, shape, init=init,
                                                        start=start, method='sample'))
  zeros = jnp.zeros(shape, jnp.int32)
  s1 = sample(jax.random.key(7), zeros, 0)
  s2 = sample(jax.random.key(7), zeros, 0)
  s3 = sample(jax.random.key(8), zeros, 0)
  np.testing.assert_array_equal(s1, s2)
  assert not np.array_equal(s1, s3)
  assert s1.min() >= 0 and s1.max() <= 2
  # completion: the first 2 rows are kept, the rest is resampled
  given = jnp.full(shape, 2, jnp.int32)
  c = sample(jax.random.key(9), given, 10)
  np.testing.assert_array_equal(c[:, :2], 2)
  assert (np.asarray(c[:, 2:]) != 2).any()
  # the first draw follows the model's first conditional: 3,000 draws of sub-pixel 0
  # (a 1x1 image is enough: nothing precedes it)
  many = model.apply(params, jax.random.key(0), (3000, 1, 1, 1), method='sample')
  p0 = jax.nn.softmax(model.apply(params, jnp.zeros((1, 1, 1, 1), jnp.int32))[0, 0, 0, 0])
  freq = np.bincount(np.asarray(many[:, 0, 0, 0]), minlength=3) / 3000
  np.testing.assert_allclose(freq, p0, atol=0.035)
