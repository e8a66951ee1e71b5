"""benchmarks/pixelcnn_throughput.py's reimplementations stand in for the model in the
trainer's own train step: each gives the model's loss there (a trainer change once broke
them unnoticed), and the canonical-gradient convolution has JAX's gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg.gated_pixelcnn import GatedPixelCNN
from benchmarks import pixelcnn_throughput as pt
from experiments import train

KW = dict(num_levels=2, num_channels=1, features=8, num_layers=2, first_kernel=5,
          kernel_size=3, output_features=8)


def test_every_formulation_gives_the_models_loss_and_trains_through_the_trainers_step():
  model = GatedPixelCNN(**KW)
  x = np.random.default_rng(0).integers(0, 2, (4, 8, 8, 1)).astype(np.int32)
  batch = {'image': x}
  mesh = train.make_mesh(jax.devices()[:1])
  tx, schedule = train.create_optimizer(pt.pixelcnn_mnist.get_config().optimizer, 10)
  results = {}
  for name in (None, 'canon'):      # one stand-in is enough for the trainer's interface
    m = model if name is None else pt.Reimplementation(model, KW, name)
    state = train.init_train_state(m, tx, batch, 0, mesh)
    params = jax.device_get(state.params)     # the step donates the state
    step = train.make_train_step(m, tx, schedule, ema_decay=0.0, num_dims=64, mesh=mesh)
    _, metrics = jax.device_get(step(state, train.to_global_batch(batch, mesh)))
    results[name] = (float(metrics['loss']), float(metrics['grad_norm']))
  assert results['canon'] == pytest.approx(results[None], rel=1e-4)   # same loss, gradients
  variables = {'params': params}
  for name in pt.VARIANTS:
    loss, _ = pt.Reimplementation(model, KW, name).apply(variables, batch)
    assert float(loss) == pytest.approx(results[None][0], rel=1e-5), name


@pytest.mark.parametrize('x_shape,k_shape', [((3, 9, 11, 4), (2, 3, 4, 6)),
                                             ((2, 5, 5, 7), (1, 1, 7, 5)),
                                             ((2, 12, 12, 1), (4, 7, 1, 6))])
def test_canonical_gradient_convolution_has_jaxs_gradients(x_shape, k_shape):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  k = jnp.asarray(rng.standard_normal(k_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal(pt._valid_conv(x, k).shape), jnp.float32)
  ref = jax.grad(lambda x, k: jnp.sum(w * pt._valid_conv(x, k)), (0, 1))(x, k)
  got = jax.grad(lambda x, k: jnp.sum(w * pt._conv_canonical_grad(x, k)), (0, 1))(x, k)
  for a, b in zip(ref, got, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('k', [1, 2, 3])
def test_conv_weight_grad_variants_are_the_kernel_gradient(k):
  """benchmarks/conv_weight_grad.py's matmul formulations give jax.grad's kernel gradient
  (checked against a float64 numpy sum over the definition, even and odd kernels)."""
  from benchmarks import conv_weight_grad as cwg
  rng = np.random.default_rng(2)
  h = rng.standard_normal((2, 5, 6, 3))
  g = rng.standard_normal((2, 5, 6, 4))
  lo, hi = (k - 1) // 2, k // 2
  hp = np.pad(h, [(0, 0), (lo, hi), (lo, hi), (0, 0)])
  ref = np.array([[np.einsum('byxc,byxd->cd', hp[:, i:i + 5, j:j + 6], g)
                   for j in range(k)] for i in range(k)])
  for name, f in cwg.VARIANTS.items():
    got = np.asarray(f(jnp.asarray(h, jnp.float32), jnp.asarray(g, jnp.float32), k))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4, err_msg=name)
