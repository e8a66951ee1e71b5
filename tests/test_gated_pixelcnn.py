"""Gated PixelCNN: exact dependency sets by gradients (no blind spot, grey and RGB), the
plain PixelCNN's blind spot, conditioning, likelihood, and the cached sampler drawing
exactly what the naive sampler draws; the same for the discretized logistic mixture head
(whole pixels), whose density also sums to one."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg import distributions
from autoreg.gated_pixelcnn import GatedPixelCNN
from autoreg.pixelcnn import PixelCNN
from tests.conftest import random_params


def _random_params(model, shape, seed=0, **kwargs):
  """conftest.random_params for integer images of `shape`."""
  return random_params(model, jnp.zeros(shape, jnp.int32), seed=seed, **kwargs)


def _dependencies(model, params, shape):
  """Boolean [H, W, C, H, W, C]: does the output at (i, j, c) depend on input (a, b, d)?

  From the full Jacobian of the summed logits with respect to a float input, so every
  output position is checked, not a sample of them. A connection counts if the gradient
  is nonzero for any of 3 random inputs: masked connections are zero for all of them,
  while a real one is zero only where ReLUs happen to be off, which differs by input.
  """
  x = jax.random.uniform(jax.random.key(3), (3, *shape[1:]), minval=-1.0, maxval=1.0)
  # Examples are independent, so summing over the batch keeps their Jacobians apart.
  jac = jax.jit(jax.jacrev(lambda x: model.apply(params, x).sum((0, -1))))(x)
  return np.asarray((jac != 0).any(axis=3))


def _earlier(shape):
  """Boolean [H, W, C, H, W, C]: (a, b, d) strictly before (i, j, c), raster then colour."""
  h, w, ch = shape[1:]
  idx = np.arange(h * w * ch)
  return (idx[None, :] < idx[:, None]).reshape(h, w, ch, h, w, ch)


@pytest.mark.parametrize('num_channels', [1, 3])
def test_each_output_sees_exactly_every_earlier_subpixel(num_channels):
  # 4 layers of kernel 3 reach 4 pixels in every direction: the whole 5x5 past.
  # 16 hidden output units per colour group, so that some of each group's are active
  # (ReLU > 0) at every pixel.
  model = GatedPixelCNN(num_levels=4, num_channels=num_channels, features=12, num_layers=4,
                        first_kernel=3, kernel_size=3, output_features=48)
  shape = (1, 5, 5, num_channels)
  dep = _dependencies(model, _random_params(model, shape), shape)
  expected = _earlier(shape)
  for i, j, c in itertools.product(*map(range, shape[1:])):
    np.testing.assert_array_equal(dep[i, j, c], expected[i, j, c],
                                  err_msg=f'dependencies of output {(i, j, c)}')


def test_receptive_field_is_the_predicted_region():
  # Reach R = first_kernel // 2 + (num_layers - 1) * (kernel_size // 2) = 2 + 1 = 3:
  # the current row's R pixels to the left, and rows i-1-R..i-1 at columns j-R..j+R.
  model = GatedPixelCNN(num_levels=2, features=8, num_layers=2, first_kernel=5,
                        kernel_size=3, output_features=16)
  shape, reach = (1, 8, 8, 1), 3
  dep = _dependencies(model, _random_params(model, shape), shape)[:, :, 0, :, :, 0]
  rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing='ij')
  for i, j in itertools.product(range(8), range(8)):
    expected = (((rows == i) & (cols < j) & (cols >= j - reach))
                | ((rows < i) & (rows >= i - 1 - reach) & (np.abs(cols - j) <= reach)))
    np.testing.assert_array_equal(dep[i, j], expected, err_msg=f'output {(i, j)}')


def test_plain_pixelcnn_has_a_blind_spot_and_gated_pixelcnn_does_not():
  shape, (i, j) = (1, 6, 6, 1), (3, 1)
  pixelcnn = PixelCNN(num_levels=2, features=8, num_layers=3, first_kernel=3, kernel_size=3,
                      output_features=16)
  gated = GatedPixelCNN(num_levels=2, features=8, num_layers=4, first_kernel=3,
                        kernel_size=3, output_features=16)
  plain = _dependencies(pixelcnn, _random_params(pixelcnn, shape), shape)[i, j, 0, ..., 0]
  full = _dependencies(gated, _random_params(gated, shape), shape)[i, j, 0, ..., 0]
  # Both stack four kernel-3 layers, which reach 4 pixels in each direction, yet for the
  # PixelCNN the pixel one row up and two to the right is invisible: masked kernels never
  # look right within a row, and from row i only columns <= j+1 of row i-1 are reached.
  assert plain[i - 1, j + 1] and not plain[i - 1, j + 2] and not plain[i - 2, j + 3]
  assert full[i - 1, j + 2] and full[i - 2, j + 3]
  np.testing.assert_array_equal(full, _earlier(shape)[i, j, 0, ..., 0])


def test_label_and_cond_map_condition_every_output():
  model = GatedPixelCNN(num_levels=3, features=8, num_layers=2, first_kernel=3,
                        output_features=16, num_classes=4)
  x = jax.random.randint(jax.random.key(0), (2, 4, 4, 1), 0, 3)
  label, cmap = jnp.array([0, 1]), jax.random.normal(jax.random.key(1), (2, 4, 4, 2))
  params = _random_params(model, x.shape, label=label, cond_map=cmap)

  @jax.jit
  def run():
    def logits(label, cond_map=None):
      return model.apply(params, x, label=label, cond_map=cond_map)
    def batch(label):
      return {'image': x, 'label': label}
    return dict(
        base=logits(label), swapped=logits(label[::-1]), mapped=logits(label, cmap),
        negated=logits(label, -cmap),
        loss=model.apply(params, batch(label), method='loss'),
        swapped_loss=model.apply(params, batch(label[::-1]), method='loss')[0],
        nll=-model.apply(params, x, label=label, method='log_prob'))

  r = run()
  assert (r['base'] != r['swapped']).all()
  assert (r['base'] != r['mapped']).all()
  assert (r['mapped'] != r['negated']).all()
  # the trainer's loss reads the label from the batch
  loss, metrics = r['loss']
  np.testing.assert_allclose(metrics['nll'], r['nll'], rtol=1e-6)
  np.testing.assert_allclose(loss, r['nll'].mean(), rtol=1e-6)
  assert loss != r['swapped_loss']
  with pytest.raises(ValueError, match='needs a label'):
    jax.jit(lambda x: model.apply(params, x))(x)


def test_log_prob_is_the_sum_of_per_subpixel_log_softmax():
  model = GatedPixelCNN(num_levels=5, num_channels=3, features=6, num_layers=2,
                        first_kernel=3, output_features=6)
  x = jax.random.randint(jax.random.key(0), (2, 4, 4, 3), 0, 5)
  params = _random_params(model, x.shape)
  logits, log_prob = jax.jit(lambda x: (model.apply(params, x),
                                        model.apply(params, x, method='log_prob')))(x)
  lp, xs = np.asarray(jax.nn.log_softmax(logits, -1)), np.asarray(x)
  manual = np.zeros(2)
  for b, i, j, c in itertools.product(range(2), range(4), range(4), range(3)):
    manual[b] += lp[b, i, j, c, xs[b, i, j, c]]
  np.testing.assert_allclose(log_prob, manual, rtol=1e-5)


@pytest.mark.parametrize('num_levels,num_channels,num_classes,cond_channels', [
    (2, 1, 0, 0), (256, 1, 0, 0), (4, 3, 0, 0), (3, 1, 3, 2)])
def test_cached_sampler_draws_exactly_what_the_naive_sampler_draws(
    num_levels, num_channels, num_classes, cond_channels):
  # Three layers: a first (mask A, no residual), a middle and a last (no residual) one.
  model = GatedPixelCNN(num_levels=num_levels, num_channels=num_channels, features=12,
                        num_layers=3, first_kernel=5, kernel_size=3, output_features=12,
                        num_classes=num_classes)
  shape = (3, 5, 6, num_channels)
  cond = {}
  if num_classes:
    cond['label'] = jnp.array([0, 2, 1])
  if cond_channels:
    cond['cond_map'] = jax.random.normal(jax.random.key(5), (*shape[:3], cond_channels))
  params = _random_params(model, shape, **cond)

  @jax.jit
  def both(rng):
    naive = model.apply(params, rng, shape, 1.5, method='sample', **cond)
    cached, logits = model.apply(params, rng, shape, 1.5, return_logits=True,
                                 method='sample_cached', **cond)
    return (naive, cached, logits, model.apply(params, cached, **cond),
            model.apply(params, naive, method='log_prob', **cond))

  for seed in range(3):
    naive, cached, logits, full, log_prob = both(jax.random.key(seed))
    # The logits each cached draw used are the model's conditionals for the final image;
    # they may differ from the full pass by float rounding (other window shapes) only.
    np.testing.assert_allclose(logits, full, atol=1e-4, rtol=1e-4)
    assert jnp.array_equal(naive, cached), f'seed {seed}'
    assert naive.min() >= 0 and naive.max() < num_levels
    assert len(np.unique(np.asarray(naive))) > 1  # not a trivially constant image
    assert np.isfinite(log_prob).all() and (log_prob < 0).all()


# -- output='logistic_mixture': PixelCNN++'s mixture over whole pixels ---------------------


def _mixture_model(num_channels, num_levels=256, num_mixtures=2, **kwargs):
  kwargs = dict(dict(features=8, num_layers=4, first_kernel=3, kernel_size=3,
                     output_features=16), **kwargs)
  return GatedPixelCNN(num_levels=num_levels, num_channels=num_channels,
                       output='logistic_mixture', num_mixtures=num_mixtures, **kwargs)


@pytest.mark.parametrize('num_channels', [1, 3])
def test_mixture_outputs_see_exactly_every_earlier_pixel_all_channels(num_channels):
  # One mixture per pixel couples its colours itself (Eq. 3 of PixelCNN++), so every
  # parameter at (i, j) must be blind to all channels of (i, j) and of later pixels, and
  # see all channels of every earlier pixel (4 kernel-3 layers reach the whole 5x5 past).
  model = _mixture_model(num_channels)
  shape = (1, 5, 5, num_channels)
  params = _random_params(model, shape)
  x = jax.random.uniform(jax.random.key(3), (3, *shape[1:]), minval=-1.0, maxval=1.0)
  # Per parameter, not summed over them: [H, W, P, batch, H, W, C].
  jac = jax.jit(jax.jacrev(lambda x: model.apply(params, x).sum(0)))(x)
  assert jac.shape[2] == distributions.num_params(num_channels, 2)
  dep = np.asarray((jac != 0).any(axis=(2, 3)))   # [H, W, H, W, C]
  h, w = shape[1:3]
  before = (np.arange(h * w)[None, :] < np.arange(h * w)[:, None]).reshape(h, w, h, w)
  for i, j in itertools.product(range(h), range(w)):
    expected = np.broadcast_to(before[i, j, ..., None], dep.shape[2:])
    np.testing.assert_array_equal(dep[i, j], expected, err_msg=f'output pixel {(i, j)}')


def test_mixture_log_prob_is_the_mixture_likelihood_of_the_head_output():
  model = _mixture_model(3, num_layers=2)
  x = jax.random.randint(jax.random.key(0), (2, 4, 4, 3), 0, 256)
  params = _random_params(model, x.shape)
  out, log_prob, (loss, metrics) = jax.jit(lambda x: (
      model.apply(params, x), model.apply(params, x, method='log_prob'),
      model.apply(params, {'image': x, 'label': jnp.zeros(2, jnp.int32)}, method='loss')))(x)
  assert out.shape == (2, 4, 4, distributions.num_params(3, 2))
  assert np.isfinite(log_prob).all() and (log_prob < 0).all()
  np.testing.assert_allclose(log_prob, distributions.log_prob(out, x, 256, 2), rtol=1e-6)
  np.testing.assert_allclose(metrics['nll'], -log_prob, rtol=1e-6)
  np.testing.assert_allclose(loss, -log_prob.mean(), rtol=1e-6)


def test_mixture_probabilities_sum_to_one_over_all_images():
  # A 1x1 RGB image (the pixel's own R -> G -> B coupling) and a 1x2 one (the second
  # pixel's mixture conditioned on the first): a causal, normalized model sums to one.
  def total(shape, num_levels):
    model = _mixture_model(shape[-1], num_levels, num_layers=2)
    params = _random_params(model, (1, *shape))
    values = itertools.product(range(num_levels), repeat=int(np.prod(shape)))
    x = jnp.asarray(list(values), jnp.int32).reshape(-1, *shape)
    return jnp.exp(model.apply(params, x, method='log_prob')).sum()

  sums = jax.jit(lambda: (total((1, 1, 3), 4), total((1, 2, 3), 3)))()
  np.testing.assert_allclose(sums, 1.0, atol=2e-4)


@pytest.mark.parametrize('num_channels', [1, 3])
def test_mixture_cached_sampler_draws_exactly_what_the_naive_sampler_draws(num_channels):
  model = _mixture_model(num_channels, num_layers=3, first_kernel=5, num_mixtures=3)
  shape = (3, 5, 6, num_channels)
  params = _random_params(model, shape)

  @jax.jit
  def both(rng):
    naive = model.apply(params, rng, shape, 0.8, method='sample')
    cached, head = model.apply(params, rng, shape, 0.8, return_logits=True,
                               method='sample_cached')
    return naive, cached, head, model.apply(params, cached)

  for seed in range(3):
    naive, cached, head, full = both(jax.random.key(seed))
    np.testing.assert_allclose(head, full, atol=1e-4, rtol=1e-4)
    assert jnp.array_equal(naive, cached), f'seed {seed}'
    assert naive.min() >= 0 and naive.max() < 256
    assert len(np.unique(np.asarray(naive))) > 1


def test_mixture_sample_continues_from_a_given_start():
  # `start` counts sub-pixels in both modes; the mixture head draws whole pixels from
  # start // C on, with the same per-pixel keys as a full draw.
  model = _mixture_model(3, num_levels=16, num_layers=2)
  shape = (2, 3, 4, 3)
  params = _random_params(model, shape)
  def sample(rng, **kw):
    return model.apply(params, rng, shape, method='sample', **kw)
  full = jax.jit(sample)(jax.random.key(1))
  start = 5 * 3   # pixel 5 = (1, 1)
  init = full.at[:, 1, 1:].set(0).at[:, 2].set(0)
  resumed = jax.jit(lambda r, i: sample(r, init=i, start=start))(jax.random.key(1), init)
  assert jnp.array_equal(resumed, full)
  with pytest.raises(ValueError, match='multiple of'):
    sample(jax.random.key(1), init=init, start=start + 1)


@pytest.mark.parametrize('batch', [3, 8, 12])
def test_pointwise_conv_has_the_convolutions_values_and_gradients(batch):
  """The 1x1 convolutions' custom VJP (a kernel gradient summed over chunks of images) against a
  float64 numpy computation of the 1x1 convolution and both its gradients."""
  from autoreg.gated_pixelcnn import pointwise_conv
  rng = np.random.default_rng(3)
  x = rng.standard_normal((batch, 4, 5, 6))     # 1, 8 and 4 chunks of the kernel gradient
  w = rng.standard_normal((6, 7))
  t = rng.standard_normal((batch, 4, 5, 7))
  y, (dx, dw) = jax.value_and_grad(lambda x, w: jnp.sum(pointwise_conv(x, w) * t), (0, 1))(
      jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
  np.testing.assert_allclose(y, np.sum(np.einsum('bhwc,cd->bhwd', x, w) * t), rtol=1e-5)
  np.testing.assert_allclose(dx, np.einsum('bhwd,cd->bhwc', t, w), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, np.einsum('bhwc,bhwd->cd', x, t), rtol=1e-5, atol=1e-5)
  x32, w32 = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
  lax = jax.lax.conv_general_dilated(x32, w32[None, None], (1, 1), 'VALID',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(pointwise_conv(x32, w32), lax, rtol=1e-5, atol=1e-5)
