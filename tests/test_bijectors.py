"""Bijectors: round trips, log-determinants against jax.jacfwd, and the initial states.

Round trips and log-determinants use RANDOM parameters: with the zero-initialized coupling
networks of a fresh flow every coupling is the identity and the checks would be vacuous.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flows import bijectors as fb
from tests.conftest import random_flow_variables

IMAGE = (2, 4, 4, 2)      # per-example map on 32 numbers: a 32 x 32 Jacobian
FLAT = (2, 6)
CONTEXT = 3


def random_variables(model, x, seed=0, **kwargs):
  """Every variable drawn at random in NumPy into the shapes `init` would give: parameters
  at a fan-in scale (1-D ones uniform in [-0.5, 0.5]), running variances positive, LU
  constants a random permutation matrix and random signs."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, method='forward',
                                             **kwargs))
  return random_flow_variables(shapes, seed)


def _per_example_log_det(fn, x, context):
  """log|det d fn(x_b) / d x_b| for each example b, fn a batch map, images flattened."""
  def single(v, ctx):
    ctx = None if ctx is None else ctx[None]
    return fn(v.reshape((1,) + x.shape[1:]), ctx)[0].reshape(-1)

  jac = jax.vmap(jax.jacfwd(single))(x.reshape(x.shape[0], -1), context)
  return jnp.linalg.slogdet(jac)[1]


def check_bijector(model, shape, context_dim=None, seed=0, atol=2e-4):
  """Both round trips and both log-determinants of `model` with random variables."""
  rng = np.random.default_rng(seed + 100)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  context = (None if context_dim is None else
             jnp.asarray(rng.normal(size=(shape[0], context_dim)), jnp.float32))
  variables = random_variables(model, x, seed, context=context)

  @jax.jit
  def run(variables, x, context):
    def fwd(v, c):
      return model.apply(variables, v, context=c, method='forward')
    def inv(v, c):
      return model.apply(variables, v, context=c, method='inverse')
    y, ld = fwd(x, context)
    x_back, ild = inv(y, context)
    z = jax.random.normal(jax.random.key(seed), y.shape)    # an independent latent point
    x_z, ild_z = inv(z, context)
    z_back, ld_z = fwd(x_z, context)
    jac_fwd = _per_example_log_det(lambda v, c: fwd(v, c)[0], x, context)
    jac_inv = _per_example_log_det(lambda v, c: inv(v, c)[0], z, context)
    return dict(x=x, y=y, ld=ld, x_back=x_back, ild=ild, z=z, z_back=z_back, ild_z=ild_z,
                ld_z=ld_z, jac_fwd=jac_fwd, jac_inv=jac_inv)

  r = jax.tree.map(np.asarray, run(variables, x, context))
  assert r['ld'].shape == (shape[0],) and r['ld'].dtype == np.float32
  assert r['y'].size == r['x'].size
  # The map is not the identity (random parameters; permutations excepted).
  np.testing.assert_allclose(r['x_back'], r['x'], atol=atol, rtol=1e-4)
  np.testing.assert_allclose(r['z_back'], r['z'], atol=atol, rtol=1e-4)
  np.testing.assert_allclose(r['ild'], -r['ld'], atol=atol, rtol=1e-4)
  np.testing.assert_allclose(r['ld_z'], -r['ild_z'], atol=atol, rtol=1e-4)
  np.testing.assert_allclose(r['ld'], r['jac_fwd'], atol=10 * atol, rtol=1e-4)
  np.testing.assert_allclose(r['ild_z'], r['jac_inv'], atol=10 * atol, rtol=1e-4)
  return r


CASES = {
    # name: (factory, input shape, context size)
    'nice_additive_flat_even': (lambda: fb.AdditiveCoupling(hidden=(8, 8)), FLAT, None),
    'nice_additive_flat_half_flipped': (
        lambda: fb.AdditiveCoupling(mask='channel', flip=True, hidden=(8,)), FLAT, None),
    'nice_additive_image': (lambda: fb.AdditiveCoupling(hidden=(8,)), IMAGE, None),
    'nice_scaling': (fb.DiagonalScaling, IMAGE, None),
    'realnvp_checkerboard': (lambda: fb.AffineCoupling(hidden=(8,)), IMAGE, None),
    'realnvp_channel_flipped': (
        lambda: fb.AffineCoupling(mask='channel', flip=True, hidden=(8,)), IMAGE, None),
    'realnvp_flat': (lambda: fb.AffineCoupling(hidden=(8,)), FLAT, None),
    'squeeze': (fb.Squeeze, IMAGE, None),
    'batchnorm_eval': (fb.BatchNormBijector, IMAGE, None),
    'actnorm': (fb.ActNorm, IMAGE, None),
    'conv1x1': (fb.Invertible1x1Conv, (2, 2, 2, 4), None),
    'conv1x1_lu': (fb.LUInvertible1x1Conv, (2, 2, 2, 4), None),
    'glow_coupling': (lambda: fb.GlowCoupling(hidden_features=8), IMAGE, None),
    'maf': (lambda: fb.MAF(hidden_sizes=(16, 16)), FLAT, None),
    'maf_random_order_context': (
        lambda: fb.MAF(hidden_sizes=(16,), input_order='random', hidden_order='random',
                       seed=3), FLAT, CONTEXT),
    'iaf_context': (lambda: fb.IAF(hidden_sizes=(16, 16), input_order='reversed'), FLAT,
                    CONTEXT),
    'reverse': (fb.Reverse, FLAT, None),
    'permute': (lambda: fb.Permute(seed=1), FLAT, None),
    'chain_image': (lambda: fb.Chain((
        fb.ActNorm(), fb.AffineCoupling(hidden=(8,)), fb.Squeeze(),
        fb.LUInvertible1x1Conv(), fb.GlowCoupling(hidden_features=8),
        fb.BatchNormBijector())),
                    IMAGE, None),
    'chain_flat': (lambda: fb.Chain((
        fb.MAF(hidden_sizes=(16,)), fb.Reverse(), fb.MAF(hidden_sizes=(16,)),
        fb.Permute(seed=2), fb.AdditiveCoupling(hidden=(8,)), fb.DiagonalScaling())),
                   FLAT, CONTEXT),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_round_trips_and_log_det_match_jacobian(name):
  factory, shape, context_dim = CASES[name]
  r = check_bijector(factory(), shape, context_dim)
  if name not in ('squeeze', 'reverse', 'permute'):
    assert np.abs(r['y'].reshape(r['x'].shape) - r['x']).max() > 1e-2, 'a vacuous test'
    if not name.startswith('nice_additive'):
      assert np.abs(r['ld']).max() > 1e-2, 'log_det should not vanish here'


def _fresh(model, x, **kwargs):
  """Really initialized variables and the forward output at x, in one compilation."""
  def f(x):
    (y, ld), variables = model.init_with_output(jax.random.key(0), x, method='forward',
                                                **kwargs)
    return y, ld, variables
  return jax.jit(f)(x)


@pytest.mark.parametrize('model, shape', [
    (fb.AdditiveCoupling(hidden=(8,)), FLAT),
    (fb.AffineCoupling(hidden=(8,)), IMAGE),
    (fb.AffineCoupling(mask='channel', hidden=(8,)), IMAGE),
    (fb.MAF(hidden_sizes=(16,)), FLAT),
], ids=['additive', 'affine_checkerboard', 'affine_channel', 'maf'])
def test_fresh_couplings_are_the_identity(model, shape):
  x = jax.random.normal(jax.random.key(1), shape)
  y, ld, _ = _fresh(model, x)
  np.testing.assert_array_equal(y, x)
  np.testing.assert_array_equal(ld, 0.0)


def test_fresh_glow_coupling_and_iaf_start_as_their_papers_code():
  """Glow's sigmoid(h + 2) and IAF's forget bias make the fresh layers fixed contractions."""
  x = jax.random.normal(jax.random.key(1), IMAGE)
  y, ld, _ = _fresh(fb.GlowCoupling(hidden_features=8), x)
  c = IMAGE[-1] // 2
  np.testing.assert_array_equal(y[..., :c], x[..., :c])
  np.testing.assert_allclose(y[..., c:], jax.nn.sigmoid(2.0) * x[..., c:], rtol=1e-6)
  np.testing.assert_allclose(ld, np.prod(IMAGE[1:]) / 2 * np.log(jax.nn.sigmoid(2.0)),
                             rtol=1e-5)
  z = jax.random.normal(jax.random.key(1), FLAT)
  y, ld, _ = _fresh(fb.IAF(hidden_sizes=(16,), forget_bias=1.0), z,
                    context=jnp.ones((FLAT[0], CONTEXT)))
  np.testing.assert_allclose(y, jax.nn.sigmoid(1.0) * z, rtol=1e-6)
  np.testing.assert_allclose(ld, FLAT[1] * np.log(jax.nn.sigmoid(1.0)), rtol=1e-5)


def test_actnorm_data_dependent_init():
  x = 3.0 + 2.5 * jax.random.normal(jax.random.key(2), (8, 4, 4, 3))
  x = x * jnp.array([1.0, 0.1, 5.0])
  y, ld, variables = _fresh(fb.ActNorm(), x)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, rtol=1e-4)
  std = np.asarray(x).std(axis=(0, 1, 2))
  np.testing.assert_allclose(ld, -16 * np.log(std).sum(), rtol=1e-4)
  # Later calls reuse the stored parameters instead of re-initializing on the new input.
  y2, _ = jax.jit(lambda v, x: fb.ActNorm().apply(v, x, method='forward'))(variables, 2 * x)
  np.testing.assert_allclose(y2, 2 * y - np.asarray(variables['params']['bias'])
                             * np.exp(variables['params']['log_scale']), rtol=1e-4, atol=1e-4)


def _weight_of(model, variables, c):
  """The layer's W, read off its forward map on the C one-hot pixels."""
  eye = jnp.eye(c).reshape(c, 1, 1, c)
  y = jax.jit(lambda v: model.apply(v, eye, method='forward')[0])(variables)
  return np.asarray(y.reshape(c, c))


def test_lu_conv_weight_is_the_product_of_its_factors():
  c = 5
  model = fb.LUInvertible1x1Conv()
  x = jnp.zeros((1, 1, 1, c))
  fresh = _fresh(model, x)[2]
  for variables in (fresh, random_variables(model, x, seed=4)):
    p = jax.tree.map(np.asarray, variables['params'])
    k = jax.tree.map(np.asarray, variables['constants'])
    w = _weight_of(model, variables, c)
    l_unit = np.tril(p['lower'], -1) + np.eye(c)
    u = np.triu(p['upper'], 1) + np.diag(k['sign_s'] * np.exp(p['log_s']))
    np.testing.assert_allclose(w, k['permutation'] @ l_unit @ u, atol=1e-5)
    np.testing.assert_allclose(np.abs(np.linalg.det(w)), np.exp(np.sum(p['log_s'])),
                               rtol=1e-4)
    np.testing.assert_array_equal(k['permutation'] @ k['permutation'].T, np.eye(c))
    np.testing.assert_array_equal(np.abs(k['sign_s']), 1.0)
  # Freshly initialized, W is a rotation.
  w = _weight_of(model, fresh, c)
  np.testing.assert_allclose(w @ w.T, np.eye(c), atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(w), 1.0, atol=1e-5)


def test_lu_conv_stays_invertible_and_needs_its_constants():
  c = 3
  model = fb.LUInvertible1x1Conv()
  x = jax.random.normal(jax.random.key(0), (1, 2, 2, c))
  variables = random_variables(model, x, seed=5)
  # An extreme diagonal: exp keeps it nonzero, so W stays invertible.
  variables['params']['log_s'] = jnp.array([-4.0, 0.0, 3.0])
  apply = jax.jit(lambda v, x, method: model.apply(v, x, method=method),
                  static_argnums=2)
  y, ld = apply(variables, x, 'forward')
  x_back, _ = apply(variables, y, 'inverse')
  np.testing.assert_allclose(x_back, x, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(ld, 4 * (-1.0), rtol=1e-6)
  with pytest.raises(ValueError, match='constants'):
    model.apply({'params': variables['params']}, x, method='forward')


def test_plain_conv1x1_starts_as_a_rotation():
  c = 4
  model = fb.Invertible1x1Conv()
  _, ld, variables = _fresh(model, jnp.ones((2, 3, 3, c)))
  w = np.asarray(variables['params']['kernel'])
  np.testing.assert_allclose(w @ w.T, np.eye(c), atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(w), 1.0, atol=1e-5)
  np.testing.assert_allclose(ld, 0.0, atol=1e-4)


def test_squeezes_plain_and_ordered():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  for ordered, slots in ((True, [(0, 0), (1, 1), (0, 1), (1, 0)]),
                         (False, [(0, 0), (0, 1), (1, 0), (1, 1)])):
    np.testing.assert_array_equal(fb.unsqueeze(fb.squeeze(x, ordered), ordered), x)
    s = np.asarray(fb.squeeze(x, ordered))
    for slot, (di, dj) in enumerate(slots):
      np.testing.assert_array_equal(s[:, :, :, slot * 3:(slot + 1) * 3], x[:, di::2, dj::2])
  np.testing.assert_array_equal(fb.reorder_squeezed(fb.squeeze(x, False)), fb.squeeze(x, True))
  np.testing.assert_array_equal(fb.reorder_squeezed(fb.squeeze(x, True), to_ordered=False),
                                fb.squeeze(x, False))


def _pixel_partition(layer_kind, flip, image_shape):
  """The pixels (of the unsqueezed image) a coupling keeps, as a boolean [H, W, C] map."""
  h, w, c = image_shape
  if layer_kind == 'checkerboard':
    return fb.checkerboard_mask(image_shape, flip).astype(bool)
  mask = fb.channel_mask((h // 2, w // 2, 4 * c), flip)[None]
  return np.asarray(fb.unsqueeze(jnp.asarray(mask), ordered=False))[0].astype(bool)


def test_realnvp_channel_couplings_split_pixels_unlike_the_checkerboard():
  """Real NVP Sec. 3.6: the channel-wise masking must not be redundant with the
  checkerboard. On the ordered squeeze it was: all six couplings of a scale split the
  pixels alike. The factor-out still keeps the even-parity pixels (the ordered layout)."""
  from flows.realnvp import RealNVP
  model = RealNVP(image_shape=(8, 8, 1), num_scales=2, features=4, num_blocks=1,
                  net_batch_norm=False)
  bound = model.bind({})
  bound.setup()
  layers = [layer for layer in bound.scales[0].bijectors]
  kinds = [type(layer).__name__ for layer in layers]
  assert kinds.count('Squeeze') == 1 and kinds.count('ReorderSqueezed') == 1
  sq, ro = kinds.index('Squeeze'), kinds.index('ReorderSqueezed')
  assert not layers[sq].ordered
  # Each run of same-mask couplings is one scanned CouplingGroup, its flips as data.
  couplings = [(i, layer) for i, layer in enumerate(layers)
               if type(layer).__name__ == 'CouplingGroup']
  before = [layer for i, layer in couplings if i < sq]
  between = [layer for i, layer in couplings if sq < i < ro]
  assert [(layer.mask, len(layer.flips)) for layer in before] == [('checkerboard', 3)]
  assert [(layer.mask, len(layer.flips)) for layer in between] == [('channel', 3)]
  assert not any(i > ro for i, _ in couplings)
  boards = [_pixel_partition('checkerboard', f, (8, 8, 1)) for f in (False, True)]
  for flip in between[0].flips:
    part = _pixel_partition('channel', flip, (8, 8, 1))
    for board in boards:
      assert not np.array_equal(part, board)
      # Each channel half holds half of each checkerboard colour: maximally unlike it.
      assert (part & board).sum() == part.sum() // 2
  # The factor-out: after the reorder, the second half of the channels are the odd pixels.
  x = jnp.arange(64, dtype=jnp.float32).reshape(1, 8, 8, 1)
  kept = fb.reorder_squeezed(fb.squeeze(x, ordered=False))[..., :2]
  kept_pixels = set(np.asarray(kept).ravel().astype(int))
  assert kept_pixels == {i * 8 + j for i in range(8) for j in range(8) if (i + j) % 2 == 0}


def test_masks():
  np.testing.assert_array_equal(fb.checkerboard_mask((5,)), [1, 0, 1, 0, 1])
  np.testing.assert_array_equal(fb.checkerboard_mask((5,), flip=True), [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(fb.channel_mask((5,)), [1, 1, 0, 0, 0])
  np.testing.assert_array_equal(fb.checkerboard_mask((2, 2, 1))[..., 0], [[1, 0], [0, 1]])
  with pytest.raises(ValueError):
    fb.channel_mask((4, 4, 1))


def test_batchnorm_train_mode():
  """Training normalizes with the batch's statistics (treated as constants of the map) and
  moves the running averages; with those statistics as running averages, the eval-mode map
  is the same map, so the round trip and the Jacobian log-det hold for it too."""
  model = fb.BatchNormBijector(momentum=0.9)
  x = 1.5 + 2.0 * jax.random.normal(jax.random.key(3), IMAGE)
  variables = random_variables(model, x, seed=1)

  @jax.jit
  def train_step(variables, x):
    return model.apply(variables, x, train=True, method='forward', mutable=['batch_stats'])

  (y, ld), updates = train_step(variables, x)
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  old = variables['batch_stats']
  # The running averages are bias-corrected EMAs: the (n+1)-th update moves them by
  # w = (1 - momentum) / (1 - momentum^(n+1)); n = old count (10, from random_variables).
  assert float(old['count']) == 10.0
  w = 0.1 / (1 - 0.9 ** 11)
  np.testing.assert_allclose(updates['batch_stats']['mean'], (1 - w) * old['mean'] + w * mean,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(updates['batch_stats']['var'], (1 - w) * old['var'] + w * var,
                             rtol=1e-5)
  assert float(updates['batch_stats']['count']) == 11.0
  gamma = np.exp(np.asarray(variables['params']['log_scale']))
  expected = (np.asarray(x) - mean) / np.sqrt(var + model.epsilon) * gamma
  np.testing.assert_allclose(y, expected + variables['params']['bias'], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
      ld, 16 * np.sum(-0.5 * np.log(var + model.epsilon) + np.log(gamma)), rtol=1e-5)
  frozen = {'params': variables['params'],
            'batch_stats': {'mean': mean, 'var': var, 'count': jnp.ones(())}}
  y_eval, ld_eval = model.apply(frozen, x, method='forward')
  np.testing.assert_allclose(y_eval, y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ld_eval, ld, rtol=1e-6)
  x_back, ild = model.apply(frozen, y, method='inverse')
  np.testing.assert_allclose(x_back, x, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ild, -ld, rtol=1e-6)
  with pytest.raises(ValueError, match='train=False'):
    model.apply(variables, y, train=True, method='inverse')


def test_batchnorm_running_averages_are_bias_corrected():
  """From freshly initialized running averages (0, 1), the first update takes the batch's
  statistics outright and n updates on the same batch stay there (no trace of the initial
  values); with the statistics of a stream of batches they equal the normalized
  exponentially weighted average sum_t m^(n-t) s_t / sum_t m^(n-t)."""
  model = fb.BatchNormBijector(momentum=0.99)
  xs = [3.0 + (1.0 + i) * jax.random.normal(jax.random.key(i), IMAGE) for i in range(5)]
  variables = model.init(jax.random.key(0), xs[0], method='forward')
  assert float(variables['batch_stats']['count']) == 0.0

  @jax.jit
  def train_step(variables, x):
    return model.apply(variables, x, train=True, method='forward', mutable=['batch_stats'])[1]

  stats = []
  for x in xs:
    variables = {**variables, **train_step(variables, x)}
    stats.append((x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))))
    if len(stats) == 1:
      np.testing.assert_allclose(variables['batch_stats']['mean'], stats[0][0], rtol=1e-6)
      np.testing.assert_allclose(variables['batch_stats']['var'], stats[0][1], rtol=1e-6)
  weights = 0.99 ** np.arange(len(xs) - 1, -1, -1)
  for k, name in enumerate(('mean', 'var')):
    expected = sum(wt * s[k] for wt, s in zip(weights, stats, strict=True)) / weights.sum()
    np.testing.assert_allclose(variables['batch_stats'][name], expected, rtol=1e-5)
  assert float(variables['batch_stats']['count']) == len(xs)
