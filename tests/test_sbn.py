"""Sigmoid belief nets, DARN and the discrete-latent estimators (latent/sbn.py, darn.py,
estimators.py), checked against exact sums over every latent state (latent/enumeration.py):
normalization, samplers against exact probabilities, bounds in order, each unbiased
estimator's mean against the exact gradient, the biased ones' bias shrinking as it should,
the stop_gradient routing of the wake and sleep phases, and tiny runs through the trainer."""
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import estimator_gradients as eg
from configs import darn_binarized_mnist, sbn_binarized_mnist
from experiments import train
from latent import enumeration
from latent import estimators as est
from latent.darn import DARN
from latent.sbn import SBN


def _perturbed(model, batch, scale=1.0, seed=0):
  v = model.init({'params': jax.random.key(seed), 'sample': jax.random.key(seed)}, batch,
                 method='loss')
  leaves, tree = jax.tree.flatten(v['params'])
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  v['params'] = jax.tree.unflatten(tree, [scale * jax.random.normal(k, leaf.shape)
                                          for k, leaf in zip(keys, leaves, strict=True)])
  return v


def _states(n):
  return np.array(list(itertools.product([0.0, 1.0], repeat=n)), np.float32)


# ------------------------------------------------------------------ the models' densities

def _two_layer_sbn():
  m = SBN(image_shape=(1, 3, 1), latent_dims=(2, 2), estimator='reinforce')
  return m, _perturbed(m, {'image': jnp.zeros((1, 1, 3, 1), jnp.int32)}, scale=1.5)


def _joint_table(m, v):
  """log p(x, h1, h2) of the 2-layer SBN over all 2^3 x 2^2 x 2^2 states."""
  xs, h1, h2 = _states(3), _states(2), _states(2)
  grid = list(itertools.product(range(8), range(4), range(4)))
  x = jnp.asarray(np.stack([xs[a] for a, _, _ in grid]))
  hs = [jnp.asarray(np.stack([h1[b] for _, b, _ in grid])),
        jnp.asarray(np.stack([h2[c] for _, _, c in grid]))]
  return grid, np.asarray(m.apply(v, x, hs, method='joint_log_prob'), np.float64)


def test_sbn_joint_is_normalized_and_dreams_draw_from_it():
  m, v = _two_layer_sbn()
  grid, log_p = _joint_table(m, v)
  p = np.exp(log_p)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)
  n = 200_000
  hs, x = m.apply(v, jax.random.key(3), n, method='dream')
  code = ((np.asarray(x) @ [4, 2, 1]) * 16 + (np.asarray(hs[0]) @ [2, 1]) * 4
          + np.asarray(hs[1]) @ [2, 1])
  freq = np.bincount(code.astype(int), minlength=128) / n
  expected = np.zeros(128)
  for (a, b, c), pi in zip(grid, p, strict=True):
    expected[a * 16 + b * 4 + c] = pi
  # Binomial standard errors: every cell within 5 of them.
  se = np.sqrt(expected * (1 - expected) / n) + 1e-6
  assert np.max(np.abs(freq - expected) / se) < 5, np.max(np.abs(freq - expected) / se)


def test_sbn_recognition_is_normalized_and_samples_match_it():
  m, v = _two_layer_sbn()
  x = jnp.array([[1.0, 0.0, 1.0]])
  h1, h2 = _states(2), _states(2)
  pairs = list(itertools.product(range(4), range(4)))
  hs = [jnp.asarray(np.stack([h1[a] for a, _ in pairs]))[:, None],
        jnp.asarray(np.stack([h2[b] for _, b in pairs]))[:, None]]
  q = np.exp(np.asarray(m.apply(v, x, hs, method='q_log_prob'), np.float64))[:, 0]
  np.testing.assert_allclose(q.sum(), 1.0, rtol=1e-5)
  n = 100_000
  (s1, s2), log_q = m.apply(v, x, jax.random.key(4), n, method='q_sample')
  code = (np.asarray(s1[:, 0]) @ [2, 1]) * 4 + np.asarray(s2[:, 0]) @ [2, 1]
  freq = np.bincount(code.astype(int), minlength=16) / n
  se = np.sqrt(q * (1 - q) / n) + 1e-6
  assert np.max(np.abs(freq - q) / se) < 5
  # and the log q it returns for each draw is that of its state
  np.testing.assert_allclose(np.exp(np.asarray(log_q[:50, 0])), q[code[:50].astype(int)], rtol=1e-4)


def _one_layer(model_cls=SBN, **kw):
  m = model_cls(image_shape=(2, 3, 1), latent_dims=(4,), estimator='reinforce', **kw)
  v = _perturbed(m, {'image': jnp.zeros((2, 2, 3, 1), jnp.int32)}, scale=1.2)
  # A broad q, so that 4000 importance samples cover the posterior of the 16 states.
  q_names = [k for k in v['params'] if k.startswith(('q_', 'enc_'))]
  assert q_names
  v['params'].update({k: jax.tree.map(lambda a: 0.3 * a, v['params'][k]) for k in q_names})
  return m, v


@pytest.mark.parametrize('model_cls, kw', [
    (SBN, {}), (DARN, {}), (DARN, {'prior_hidden': (6,), 'decoder_hidden': (6,)}),
    (DARN, {'autoregressive_x': False})])
def test_bounds_are_ordered_and_importance_sampling_reaches_exact_log_p(model_cls, kw):
  m, v = _one_layer(model_cls, **kw)
  image = jnp.array([[1, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]).reshape(2, 2, 3, 1)
  x = image.reshape(2, -1).astype(jnp.float32)
  # normalization over all 2^6 images
  all_x = jnp.asarray(_states(6))
  total = jax.nn.logsumexp(enumeration.log_marginal(m, v, all_x))
  np.testing.assert_allclose(float(total), 0.0, atol=1e-5)
  log_p = np.asarray(enumeration.log_marginal(m, v, x))
  elbo = np.asarray(enumeration.elbo(m, v, x))
  l2 = np.asarray(enumeration.iwae_bound_k2(m, v, x))
  assert np.all(elbo < l2) and np.all(l2 < log_p), (elbo, l2, log_p)
  k = 4000
  est_ll = np.asarray(m.apply(v, image, jax.random.key(5), k, method='log_likelihood'))
  # The estimate's standard deviation, exactly: sd(log p^) ~ sqrt(chi^2(p(h|x) || q) / k),
  # chi^2 + 1 = E_q[w^2] / p(x)^2 summed over the 16 states.
  h = jnp.broadcast_to(enumeration.binary_states(4)[:, None], (16, 2, 4))
  lp = np.asarray(m.apply(v, x, [h], method='joint_log_prob'), np.float64)
  lq = np.asarray(m.apply(v, x, [h], method='q_log_prob'), np.float64)
  chi2 = np.exp(2 * lp - lq - 2 * log_p[None]).sum(0) - 1
  sd = np.sqrt(chi2 / k)
  assert np.all(np.abs(est_ll - log_p) < 4 * sd + 1e-4), (est_ll, log_p, sd)
  assert np.all(sd < 0.1)   # so that the check means something


def test_darn_is_autoregressive_in_h_and_in_x():
  m, v = _one_layer(DARN, prior_hidden=(6,), decoder_hidden=(6,))
  h = jnp.array([0.3, 0.7, 0.2, 0.9])
  jac_h = jax.jacfwd(lambda h: m.apply(v, h, method='_prior_logits'))(h)
  x = jnp.linspace(0.1, 0.9, 6)
  jac_x = jax.jacfwd(lambda x: m.apply(v, x, h, method='_x_logits'))(x)
  for jac in (np.asarray(jac_h), np.asarray(jac_x)):
    n = jac.shape[0]
    assert np.all(jac[np.triu_indices(n)] == 0)          # no unit sees itself or a later one
    assert np.all(jac[np.tril_indices(n, -1)] != 0)      # and each sees every earlier one
  # the decoder sees all of h
  jac_c = jax.jacfwd(lambda h: m.apply(v, x, h, method='_x_logits'))(h)
  assert np.all(np.asarray(jac_c) != 0)


def test_darn_dreams_draw_from_its_joint():
  m = DARN(image_shape=(1, 3, 1), latent_dims=(3,), prior_hidden=(4,), decoder_hidden=(4,),
           estimator='reinforce')
  v = _perturbed(m, {'image': jnp.zeros((1, 1, 3, 1), jnp.int32)}, scale=1.5)
  hs, xs = _states(3), _states(3)
  grid = list(itertools.product(range(8), range(8)))
  log_p = m.apply(v, jnp.asarray(np.stack([xs[a] for a, _ in grid])),
                  [jnp.asarray(np.stack([hs[b] for _, b in grid]))], method='joint_log_prob')
  p = np.exp(np.asarray(log_p, np.float64))
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)
  n = 200_000
  (h,), x = m.apply(v, jax.random.key(7), n, method='dream')
  code = (np.asarray(x) @ [4, 2, 1]) * 8 + np.asarray(h) @ [4, 2, 1]
  freq = np.bincount(code.astype(int), minlength=64) / n
  se = np.sqrt(p * (1 - p) / n) + 1e-6
  assert np.max(np.abs(freq - p) / se) < 5


# ---------------------------------------------------------------------- the estimators

@pytest.fixture(scope='module')
def problem():
  model, v, image = eg.make_problem(seed=0)
  v = eg.train_baseline(model, v, image, steps=300)
  exact = {k: np.asarray(g, np.float64) for k, g in eg.exact_gradients(model, v, image).items()}
  return v, image, exact


def _stats(fn, problem, n, seed, target):
  v, image, exact = problem
  mean, var = eg.moments(fn, v, image, n, seed=seed)
  return eg.row('', target, mean, var, exact[target], n)


@pytest.mark.parametrize('estimator, k, target, n', [
    ('reinforce', 1, 'elbo', 10_000),
    ('nvil', 1, 'elbo', 3000),
    ('vimco', 2, 'L_2', 3000),
    ('wake_sleep', 1, 'sleep', 2000),
])
def test_unbiased_estimators_mean_is_the_exact_gradient(problem, estimator, k, target, n):
  r = _stats(eg.sbn_estimator(estimator, k), problem, n, seed=11, target=target)
  # |mean - exact| is about one standard error for an unbiased estimator over 110
  # parameters (a chi distribution with 110 degrees of freedom: 1 +- 0.07 se).
  assert r['bias'] < 1.5 * r['se'], r
  assert r['se'] < 0.15, r    # and the check is sharp enough to mean something


def test_the_unbiasedness_check_rejects_a_biased_estimator(problem):
  r = _stats(eg.relaxed_estimator(1.0), problem, 2000, seed=12, target='elbo')
  assert r['bias'] > 5 * r['se'], r


def test_relaxed_bias_shrinks_with_temperature(problem):
  rows = [_stats(eg.relaxed_estimator(t), problem, 2000, seed=13, target='elbo')
          for t in (2.0, 1.0, 0.5)]
  for hot, cold in zip(rows, rows[1:], strict=False):
    assert cold['bias'] + 2 * (cold['se'] + hot['se']) < hot['bias'], rows
    assert cold['variance'] > hot['variance']   # the price of a colder relaxation


def test_rws_wake_q_bias_shrinks_with_k(problem):
  r5 = _stats(eg.sbn_estimator('rws', 5), problem, 2000, seed=14, target='kl(p||q)')
  r50 = _stats(eg.sbn_estimator('rws', 50), problem, 1000, seed=15, target='kl(p||q)')
  assert r50['bias'] + 3 * (r5['se'] + r50['se']) < r5['bias'], (r5, r50)


def test_vimco_signals_equal_the_leave_one_out_definition():
  log_w = np.random.default_rng(0).normal(size=(5, 3)) * 3
  got = np.asarray(est.vimco_signals(jnp.asarray(log_w, jnp.float32)))
  k = 5
  for b in range(3):
    w = np.exp(log_w[:, b].astype(np.float64))
    full = np.log(w.mean())
    for j in range(k):
      others = np.delete(log_w[:, b], j)
      w_j = w.copy()
      w_j[j] = np.exp(others.mean())
      np.testing.assert_allclose(got[j, b], full - np.log(w_j.mean()), rtol=1e-4, atol=1e-4)


def _grads(model, v, image, key=1):
  def f(p):
    return model.apply({**v, 'params': p}, {'image': image},
                       rngs={'sample': jax.random.key(key)}, method='loss')[0]
  return jax.grad(f)(v['params'])


def test_wake_sleep_routes_wake_to_p_and_sleep_to_q():
  m = SBN(image_shape=(2, 3, 1), latent_dims=(4, 3), estimator='wake_sleep')
  image = jnp.array([[1, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]).reshape(2, 2, 3, 1)
  v = _perturbed(m, {'image': image})
  g = _grads(m, v, image)
  # q's update comes from the dreams alone: another training batch leaves it unchanged.
  g_other = _grads(m, v, 1 - image)
  for name in ('q_h1', 'q_h2'):
    for a, b in zip(jax.tree.leaves(g[name]), jax.tree.leaves(g_other[name]), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6)
  # p's update is the wake phase, -grad mean log p(x, h) at the recognition samples h: the
  # p-gradient of REINFORCE under the same key (the same h), whose q-term reaches q alone.
  reinforce = SBN(image_shape=(2, 3, 1), latent_dims=(4, 3), estimator='reinforce')
  wake = _grads(reinforce, v, image)
  for name in ('p_x', 'p_h1', 'prior_logits'):
    for a, b in zip(jax.tree.leaves(g[name]), jax.tree.leaves(wake[name]), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # and the dreams reach q: its update is not zero, and not REINFORCE's
  assert not np.allclose(g['q_h1']['kernel'], wake['q_h1']['kernel'])
  assert any(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree.leaves(g['q_h1']))


def test_nvil_running_averages_follow_algorithm_1():
  m = SBN(image_shape=(2, 3, 1), latent_dims=(4,), estimator='nvil', baseline_hidden=5,
          baseline_decay=0.8)
  image = jnp.array([[1, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]).reshape(2, 2, 3, 1)
  v = _perturbed(m, {'image': image})
  v['running'] = {'baseline': {'mean': jnp.float32(1.5), 'var': jnp.float32(4.0)}}
  (obj, metrics), moved = m.apply(v, {'image': image}, rngs={'sample': jax.random.key(1)},
                                  method='loss', mutable=['running'])
  log_w = metrics['elbo'][None]     # K = 1: the learning signal l = log w is the ELBO
  x = image.reshape(2, -1).astype(jnp.float32)
  b = v['params']['baseline']
  cx = (jnp.tanh(x @ b['hidden']['kernel'] + b['hidden']['bias']) @ b['out']['kernel']
        + b['out']['bias'])[:, 0]
  r = np.asarray(log_w - cx[None], np.float64)
  c = 0.8 * 1.5 + 0.2 * r.mean()
  var = 0.8 * 4.0 + 0.2 * r.var()
  np.testing.assert_allclose(moved['running']['baseline']['mean'], c, rtol=1e-5)
  np.testing.assert_allclose(moved['running']['baseline']['var'], var, rtol=1e-5)
  # evaluation reads the averages and leaves them be
  m.apply(v, {'image': image}, False, rngs={'sample': jax.random.key(1)}, method='loss')
  # the objective's value is the negated ELBO, whatever the surrogate
  np.testing.assert_allclose(obj, -metrics['elbo'].mean(), rtol=1e-6)


@pytest.mark.parametrize('kw, needle', [
    (dict(latent_dims=(0,)), 'latent_dims=(0,)'),
    (dict(latent_dims=()), 'at least one layer'),
    (dict(estimator='nvill'), "estimator='nvill'"),
    (dict(estimator='vimco', num_samples=1), 'num_samples >= 2'),
    (dict(rws_q_update='dream'), "rws_q_update='dream'"),
])
def test_bad_model_arguments_are_named(kw, needle):
  m = SBN(image_shape=(2, 3, 1), **kw)
  with pytest.raises(ValueError, match=None) as e:
    m.init({'params': jax.random.key(0), 'sample': jax.random.key(0)},
           {'image': jnp.zeros((1, 2, 3, 1), jnp.int32)}, method='loss')
  assert needle in str(e.value)


# ----------------------------------------------------------------------- through the trainer

@pytest.mark.parametrize('config_module, arg', [
    (sbn_binarized_mnist, 'nvil,tiny'), (sbn_binarized_mnist, 'ws,tiny'),
    (sbn_binarized_mnist, 'vimco,layers=1,tiny'), (darn_binarized_mnist, 'tiny')])
def test_tiny_runs_train_evaluate_and_write_pictures(tmp_path, data_dir, config_module, arg):
  c = config_module.get_config(arg)
  c.data.local_dir = data_dir
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(c, workdir)
  assert result['step'] == c.train.num_steps and result['num_examples'] == 256
  assert np.isfinite(result['nll']) and result['nll'] > 0
  # the importance-sampled estimate is at least as good as the ELBO it improves on
  assert result['nll'] <= -result['elbo'] + 1e-3
  samples = os.listdir(os.path.join(workdir, 'samples'))
  assert f'step_{c.train.num_steps}.png' in samples
  assert any(s.startswith('reconstructions') for s in samples)
  if 'nvil' in arg:
    run = train.Run(c, workdir, restore=True)
    running = run.state.model_state['running']['baseline']
    run.ckpt.close()
    assert float(running['var']) > 0   # the running averages live in the checkpoint
