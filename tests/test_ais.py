"""Annealed importance sampling (latent/ais.py) against exact log-likelihoods, BDMC's
bounds, the VAE's AIS interface, and --mode=ais end to end."""
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent import ais
from latent.vae import VAE
from tests.conftest import random_params
from tests.test_cli import _cli, _env

# -- (a) A linear Gaussian model: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D), so
#    p(x) = N(b, W W^T + s^2 I) exactly. The data are simulated from the model, so the
#    latents that made them are exact posterior samples for reverse AIS (BDMC).

DZ, DX, SIGMA, NX = 2, 6, 0.4, 24


@pytest.fixture(scope='module')
def linear_gaussian():
  rng = np.random.default_rng(0)
  w, b = rng.standard_normal((DX, DZ)), rng.standard_normal(DX)
  z_star = rng.standard_normal((NX, DZ))
  x = z_star @ w.T + b + SIGMA * rng.standard_normal((NX, DX))
  cov = w @ w.T + SIGMA ** 2 * np.eye(DX)
  r = x - b
  _, logdet = np.linalg.slogdet(cov)
  exact = -0.5 * (np.einsum('bi,ij,bj->b', r, np.linalg.inv(cov), r) + logdet
                  + DX * np.log(2 * np.pi))
  wj, bj = jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32)
  log_lik = ais.gaussian_log_likelihood(lambda z: z @ wj.T + bj, SIGMA)
  return log_lik, jnp.asarray(x, jnp.float32), jnp.asarray(z_star, jnp.float32), exact


def _bdmc(log_lik, x, z_star, num_steps, seed=0, chains=8):
  kw = dict(num_chains=chains, num_steps=num_steps, leapfrog_steps=5)
  fwd = jax.jit(lambda x, k: ais.ais(log_lik, x, k, latent_dim=z_star.shape[-1], **kw))
  rev = jax.jit(lambda x, z, k: ais.reverse_ais(log_lik, x, z, k, **kw))
  return (jax.device_get(fwd(x, jax.random.key(seed))),
          jax.device_get(rev(x, z_star, jax.random.key(seed + 1))))


def _mean_se(a):
  a = np.asarray(a, np.float64).ravel()
  return a.mean(), a.std(ddof=1) / np.sqrt(a.size)


@pytest.fixture(scope='module')
def linear_runs(linear_gaussian):
  log_lik, x, z_star, _ = linear_gaussian
  return {t: _bdmc(log_lik, x, z_star, t) for t in (10, 100, 1000)}


def test_linear_gaussian_ais_matches_the_exact_log_likelihood(linear_gaussian, linear_runs):
  """E[forward] <= log p <= E[reverse], so on average the forward estimate's error is at
  most the BDMC gap (measured here, ~0.02 nats at T = 1000) plus Monte Carlo noise: within
  3 standard errors (over the 24 examples) of the per-example errors plus that gap."""
  exact = linear_gaussian[-1]
  fwd, rev = linear_runs[1000]
  err, err_se = _mean_se(fwd.log_px - exact)
  gap, _ = _mean_se(rev.log_px - fwd.log_px)
  assert abs(err) < 3 * err_se + max(gap, 0.0) + 1e-3, (err, err_se, gap)
  assert abs(err) < 0.1 and -0.05 < gap < 0.1   # noise can put it a little below 0
  up, up_se = _mean_se(rev.log_px - exact)
  assert abs(up) < 3 * up_se + max(gap, 0.0) + 1e-3, (up, up_se, gap)
  assert 0.4 < fwd.acceptance_rate.mean() < 0.9     # adapted towards 0.65


def test_forward_is_a_lower_and_reverse_an_upper_bound_on_average(linear_gaussian, linear_runs):
  """Per chain, E[log w] <= log p(x) (Jensen on E[w] = p(x)) and E[-log w_rev] >= log p(x)
  (E[w_rev] = 1/p(x)); each mean over the 24 x 8 chains is on its side of the exact value
  beyond 3 standard errors while the annealing is short enough for the bound to be loose,
  and never on the wrong side by more than 3."""
  exact = linear_gaussian[-1]
  for t, (fwd, rev) in linear_runs.items():
    lo, lo_se = _mean_se(fwd.log_weights - exact[:, None])
    hi, hi_se = _mean_se(-rev.log_weights - exact[:, None])
    assert lo < 3 * lo_se and hi > -3 * hi_se, (t, lo, lo_se, hi, hi_se)
    if t <= 100:
      assert lo < -3 * lo_se and hi > 3 * hi_se, (t, lo, lo_se, hi, hi_se)


def test_bdmc_gap_shrinks_as_the_annealing_lengthens(linear_runs):
  gaps = {t: _mean_se(rev.log_px - fwd.log_px)[0] for t, (fwd, rev) in linear_runs.items()}
  # At T = 1000 the gap is at the noise level (a few hundredths), and may fall below 0.
  assert gaps[10] > 3 * gaps[100] > 0 and gaps[100] > 3 * max(gaps[1000], 0), gaps
  assert gaps[1000] > -0.05, gaps


def test_the_compiled_program_does_not_grow_with_the_steps(linear_gaussian):
  log_lik, x, _, _ = linear_gaussian

  def size(t):
    jaxpr = jax.make_jaxpr(lambda x, k: ais.ais(log_lik, x, k, latent_dim=DZ, num_chains=2,
                                                num_steps=t, leapfrog_steps=3))(
        x, jax.random.key(0))
    return re.sub(r'\d+', 'N', str(jaxpr))   # the same program up to its array sizes

  assert size(10) == size(10_000)


def test_sigmoid_schedule():
  betas = ais.schedule(1000)
  assert betas[0] == 0 and betas[-1] == 1 and np.all(np.diff(betas) > 0)
  # Denser near both ends than in the middle (Wu et al.'s code, rad = 4).
  steps = np.diff(betas)
  assert steps[0] < steps[500] / 10 and steps[-1] < steps[500] / 10
  np.testing.assert_allclose(ais.schedule(4, 'linear'), [0, 0.25, 0.5, 0.75, 1])
  with pytest.raises(ValueError, match='schedule'):
    ais.schedule(10, 'cosine')


# -- (b) A nonlinear model with a 2-D z and a Bernoulli decoder, whose log p(x) a dense grid
#    computes to within 1e-6 nats (float64).

def _mlp_logits(params, z, xp):
  w1, b1, w2, b2 = params
  return xp.tanh(z @ w1 + b1) @ w2 + b2


def test_nonlinear_2d_model_matches_quadrature():
  rng = np.random.default_rng(1)
  params = (2.0 * rng.standard_normal((2, 8)), rng.standard_normal(8),
            1.5 * rng.standard_normal((8, 16)), 0.5 * rng.standard_normal(16))
  z_star = rng.standard_normal((12, 2))
  probs = 1 / (1 + np.exp(-_mlp_logits(params, z_star, np)))
  x = (rng.uniform(size=probs.shape) < probs).astype(np.int32)
  # Quadrature: the prior's mass outside [-7, 7]^2 is < 1e-11.
  g = np.linspace(-7, 7, 561)
  zz = np.stack(np.meshgrid(g, g, indexing='ij'), -1).reshape(-1, 2)
  logits = _mlp_logits(params, zz, np)
  log_lik = x @ logits.T - np.logaddexp(0, logits).sum(-1)          # [12, grid]
  log_joint = log_lik - 0.5 * (zz ** 2).sum(-1) - np.log(2 * np.pi)
  m = log_joint.max(-1, keepdims=True)
  exact = (m[:, 0] + np.log(np.exp(log_joint - m).sum(-1)) + 2 * np.log(g[1] - g[0]))

  pj = tuple(jnp.asarray(p, jnp.float32) for p in params)
  fn = ais.bernoulli_log_likelihood(lambda z: _mlp_logits(pj, z, jnp))
  fwd, rev = _bdmc(fn, jnp.asarray(x), jnp.asarray(z_star, jnp.float32), 300, seed=3)
  err, err_se = _mean_se(fwd.log_px - exact)
  gap, _ = _mean_se(rev.log_px - fwd.log_px)
  assert abs(err) < 3 * err_se + max(gap, 0.0) + 1e-3, (err, err_se, gap)
  assert np.all(fwd.log_px < exact + 1.0) and np.all(rev.log_px > exact - 1.0)
  assert abs(err) < 0.1, (err, fwd.log_px - exact)


# -- (c) The VAE's AIS interface scores z as its importance-sampled bound does.

IMG = (4, 4, 1)


@pytest.mark.parametrize('likelihood', ['bernoulli', 'logistic'])
def test_vae_decoder_log_prob_is_the_log_px_of_log_weights(likelihood):
  levels = 2 if likelihood == 'bernoulli' else 256
  model = VAE(image_shape=IMG, num_levels=levels, latent_dims=(3,), hidden_dims=((8,),),
              likelihood=likelihood)
  image = jax.random.randint(jax.random.key(0), (5,) + IMG, 0, levels)
  variables = model.init({'params': jax.random.key(1), 'sample': jax.random.key(2)},
                         {'image': image}, method='loss')
  rng = jax.random.key(3)
  log_w, log_px, _ = model.apply(variables, image, rng, 7, method='log_weights')
  # log_weights draws its z_1 from the first of split(rng, layers + 1), as posterior_sample
  # does from the key it is given.
  z, log_q = model.apply(variables, image, jax.random.split(rng, 2)[0], 7,
                         method='posterior_sample')
  got = model.apply(variables, jnp.swapaxes(z, 0, 1), image, method='decoder_log_prob')
  assert got.shape == (5, 7)
  np.testing.assert_allclose(got, log_px.T, rtol=1e-5, atol=1e-4)
  log_prior = -0.5 * jnp.sum(z ** 2, -1) - 1.5 * np.log(2 * np.pi)
  np.testing.assert_allclose(got + log_prior.T - log_q.T, log_w.T, rtol=1e-5, atol=1e-3)
  assert model.apply(variables, method='ais_latent_dim') == 3


def test_vae_ais_interface_refuses_what_it_cannot_score():
  deep = VAE(image_shape=IMG, latent_dims=(4, 2), hidden_dims=((8,), (8,)))
  with pytest.raises(ValueError, match='one stochastic layer'):
    deep.apply({}, method='ais_latent_dim')
  model = VAE(image_shape=IMG, latent_dims=(3,), hidden_dims=((8,),))
  image = jnp.zeros((2,) + IMG, jnp.int32)
  variables = model.init({'params': jax.random.key(1), 'sample': jax.random.key(2)},
                         {'image': image}, method='loss')
  with pytest.raises(ValueError, match='obs_std'):
    model.apply(variables, jnp.zeros((2, 4, 3)), image, obs_std=0.1,
                method='decoder_log_prob')


def test_gaussian_vae_with_obs_std_is_scored_and_simulated_as_a_gan_is():
  """Wu et al.'s comparison: with obs_std, a Gaussian VAE's log p(x | z) is the Gaussian of
  that standard deviation around its decoder mean on [0, 1] (checked in float64), and
  decoder_sample draws from it (its mean and spread over many draws)."""
  model = VAE(image_shape=IMG, latent_dims=(3,), hidden_dims=((8,),), likelihood='gaussian',
              num_levels=256)
  image = jax.random.randint(jax.random.key(0), (2,) + IMG, 0, 256)
  # Random weights with biases 0.1-0.5, so decoder means fall inside (0, 1).
  variables = random_params(model, {'image': image}, method='loss')
  z = jax.random.normal(jax.random.key(3), (2, 4, 3))
  got = np.asarray(model.apply(variables, z, image, obs_std=0.1, method='decoder_log_prob'))
  out = model.apply(variables, z.reshape(8, 3), method=lambda m, zz: m._decoder_params(zz))
  mean = np.clip(np.asarray(out[..., :1], np.float64), 0, 1).reshape(2, 4, *IMG)
  x = np.asarray(image, np.float64)[:, None] / 255
  want = (-0.5 * ((x - mean) / 0.1) ** 2 - np.log(0.1) - 0.5 * np.log(2 * np.pi)).reshape(
      2, 4, -1).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
  zs = jnp.tile(z[0, :1], (4000, 1))
  draws = np.asarray(model.apply(variables, jax.random.key(4), zs, obs_std=0.1,
                                 method='decoder_sample'), np.float64) / 255
  m0 = mean[0, 0]
  inside = (m0 > 0.3) & (m0 < 0.7)       # away from the clipping at 0 and 1
  assert inside.any()
  np.testing.assert_allclose(draws.mean(0)[inside], m0[inside], atol=0.01)
  np.testing.assert_allclose(draws.std(0)[inside], 0.1, rtol=0.08)


def test_ais_on_a_vae_decoder_is_finite_and_beats_the_prior():
  """AIS through model.apply: the estimate is finite and at least likelihood weighting's
  (T = 1: importance sampling from the prior) on average."""
  model = VAE(image_shape=IMG, latent_dims=(3,), hidden_dims=((8,),))
  image = jax.random.bernoulli(jax.random.key(0), 0.3, (6,) + IMG).astype(jnp.int32)
  variables = model.init({'params': jax.random.key(1), 'sample': jax.random.key(2)},
                         {'image': image}, method='loss')
  fn = lambda z, x: model.apply(variables, z, x, method='decoder_log_prob')  # noqa: E731

  def run(t):
    return jax.jit(lambda x, k: ais.ais(fn, x, k, latent_dim=3, num_chains=4, num_steps=t,
                                        leapfrog_steps=3))(image, jax.random.key(5))
  long, one = run(200), run(1)
  assert np.all(np.isfinite(long.log_px)) and long.log_px.mean() >= one.log_px.mean() - 0.05


# -- (d) --mode=ais end to end, and a model AIS cannot score.

def test_ais_mode_end_to_end(tmp_path, data_dir):
  workdir = str(tmp_path / 'vae')
  env = _env(DGM_DATA_DIR=data_dir)
  config = '--config=configs/iwae_binarized_mnist.py:tiny'
  r = _cli(config, f'--workdir={workdir}', env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  before = sorted(os.listdir(workdir))
  r = _cli(config, f'--workdir={workdir}', '--mode=ais', '--ais_num_examples=6',
           '--ais_chains=3', '--ais_steps=20', '--ais_leapfrog=2', '--ais_bdmc',
           '--ais_bdmc_examples=4', '--ais_batch_size=4', env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(r.stdout.strip().splitlines()[-1])
  assert sorted(os.listdir(workdir)) == sorted(before + ['ais.jsonl'])
  lines = [json.loads(line) for line in open(os.path.join(workdir, 'ais.jsonl'))]
  assert lines == [result]
  assert result['num_examples'] == 6 and result['num_chains'] == 3 and result['step'] == 5
  assert result['num_steps'] == 20 and result['leapfrog_steps'] == 2
  # A 784-pixel binary image: an untrained-ish model sits near 784 log 2 = 543 nats.
  assert -800 < result['log_px'] < 0 and result['log_px_se'] > 0
  assert 0 < result['acceptance_rate'] <= 1 and result['wall_s'] > 0
  bdmc = result['bdmc']
  assert bdmc['num_examples'] == 4 and bdmc['gap'] == pytest.approx(
      bdmc['reverse'] - bdmc['forward'], abs=1e-6)
  assert np.isfinite(bdmc['gap'])


def test_ais_mode_refuses_a_model_without_a_decoder(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  r = _cli('--config=configs/pixelcnn_digits.py:tiny', f'--workdir={workdir}', '--mode=ais')
  assert r.returncode == 2, r.stderr[-3000:]
  errors = [line for line in r.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'decoder_log_prob' in errors[0], r.stderr[-2000:]
  assert 'Traceback' not in r.stderr and os.listdir(workdir) == []
