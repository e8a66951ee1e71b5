"""Scanned repeated blocks (issue 18, item 1): WaveNet's layers are one nn.scan over all
layers of all stacks (the dilation a scanned input). A checkpoint of the unrolled model
converts to the scanned layout and reproduces its outputs; the compiled train step does
not grow with depth.

The fixture tests/data/wavenet.npz ('var:<path>' variables, 'in:<x>' inputs, 'out:<y>'
outputs; wavenet.json: the model's arguments, the variable paths and the commit that
wrote them) was made by the unrolled code at commit 27cfa88 with conftest.random_params
variables and random inputs (2 stacks x 3 layers, speaker, label and local conditioning).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from autoreg import wavenet

DATA = os.path.join(os.path.dirname(__file__), 'data')


def _fixture(name):
  with open(os.path.join(DATA, f'{name}.json')) as f:
    meta = json.load(f)
  with np.load(os.path.join(DATA, f'{name}.npz')) as z:
    arrays = {k: z[k] for k in z.files}
  variables = traverse_util.unflatten_dict(
      {k[4:]: v for k, v in arrays.items() if k.startswith('var:')}, sep='/')
  assert sorted(traverse_util.flatten_dict(variables, sep='/')) == meta['variables']
  inputs = {k[3:]: v for k, v in arrays.items() if k.startswith('in:')}
  outputs = {k[4:]: v for k, v in arrays.items() if k.startswith('out:')}
  return wavenet.WaveNet(**meta['kwargs']), variables, inputs, outputs


def _same(a, b):
  return jax.tree.structure(a) == jax.tree.structure(b) and jax.tree.all(
      jax.tree.map(np.array_equal, a, b))


def test_converted_unrolled_wavenet_reproduces_its_outputs_and_samples():
  model, old, inputs, outputs = _fixture('wavenet')
  new = wavenet.unrolled_to_scanned(old)
  x = inputs.pop('x')
  # The converted tree is exactly the tree the scanned model creates.
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, **inputs))
  assert (jax.tree.map(lambda a: (a.shape, a.dtype), shapes)
          == jax.tree.map(lambda a: (a.shape, a.dtype), new))

  @jax.jit
  def run(v):
    fast, logits = model.apply(v, jax.random.key(1), x.shape, return_logits=True,
                               method='sample_fast', **inputs)
    naive = model.apply(v, jax.random.key(1), x.shape, method='sample', **inputs)
    return (model.apply(v, x, **inputs), model.apply(v, x, method='log_prob', **inputs),
            fast, logits, model.apply(v, fast, **inputs), naive)

  out, log_prob, fast, fast_logits, full, naive = run(new)
  np.testing.assert_allclose(out, outputs['logits'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(log_prob, outputs['log_prob'], rtol=1e-5, atol=1e-3)
  # The fast sampler on the stacked parameters still draws what the naive one draws.
  assert jnp.array_equal(fast, naive)
  np.testing.assert_allclose(fast_logits, full, rtol=1e-4, atol=1e-4)
  # A bare parameter tree (TrainState.params, Adam's mu and nu) converts the same way;
  # converting twice changes nothing.
  assert _same(wavenet.unrolled_to_scanned(old['params']), new['params'])
  assert _same(wavenet.unrolled_to_scanned(new), new)


def test_optimizer_state_converts_with_the_parameters():
  import optax  # pylint: disable=g-import-not-at-top
  _, old, _, _ = _fixture('wavenet')
  params = jax.tree.map(jnp.asarray, old['params'])
  adam = optax.adam(1e-3).init(params)[0]
  converted = adam._replace(mu=wavenet.unrolled_to_scanned(adam.mu),
                            nu=wavenet.unrolled_to_scanned(adam.nu))
  fresh = optax.adam(1e-3).init(wavenet.unrolled_to_scanned(params))[0]
  assert jax.tree.structure(fresh) == jax.tree.structure(converted)


def _train_step_hlo_lines(num_layers, num_stacks):
  model = wavenet.WaveNet(residual_channels=8, gate_channels=8, skip_channels=8,
                          output_channels=8, num_layers=num_layers, num_stacks=num_stacks,
                          num_speakers=2)
  x, speaker = jnp.zeros((2, 64), jnp.int32), jnp.zeros(2, jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, speaker=speaker))
  def loss(v):
    return -model.apply(v, x, speaker=speaker, method='log_prob').mean()
  return jax.jit(jax.grad(loss)).lower(variables).as_text().count('\n')


def test_train_step_program_does_not_grow_with_depth():
  assert _train_step_hlo_lines(2, 1) == _train_step_hlo_lines(5, 2)
