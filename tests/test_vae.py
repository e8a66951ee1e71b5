"""VAE, deep latent Gaussian model and IWAE: bounds in the right order on a model whose
log p(x) is exact, the estimator's convergence, the analytic KL, gradients to every layer."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent import distributions as dist
from latent import iwae
from latent.vae import VAE

# -- A linear Gaussian model: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D), so
#    p(x) = N(b, W W^T + s^2 I) exactly, with a deliberately imperfect Gaussian q(z | x).

D, DZ = 5, 2


def _linear_gaussian():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((D, DZ)), jnp.float32)
  b = jnp.asarray(rng.standard_normal(D), jnp.float32)
  s2 = 0.5
  cov = w @ w.T + s2 * jnp.eye(D)
  x = jnp.asarray(rng.multivariate_normal(np.asarray(b), np.asarray(cov), size=4), jnp.float32)
  # The exact posterior mean is (W^T W + s2 I)^-1 W^T (x - b); q is shifted and too narrow.
  post_cov = jnp.linalg.inv(w.T @ w / s2 + jnp.eye(DZ))
  q_mean = ((x - b) @ w / s2) @ post_cov + 0.3
  q_log_var = jnp.log(jnp.diag(post_cov))[None].repeat(4, 0) + math.log(0.7)

  def log_weights(key, n):
    z = dist.reparameterize(key, q_mean, q_log_var, (n,))
    log_q = dist.gaussian_log_prob(z, q_mean, q_log_var, batch_ndim=2)
    log_pz = dist.standard_normal_log_prob(z, batch_ndim=2)
    log_px_z = dist.gaussian_log_prob(x, z @ w.T + b, jnp.full((D,), math.log(s2)), batch_ndim=2)
    return log_px_z + log_pz - log_q

  sign, logdet = jnp.linalg.slogdet(cov)
  diff = x - b
  exact = -0.5 * (D * math.log(2 * math.pi) + logdet
                  + jnp.einsum('bi,ij,bj->b', diff, jnp.linalg.inv(cov), diff))
  assert float(sign) > 0
  return log_weights, exact


def test_bounds_are_ordered_below_the_exact_log_likelihood():
  log_weights, exact = _linear_gaussian()
  reps = 2000

  def expected_bound(k, seed):
    lw = log_weights(jax.random.key(seed), reps * k).reshape(reps, k, -1)
    vals = iwae.iwae_bound(lw, axis=1)          # [reps, B]
    return vals.mean(0), vals.std(0) / math.sqrt(reps)

  elbo, se1 = expected_bound(1, 1)
  l5, se5 = expected_bound(5, 2)
  l50, se50 = expected_bound(50, 3)
  # Strict gaps, several standard errors wide, for every example.
  assert bool(jnp.all(l5 - elbo > 4 * (se1 + se5))), (elbo, l5)
  assert bool(jnp.all(l50 - l5 > 4 * (se5 + se50))), (l5, l50)
  assert bool(jnp.all(exact - l50 > 0)), (l50, exact)
  # The ELBO's gap is KL(q || p(z|x)) > 0 and clearly visible with this q.
  assert float(jnp.min(exact - elbo)) > 0.05


def test_importance_sampled_estimate_converges_to_log_p():
  log_weights, exact = _linear_gaussian()
  est = iwae.log_likelihood(log_weights, jax.random.key(7), num_samples=10000, chunk_size=1000)
  np.testing.assert_allclose(est, exact, atol=0.02)
  elbo = log_weights(jax.random.key(8), 10000).mean(0)
  assert float(jnp.min(exact - elbo)) > 0.05   # far further than the estimate


def test_chunked_estimator_is_the_logsumexp_over_all_chunks():
  def log_weights(key, n):   # deterministic in the key, any scale
    return 30.0 * jax.random.normal(key, (n, 3))
  rng = jax.random.key(0)
  got = iwae.log_likelihood(log_weights, rng, num_samples=40, chunk_size=10)
  all_w = jnp.concatenate([log_weights(jax.random.fold_in(rng, i), 10) for i in range(4)])
  np.testing.assert_allclose(got, jax.nn.logsumexp(all_w, axis=0) - math.log(40), rtol=1e-6)
  with pytest.raises(ValueError, match='multiple of chunk_size'):
    iwae.log_likelihood(log_weights, rng, num_samples=45, chunk_size=10)


IMG = (8, 8, 1)   # small images keep the many-sample checks cheap


def _binary_batch(n=6, seed=0):
  return jax.random.bernoulli(jax.random.key(seed), 0.3, (n, *IMG)).astype(jnp.uint8)


def _init(model, x):
  return model.init({'params': jax.random.key(1), 'sample': jax.random.key(2)},
                    {'image': x}, method='loss')['params']


def test_analytic_kl_matches_monte_carlo():
  model = VAE(image_shape=IMG, latent_dims=(4,), hidden_dims=((16,),))
  x = _binary_batch()
  params = _init(model, x)
  _, metrics = model.apply({'params': params}, {'image': x}, train=True,
                           rngs={'sample': jax.random.key(3)}, method='loss')
  _, _, kl_mc = model.apply({'params': params}, x, jax.random.key(4), 8000,
                            method='log_weights')
  np.testing.assert_allclose(kl_mc.mean(0), metrics['kl'], rtol=0.03, atol=0.03)
  assert bool(jnp.all(metrics['kl'] > 0))


@pytest.mark.parametrize('layers', [1, 2])
def test_vae_bounds_ordered_on_real_model(layers):
  kw = dict(latent_dims=(4,), hidden_dims=((16,),)) if layers == 1 else dict(
      latent_dims=(6, 3), hidden_dims=((16,), (8,)))
  model = VAE(image_shape=IMG, **kw)
  x = _binary_batch(4)
  params = _init(model, x)
  lw = model.apply({'params': params}, x, jax.random.key(5), 5000, method='log_weights')[0]
  elbo = lw.mean(0)
  l5 = iwae.iwae_bound(lw.reshape(1000, 5, -1), axis=1).mean(0)
  ll = model.apply({'params': params}, x, jax.random.key(6), 2000, method='log_likelihood')
  assert bool(jnp.all(elbo < l5)) and bool(jnp.all(l5 < ll + 0.05)), (elbo, l5, ll)


@pytest.mark.parametrize('objective,layers', [('elbo', 1), ('iwae', 1), ('iwae', 2)])
def test_every_parameter_gets_a_gradient(objective, layers):
  kw = dict(latent_dims=(4,), hidden_dims=((16,),)) if layers == 1 else dict(
      latent_dims=(6, 3), hidden_dims=((16,), (8,)))
  model = VAE(image_shape=IMG, objective=objective, num_samples=3, **kw)
  x = _binary_batch()
  params = _init(model, x)
  grads = jax.grad(lambda p: model.apply({'params': p}, {'image': x}, rngs={
      'sample': jax.random.key(3)}, method='loss')[0])(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)


def test_iwae_with_one_sample_is_the_elbo():
  x = _binary_batch()
  kw = dict(image_shape=IMG, latent_dims=(6, 3), hidden_dims=((16,), (8,)), num_samples=1)
  params = _init(VAE(**kw), x)
  def run(obj):
    return VAE(objective=obj, **kw).apply(
        {'params': params}, {'image': x}, rngs={'sample': jax.random.key(9)}, method='loss')
  np.testing.assert_allclose(run('iwae')[0], run('elbo')[0], rtol=1e-6)


def test_discretized_logistic_sums_to_one_over_levels():
  levels = jnp.arange(256)[:, None]
  for mean, log_s in [(0.0, -3.0), (0.9, -5.0), (-0.99, -1.0), (0.2, -8.0)]:
    lp = dist.discretized_logistic_log_prob(levels, jnp.full((256, 1), mean),
                                            jnp.full((256, 1), log_s))
    np.testing.assert_allclose(jnp.exp(lp).sum(), 1.0, atol=2e-4)


@pytest.mark.parametrize('likelihood,arch', [('logistic', 'conv'), ('gaussian', 'mlp')])
def test_8bit_decoders_give_finite_bounds_and_valid_samples(likelihood, arch):
  model = VAE(likelihood=likelihood, num_levels=256, architecture=arch,
              image_shape=IMG, latent_dims=(4,), hidden_dims=((16,),), conv_features=(4, 8))
  x = jax.random.randint(jax.random.key(0), (4, *IMG), 0, 256).astype(jnp.uint8)
  params = _init(model, x)
  obj, m = model.apply({'params': params}, {'image': x}, rngs={'sample': jax.random.key(1)},
                       method='loss')
  assert np.isfinite(float(obj)) and bool(jnp.all(m['nll'] > 0))
  s = model.apply({'params': params}, jax.random.key(2), (3, *IMG), method='sample')
  assert s.shape == (3, *IMG) and int(s.min()) >= 0 and int(s.max()) <= 255


def test_bad_arguments_are_named():
  x = _binary_batch()
  with pytest.raises(ValueError, match='bernoulli'):
    _init(VAE(image_shape=IMG, likelihood='bernoulli', num_levels=256), x)
  with pytest.raises(ValueError, match='one entry per stochastic layer'):
    _init(VAE(image_shape=IMG, latent_dims=(4, 2), hidden_dims=((8,),)), x)


def test_tiny_config_trains_and_reports_importance_sampled_nll(tmp_path, data_dir):
  from configs import iwae_binarized_mnist
  from experiments import train
  # With `paper`: the piecewise learning-rate schedule and raw-weight evaluation go through
  # the trainer too.
  c = iwae_binarized_mnist.get_config('iwae,k=5,layers=2,paper,tiny')
  assert c.optimizer.schedule == 'piecewise' and c.model.hidden_dims == ((20, 20), (10, 10))
  c.data.local_dir = data_dir
  result = train.train_and_evaluate(c, str(tmp_path))
  # The k = 20 estimate of -log p(x) is below the negated ELBO of the same test images.
  assert np.isfinite(result['nll']) and result['nll'] < -result['elbo']
  assert (tmp_path / 'samples').exists()
