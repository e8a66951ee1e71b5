"""The IAF posterior of the VAE (Kingma et al. 2016): log q(z | x) is the exact density of
the samples (change of variables by jax.jacfwd, normalization by quadrature), the flow makes
q more expressive than the diagonal Gaussian where the posterior is correlated, every
parameter learns, and the config trains through the trainer."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latent.iaf import IAFPosterior
from latent.vae import VAE
from tests.conftest import random_params

IMG = (4, 4, 1)


def _binary_batch(n=3, seed=0):
  return jax.random.bernoulli(jax.random.key(seed), 0.4, (n, *IMG)).astype(jnp.uint8)


def _model(latent=3, **kw):
  return VAE(image_shape=IMG, latent_dims=(latent,), hidden_dims=((16,),), iaf_steps=2,
             iaf_hidden=(12, 12), iaf_context=5, **kw)


def _z_and_log_q(model, params, x, eps):
  return model.apply({'params': params}, x, eps,
                     method=lambda m, x, e: m._z1_from_noise(m._q1(x), e))


def test_iaf_log_q_is_the_change_of_variables_density():
  """log q(z_T | x) = log N(eps) - log|det dz_T/deps| with the Jacobian of the whole map
  eps -> z_0 -> z_1 -> z_2 by jax.jacfwd; the inverse (posterior_log_prob) agrees."""
  model, x = _model(), _binary_batch(1)
  params = random_params(model, x, jax.random.key(0), 2, method='posterior_sample',
                         seed=3)['params']
  eps = jax.random.normal(jax.random.key(1), (6, 1, 3))
  z, log_q = _z_and_log_q(model, params, x, eps)
  def z_of_eps(e):
    return _z_and_log_q(model, params, x, e[None, None])[0][0, 0]
  for i in range(eps.shape[0]):
    jac = jax.jacfwd(z_of_eps)(eps[i, 0])
    # Two steps in opposite orders: the map mixes in both directions.
    assert float(jnp.abs(jnp.tril(jac, -1)).max()) > 1e-2
    assert float(jnp.abs(jnp.triu(jac, 1)).max()) > 1e-2
    expected = (-0.5 * float(jnp.sum(eps[i, 0] ** 2)) - 1.5 * math.log(2 * math.pi)
                - float(jnp.linalg.slogdet(jac)[1]))
    np.testing.assert_allclose(float(log_q[i, 0]), expected, atol=2e-4)
  by_inverse = model.apply({'params': params}, x, z, method='posterior_log_prob')
  np.testing.assert_allclose(by_inverse, log_q, atol=2e-4)
  # posterior_sample draws through the same map.
  z_s, log_q_s = model.apply({'params': params}, x, jax.random.key(2), 4,
                             method='posterior_sample')
  np.testing.assert_allclose(
      model.apply({'params': params}, x, z_s, method='posterior_log_prob'), log_q_s, atol=2e-4)


def test_iaf_posterior_integrates_to_one_over_a_2d_latent():
  model, x = _model(latent=2), _binary_batch(1, seed=4)
  params = random_params(model, x, jax.random.key(0), 2, method='posterior_sample',
                         seed=5)['params']
  z_s, _ = model.apply({'params': params}, x, jax.random.key(1), 2000,
                       method='posterior_sample')
  center, spread = np.asarray(z_s[:, 0].mean(0)), float(z_s[:, 0].std(0).max())
  half = 8 * spread
  n = 401
  axes = [np.linspace(c - half, c + half, n) for c in center]
  grid = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 1, 2)
  log_q = jax.jit(lambda z: model.apply({'params': params}, x, z,
                                        method='posterior_log_prob'))(jnp.asarray(grid))
  cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
  total = float(jnp.exp(log_q).sum()) * cell
  np.testing.assert_allclose(total, 1.0, atol=1e-2)


def _fit_kl(num_steps: int, rho: float, iterations: int = 800):
  """Fits q = IAF(N(mu, sigma^2)) with `num_steps` steps to N(0, [[1, rho], [rho, 1]]) by
  minimizing the Monte Carlo KL(q || p); returns the KL estimated on 20,000 fresh samples."""
  flow = IAFPosterior(num_steps=num_steps, hidden_sizes=(16, 16))
  cov_inv = np.linalg.inv(np.array([[1.0, rho], [rho, 1.0]]))
  log_norm = -math.log(2 * math.pi) - 0.5 * math.log(1 - rho ** 2)
  h = jnp.zeros((1, 1))

  def kl(params, eps):
    z, log_q = flow.apply({'params': params['flow']}, eps, params['mean'],
                          params['log_var'], h, method='sample')
    log_p = log_norm - 0.5 * jnp.einsum('...i,ij,...j->...', z, cov_inv, z)
    return jnp.mean(log_q - log_p)

  eps0 = jnp.zeros((4, 1, 2))
  params = {'mean': jnp.zeros((1, 2)), 'log_var': jnp.zeros((1, 2))}
  params['flow'] = flow.init(jax.random.key(0), eps0, params['mean'], params['log_var'], h,
                             method='sample').get('params', {})
  opt = optax.adam(1e-2)
  state = opt.init(params)

  @jax.jit
  def step(params, state, key):
    loss, grads = jax.value_and_grad(kl)(params, jax.random.normal(key, (256, 1, 2)))
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  for i in range(iterations):
    params, state, _ = step(params, state, jax.random.key(100 + i))
  return float(kl(params, jax.random.normal(jax.random.key(7), (20000, 1, 2))))


def test_iaf_fits_a_correlated_posterior_that_a_diagonal_gaussian_cannot():
  """The best diagonal Gaussian is KL = -log(1 - rho^2) / 2 = 1.16 nats from a Gaussian
  with correlation 0.95; two IAF steps get within a small fraction of that."""
  rho = 0.95
  floor = -0.5 * math.log(1 - rho ** 2)
  diagonal = _fit_kl(0, rho)
  iaf = _fit_kl(2, rho)
  assert diagonal > floor - 0.02, (diagonal, floor)
  assert iaf < 0.1 * floor, (iaf, diagonal, floor)


def test_every_parameter_of_the_iaf_vae_gets_a_gradient():
  model, x = _model(num_samples=2), _binary_batch()
  params = random_params(model, {'image': x}, method='loss', seed=1)['params']
  grads = jax.grad(lambda p: model.apply({'params': p}, {'image': x}, rngs={
      'sample': jax.random.key(3)}, method='loss')[0])(params)
  assert 'iaf' in grads and len(grads['iaf']) == 2
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)


def test_iaf_vae_bounds_are_ordered():
  model, x = _model(), _binary_batch(4)
  params = random_params(model, {'image': x}, method='loss', seed=2)['params']
  lw = model.apply({'params': params}, x, jax.random.key(5), 5000, method='log_weights')[0]
  elbo = lw.mean(0)
  ll = model.apply({'params': params}, x, jax.random.key(6), 2000, method='log_likelihood')
  assert bool(jnp.all(elbo < ll)), (elbo, ll)


def test_bad_iaf_arguments_are_named():
  x = _binary_batch()
  with pytest.raises(ValueError, match='iaf_context'):
    VAE(image_shape=IMG, latent_dims=(3,), hidden_dims=((8,),), iaf_steps=1,
        iaf_context=0).init({'params': jax.random.key(0), 'sample': jax.random.key(1)},
                            {'image': x}, method='loss')


def test_iaf_config_trains_and_reports_importance_sampled_nll(tmp_path, data_dir):
  from configs import iwae_binarized_mnist
  from experiments import train
  c = iwae_binarized_mnist.get_config('vae,iaf=2,tiny')
  assert c.model.iaf_steps == 2
  c.data.local_dir = data_dir
  result = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(result['nll']) and result['nll'] < -result['elbo']
  assert (tmp_path / 'samples').exists()
