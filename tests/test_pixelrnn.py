"""PixelRNN (Row LSTM, Diagonal BiLSTM): dependency sets by gradients against a reference
recursion written from the paper's equations, exact normalization, the row-cached sampler
against the naive one draw for draw, and the trainer end to end."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg.pixelrnn import PixelRNN, conv1d_same, diagonal_scan, skew, unskew


def _model(arch, channels=1, layers=2, first_kernel=3, **kw):
  return PixelRNN(num_levels=4, num_channels=channels, architecture=arch,
                  hidden=3 * channels, num_layers=layers, output_features=6,
                  first_kernel=first_kernel, **kw)


def _dependencies(model, h, w, c):
  """dep[i, j, ch] = the set of input sub-pixels (i', j', ch') the logits of sub-pixel
  (i, j, ch) have a non-zero gradient from, at random parameters (biases shifted off 0)."""
  params = model.init(jax.random.key(0), jnp.zeros((1, h, w, c), jnp.int32))
  params = jax.tree.map(lambda p: p + 0.1, params)
  x = jax.random.uniform(jax.random.key(1), (1, h, w, c), minval=-1, maxval=1)
  jac = jax.jacrev(lambda z: model.apply(params, z)[0].sum(-1))(x)     # [h, w, c, 1, h, w, c]
  return np.abs(np.asarray(jac[:, :, :, 0])) > 0


def _reference_pixels(arch, h, w, layers, k_first, row_kernel=3, full_context=True):
  """Which pixels each output pixel depends on, by the paper's recursions (pixel level)."""
  r = k_first // 2
  y = {}
  for i, j in itertools.product(range(h), range(w)):    # the 7x7 (here k x k) mask-A layer
    y[i, j] = {(a, b) for a in range(max(0, i - r), i) for b in range(max(0, j - r),
                                                                       min(w, j + r + 1))}
    y[i, j] |= {(i, b) for b in range(max(0, j - r), j)}
  for layer in range(layers):
    hs = {}
    if arch == 'row_lstm':
      q = row_kernel // 2
      for i in range(h):
        for j in range(w):
          s = set(y[i, j]) | (y[i, j - 1] if j > 0 else set())
          for d in range(-q, q + 1):
            if i > 0 and 0 <= j + d < w:
              s |= hs[i - 1, j + d]
          hs[i, j] = s
    else:
      fwd, mir = {}, {}
      for i in range(h):
        for j in range(w):
          fwd[i, j] = set(y[i, j]) | (fwd[i, j - 1] if j > 0 else set()) | (
              fwd[i - 1, j] if i > 0 else set())
      for i in range(h):
        for j in reversed(range(w)):
          mir[i, j] = set(y[i, j]) | (mir[i, j + 1] if j < w - 1 else set()) | (
              mir[i - 1, j] if i > 0 else set())
          if layer == 0 and full_context:
            mir[i, j] |= {(i, j)}             # the mirrored direction's own pixel map
      for i, j in itertools.product(range(h), range(w)):
        hs[i, j] = fwd[i, j] | (mir[i - 1, j] if i > 0 else set())
    y = {key: y[key] | hs[key] for key in y}
  return y


@pytest.mark.parametrize('arch, full_context', [('row_lstm', True), ('diagonal_bilstm', True),
                                                ('diagonal_bilstm', False)])
def test_dependency_set_is_exactly_the_papers(arch, full_context):
  h, w, layers = 6, 7, 2
  model = _model(arch, layers=layers, full_context=full_context)
  dep = _dependencies(model, h, w, 1)
  ref = _reference_pixels(arch, h, w, layers, 3, full_context=full_context)
  for i, j in itertools.product(range(h), range(w)):
    got = {(a, b) for a, b in zip(*np.nonzero(dep[i, j, 0, :, :, 0]), strict=True)}
    assert got == ref[i, j], (i, j, sorted(got ^ ref[i, j]))
  def earlier(i, j):
    return {(a, b) for a in range(h) for b in range(w) if (a, b) < (i, j)}
  if arch == 'diagonal_bilstm' and full_context:
    assert all(ref[i, j] == earlier(i, j) for i in range(h) for j in range(w))
  elif arch == 'diagonal_bilstm':
    # The literal construction misses the previous row's last pixel far from the edge.
    assert (2, w - 1) not in ref[3, 0] and (2, w - 1) in earlier(3, 0)
  else:
    # The Row LSTM's context is a triangle: two rows up, pixels more than
    # (layers * (k//2 + 1) + first_kernel//2 + ...) columns away are out of reach.
    assert ref[5, 0] != earlier(5, 0) and (4, w - 1) not in ref[5, 0]


@pytest.mark.parametrize('arch', ['row_lstm', 'diagonal_bilstm'])
def test_rgb_sub_pixels_see_only_earlier_colours_and_pixels(arch):
  h, w, c = 4, 4, 3
  dep = _dependencies(_model(arch, channels=3, layers=1), h, w, c)
  for i, j, ch in itertools.product(range(h), range(w), range(c)):
    seen = dep[i, j, ch]
    for a, b, cc in zip(*np.nonzero(seen), strict=True):
      assert (a, b, cc) < (i, j, ch), ((i, j, ch), (a, b, cc))
    for cc in range(ch):   # earlier colours of the same pixel are seen
      assert seen[i, j, cc], ((i, j, ch), cc)


@pytest.mark.parametrize('arch', ['row_lstm', 'diagonal_bilstm'])
def test_log_prob_sums_to_one_over_all_binary_images(arch):
  model = PixelRNN(num_levels=2, architecture=arch, hidden=4, num_layers=2,
                   output_features=4, first_kernel=3)
  images = jnp.asarray(list(itertools.product([0, 1], repeat=8))).reshape(-1, 2, 4, 1)
  params = model.init(jax.random.key(0), images[:1])
  params = jax.tree.map(lambda p: 2.0 * p, params)
  log_p = model.apply(params, images, method='log_prob')
  np.testing.assert_allclose(float(jnp.exp(log_p).sum()), 1.0, rtol=1e-5)


def test_conv1d_same_is_laxs_same_convolution_and_the_float64_sum():
  """The Row LSTM's state-to-state convolution (an im2col matmul, issue 18) against
  lax.conv_general_dilated's 'SAME' and an explicit float64 cross-correlation."""
  for k, n in ((3, 7), (5, 4), (1, 6)):
    h = np.random.default_rng(k).normal(size=(2, n, 3)).astype(np.float32)
    kernel = np.random.default_rng(10 + k).normal(size=(k, 3, 8)).astype(np.float32)
    got = np.asarray(conv1d_same(jnp.asarray(h), jnp.asarray(kernel)))
    lax = jax.lax.conv_general_dilated(h, kernel, (1,), 'SAME',
                                       dimension_numbers=('NWC', 'WIO', 'NWC'))
    padded = np.pad(h.astype(np.float64), ((0, 0), ((k - 1) // 2,) * 2, (0, 0)))
    want = sum(padded[:, j:j + n] @ kernel[j].astype(np.float64) for j in range(k))
    assert np.allclose(got, want, atol=1e-5), k
    assert np.allclose(got, np.asarray(lax), atol=1e-5), k


def test_diagonal_scan_is_the_papers_column_recurrence_in_float64():
  """Both directions in one scan (issue 18) against Sec. 3.2's recurrence written out in
  float64, direction by direction: column j's state of row i from the states of rows i - 1
  and i in column j - 1 (zeros before the first column and above the first row); and a
  direction scanned alone gives the same states, so the two do not mix."""
  rng = np.random.default_rng(0)
  d, b, hgt, cols, hid = 2, 2, 4, 6, 3
  z = rng.normal(size=(d, b, hgt, cols, 4 * hid)).astype(np.float32)
  k = (0.5 * rng.normal(size=(d, 2, hid, 4 * hid))).astype(np.float32)
  got = np.asarray(diagonal_scan(jnp.asarray(z), jnp.asarray(k)))
  sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
  want = np.zeros((d, b, hgt, cols, hid))
  for di in range(d):
    c_prev, h_prev = np.zeros((b, hgt, hid)), np.zeros((b, hgt, hid))
    for j in range(cols):
      above = np.concatenate([np.zeros((b, 1, hid)), h_prev[:, :-1]], axis=1)
      pre = above @ k[di, 0].astype(np.float64) + h_prev @ k[di, 1].astype(np.float64)
      o, f, i, g = np.split(pre + z[di, :, :, j], 4, axis=-1)
      c_prev = sig(f) * c_prev + sig(i) * np.tanh(g)
      h_prev = sig(o) * np.tanh(c_prev)
      want[di, :, :, j] = h_prev
  np.testing.assert_allclose(got, want, atol=1e-5)
  alone = np.asarray(diagonal_scan(jnp.asarray(z[1:]), jnp.asarray(k[1:])))
  np.testing.assert_allclose(alone[0], got[1], atol=1e-6)


def test_row_lstm_scan_body_has_no_convolution():
  """Issue 18: XLA:CPU ran convolution gradients inside a while loop slowly (the `row`
  config's step 0.64 s with lax's convolution in the row scan, 0.25 s with the matmul)."""
  model = PixelRNN(num_levels=2, num_channels=1, architecture='row_lstm', hidden=4,
                   num_layers=1, first_kernel=3, output_features=8)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 5, 5, 1)), jnp.int32)
  params = model.init(jax.random.key(0), x)

  def loss(p):
    return model.apply(p, x).sum()

  def primitives(jaxpr, in_loop, found):
    for eqn in jaxpr.eqns:
      found.add((eqn.primitive.name, in_loop))
      loop = in_loop or eqn.primitive.name in ('scan', 'while')
      for v in eqn.params.values():
        for j in (v if isinstance(v, (tuple, list)) else (v,)):
          inner = getattr(j, 'jaxpr', None)
          if inner is not None:
            primitives(getattr(inner, 'jaxpr', inner), loop, found)
    return found

  found = primitives(jax.make_jaxpr(jax.grad(loss))(params).jaxpr, False, set())
  assert ('scan', False) in found                           # the row scan, forward and back
  assert ('conv_general_dilated', False) in found           # the masked convolutions outside
  assert ('conv_general_dilated', True) not in found, found


def test_skew_and_unskew():
  x = jnp.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2)
  s = skew(x)
  assert s.shape == (2, 3, 6, 2)
  for i in range(3):
    np.testing.assert_array_equal(s[:, i, i:i + 4], x[:, i])
    assert not np.asarray(s[:, i, :i]).any() and not np.asarray(s[:, i, i + 4:]).any()
  np.testing.assert_array_equal(unskew(s, 4), x)


@pytest.mark.parametrize('channels', [1, 3])
def test_row_cached_sampler_draws_what_the_naive_one_draws(channels):
  model = PixelRNN(num_levels=4, num_channels=channels, architecture='row_lstm',
                   hidden=3 * channels, num_layers=2, output_features=6, first_kernel=5)
  shape = (3, 5, 6, channels)
  params = model.init(jax.random.key(0), jnp.zeros(shape, jnp.int32))
  params = jax.tree.map(lambda p: 3.0 * p, params)     # peaked conditionals: draws differ
  naive = jax.jit(lambda p, k: model.apply(p, k, shape, method='sample'))(params,
                                                                        jax.random.key(5))
  cached = jax.jit(lambda p, k: model.apply(p, k, shape, method='sample_cached'))(
      params, jax.random.key(5))
  np.testing.assert_array_equal(naive, cached)
  assert len(np.unique(np.asarray(naive))) > 1


def test_diagonal_bilstm_has_no_cached_sampler_and_bad_arguments_are_named():
  model = _model('diagonal_bilstm')
  with pytest.raises(ValueError, match='Row LSTM sampler'):
    model.apply({}, jax.random.key(0), (1, 4, 4, 1), method='sample_cached')
  with pytest.raises(ValueError, match="architecture='row'"):
    PixelRNN(architecture='row').init(jax.random.key(0), jnp.zeros((1, 4, 4, 1), jnp.int32))
  with pytest.raises(ValueError, match='multiple of num_channels'):
    PixelRNN(num_channels=3, hidden=4).init(jax.random.key(0),
                                            jnp.zeros((1, 4, 4, 3), jnp.int32))


@pytest.mark.parametrize('preset', ['tiny', 'tiny,row'])
def test_tiny_configs_train_evaluate_and_sample_through_the_trainer(tmp_path, data_dir, preset):
  import configs.pixelrnn_binarized_mnist as cfg  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  c = cfg.get_config(preset)
  c.data.local_dir = data_dir
  assert train.sampler_method(train.build_model(c.model_name, c.model.to_dict()), 'auto') == (
      'sample_cached' if 'row' in preset else 'sample')
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert result['step'] == 6 and result['num_examples'] == 64
  assert 0 < result['nll'] < 784 * np.log(2) * 1.5
  assert (tmp_path / 'run' / 'samples' / 'step_6.png').exists()
