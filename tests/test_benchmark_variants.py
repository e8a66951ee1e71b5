"""benchmarks/pixelcnn_throughput.py's reimplementations stand in for the model in the
trainer's own train step: each gives the model's loss there (a trainer change once broke
them unnoticed), and the canonical-gradient convolution has JAX's gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg.gated_pixelcnn import GatedPixelCNN
from benchmarks import common
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


def _conv(x, k, groups=1, dilation=(1, 1), padding='SAME'):
  return jax.lax.conv_general_dilated(x, k, (1, 1), padding, rhs_dilation=dilation,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      feature_group_count=groups)


@pytest.mark.parametrize('groups,dilation,padding', [(1, (1, 1), 'SAME'), (2, (2, 1), 'VALID'),
                                                     (1, (1, 1), 'VALID')])
def test_matmul_flops_counts_convolutions_and_their_gradients(groups, dilation, padding):
  """2 x multiply-adds, padding included: the forward over its output positions, the
  kernel gradient the same number, the input gradient over every input position (a 'full'
  convolution of the output gradient: more than the forward's where padding is VALID)."""
  x = jnp.ones((2, 9, 8, 4))
  k = jnp.ones((3, 2, 4 // groups, 6))
  conv = lambda x, k: _conv(x, k, groups, dilation, padding)  # noqa: E731
  out = jax.eval_shape(conv, x, k).shape
  fwd = 2 * np.prod(out) * 3 * 2 * (4 // groups)
  d_input = 2 * x.size * 3 * 2 * (6 // groups)
  assert common.matmul_flops(conv, x, k) == (fwd, 0)
  loss = lambda x, k: conv(x, k).sum()  # noqa: E731
  assert common.matmul_flops(jax.grad(loss, argnums=1), x, k)[0] == 2 * fwd
  assert common.matmul_flops(jax.grad(loss, argnums=0), x, k)[0] == fwd + d_input
  assert common.matmul_flops(jax.value_and_grad(loss, argnums=(0, 1)), x, k)[0] == (
      2 * fwd + d_input)
  if padding == 'SAME':
    assert d_input == fwd


def test_matmul_flops_counts_dots_scans_conds_and_flags_while_loops():
  a, b = jnp.ones((3, 4, 5)), jnp.ones((3, 5, 7))
  batched = lambda a, b: jnp.einsum('bij,bjk->bik', a, b)  # noqa: E731
  assert common.matmul_flops(batched, a, b) == (2 * 3 * 4 * 5 * 7, 0)
  m = jnp.ones((4, 4))

  def scanned(m):
    return jax.lax.scan(lambda c, _: (c @ m, None), m, None, length=6)[0]
  assert common.matmul_flops(scanned, m) == (6 * 2 * 4 ** 3, 0)
  # Through jit and grad: each step's product and its two gradients.
  assert common.matmul_flops(jax.jit(jax.grad(lambda m: scanned(m).sum())), m) == (
      3 * 6 * 2 * 4 ** 3, 0)

  def branchy(p, m):
    return jax.lax.cond(p, lambda m: m @ m @ m, lambda m: m @ m, m)
  assert common.matmul_flops(branchy, True, m) == (2 * 2 * 4 ** 3, 0)

  def looped(m):
    return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] @ m), (0, m))[1]
  assert common.matmul_flops(looped, m) == (2 * 4 ** 3, 1)   # once: a lower bound, flagged


def test_matmul_flops_of_the_gated_pixelcnn_is_the_benchmarks_hand_count():
  """Two independent counts of the same network: the jaxpr's and pixelcnn_throughput's
  formula from the architecture."""
  for layers, features, k in ((3, 8, 3), (2, 4, 5)):
    kw = dict(num_levels=2, num_channels=1, features=features, num_layers=layers,
              first_kernel=7, kernel_size=k, output_features=16)
    model = GatedPixelCNN(**kw)
    x = jnp.zeros((2, 10, 10, 1), jnp.int32)
    variables = model.init(jax.random.key(0), x)
    flops, _ = common.matmul_flops(model.apply, variables, x)
    assert flops == pt.forward_flops(kw, 2, 10)


def test_scan_overhead_variants_are_the_chains_gradients():
  """benchmarks/scan_overhead.py's scanned, rematerialized and unrolled chains give the
  gradients of a float64 numpy chain h -> h + conv3x3(tanh(h)) (the backward written out)."""
  from benchmarks import scan_overhead as so
  rng = np.random.default_rng(3)
  b, n, c = 2, 3, 3
  x = rng.standard_normal((b, 5, 6, c))
  ks = rng.standard_normal((n, 3, 3, c, c)) * 0.2
  w = rng.standard_normal((b, 5, 6, c))

  def conv(a, k):        # 'SAME' 3x3, float64
    ap = np.pad(a, [(0, 0), (1, 1), (1, 1), (0, 0)])
    return sum(np.einsum('byxc,cd->byxd', ap[:, i:i + 5, j:j + 6], k[i, j])
               for i in range(3) for j in range(3))
  hs, ts = [x], []
  for i in range(n):
    ts.append(np.tanh(hs[-1]))
    hs.append(hs[-1] + conv(ts[-1], ks[i]))
  g, dks = w, [None] * n
  for i in reversed(range(n)):
    tp = np.pad(ts[i], [(0, 0), (1, 1), (1, 1), (0, 0)])
    dks[i] = np.array([[np.einsum('byxc,byxd->cd', tp[:, a:a + 5, d:d + 6], g)
                        for d in range(3)] for a in range(3)])
    dt = conv(g, np.flip(ks[i], (0, 1)).swapaxes(2, 3))
    g = g + dt * (1 - ts[i] ** 2)
  args = [jnp.asarray(v, jnp.float32) for v in (x, ks, w)]
  for name, f in so.variants(jax_transpose=True).items():
    if name.startswith('tanh'):
      continue
    dx, dk = jax.grad(f, argnums=(0, 1))(*args)
    np.testing.assert_allclose(dx, g, rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(dk, np.stack(dks), rtol=1e-4, atol=1e-4, err_msg=name)
