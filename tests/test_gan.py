"""GAN and VAE-GAN: each loss reaches only the players it should, one train step is the
updates of Algorithm 1 written by hand, the observation model is the Gaussian density, and
the trainer runs them with an optimizer per player."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import gan_mnist, vaegan_mnist
from experiments import train
from latent.gan import GAN
from latent.vaegan import VAEGAN

jax.config.update('jax_disable_most_optimizations', True)

B = 8


def _batch(seed=0, shape=(28, 28, 1)):
  return {'image': jax.random.randint(jax.random.key(seed), (B,) + shape, 0, 256)}


def _gan(**kw):
  args = dict(latent_dim=6, generator_features=4, discriminator_features=4)
  args.update(kw)
  return GAN(**args)


def _init(model, batch):
  return model.init({'params': jax.random.key(1), 'sample': jax.random.key(2)}, batch,
                    train=False, method='loss')


def _norms(grads):
  return {k: float(optax.tree.norm(v)) for k, v in grads.items()}


def _term_grads(model, variables, batch, term, phase=None):
  def f(params):
    (_, metrics), _ = model.apply({**variables, 'params': params}, batch, train=True,
                                  phase=phase, rngs={'sample': jax.random.key(3)},
                                  method='loss', mutable=['batch_stats'])
    return jnp.mean(metrics[term])
  return _norms(jax.grad(f)(variables['params']))


@pytest.mark.parametrize('generator_loss', ['non_saturating', 'minimax'])
def test_each_gan_loss_reaches_only_its_own_player(generator_loss):
  model = _gan(generator_loss=generator_loss)
  batch = _batch()
  v = _init(model, batch)
  for phase in (None, 'discriminator'):
    d = _term_grads(model, v, batch, 'd_loss', phase)
    assert d['generator'] == 0.0 and d['discriminator'] > 0, d
  for phase in (None, 'generator'):
    g = _term_grads(model, v, batch, 'g_loss', phase)
    assert g['discriminator'] == 0.0 and g['generator'] > 0, g


def _hand_gan_step(model, variables, batch, rng, lr, b1, eps, k):
  """Algorithm 1 written out: k discriminator updates on fresh noise, then one generator
  update against the updated discriminator, each player with its own Adam."""
  params, stats = variables['params'], variables['batch_stats']
  real = batch['image'].astype(jnp.float32) / 255.0 * 2 - 1
  adam = optax.adam(lr, b1=b1, eps=eps)
  opt_d, opt_g = adam.init(params['discriminator']), adam.init(params['generator'])

  def z_of(phase_index):
    rngs = train.phase_rngs(rng, phase_index)
    return model.apply({'params': params, 'batch_stats': stats}, B, rngs=rngs,
                       method=lambda m, n: m.prior(m.make_rng('sample'), n))

  def run(method, p, *args):
    out, _ = model.apply({'params': p, 'batch_stats': stats}, *args, train=True, method=method,
                         mutable=['batch_stats'])
    return out

  for i in range(k):
    z = z_of(i)

    def d_loss(dp, z=z, params=params):
      p = {**params, 'discriminator': dp}
      fake = jax.lax.stop_gradient(run('generate', p, z))
      return jnp.mean(jax.nn.softplus(-run('discriminate', p, real))
                      + jax.nn.softplus(run('discriminate', p, fake)))
    g = jax.grad(d_loss)(params['discriminator'])
    u, opt_d = adam.update(g, opt_d, params['discriminator'])
    params = {**params, 'discriminator': optax.apply_updates(params['discriminator'], u)}
  z = z_of(k)

  def g_loss(gp):
    p = {**params, 'generator': gp}
    logit = run('discriminate', p, run('generate', p, z))
    if model.generator_loss == 'non_saturating':
      return jnp.mean(jax.nn.softplus(-logit))
    return jnp.mean(-jax.nn.softplus(logit))
  g = jax.grad(g_loss)(params['generator'])
  u, opt_g = adam.update(g, opt_g, params['generator'])
  return {**params, 'generator': optax.apply_updates(params['generator'], u)}


@pytest.mark.parametrize('generator_loss,k', [('non_saturating', 1), ('minimax', 2)])
def test_one_train_step_equals_the_updates_written_by_hand(generator_loss, k):
  c = gan_mnist.get_config('tiny')
  c.model.latent_dim, c.model.generator_features, c.model.discriminator_features = 6, 4, 4
  c.model.generator_loss, c.model.discriminator_steps = generator_loss, k
  # Adam's first steps are lr * sign(g) for eps << |g|: a gradient entry that is zero up to
  # rounding (the jitted step's convolutions round differently) would flip by 2 lr. A large
  # eps makes the update a smooth function of the gradient, so the comparison is exact up to
  # float rounding.
  c.optimizer.eps = 1.0
  model = GAN(**c.model.to_dict())
  batch = _batch()
  mesh = train.make_mesh(jax.devices()[:1])
  tx, schedule = train.create_model_optimizer(c.optimizer, 10, model)
  state = train.init_train_state(model, tx, batch, 0, mesh)
  step = train.make_train_step(model, tx, schedule, ema_decay=0.9, num_dims=784, mesh=mesh)
  variables = train.model_variables(*jax.device_get((state.params, state.model_state)))
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 0)
  want = _hand_gan_step(model, variables, batch, rng, c.optimizer.learning_rate,
                        c.optimizer.b1, c.optimizer.eps, k)
  new_state, metrics = step(state, train.to_global_batch(batch, mesh))
  got = jax.device_get(new_state.params)
  for player in ('generator', 'discriminator'):
    for a, b in zip(jax.tree.leaves(got[player]), jax.tree.leaves(want[player]), strict=True):
      np.testing.assert_allclose(a, b, atol=1e-8, rtol=1e-5)
    assert metrics[f'grad_norm_{player}'] > 0
  # Each player's own Adam counted its own updates: k for D, 1 for G.
  counts = {p: int(new_state.opt_state[p][0].count) for p in ('generator', 'discriminator')}
  assert counts == {'generator': 1, 'discriminator': k}


def test_a_player_updated_k_times_per_step_reads_the_schedule_in_train_steps():
  c = gan_mnist.get_config('tiny,k=3')
  c.optimizer.schedule = 'cosine'
  model = GAN(**c.model.to_dict())
  tx, schedule = train.create_model_optimizer(c.optimizer, 100, model)
  assert train.player_updates_per_step(model) == {'generator': 1, 'discriminator': 3}
  params = {'generator': {'w': jnp.ones(2)}, 'discriminator': {'w': jnp.ones(2)}}
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  # A generator-only update leaves the discriminator's parameters and state exactly alone.
  updates, new = tx.update(grads, state, params, players=('generator',))
  assert float(jnp.abs(updates['discriminator']['w']).max()) == 0.0
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), new['discriminator'],
                                   state['discriminator']))
  # With a constant gradient Adam's step is the learning rate: the discriminator's i-th
  # update (3 per train step) takes the rate of train step i // 3, the generator's i-th
  # that of step i.
  state = tx.init(params)
  for i in range(7):
    updates, state = tx.update(grads, state, params, players=('discriminator',))
    np.testing.assert_allclose(float(-updates['discriminator']['w'][0]), float(schedule(i // 3)),
                               rtol=1e-5)
  state = tx.init(params)
  for i in range(3):
    updates, state = tx.update(grads, state, params, players=('generator',))
    np.testing.assert_allclose(float(-updates['generator']['w'][0]), float(schedule(i)),
                               rtol=1e-5)


def test_health_names_a_winning_discriminator_and_collapse_and_is_quiet_otherwise():
  model = _gan()
  assert model.health({'d_real_acc': 0.7, 'd_fake_acc': 0.6, 'fake_spread': 0.9}) == []
  won = model.health({'d_real_acc': 1.0, 'd_fake_acc': 1.0, 'g_loss': 9.0, 'fake_spread': 0.9})
  assert len(won) == 1 and 'vanish' in won[0]
  collapsed = model.health({'d_real_acc': 0.5, 'd_fake_acc': 0.5, 'fake_spread': 0.01})
  assert len(collapsed) == 1 and 'mode collapse' in collapsed[0]


def test_samples_are_integer_images_of_the_data_levels():
  model = _gan()
  v = _init(model, _batch())
  x = model.apply(v, jax.random.key(0), (5, 28, 28, 1), method='sample')
  assert x.shape == (5, 28, 28, 1) and x.dtype == jnp.int32
  assert int(x.min()) >= 0 and int(x.max()) <= 255
  with pytest.raises(ValueError, match='samples have shape'):
    model.apply(v, jax.random.key(0), (5, 32, 32, 3), method='sample')


@pytest.mark.parametrize('cls', [GAN, VAEGAN])
def test_decoder_log_prob_is_the_gaussian_density_in_float64(cls):
  model = cls(latent_dim=3, generator_features=4, discriminator_features=4)
  batch = _batch()
  v = _init(model, batch)
  z = jax.random.normal(jax.random.key(5), (2, 3, 3))
  image = batch['image'][:2]
  got = np.asarray(model.apply(v, z, image, 0.1, method='decoder_log_prob'))
  mean = np.asarray(model.apply(v, z.reshape(6, 3), method='decode'), np.float64).reshape(2, 3, -1)
  x = np.asarray(image, np.float64).reshape(2, 1, -1) / 255.0
  want = np.sum(-0.5 * ((x - mean) / 0.1) ** 2 - np.log(0.1) - 0.5 * np.log(2 * np.pi), -1)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match='obs_std'):
    model.apply(v, z, image, method='decoder_log_prob')


def _vaegan(**kw):
  args = dict(latent_dim=3, encoder_features=4, encoder_hidden=8, generator_features=4,
              discriminator_features=4)
  args.update(kw)
  return VAEGAN(**args)


def test_vaegan_losses_reach_the_players_algorithm_1_updates_with_them():
  model = _vaegan()
  batch = _batch()
  v = _init(model, batch)
  # Move the encoder off its zero-initialized output layer, so the KL has a gradient.
  v = {**v, 'params': {**v['params'], 'encoder': jax.tree.map(
      lambda a: a + 0.1, v['params']['encoder'])}}
  expect = {'kl': {'encoder'}, 'feature_recon': {'encoder', 'decoder'},
            'g_loss': {'decoder'}, 'd_loss': {'discriminator'}}
  for term, players in expect.items():
    n = _term_grads(model, v, batch, term)
    assert {p for p, x in n.items() if x > 0} == players, (term, n)


def test_vaegan_gamma_scales_the_decoders_feature_gradient_only():
  batch = _batch()
  grads = {}
  for gamma in (1.0, 0.25):
    model = _vaegan(gamma=gamma)
    v = _init(model, batch)

    def f(params, model=model, v=v):
      (_, m), _ = model.apply({**v, 'params': params}, batch, train=True,
                              rngs={'sample': jax.random.key(3)}, method='loss',
                              mutable=['batch_stats'])
      return jnp.mean(m['feature_recon'])
    grads[gamma] = jax.grad(f)(v['params'])
  for a, b in zip(jax.tree.leaves(grads[1.0]['decoder']), jax.tree.leaves(grads[0.25]['decoder']),
                  strict=True):
    np.testing.assert_allclose(0.25 * a, b, rtol=1e-4, atol=1e-7)
  for a, b in zip(jax.tree.leaves(grads[1.0]['encoder']), jax.tree.leaves(grads[0.25]['encoder']),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('cfg,preset', [(gan_mnist, 'tiny'), (gan_mnist, 'tiny,k=2,minimax'),
                                        (vaegan_mnist, 'tiny')])
def test_tiny_configs_train_and_write_samples_and_interpolations(tmp_path, data_dir, cfg,
                                                                 preset):
  c = cfg.get_config(preset)
  c.data.local_dir = data_dir
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(c, workdir)
  assert result['step'] == 5 and 0 <= result['d_real_acc'] <= 1
  names = set(os.listdir(os.path.join(workdir, 'samples')))
  assert 'step_5.png' in names
  assert ('prior_interpolations_step_5.png' in names if cfg is gan_mnist
          else 'interpolations_step_5.png' in names)
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_rows = [r for r in rows if 'train/grad_norm_discriminator' in r]
  assert train_rows and all(np.isfinite(r['train/d_loss']) for r in train_rows)


def test_bad_gan_settings_are_named():
  with pytest.raises(ValueError, match='generator_loss'):
    _gan(generator_loss='wasserstein')
  with pytest.raises(ValueError, match='discriminator_steps'):
    _gan(discriminator_steps=0)
  with pytest.raises(ValueError, match='latent_dim'):
    _gan(latent_dim=0)
  with pytest.raises(ValueError, match='gamma'):
    _vaegan(gamma=0.0)
  with pytest.raises(ValueError, match='feature_layer'):
    _vaegan(feature_layer=5)


def test_a_nan_in_either_players_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, data_dir):
  """A game that diverges to NaN (here: both players' updates overflow at once) stops at
  the first bad step with the trainer's message; the step-5 checkpoint stays restorable."""
  from experiments.checkpointing import Checkpointer  # pylint: disable=g-import-not-at-top
  c = gan_mnist.get_config('tiny')
  c.data.local_dir = data_dir
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(c, workdir)
  c.train.num_steps = 10
  c.optimizer.learning_rate = 1e38
  with pytest.raises(train.NaNLossError) as e:
    train.train_and_evaluate(c, workdir)
  assert 'step 6' in str(e.value) and 'step 5' in str(e.value)
  assert Checkpointer(workdir).latest_step() == 5
  fresh = gan_mnist.get_config('tiny')
  fresh.data.local_dir = data_dir
  run = train.Run(fresh, workdir, restore=True)
  try:
    assert run.restored_step == 5
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(run.state.params)))
  finally:
    run.close()
