"""MADE: masks from degrees, and the autoregressive property checked by exact gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg.made import MADE, input_degrees, made_degrees, made_masks
from tests.conftest import random_params

D = 6
HIDDEN = (24, 24)
ORDERINGS = ['natural', 'reversed', ('random', 1), ('random', 2), ('random', 3)]


def _order_and_seed(ordering):
  return ordering if isinstance(ordering, tuple) else (ordering, 0)


def _connectivity(masks):
  """[D_in, D_out] booleans: is there any path from input d to output j through the masks."""
  reach = masks[0] > 0
  for m in masks[1:]:
    reach = (reach.astype(np.int64) @ (m > 0).astype(np.int64)) > 0
  return reach


@pytest.mark.parametrize('hidden_order', ['random', 'sequential'])
@pytest.mark.parametrize('ordering', ORDERINGS, ids=str)
def test_masks_connect_only_earlier_inputs(ordering, hidden_order):
  order, seed = _order_and_seed(ordering)
  k = 2
  masks = made_masks(D, HIDDEN, num_outputs_per_dim=k, input_order=order,
                     hidden_order=hidden_order, seed=seed)
  assert [m.shape for m in masks] == [(D, 24), (24, 24), (24, D * k)]
  deg = input_degrees(D, order, seed)
  assert sorted(deg.tolist()) == list(range(1, D + 1))
  allowed = deg[:, None] < np.repeat(deg, k)[None, :]       # input d -> output (i, j)
  reach = _connectivity(masks)
  assert not (reach & ~allowed).any()
  if hidden_order == 'sequential':
    # Every degree 1..D-1 is present in each (wide enough) hidden layer, so every allowed
    # connection exists: the masks cut exactly the forbidden ones.
    np.testing.assert_array_equal(reach, allowed)
  else:
    assert reach.any()


def test_degrees():
  np.testing.assert_array_equal(input_degrees(4, 'natural'), [1, 2, 3, 4])
  np.testing.assert_array_equal(input_degrees(4, 'reversed'), [4, 3, 2, 1])
  np.testing.assert_array_equal(input_degrees(4, (2, 4, 1, 3)), [2, 4, 1, 3])
  assert not np.array_equal(input_degrees(8, 'random', 1), input_degrees(8, 'random', 2))
  with pytest.raises(ValueError):
    input_degrees(3, (1, 1, 2))
  for hidden_order in ('random', 'sequential'):
    degrees = made_degrees(5, (7, 9), 'random', hidden_order, seed=4)
    for prev, layer in zip(degrees[:-1], degrees[1:], strict=True):
      assert layer.min() >= min(prev.min(), 4) and layer.max() <= 4
  np.testing.assert_array_equal(made_degrees(4, (5,), hidden_order='sequential')[1],
                                [1, 2, 3, 1, 2])


@pytest.mark.parametrize('ordering', ORDERINGS, ids=str)
def test_outputs_depend_only_on_earlier_inputs(ordering):
  """d out[i, j] / d x[d] is exactly zero unless degree(d) < degree(i), for both output
  sets, and nonzero for some earlier inputs; the context reaches every output."""
  order, seed = _order_and_seed(ordering)
  k, c = 2, 3
  model = MADE(HIDDEN, num_outputs_per_dim=k, input_order=order, hidden_order='random',
               seed=seed)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, D)), jnp.float32)
  ctx = jnp.ones((1, c), jnp.float32)
  params = random_params(model, x, ctx)

  @jax.jit
  def jacobians(params, x, ctx):
    def f(x, ctx):
      return model.apply(params, x[None], ctx[None])[0]     # [D] -> [D, k]
    return jax.jacfwd(f, argnums=(0, 1))(x[0], ctx[0])

  jac_x, jac_ctx = (np.asarray(j) for j in jacobians(params, x, ctx))
  assert jac_x.shape == (D, k, D) and jac_ctx.shape == (D, k, c)
  deg = model.degrees(D)
  forbidden = deg[None, None, :] >= deg[:, None, None]   # [output i, 1, input d]
  forbidden = np.broadcast_to(forbidden, jac_x.shape)
  assert np.all(jac_x[forbidden] == 0.0), 'an output sees its own or a later input'
  later_outputs = deg > 1
  for j in range(k):
    # The mask is not trivially all-zero: outputs after the first see earlier inputs.
    assert np.abs(jac_x[later_outputs, j]).sum(-1).min() > 0
  # The first output in the ordering depends on no input at all.
  assert np.all(jac_x[deg == 1] == 0.0)
  assert np.all(np.abs(jac_ctx).sum(-1) > 0), 'the context must reach every output'


def test_shapes_without_context_and_zero_output_init():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  model = MADE((8,), num_outputs_per_dim=3, output_kernel_init=nn.initializers.zeros)
  x = jnp.ones((5, 4))
  out, _ = jax.jit(lambda x: model.init_with_output(jax.random.key(0), x))(x)
  assert out.shape == (5, 4, 3)
  np.testing.assert_array_equal(out, 0.0)
