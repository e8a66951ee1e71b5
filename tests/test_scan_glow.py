"""Glow's K steps per level as one `nn.scan` (flows/glow.py): checkpoints of the unrolled
model convert and give the same densities and samples; the scanned model equals its step
applied K times by hand; actnorm's data-dependent initialization sees each step's input;
the lowered program does not grow with K.

The fixtures tests/data/glow_unrolled_{lu,shuffle,plain_additive}.npz were written by the
unrolled flows/glow.py (the commit is in each file's 'source'): a 2-level, 3-step Glow with 8
hidden channels on 8x8x1 images, initialized on 32 fixed images, every parameter then
perturbed by 0.1 N(0, 1) so no coupling is a zero map; 'variables/<collection>/<path>' are
its variables in the unrolled layout, and 'log_prob', 'z' (encode), 'decoded' (decode of
'eps'), 'sample' (sample with key 3) and 'metrics/*' (the loss with key 5) what that code
computed from them.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from flows import bijectors as fb
from flows import glow
from flows.glow import FlowStep, Glow, SplitPrior, TopPrior
from flows.models import flatten_latents
from tests.conftest import random_flow_variables

DATA = os.path.join(os.path.dirname(__file__), 'data')
FIXTURES = ('lu', 'shuffle', 'plain_additive')


def _load(name):
  f = np.load(os.path.join(DATA, f'glow_unrolled_{name}.npz'))
  config = json.loads(str(f['config']))
  flat = {tuple(k.split('/')[1:]): f[k] for k in f.files if k.startswith('variables/')}
  arrays = {k: f[k] for k in f.files if not k.startswith('variables/')}
  return Glow(**config), traverse_util.unflatten_dict(flat), arrays


def _shapes(model, image):
  return jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'sample': jax.random.key(0)}, {'image': image},
      train=False, method='loss'))


@pytest.mark.parametrize('name', FIXTURES)
def test_converted_unrolled_checkpoint_gives_the_same_densities_and_samples(name):
  model, old, want = _load(name)
  assert any(k.startswith('level0_step0_') for k in old['params'])
  variables = glow.unrolled_to_scanned(old)
  assert jax.tree.structure(variables) == jax.tree.structure(_shapes(model, want['images']))
  for a, b in zip(jax.tree.leaves(jax.eval_shape(lambda: variables)),
                  jax.tree.leaves(_shapes(model, want['images'])), strict=True):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)
  # The layout change loses nothing: converting back gives the unrolled variables exactly.
  back = glow.scanned_to_unrolled(variables)
  assert jax.tree.structure(back) == jax.tree.structure(old)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(old), strict=True):
    np.testing.assert_array_equal(a, b)

  @jax.jit
  def run(variables):
    def apply(*a, **k):
      return model.apply(variables, *a, **k)
    _, metrics = apply({'image': want['images']}, train=True,
                       rngs={'sample': jax.random.key(5)}, method='loss')
    return (apply(want['x'], method='log_prob'), apply(want['x'], method='encode'),
            apply(want['eps'], method='decode'),
            apply(jax.random.key(3), (4, 8, 8, 1), method='sample'), metrics)

  log_prob, z, decoded, sample, metrics = jax.tree.map(np.asarray, run(variables))
  np.testing.assert_allclose(log_prob, want['log_prob'], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(z, want['z'], atol=1e-5)
  np.testing.assert_allclose(decoded, want['decoded'], atol=1e-5)
  # Integer samples: a float difference could only move a value across a bin boundary.
  assert np.mean(sample != want['sample']) <= 0.01
  assert np.abs(sample.astype(int) - want['sample']).max() <= 1
  for k, v in metrics.items():
    np.testing.assert_allclose(v, want[f'metrics/{k}'], rtol=1e-5, atol=1e-4)


def test_conversion_of_parameter_shaped_trees_and_its_errors():
  """Adam's moments (any tree shaped like 'params') convert through {'params': tree}."""
  model, old, want = _load('lu')
  adam = optax.adam(1e-3).init(old['params'])[0]
  mu = glow.unrolled_to_scanned({'params': adam.mu})['params']
  new = _shapes(model, want['images'])['params']
  assert jax.tree.structure(mu) == jax.tree.structure(new)
  assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(mu), jax.tree.leaves(new),
                                                  strict=True))
  # The priors keep their names and values.
  np.testing.assert_array_equal(glow.unrolled_to_scanned(old)['params']['top_prior']['logs'],
                                old['params']['top_prior']['logs'])
  missing = {k: v for k, v in old['params'].items() if not k.startswith('level1_step1_')}
  with pytest.raises(ValueError, match=r'level 1.s \w+ layers are numbered \[0, 2\]'):
    glow.unrolled_to_scanned({'params': missing})


def _random_variables(model, image, seed):
  """Random variables drawn as for the unrolled model (tests/conftest.py), then stacked."""
  shapes = jax.eval_shape(glow.scanned_to_unrolled, _shapes(model, image))
  return glow.unrolled_to_scanned(random_flow_variables(shapes, seed))


def _step_variables(variables, level, k):
  name = f'level{level}_steps'
  return {c: jax.tree.map(lambda a: a[k], tree[name])
          for c, tree in variables.items() if name in tree}


def _step(model):
  return FlowStep(model.hidden_features, additive=model.coupling == 'additive',
                  permutation=model.permutation, lu=model.lu)


def _shuffle(model, level, k, channels):
  if model.permutation != 'shuffle':
    return None
  perm = np.random.RandomState(level * model.num_steps + k).permutation(channels)
  return jnp.asarray(perm), jnp.asarray(np.argsort(perm))


def _by_hand(model, variables, x):
  """log p(x) and the latent, one step module applied K times per level with step k's
  slice of the stacked variables, then the split and top priors as separate modules."""
  params = variables['params']
  y, log_det, latents = x - 0.5, jnp.zeros((x.shape[0],)), []
  for level in range(model.num_levels):
    y = fb.squeeze(y)
    for k in range(model.num_steps):
      y, log_det = _step(model).apply(_step_variables(variables, level, k), y, log_det,
                                      _shuffle(model, level, k, y.shape[-1]))
    if level < model.num_levels - 1:
      keep = y.shape[-1] // 2
      eps2, ld = SplitPrior().apply({'params': params[f'level{level}_split']},
                                    y[..., :keep], y[..., keep:])
      latents.append(eps2)
      log_det, y = log_det + ld, y[..., :keep]
  y, ld = TopPrior().apply({'params': params['top_prior']}, y)
  eps = flatten_latents(latents + [y])
  log_base = (-0.5 * eps ** 2 - 0.5 * np.log(2 * np.pi)).sum(-1)
  return log_base + log_det + ld, eps


def _inverse_by_hand(model, variables, z):
  """The last level's top down, each level's steps K-1..0 inverted one at a time."""
  params = variables['params']
  h, w, c = model.image_shape
  sizes = []
  for level in range(model.num_levels):
    h, w, c = h // 2, w // 2, 4 * c
    if level < model.num_levels - 1:
      sizes.append((h, w, c - c // 2))
      c = c // 2
  sizes.append((h, w, c))
  parts = np.split(np.asarray(z), np.cumsum([np.prod(s) for s in sizes])[:-1], axis=-1)
  parts = [jnp.asarray(p).reshape((z.shape[0],) + s) for p, s in zip(parts, sizes, strict=True)]
  y, _ = TopPrior().apply({'params': params['top_prior']}, parts[-1], inverse=True)
  for level in reversed(range(model.num_levels)):
    if level < model.num_levels - 1:
      z2, _ = SplitPrior().apply({'params': params[f'level{level}_split']}, y, parts[level],
                                 inverse=True)
      y = jnp.concatenate([y, z2], axis=-1)
    for k in reversed(range(model.num_steps)):
      y, _ = _step(model).apply(_step_variables(variables, level, k), y,
                                jnp.zeros((y.shape[0],)),
                                _shuffle(model, level, k, y.shape[-1]), inverse=True)
    y = fb.unsqueeze(y)
  return y + 0.5


@pytest.mark.parametrize('coupling,permutation,lu', [
    ('affine', '1x1conv', True), ('additive', 'shuffle', True), ('affine', 'reverse', True),
    ('affine', '1x1conv', False),
])
def test_scanned_model_equals_its_step_applied_k_times(coupling, permutation, lu):
  model = Glow(image_shape=(8, 8, 2), num_levels=2, num_steps=3, hidden_features=8,
               coupling=coupling, permutation=permutation, lu=lu)
  image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 2)), jnp.uint8)
  variables = _random_variables(model, image, seed=1)
  # Random W = P L U can be too ill-conditioned for a float32 inverse: smaller off-diagonal
  # L and U, and for the plain kernel rotations with scales in [0.7, 1.4], are not.
  for level in range(2 if permutation == '1x1conv' and lu else 0):
    invconv = variables['params'][f'level{level}_steps']['invconv']
    invconv['lower'], invconv['upper'] = 0.2 * invconv['lower'], 0.2 * invconv['upper']
  if permutation == '1x1conv' and not lu:
    rng = np.random.default_rng(2)
    for level in range(2):
      invconv = variables['params'][f'level{level}_steps']['invconv']
      k, c, _ = invconv['kernel'].shape
      invconv['kernel'] = jnp.asarray(np.stack([
          np.linalg.qr(rng.standard_normal((c, c)))[0] * rng.uniform(0.7, 1.4, c)
          for _ in range(k)]), jnp.float32)
  x = model.apply(variables, image, rngs={'sample': jax.random.key(7)}, method='dequantize')

  @jax.jit
  def run(variables):
    z = model.apply(variables, x, method='encode')
    return (model.apply(variables, x, method='log_prob'), z,
            model.apply(variables, z, method='decode'))

  log_prob, z, x_back = jax.tree.map(np.asarray, run(variables))
  want_log_prob, want_z = _by_hand(model, variables, x)
  np.testing.assert_allclose(log_prob, want_log_prob, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(z, want_z, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  assert np.abs(z - np.asarray(x).reshape(3, -1)).max() > 0.1
  np.testing.assert_allclose(_inverse_by_hand(model, variables, jnp.asarray(z)), x_back,
                             atol=2e-5)


def test_actnorm_initializes_on_each_steps_own_input_and_steps_differ():
  model = Glow(image_shape=(8, 8, 1), num_levels=2, num_steps=3, hidden_features=8)
  image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1)), jnp.uint8)
  variables = model.init({'params': jax.random.key(0), 'sample': jax.random.key(1)},
                         {'image': image}, train=False, method='loss')
  # The 1x1 convolutions start as different rotations: one 'params' key per step.
  lower = np.asarray(variables['params']['level0_steps']['invconv']['lower'])
  assert len({a.tobytes() for a in lower}) == 3
  # Re-run init's forward pass step by step: each step's actnorm, applied to the input that
  # step sees, standardizes it per channel (as when it was the unrolled layer it replaces).
  x = model.apply(variables, image, rngs={'sample': jax.random.key(1)}, method='dequantize')
  y = fb.squeeze(x - 0.5)
  for k in range(3):
    v = _step_variables(variables, 0, k)
    out, _ = fb.ActNorm().apply({'params': v['params']['actnorm']}, y)
    np.testing.assert_allclose(np.asarray(out).mean((0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out).std((0, 1, 2)), 1.0, atol=1e-3)
    y, _ = _step(model).apply(v, y, jnp.zeros((y.shape[0],)))
  # Every step's slice of the stacked parameters gets its own gradient.
  def loss(params):
    return model.apply({**variables, 'params': params}, {'image': image[:8]}, train=True,
                       rngs={'sample': jax.random.key(2)}, method='loss')[0]
  grads = jax.jit(jax.grad(loss))(variables['params'])
  for level in range(2):
    g = grads[f'level{level}_steps']['coupling']['net']['out']['kernel']
    assert all(np.abs(np.asarray(g[k])).max() > 0 for k in range(3))


def test_lowered_program_does_not_grow_with_the_number_of_steps():
  image = jnp.zeros((2, 8, 8, 1), jnp.uint8)

  def lines(num_steps):
    model = Glow(image_shape=(8, 8, 1), num_levels=2, num_steps=num_steps, hidden_features=8)
    variables = _shapes(model, image)

    def loss(variables):
      return model.apply(variables, {'image': image}, rngs={'sample': jax.random.key(0)},
                         method='loss')[0]
    return jax.jit(jax.value_and_grad(loss)).lower(variables).as_text().count('\n')

  short, deep = lines(2), lines(16)
  assert deep < 1.05 * short, (short, deep)


def test_unrolled_scan_gives_the_same_density_with_the_same_parameters():
  """unroll_steps=K (nn.scan's unroll; XLA:CPU runs its backward faster) is the same model."""
  model, old, want = _load('lu')
  variables = glow.unrolled_to_scanned(old)
  unrolled = model.clone(unroll_steps=model.num_steps)
  assert jax.tree.structure(_shapes(unrolled, want['images'])) == jax.tree.structure(variables)
  log_prob = unrolled.apply(variables, want['x'], method='log_prob')
  np.testing.assert_allclose(log_prob, want['log_prob'], rtol=1e-5, atol=1e-4)
  decoded = unrolled.apply(variables, want['eps'], method='decode')
  np.testing.assert_allclose(decoded, want['decoded'], atol=1e-5)
  with pytest.raises(ValueError, match='unroll_steps=4 must lie in 1..num_steps=3'):
    model.clone(unroll_steps=4).apply(variables, want['x'], method='log_prob')


def test_train_mode_gradients_equal_eval_mode_gradients():
  """train=True differentiates the couplings through fb.conv_same_canonical_grad (XLA:CPU
  runs the scanned steps' backward pass at the unrolled speed that way): the same density
  and the same parameter gradients as the plain convolutions of train=False."""
  model, old, want = _load('lu')
  variables = glow.unrolled_to_scanned(old)
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}

  def nll(params, train):
    return -jnp.mean(model.apply({'params': params, **rest}, want['x'], train=train,
                                 method='log_prob'))

  (v_eval, g_eval), (v_train, g_train) = (jax.value_and_grad(nll)(params, t)
                                          for t in (False, True))
  np.testing.assert_allclose(v_train, v_eval, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_train), jax.tree.leaves(g_eval), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()) + 1e-7)
  jaxprs = [str(jax.make_jaxpr(nll, static_argnums=1)(params, t)) for t in (False, True)]
  assert 'custom_vjp_call' not in jaxprs[0] and 'custom_vjp_call' in jaxprs[1]
