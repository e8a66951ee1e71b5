"""The Gumbel-softmax / Concrete VAE (latent/gumbel.py) against exact computations: the
relaxations' samplers against the probabilities they relax (the Gumbel-max trick), the
Concrete densities normalized, the temperature schedule of Jang et al., the discrete model's
KL, importance weights and likelihood against sums over every code, straight-through's
forward and backward passes, the relaxed gradient's bias shrinking with the temperature,
named errors, and tiny runs through the trainer."""
import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gumbel_vae_binarized_mnist as gumbel_config
from experiments import train
from latent import gumbel
from latent.gumbel import GumbelVAE

IMAGE = (1, 4, 1)


def _model(**kw):
  base = dict(image_shape=IMAGE, latent_type='categorical', num_latents=2, num_categories=3,
              encoder_hidden=(6,), decoder_hidden=(6,), eval_chunk_size=500)
  return GumbelVAE(**{**base, **kw})


def _perturbed(m, batch, scale=1.0, seed=0):
  v = m.init({'params': jax.random.key(seed), 'sample': jax.random.key(seed)}, batch,
             method='loss')
  leaves, tree = jax.tree.flatten(v['params'])
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  v['params'] = jax.tree.unflatten(tree, [scale * jax.random.normal(k, leaf.shape)
                                          for k, leaf in zip(keys, leaves, strict=True)])
  return v


def _batch():
  return {'image': jnp.asarray([[[[1], [0], [1], [1]]], [[[0], [0], [1], [0]]]], jnp.int32)}


def _codes(m):
  """Every discrete code: one-hot [C, N, K] (categorical) or binary [C, N]."""
  if m.latent_type == 'categorical':
    idx = np.array(list(itertools.product(range(m.num_categories), repeat=m.num_latents)))
    return jnp.asarray(np.eye(m.num_categories, dtype=np.float32)[idx])
  return jnp.asarray(np.array(list(itertools.product([0.0, 1.0], repeat=m.num_latents)),
                              np.float32))


def _exact(m, v, image):
  """Per example: exact log p(x) = logsumexp_z log p(z) + log p(x | z), q(z | x) over every
  code [B, C], log p(x, z) [B, C], in float64."""
  x = image.reshape(image.shape[0], -1).astype(jnp.float32)
  z = _codes(m)

  def per_code(mod, x, z):
    logits = mod._logits(x)
    zb = jnp.broadcast_to(z, (x.shape[0],) + z.shape)
    if mod.latent_type == 'categorical':
      log_q = (zb * jax.nn.log_softmax(logits, -1)).sum((-2, -1))
    else:
      log_q = (zb * jax.nn.log_sigmoid(logits) + (1 - zb) * jax.nn.log_sigmoid(-logits)).sum(-1)
    return log_q, mod.log_prior(z) + mod._log_px(x, mod._code(z))

  rows = [m.apply(v, x[i:i + 1], z, method=per_code) for i in range(x.shape[0])]
  log_q = np.stack([np.asarray(r[0], np.float64).reshape(-1) for r in rows])
  log_joint = np.stack([np.asarray(r[1], np.float64).reshape(-1) for r in rows])
  log_px = np.logaddexp.reduce(log_joint, axis=1)
  return log_px, log_q, log_joint


# ----------------------------------------------------------------- the relaxations themselves

def test_gumbel_softmax_argmax_draws_the_categorical_it_relaxes():
  logits = jnp.asarray([1.2, -0.3, 0.0, 2.0])
  n = 200_000
  y = gumbel.gumbel_softmax(jax.random.key(0), jnp.broadcast_to(logits, (n, 4)), 0.7)
  np.testing.assert_allclose(np.asarray(y.sum(-1)), 1.0, rtol=1e-5)
  freq = np.bincount(np.asarray(jnp.argmax(y, -1)), minlength=4) / n
  p = np.asarray(jax.nn.softmax(logits), np.float64)
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n))
  hard = gumbel.gumbel_softmax(jax.random.key(0), jnp.broadcast_to(logits, (n, 4)), 0.7, True)
  np.testing.assert_array_equal(np.asarray(hard), np.asarray(gumbel.one_hot_argmax(y)))


def test_binary_concrete_rounds_to_the_bernoulli_it_relaxes():
  a = jnp.asarray([-1.5, 0.0, 0.8])
  n = 200_000
  y = gumbel.binary_concrete(jax.random.key(1), jnp.broadcast_to(a, (n, 3)), 0.5)
  freq = np.asarray((y > 0.5).mean(0), np.float64)
  p = np.asarray(jax.nn.sigmoid(a), np.float64)
  np.testing.assert_array_less(np.abs(freq - p), 5 * np.sqrt(p * (1 - p) / n))
  # the logit-space sample is the same draw: sigmoid(logit) = y
  lg = gumbel.logistic_concrete_sample(jax.random.key(1), jnp.broadcast_to(a, (n, 3)), 0.5)
  np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(lg)), np.asarray(y), atol=1e-6)


@pytest.mark.parametrize('tau', [0.4, 2 / 3, 1.5])
def test_concrete_densities_integrate_to_one(tau):
  # binary Concrete, in logit space: a density on the real line
  grid = np.linspace(-80, 80, 400_001)
  dens = np.exp(np.asarray(gumbel.logistic_concrete_log_prob(jnp.asarray(grid), 0.7, tau),
                           np.float64))
  np.testing.assert_allclose(np.trapezoid(dens, grid), 1.0, rtol=1e-4)
  # ExpConcrete with two classes, y_2 = log(1 - e^y_1): against Lebesgue measure on y_1 in
  # (-inf, 0) the density is Maddison's Eq. minus y_2 (the symmetric form's base measure is
  # e^{y_2} dy_1), and it integrates to 1
  y1 = -np.logspace(-9, np.log10(200.0), 400_001)[::-1]
  y = np.stack([y1, np.log(-np.expm1(y1))], -1)
  log_dens = np.asarray(gumbel.exp_concrete_log_prob(
      jnp.asarray(y), jnp.asarray([0.3, -0.4]), tau), np.float64)
  np.testing.assert_allclose(np.trapezoid(np.exp(log_dens - y[:, 1]), y1), 1.0, rtol=2e-3)


def test_exp_concrete_density_is_that_of_its_sampler():
  """E_q[rho(y) / q(y)] = 1 for two ExpConcretes over 4 classes, and the density ratio of
  q with itself at another temperature is not 1: the (n - 1) log tau term is right."""
  n = 400_000
  logits = jnp.broadcast_to(jnp.asarray([0.5, -1.0, 0.2, 1.1]), (n, 4))
  y = gumbel.exp_concrete_sample(jax.random.key(2), logits, 0.8)
  lq = gumbel.exp_concrete_log_prob(y, logits, 0.8)
  for prior_logits, tau_p in [(jnp.zeros(4), 0.5), (jnp.asarray([0.1, 0.2, -0.3, 0.0]), 1.0)]:
    w = np.exp(np.asarray(gumbel.exp_concrete_log_prob(y, prior_logits, tau_p) - lq, np.float64))
    assert abs(w.mean() - 1) < 5 * w.std() / np.sqrt(n), (w.mean(), w.std())


def test_temperature_schedule_is_jangs():
  def f(t):
    return float(gumbel.annealed_temperature(t, 1.0, 0.5, 1e-4, 1000))
  assert f(0) == 1.0 and f(999) == 1.0
  np.testing.assert_allclose(f(1000), np.exp(-0.1), rtol=1e-6)
  np.testing.assert_allclose(f(2500), np.exp(-0.2), rtol=1e-6)
  assert f(100_000) == 0.5                     # floored at the minimum
  assert float(gumbel.annealed_temperature(123, 0.7, 0.5, 0.0, 1000)) == pytest.approx(0.7)
  m = _model(temperature=1.0, min_temperature=0.5, anneal_rate=1e-4)
  assert float(m.current_temperature(None)) == 0.5       # evaluation: the final temperature


def test_straight_through_is_hard_forward_and_soft_backward():
  logits = jnp.asarray([[0.3, -0.2, 1.0], [0.0, 0.5, -1.0]])
  key = jax.random.key(3)
  w = jnp.asarray([[1.0, 2.0, -1.0], [0.5, -2.0, 3.0]])
  hard = gumbel.gumbel_softmax(key, logits, 0.5, hard=True)
  assert set(np.unique(np.asarray(hard))) <= {0.0, 1.0}
  np.testing.assert_array_equal(np.asarray(hard.sum(-1)), 1.0)
  g_hard = jax.grad(lambda lg: (w * gumbel.gumbel_softmax(key, lg, 0.5, True)).sum())(logits)
  g_soft = jax.grad(lambda lg: (w * gumbel.gumbel_softmax(key, lg, 0.5)).sum())(logits)
  np.testing.assert_allclose(np.asarray(g_hard), np.asarray(g_soft), rtol=1e-6)
  assert np.abs(np.asarray(g_soft)).sum() > 0


# ------------------------------------------------------------------- the discrete model

@pytest.mark.parametrize('kw', [dict(latent_type='categorical'),
                                dict(latent_type='bernoulli', num_latents=4),
                                dict(latent_type='categorical', learned_prior=False)])
def test_kl_weights_and_likelihood_match_sums_over_every_code(kw):
  m = _model(**kw)
  batch = _batch()
  v = _perturbed(m, batch, scale=1.2)
  log_px, log_q, log_joint = _exact(m, v, batch['image'])
  q = np.exp(log_q)
  np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)          # q over every code
  # the closed-form KL against the sum over codes of q (log q - log p(z))
  x = batch['image'].reshape(2, -1).astype(jnp.float32)
  kl = m.apply(v, x, method=lambda mod, x: mod._exact_kl(mod._logits(x)))
  log_pz = np.asarray(m.apply(v, _codes(m), method='log_prior'), np.float64)
  np.testing.assert_allclose(np.asarray(kl), (q * (log_q - log_pz[None])).sum(1), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(np.logaddexp.reduce(log_pz), 0.0, atol=1e-5)   # p(z) normalized
  # importance weights of discrete samples: E_q[w] = p(x) within the standard error
  n = 100_000
  lw = np.asarray(m.apply(v, batch['image'], jax.random.key(4), n, method='log_weights'),
                  np.float64)
  w = np.exp(lw - log_px[None])
  assert np.all(np.abs(w.mean(0) - 1) < 5 * w.std(0) / np.sqrt(n)), (w.mean(0), w.std(0))
  # the k = 5000 estimate within its delta-method standard error, sd(w / p(x)) / sqrt(k)
  k = 5000
  ll = np.asarray(m.apply(v, batch['image'], jax.random.key(5), k,
                          method='log_likelihood'), np.float64)
  assert np.all(np.abs(ll - log_px) < 5 * w.std(0) / np.sqrt(k)), (ll, log_px, w.std(0))


def test_evaluation_reports_the_discrete_model():
  m = _model(eval_num_samples=2000)
  batch = _batch()
  v = _perturbed(m, batch, scale=1.2)
  log_px, log_q, log_joint = _exact(m, v, batch['image'])
  _, metrics = m.apply(v, batch, train=False, rngs={'sample': jax.random.key(6)}, method='loss')
  # the exact ELBO of the discrete model, and the evaluation's one-sample estimate of it
  elbo = (np.exp(log_q) * (log_joint - log_q)).sum(1)
  assert np.all(elbo < log_px - 0.5), (elbo, log_px)
  # 'nll' is the importance-sampled -log p(x) (its precision: the test above), not -ELBO
  np.testing.assert_allclose(np.asarray(metrics['nll']), -log_px, atol=0.15)
  m0 = m.clone(eval_num_samples=0)
  def one(key):
    return m0.apply(v, batch, train=False, rngs={'sample': key}, method='loss')[1]['elbo']
  elbos = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(8), 2000)), np.float64)
  se = elbos.std(0) / np.sqrt(len(elbos))
  assert np.all(np.abs(elbos.mean(0) - elbo) < 5 * se + 1e-6), (elbos.mean(0), elbo)


@pytest.mark.parametrize('latent_type', ['categorical', 'bernoulli'])
def test_relaxed_gradient_bias_shrinks_with_temperature(latent_type):
  """The encoder gradient of the relaxed objective (kl='categorical') against the exact
  gradient of the discrete model's ELBO, summed over every code: the bias falls as tau
  does (Jang Sec. 2; Maddison Sec. 3)."""
  m = _model(latent_type=latent_type, num_latents=2 if latent_type == 'categorical' else 3)
  batch = _batch()
  v = _perturbed(m, batch, scale=1.0)
  x = batch['image'].reshape(2, -1).astype(jnp.float32)
  z = _codes(m)

  def exact_elbo(enc):
    def f(mod, x):
      logits = mod._logits(x)
      zb = jnp.broadcast_to(z, (x.shape[0],) + z.shape)
      if mod.latent_type == 'categorical':
        log_q = (zb * jax.nn.log_softmax(logits[:, None], -1)).sum((-2, -1))
      else:
        log_q = (zb * jax.nn.log_sigmoid(logits[:, None])
                 + (1 - zb) * jax.nn.log_sigmoid(-logits[:, None])).sum(-1)
      log_px = jax.vmap(lambda xi: mod._log_px(xi, mod._code(z)))(x)
      return (jnp.exp(log_q) * log_px).sum(1) - mod._exact_kl(logits)
    vv = {'params': {**v['params'], 'encoder': enc}}
    return m.apply(vv, x, method=f).sum()

  def relaxed(enc, key, tau):
    vv = {'params': {**v['params'], 'encoder': enc}}
    def f(mod, x):
      return mod.relaxed_objective(x, mod._logits(x), key, tau)[0]
    return m.apply(vv, x, method=f).sum()

  def flat(g):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(g)]).astype(np.float64)
  exact = flat(jax.grad(exact_elbo)(v['params']['encoder']))
  n = 4000
  keys = jax.random.split(jax.random.key(7), n)
  biases = []
  for tau in (2.0, 0.5, 0.1):
    grads = jax.vmap(functools.partial(jax.grad(relaxed), v['params']['encoder'], tau=tau))(keys)
    g = np.concatenate([np.asarray(leaf, np.float64).reshape(n, -1)
                        for leaf in jax.tree.leaves(grads)], 1)
    biases.append(np.linalg.norm(g.mean(0) - exact) / np.linalg.norm(exact))
  assert biases[0] > biases[1] > biases[2], biases
  assert biases[2] < 0.5 * biases[0], biases


@pytest.mark.parametrize('kw, needle', [
    (dict(temperature=0.0), 'temperature=0.0 must be > 0'),
    (dict(prior_temperature=-1.0), 'prior_temperature=-1.0'),
    (dict(num_latents=0), 'num_latents=0'),
    (dict(num_categories=1), 'num_categories=1'),
    (dict(estimator='nvil'), "estimator='nvil' is not a relaxed estimator"),
    (dict(kl='exact'), "kl='exact'"),
    (dict(latent_type='gaussian'), "latent_type='gaussian'"),
])
def test_bad_model_arguments_are_named(kw, needle):
  with pytest.raises(ValueError) as e:
    _model(**kw).init({'params': jax.random.key(0), 'sample': jax.random.key(0)}, _batch(),
                      method='loss')
  assert needle in str(e.value)


def test_config_presets():
  c = gumbel_config.get_config()
  assert ((c.model.latent_type, c.model.num_latents, c.model.num_categories)
          == ('categorical', 20, 10))
  assert c.model.learned_prior and c.model.kl == 'categorical'
  b = gumbel_config.get_config('bernoulli,relaxed_kl')
  assert (b.model.latent_type, b.model.num_latents) == ('bernoulli', 200)
  assert ((b.model.temperature, b.model.prior_temperature, b.model.anneal_rate)
          == (2 / 3, 1 / 2, 0.0))
  assert gumbel_config.get_config('st').model.estimator == 'straight_through'
  with pytest.raises(ValueError, match='Unknown preset token'):
    gumbel_config.get_config('gumble')


# ----------------------------------------------------------------------- through the trainer

@pytest.mark.parametrize('arg', ['tiny', 'bernoulli,st,relaxed_kl,tiny'])
def test_tiny_runs_train_evaluate_and_write_pictures(tmp_path, data_dir, arg):
  c = gumbel_config.get_config(arg)
  c.data.local_dir = data_dir
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(c, workdir)
  assert result['step'] == c.train.num_steps and result['num_examples'] == 256
  assert np.isfinite(result['nll']) and result['nll'] > 0
  assert result['nll'] <= -result['elbo'] + 1e-3
  samples = os.listdir(os.path.join(workdir, 'samples'))
  assert f'step_{c.train.num_steps}.png' in samples
  assert any(s.startswith('reconstructions') for s in samples)
  assert any(s.startswith('sample_means') for s in samples)
