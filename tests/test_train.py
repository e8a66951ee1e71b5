"""Trainer: 1-vs-8-device equivalence, NaN guard, checkpoint errors, EMA, schedules."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pixelcnn_digits
from experiments import input_pipeline, train
from experiments.checkpointing import Checkpointer, CheckpointError
from experiments.errors import WorkdirError
from experiments.models import ConfigError, build_model


def _tiny(**train_overrides):
  c = pixelcnn_digits.get_config('tiny')
  c.train.update(train_overrides)
  return c


def test_ten_steps_on_8_devices_match_1_device_to_float_rounding():
  """Data parallelism changes only the order of the gradient sum, so 8 devices match 1 to
  float rounding, not bit for bit: measured max |difference| 3.0e-8 in the parameters (of
  magnitude <= 0.78) after 10 steps; asserted <= 1e-6."""
  assert len(jax.devices()) >= 8, 'conftest sets 8 simulated CPU devices'
  c = _tiny()
  model = build_model(c.model_name, c.model.to_dict())
  tx, schedule = train.create_optimizer(c.optimizer, c.train.num_steps)
  data = input_pipeline.create_datasets(c.data, seed=0)
  batches = [next(data.train_iter) for _ in range(10)]
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh = train.make_mesh(devices)
    state = train.init_train_state(model, tx, batches[0], 0, mesh)
    step = train.make_train_step(model, tx, schedule, ema_decay=0.99, num_dims=64, mesh=mesh)
    for batch in batches:
      gbatch = train.to_global_batch(batch, mesh)
      assert len(gbatch['image'].sharding.device_set) == len(devices)
      state, metrics = step(state, gbatch)
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (s1, m1), (s8, m8) = results
  np.testing.assert_allclose(m1['loss'], m8['loss'], rtol=1e-5)
  for tree in ('params', 'ema_params'):
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree.leaves(getattr(s1, tree)), jax.tree.leaves(getattr(s8, tree)), strict=True))
    assert diff <= 1e-6, (tree, diff)


def test_warmup_then_cosine_schedule():
  c = _tiny().optimizer
  c.update(learning_rate=1.0, warmup_steps=10, schedule='cosine', final_fraction=0.1)
  s = train.create_learning_rate_schedule(c, 110)
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 0.5, 1.0, 0.55, 0.1],
                             atol=1e-6)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / 'run')
  c = _tiny(num_steps=10, checkpoint_every=5)
  train.train_and_evaluate(c, workdir)
  c.train.num_steps = 20
  c.optimizer.learning_rate = 1e38   # the update overflows at once
  with pytest.raises(train.NaNLossError) as e:
    train.train_and_evaluate(c, workdir)
  msg = str(e.value)
  assert 'step 11' in msg and 'step 10' in msg and 'learning_rate' in msg
  ckpt = Checkpointer(workdir)
  assert ckpt.latest_step() == 10
  run = train.Run(_tiny(), workdir, restore=True)
  assert run.restored_step == 10
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(run.state.params)))


def test_the_window_keeps_the_first_non_finite_step_and_its_metrics():
  names = {'loss': None, 'nll': None}
  w = train.empty_window(names)
  steps = [(1, 2.0, 1.0), (2, 4.0, 3.0), (3, float('nan'), 5.0), (4, 1.0, float('inf'))]
  for step, loss, nll in steps:
    w = train.add_to_window(w, {'loss': jnp.float32(loss), 'nll': jnp.float32(nll)}, step)
  w = jax.device_get(w)
  assert int(w['count']) == 4 and int(w['bad_step']) == 3
  assert np.isnan(w['bad']['loss']) and float(w['bad']['nll']) == 5.0
  assert np.isnan(w['sums']['loss']) and np.isinf(w['sums']['nll'])
  finite = train.add_to_window(train.add_to_window(train.empty_window(names), {
      'loss': jnp.float32(2.0), 'nll': jnp.float32(1.0)}, 1), {
          'loss': jnp.float32(4.0), 'nll': jnp.float32(3.0)}, 2)
  finite = jax.device_get(finite)
  assert int(finite['bad_step']) == -1
  assert train.window_means(finite) == {'loss': 3.0, 'nll': 2.0}


def test_logged_train_metrics_are_the_means_of_every_steps_metrics(tmp_path):
  """The loop sums metrics on the device and fetches them every log_every steps; what it
  logs equals the host mean of the per-step metrics of a step-by-step replay."""
  c = _tiny(num_steps=8, log_every=4, checkpoint_every=8, eval_every=8, sample_every=0,
            sample_at_end=False)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(c, workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  logged = {r['step']: r for r in rows if 'train/loss' in r}
  assert sorted(logged) == [4, 8]
  replay = train.Run(c, str(tmp_path / 'replay'), restore=False)
  try:
    step = train.make_train_step(replay.model, replay.tx, replay.schedule,
                                 ema_decay=c.train.ema_decay, num_dims=replay.data.num_dims,
                                 mesh=replay.mesh)
    state, per_step = replay.state, []
    for _ in range(8):
      state, m = step(state, train.to_global_batch(next(replay.data.train_iter), replay.mesh))
      per_step.append({k: float(v) for k, v in jax.device_get(m).items()})
  finally:
    replay.close()
  for end in (4, 8):
    for k in ('loss', 'bits_per_dim', 'grad_norm', 'learning_rate'):
      want = np.mean([m[k] for m in per_step[end - 4:end]])
      np.testing.assert_allclose(logged[end][f'train/{k}'], want, rtol=1e-6, err_msg=k)


def test_a_non_finite_step_inside_a_log_window_stops_before_the_next_checkpoint(tmp_path):
  """Metrics are fetched every 100 steps, checkpoints come every 3: the step that broke
  (7) is found at the checkpoint of step 9, which is not written."""
  workdir = str(tmp_path / 'run')
  c = _tiny(num_steps=6, checkpoint_every=3, log_every=100)
  train.train_and_evaluate(c, workdir)
  c.train.num_steps = 12
  c.optimizer.learning_rate = 1e38
  with pytest.raises(train.NaNLossError) as e:
    train.train_and_evaluate(c, workdir)
  assert 'step 7' in str(e.value) and 'step 6' in str(e.value)
  assert Checkpointer(workdir).all_steps() == [3, 6]


def test_resuming_with_another_model_shape_is_a_clear_error(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_tiny(num_steps=5), workdir)
  c = _tiny(num_steps=10)
  c.model.features = 24
  with pytest.raises(WorkdirError) as e:   # the saved config says so before any restore
    train.train_and_evaluate(c, workdir)
  assert 'config.model.features: 16 -> 24' in str(e.value)
  assert '--allow_config_change' in str(e.value)
  with pytest.raises(CheckpointError) as e:  # a deliberate change still needs the shapes
    train.train_and_evaluate(c, workdir, allow_config_change=True)
  assert 'does not match' in str(e.value) and '(5, 5, 1, 16)' in str(e.value)
  assert 'config.json' in str(e.value)


def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_deleted(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_tiny(num_steps=5), workdir)
  step_dir = os.path.join(workdir, 'checkpoints', '5')
  n_files = sum(len(f) for _, _, f in os.walk(workdir))
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\x00garbage' * 3)
  with pytest.raises(CheckpointError) as e:
    train.train_and_evaluate(_tiny(num_steps=10), workdir)
  assert step_dir in str(e.value) and 'cannot be read' in str(e.value)
  assert 'No checkpoint in this workdir can be restored' in str(e.value)
  assert 'Delete' not in str(e.value) and 'Nothing was moved' in str(e.value)
  assert sum(len(f) for _, _, f in os.walk(workdir)) == n_files


def test_unknown_model_argument_names_the_field():
  with pytest.raises(ConfigError, match='featurs.*Its arguments:.*features'):
    build_model('pixelcnn', {'featurs': 3})
  with pytest.raises(ConfigError, match='pixelcnn'):
    build_model('pixelcnnn', {})


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  c = _tiny()
  c.data.batch_size = 12   # 8 devices
  with pytest.raises(ValueError, match='multiple of the 8 devices'):
    train.train_and_evaluate(c, str(tmp_path / 'run'))


def test_sampler_auto_is_the_cached_sampler_where_the_model_has_one():
  from autoreg.gated_pixelcnn import GatedPixelCNN
  from autoreg.pixelcnn import PixelCNN
  c = _tiny()
  assert c.sample.sampler == 'auto'
  gated = build_model('gated_pixelcnn', {})
  plain = build_model(c.model_name, c.model.to_dict())
  assert isinstance(gated, GatedPixelCNN) and isinstance(plain, PixelCNN)
  assert train.sampler_method(gated, 'auto') == 'sample_cached'
  assert train.sampler_method(gated, 'naive') == 'sample'
  assert train.sampler_method(plain, 'auto') == 'sample'
  with pytest.raises(ValueError, match='has no sample_cached'):
    train.sampler_method(plain, 'cached')
  with pytest.raises(ValueError, match="'auto', 'naive' or 'cached'"):
    train.sampler_method(plain, 'fast')


def test_piecewise_schedule_gives_the_iwae_papers_stages():
  """Burda et al. 2016, Sec. 5: stage i = 0..7 runs 3^i passes at 1e-3 * 10^(-i/7); batch 20
  over 60,000 images is 3,000 steps per pass, 3,280 passes in all."""
  import jax.numpy as jnp

  from configs import iwae_binarized_mnist
  c = iwae_binarized_mnist.get_config('iwae,k=50,layers=2,paper')
  o = c.optimizer
  assert c.data.batch_size == 20 and (o.name, o.b1, o.b2, o.eps) == ('adam', 0.9, 0.999, 1e-4)
  assert not o.grad_clip_norm and o.warmup_steps == 0 and not c.train.eval_with_ema
  assert c.train.num_steps == 3280 * 60_000 // 20
  schedule = train.create_learning_rate_schedule(o, c.train.num_steps)
  starts = (0,) + tuple(o.boundaries)
  ends = tuple(o.boundaries) + (c.train.num_steps,)
  assert len(starts) == 8
  for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
    assert end - start == 3 ** i * 3000, i
    for step in (start, end - 1):     # the first and last steps of stage i
      got = float(schedule(jnp.asarray(step, jnp.int32)))
      np.testing.assert_allclose(got, 1e-3 * 10 ** (-i / 7), rtol=1e-6, err_msg=str(step))
  # The optimizer uses the schedule: Adam's first step on a gradient g is lr * g / (|g| + eps).
  tx, _ = train.create_optimizer(o, c.train.num_steps)
  params = {'w': jnp.zeros(3)}
  updates, _ = jax.jit(tx.update)({'w': jnp.full(3, 50.0)}, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -1e-3 / (1 + 1e-4 / 50), rtol=1e-5)


def test_piecewise_schedule_with_a_warmup_keeps_absolute_boundaries():
  c = _tiny().optimizer
  c.update(schedule='piecewise', learning_rate=2.0, warmup_steps=4, boundaries=(10, 20),
           factors=(1.0, 0.5, 0.25))
  s = train.create_learning_rate_schedule(c, 30)
  np.testing.assert_allclose([float(s(k)) for k in (0, 2, 4, 9, 10, 19, 20, 29)],
                             [0.0, 1.0, 2.0, 2.0, 1.0, 1.0, 0.5, 0.5], atol=1e-6)


@pytest.mark.parametrize('update,match', [
    (dict(schedule='piecewize'), 'must be one of'),
    (dict(schedule='cosine', boundaries=(10,), factors=(1.0, 0.1)),
     "belong to schedule='piecewise'"),
    (dict(schedule='piecewise', boundaries=(10, 20), factors=(1.0, 0.1)), 'one more'),
    (dict(schedule='piecewise', boundaries=(20, 10), factors=(1.0, 0.1, 0.01)), 'increasing'),
    (dict(schedule='piecewise', boundaries=(10,), factors=(1.0, -0.1)), 'positive'),
    (dict(schedule='piecewise', boundaries=(10,), factors=(1.0, 0.1), warmup_steps=11),
     'must end by the first'),
])
def test_schedule_config_mistakes_are_clear_value_errors(update, match):
  c = _tiny().optimizer
  c.update(update)
  with pytest.raises(ValueError, match=match):
    train.create_optimizer(c, 100)


def test_unknown_optimizer_key_is_a_clear_value_error():
  c = _tiny().optimizer
  c.boundary = (10,)      # a typo for boundaries, made in a config file
  with pytest.raises(ValueError, match=r"Unknown config.optimizer key\(s\) \['boundary'\]"):
    train.create_optimizer(c, 100)


def _per_array_optimizer(monkeypatch):
  """Builds optimizers as before optax.flatten: one moment array per parameter."""
  monkeypatch.setattr(train.optax, 'flatten', lambda tx: tx)


def test_the_flat_optimizer_moves_the_parameters_as_the_per_array_one(monkeypatch):
  """optax.flatten changes only the layout of the optimizer state (and the order of the
  clipping norm's sum): 10 clipped Adam steps give the same parameters and metrics to float
  rounding, and the moments are the per-array ones concatenated."""
  c = _tiny()
  c.optimizer.grad_clip_norm = 0.05    # small enough that every step is clipped
  model = build_model(c.model_name, c.model.to_dict())
  data = input_pipeline.create_datasets(c.data, seed=0)
  batches = [next(data.train_iter) for _ in range(10)]
  mesh = train.make_mesh(jax.devices()[:1])
  results = []
  for per_array in (False, True):
    with monkeypatch.context() as m:
      if per_array:
        _per_array_optimizer(m)
      tx, schedule = train.create_optimizer(c.optimizer, c.train.num_steps)
    state = train.init_train_state(model, tx, batches[0], 0, mesh)
    step = train.make_train_step(model, tx, schedule, ema_decay=0.99, num_dims=64, mesh=mesh)
    for batch in batches:
      state, metrics = step(state, train.to_global_batch(batch, mesh))
      assert float(metrics['grad_norm']) > 0.05
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (flat, m_flat), (per_array, m_per_array) = results
  assert len(jax.tree.leaves(per_array.opt_state)) > len(jax.tree.leaves(flat.opt_state)) + 4
  for k in ('loss', 'grad_norm', 'update_norm'):
    np.testing.assert_allclose(m_flat[k], m_per_array[k], rtol=1e-5)
  for tree in ('params', 'ema_params'):
    for a, b in zip(jax.tree.leaves(getattr(flat, tree)),
                    jax.tree.leaves(getattr(per_array, tree)), strict=True):
      np.testing.assert_allclose(a, b, atol=1e-6)
  adam_flat, adam_per_array = flat.opt_state[1][0], per_array.opt_state[1][0]
  assert int(adam_flat.count) == int(adam_per_array.count) == 10
  for moment in ('mu', 'nu'):
    concatenated = np.concatenate([np.ravel(x) for x in
                                   jax.tree.leaves(getattr(adam_per_array, moment))])
    np.testing.assert_allclose(getattr(adam_flat, moment), concatenated, rtol=1e-5,
                               atol=1e-5 * float(np.max(np.abs(concatenated))))


def test_a_checkpoint_of_the_per_array_optimizer_resumes_as_if_never_stopped(monkeypatch,
                                                                            tmp_path):
  """A run checkpointed before optax.flatten (moments one array per parameter) resumes:
  its moments are concatenated on restore, and 5 + 5 steps end where 10 steps in one go
  do."""
  def config():
    c = _tiny(num_steps=10, checkpoint_every=5, sample_at_end=False)
    c.optimizer.update(schedule='constant', warmup_steps=0)
    return c

  old = str(tmp_path / 'old')
  with monkeypatch.context() as m:
    _per_array_optimizer(m)
    c = config()
    c.train.num_steps = 5
    train.train_and_evaluate(c, old)
  ckpt = Checkpointer(old)
  saved = ckpt._manager.item_metadata(5)['state']['opt_state']  # pylint: disable=protected-access
  assert any(len(leaf.shape) == 4 for leaf in jax.tree.leaves(saved))  # conv kernels' moments
  ckpt.close()
  train.train_and_evaluate(config(), old)
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(config(), straight)
  states = []
  for workdir in (old, straight):
    run = train.Run(config(), workdir, restore=True, read_only=True)
    states.append(jax.device_get(run.state))
    assert run.restored_step == 10
    run.close()
  resumed, one_go = states
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(one_go), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
