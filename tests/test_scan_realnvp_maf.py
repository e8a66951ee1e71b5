"""Real NVP's and MAF's scanned depth (issue 18): checkpoints of the unrolled layout convert
and compute what they computed, the scans equal loops over the sliced variables, batch
statistics move through the scans, and the program does not grow with depth.

The fixtures tests/data/{realnvp,maf}_*.npz (+ .json: the model's arguments and the commit)
were written by the unrolled code (commit 27cfa88): random parameters and the running
averages after one train-mode pass ('variables/...'), init's non-parameter collections
('init/...'), a batch x, log_prob in eval and train mode (and the batch statistics that
train-mode call leaves, 'after_train/...'), encode(x), decode(encode(x)), decode of fixed
latents and a sample from jax.random.key(3).
"""
import contextlib
import io
import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flows import bijectors as fb
from flows import maf, realnvp
from tests.conftest import random_flow_variables

DATA = os.path.join(os.path.dirname(__file__), 'data')
FIXTURES = ('realnvp_tiny', 'realnvp_tiny_nonetbn', 'maf_tiny', 'maf_tiny_nobn')


def _load(name):
  with open(os.path.join(DATA, f'{name}.json')) as f:
    meta = json.load(f)
  arrays = np.load(os.path.join(DATA, f'{name}.npz'))

  def tree(prefix):
    flat = {tuple(k.split('/')[1:]): arrays[k] for k in arrays.files
            if k.startswith(prefix + '/')}
    return flax.traverse_util.unflatten_dict(flat) if flat else {}

  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in meta['kwargs'].items()}
  module = realnvp if meta['model'] == 'RealNVP' else maf
  model = (realnvp.RealNVP if meta['model'] == 'RealNVP' else maf.MAFModel)(**kwargs)
  return module, model, tree, arrays


def _new_init_shapes(model):
  image = jnp.zeros((2,) + tuple(model.image_shape), jnp.uint8)
  return jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'sample': jax.random.key(1)}, {'image': image},
      train=False, method='loss'))


def _assert_trees_close(a, b, atol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


@pytest.mark.parametrize('name', FIXTURES)
def test_converted_fixture_reproduces_the_unrolled_models_outputs(name):
  module, model, tree, d = _load(name)
  new = module.unrolled_to_scanned(tree('variables'))
  want = _new_init_shapes(model)
  assert jax.tree.structure(new) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(want), strict=True):
    assert a.shape == b.shape and a.dtype == b.dtype
  # The running averages at init convert to what the scanned init makes.
  init_state = tree('init')
  if init_state:
    fresh = model.init({'params': jax.random.key(0), 'sample': jax.random.key(1)},
                       {'image': jnp.zeros((2,) + tuple(model.image_shape), jnp.uint8)},
                       train=False, method='loss')
    _assert_trees_close(module.unrolled_to_scanned(init_state),
                        {k: v for k, v in fresh.items() if k != 'params'}, atol=0)

  @jax.jit
  def outputs(variables):
    def apply(*a, **k):
      return model.apply(variables, *a, **k)
    lp_train, after = apply(d['x'], train=True, method='log_prob', mutable=['batch_stats'])
    eps = apply(d['x'], method='encode')
    return {'log_prob_eval': apply(d['x'], method='log_prob'), 'log_prob_train': lp_train,
            'after': after, 'encode': eps, 'decode_of_encode': apply(eps, method='decode'),
            'decode': apply(d['decode_z'], method='decode'),
            'sample': apply(jax.random.key(3), d['sample'].shape, method='sample')}

  out = jax.device_get(outputs(new))
  for key in ('log_prob_eval', 'log_prob_train'):
    np.testing.assert_allclose(out[key], d[key], rtol=1e-5, atol=1e-4)
  for key in ('encode', 'decode_of_encode', 'decode'):
    np.testing.assert_allclose(out[key], d[key], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out['sample'], d['sample'])
  if tree('after_train'):
    _assert_trees_close(out['after'], module.unrolled_to_scanned(tree('after_train')),
                        atol=1e-5)
  else:
    assert not out['after']


@pytest.mark.parametrize('name', ('realnvp_tiny', 'maf_tiny'))
def test_conversion_of_params_alone_as_for_optimizer_moments(name):
  module, _, tree, _ = _load(name)
  old = tree('variables')
  whole = module.unrolled_to_scanned(old)
  alone = module.unrolled_to_scanned({'params': old['params']})
  assert set(alone) == {'params'}
  _assert_trees_close(alone['params'], whole['params'], atol=0)
  # Adam's moments are parameter-shaped trees: the same map applies leaf for leaf.
  import optax
  moments = optax.adam(1e-3).init(old['params'])[0]
  converted = module.unrolled_to_scanned({'params': moments.mu})['params']
  assert jax.tree.structure(converted) == jax.tree.structure(whole['params'])
  with pytest.raises(ValueError, match='not a layer of the unrolled'):
    module.unrolled_to_scanned(whole)


def _random(shapes, seed):
  return random_flow_variables(shapes, seed)


def _slice(tree, *index):
  return jax.tree.map(lambda a: a[index], tree)


def test_scanned_resnet_equals_a_loop_over_sliced_blocks_and_moves_batch_stats():
  net = realnvp.ResNet(features=6, num_blocks=3, out_features=4, batch_norm=True)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4, 4, 3)), jnp.float32)
  variables = _random(jax.eval_shape(lambda: net.init(jax.random.key(0), x)), seed=2)
  p, st = variables['params'], variables['batch_stats']

  def loop(train):
    h = flax.linen.Conv(6, (3, 3)).apply({'params': p['conv_in']}, x)
    moved = []
    for j in range(3):
      block = realnvp._ResidualBlock(6, True, train)  # pylint: disable=protected-access
      (h, _), m = block.apply({'params': _slice(p['blocks'], j),
                               'batch_stats': _slice(st['blocks'], j)}, h, None,
                              mutable=['batch_stats'])
      moved.append(m['batch_stats'])
    norm = flax.linen.BatchNorm(use_running_average=not train, momentum=0.9)
    h, m_out = norm.apply({'params': p['norm_out'], 'batch_stats': st['norm_out']}, h,
                          mutable=['batch_stats'])
    out = flax.linen.Conv(4, (3, 3)).apply({'params': p['out']}, jax.nn.relu(h))
    return out, jax.tree.map(lambda *a: jnp.stack(a), *moved), m_out['batch_stats']

  for train in (False, True):
    got, new_stats = net.apply(variables, x, train=train, mutable=['batch_stats'])
    want, blocks_stats, out_stats = loop(train)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    _assert_trees_close(new_stats['batch_stats']['blocks'], blocks_stats, atol=1e-6)
    _assert_trees_close(new_stats['batch_stats']['norm_out'], out_stats, atol=1e-6)
    moved = np.abs(np.asarray(new_stats['batch_stats']['blocks']['norm1']['mean']) -
                   np.asarray(st['blocks']['norm1']['mean'])).min()
    assert (moved > 0) == train


@pytest.mark.parametrize('mask,flips', [('checkerboard', (False, True, False, True)),
                                        ('channel', (False, True, False))])
def test_coupling_group_equals_a_loop_of_couplings_with_sliced_variables(mask, flips):
  group = realnvp.CouplingGroup(mask=mask, flips=flips, features=4, num_blocks=2)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 4, 4, 4)), jnp.float32)
  variables = _random(jax.eval_shape(lambda: group.init(jax.random.key(0), x)), seed=3)
  steps = {c: v['steps'] for c, v in variables.items()}

  # The reference: unrolled ResNetCouplings with static flips, then batch-norm bijectors.
  y, log_det, moved = x, 0.0, []
  for k, flip in enumerate(flips):
    v = {c: _slice(t, k) for c, t in steps.items()}
    coupling = realnvp.ResNetCoupling(mask=mask, flip=flip, features=4, num_blocks=2)
    (y, ld), mc = coupling.apply({c: t['coupling'] for c, t in v.items()}, y, train=True,
                                 mutable=['batch_stats'])
    (y, ld2), mb = fb.BatchNormBijector().apply({c: t['batchnorm'] for c, t in v.items()}, y,
                                                train=True, mutable=['batch_stats'])
    log_det = log_det + ld + ld2
    moved.append({'coupling': mc['batch_stats'], 'batchnorm': mb['batch_stats']})
  (got, got_ld), new = group.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_ld, log_det, rtol=1e-5, atol=1e-4)
  _assert_trees_close(new['batch_stats']['steps'],
                      jax.tree.map(lambda *a: jnp.stack(a), *moved), atol=1e-6)
  assert np.all(np.asarray(new['batch_stats']['steps']['batchnorm']['count']) == 11.0)
  # Eval mode: the inverse (the scan run backwards) undoes the forward.
  z, ld = group.apply(variables, x)
  x_back, ild = group.apply(variables, z, inverse=True)
  np.testing.assert_allclose(x_back, x, atol=2e-5)
  np.testing.assert_allclose(ild, -ld, rtol=1e-5, atol=1e-4)
  assert np.abs(np.asarray(z - x)).max() > 0.1


def test_maf_step_reversed_equals_a_reversed_order_made_with_converted_params():
  """The identity the MAF conversion rests on: MAF(reversed) == R . MAF(natural) . R with
  the first kernel's rows and the output's columns reversed; the inverse too."""
  d = 7
  layer = fb.MAF(hidden_sizes=(12, 10), input_order='reversed')
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, d)), jnp.float32)
  params = _random(jax.eval_shape(lambda: layer.init(jax.random.key(0), x)), seed=4)
  params = jax.tree.map(lambda a: 0.5 * a, params)
  want, want_ld = layer.apply(params, x)
  old = {'params': {'made_0': params['params'], 'made_1': params['params']}}
  new = maf.unrolled_to_scanned(old)['params']['layers']['steps']['made']
  step = maf._MAFStep((12, 10), batch_norm=False, momentum=0.99)  # pylint: disable=protected-access
  carry = (x, jnp.zeros((4,), jnp.float32))
  (got, got_ld), _ = step.apply({'params': {'made': _slice(new, 1)}}, carry, jnp.asarray(1))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_ld, want_ld, rtol=1e-5, atol=1e-5)
  # Layer 0 (natural order) is copied unchanged.
  (got0, _), _ = step.apply({'params': {'made': _slice(new, 0)}}, carry, jnp.asarray(0))
  np.testing.assert_allclose(got0, fb.MAF(hidden_sizes=(12, 10)).apply(params, x)[0],
                             rtol=1e-5, atol=1e-5)
  inverse = maf._MAFStep((12, 10), batch_norm=False, momentum=0.99, inverse=True)  # pylint: disable=protected-access
  (x_back, ild), _ = inverse.apply({'params': {'made': _slice(new, 1)}},
                                   (want, jnp.zeros((4,), jnp.float32)), jnp.asarray(1))
  np.testing.assert_allclose(x_back, x, atol=1e-5)
  np.testing.assert_allclose(ild, -want_ld, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('num_layers', (1, 4))
def test_maf_round_trip_and_batch_stats_move_in_every_layer(num_layers):
  model = maf.MAFModel(image_shape=(3, 3, 1), num_layers=num_layers, hidden_sizes=(16,))
  x = jnp.asarray(np.random.default_rng(3).uniform(0.1, 0.9, (5, 3, 3, 1)), jnp.float32)
  variables = model.init(jax.random.key(0), x, method='log_prob')
  rand = _random(jax.eval_shape(lambda: variables), seed=5)
  variables = {**variables, 'params': jax.tree.map(lambda a: 0.3 * a, rand['params'])}
  z = model.apply(variables, x, method='encode')
  np.testing.assert_allclose(model.apply(variables, z, method='decode'), x, atol=2e-5)
  _, moved = model.apply(variables, x, train=True, method='log_prob', mutable=['batch_stats'])
  stats = moved['batch_stats']['layers']['steps']['batchnorm']
  assert stats['count'].shape == (num_layers,) and np.all(np.asarray(stats['count']) == 1)
  assert np.all(np.abs(np.asarray(stats['mean'])).max(-1) > 1e-3)


def _hlo_lines(model, shape):
  image = jnp.zeros((2,) + shape, jnp.uint8)
  variables = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'sample': jax.random.key(1)}, {'image': image},
      train=False, method='loss'))

  def loss(params, state):
    def f(p):
      (obj, _), new = model.apply({'params': p, **state}, {'image': image}, train=True,
                                  rngs={'sample': jax.random.key(0)}, method='loss',
                                  mutable=['batch_stats'])
      return obj, new
    return jax.grad(f, has_aux=True)(params)

  state = {k: v for k, v in variables.items() if k != 'params'}
  return jax.jit(loss).lower(variables['params'], state).as_text().count('\n')


def test_the_train_steps_program_does_not_grow_with_depth():
  shape = (8, 8, 1)
  small, deep = (_hlo_lines(realnvp.RealNVP(image_shape=shape, num_scales=2, features=4,
                                            num_blocks=b), shape) for b in (1, 6))
  assert deep == small, (small, deep)
  small, deep = (_hlo_lines(maf.MAFModel(image_shape=shape, num_layers=n,
                                         hidden_sizes=(8,)), shape) for n in (2, 7))
  assert deep == small, (small, deep)


@pytest.mark.parametrize('kernel', ((1, 1), (3, 3), (5, 5), (2, 3), (3, 2), (4, 4)))
def test_canonical_grad_convolution_has_the_convolutions_gradients(kernel):
  """flows.bijectors.conv_same_canonical_grad (Real NVP's and Glow's train-mode
  convolutions): nn.Conv's 'SAME' values and JAX's own gradients, odd and even kernels."""
  rng = np.random.default_rng(6)
  h = jnp.asarray(rng.normal(size=(3, 6, 5, 4)), jnp.float32)
  k = jnp.asarray(rng.normal(size=kernel + (4, 7)), jnp.float32)
  g = jnp.asarray(rng.normal(size=(3, 6, 5, 7)), jnp.float32)
  ours = fb.conv_same_canonical_grad

  def plain(h, k):
    return jax.lax.conv_general_dilated(h, k, (1, 1), 'SAME',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  np.testing.assert_allclose(ours(h, k), plain(h, k), rtol=1e-5, atol=1e-5)
  for argnum in (0, 1):
    want = jax.grad(lambda *a: jnp.sum(plain(*a) * g), argnum)(h, k)
    got = jax.grad(lambda *a: jnp.sum(ours(*a) * g), argnum)(h, k)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_unrolled_couplings_are_the_same_model():
  """unroll_couplings=True (nn.scan's unroll) has the same variables, the same train-mode
  loss, gradients and batch statistics, and the same decoding."""
  model = realnvp.RealNVP(image_shape=(8, 8, 1), num_scales=2, features=4, num_blocks=2)
  unrolled = model.clone(unroll_couplings=True)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1)) / 256.0, jnp.float32)
  rngs = {'params': jax.random.key(0), 'sample': jax.random.key(1)}
  variables = model.init(rngs, x, method='log_prob')
  assert (jax.tree.structure(unrolled.init(rngs, x, method='log_prob'))
          == jax.tree.structure(variables))

  def train_loss(m, params):
    (loss, _), new = m.apply({**variables, 'params': params}, {'image': x}, train=True,
                             method='loss', mutable=['batch_stats'],
                             rngs={'sample': jax.random.key(2)})
    return loss, new
  (want, want_stats), want_g = jax.value_and_grad(
      lambda p: train_loss(model, p), has_aux=True)(variables['params'])
  (got, got_stats), got_g = jax.value_and_grad(
      lambda p: train_loss(unrolled, p), has_aux=True)(variables['params'])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  _assert_trees_close(got_g, want_g, atol=1e-5)
  _assert_trees_close(got_stats, want_stats, atol=1e-6)
  eps = jax.random.normal(jax.random.key(3), (2, 64))
  np.testing.assert_allclose(unrolled.apply(variables, eps, method='decode'),
                             model.apply(variables, eps, method='decode'), atol=1e-5)


def test_rematerialized_residual_blocks_same_gradients_and_save_only_conv_outputs(
    monkeypatch):
  """In train mode the scanned residual blocks are rematerialized, saving only their
  convolutions' outputs: the loss, gradients and batch statistics equal the same model
  saving everything (checkpoint_policies.everything_saveable, i.e. no remat); of the
  activations stacked over a ResNet's blocks, [steps, blocks, B, H, W, features], the
  backward pass keeps 2 per block scan (8 when everything is saved, 1 when nothing is)."""
  model = realnvp.RealNVP(image_shape=(4, 4, 1), num_scales=1, features=4, num_blocks=2)
  x = jnp.asarray(np.random.default_rng(1).integers(0, 256, (4, 4, 4, 1)) / 256.0, jnp.float32)
  rngs = {'params': jax.random.key(0), 'sample': jax.random.key(1)}
  variables = model.init(rngs, x, method='log_prob')

  def train_loss(params):
    (loss, _), new = model.apply({**variables, 'params': params}, {'image': x}, train=True,
                                 method='loss', mutable=['batch_stats'],
                                 rngs={'sample': jax.random.key(2)})
    return loss, new
  grad = jax.value_and_grad(train_loss, has_aux=True)

  def stacked_block_activations():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      jax.ad_checkpoint.print_saved_residuals(lambda p: train_loss(p)[0], variables['params'])
    # The one scale's checkerboard group: 4 steps x 2 blocks x [4, 4, 4, 4 features].
    return sum(line.startswith(('f32[4,2,4,4,4,4]', 'bool[4,2,4,4,4,4]'))
               for line in out.getvalue().splitlines())
  assert stacked_block_activations() == 2
  (got, got_stats), got_g = grad(variables['params'])
  monkeypatch.setattr(realnvp, '_BLOCK_REMAT_POLICY',
                      jax.checkpoint_policies.everything_saveable)
  assert stacked_block_activations() == 8
  (want, want_stats), want_g = grad(variables['params'])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  _assert_trees_close(got_g, want_g, atol=1e-6)
  _assert_trees_close(got_stats, want_stats, atol=1e-7)
