"""Trainer: 1-vs-8-device equivalence, NaN guard, checkpoint errors, EMA, schedules."""
import os

import jax
import numpy as np
import pytest

from configs import pixelcnn_digits
from experiments import input_pipeline, train
from experiments.checkpointing import CheckpointError, Checkpointer
from experiments.models import ConfigError, build_model


def _tiny(**train_overrides):
  c = pixelcnn_digits.get_config('tiny')
  c.train.update(train_overrides)
  return c


def test_one_step_on_8_devices_matches_1_device():
  assert len(jax.devices()) >= 8, 'conftest sets 8 simulated CPU devices'
  c = _tiny()
  model = build_model(c.model_name, c.model.to_dict())
  tx, schedule = train.create_optimizer(c.optimizer, c.train.num_steps)
  data = input_pipeline.create_datasets(c.data, seed=0)
  batch = next(data.train_iter)
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh = train.make_mesh(devices)
    state = train.init_train_state(model, tx, batch, 0, mesh)
    step = train.make_train_step(model, tx, schedule, ema_decay=0.99, num_dims=64, mesh=mesh)
    gbatch = train.to_global_batch(batch, mesh)
    assert len(gbatch['image'].sharding.device_set) == len(devices)
    for _ in range(2):
      state, metrics = step(state, gbatch)
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (s1, m1), (s8, m8) = results
  np.testing.assert_allclose(m1['loss'], m8['loss'], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for a, b in zip(jax.tree.leaves(s1.ema_params), jax.tree.leaves(s8.ema_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


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
  c.optimizer.learning_rate = float('nan')
  with pytest.raises(train.NaNLossError) as e:
    train.train_and_evaluate(c, workdir)
  msg = str(e.value)
  assert 'step 11' in msg and 'step 10' in msg and 'learning_rate' in msg
  ckpt = Checkpointer(workdir)
  assert ckpt.latest_step() == 10
  run = train.Run(_tiny(), workdir, restore=True)
  assert run.restored_step == 10
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(run.state.params)))


def test_resuming_with_another_model_shape_is_a_clear_error(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_tiny(num_steps=5), workdir)
  c = _tiny(num_steps=10)
  c.model.features = 24
  with pytest.raises(CheckpointError) as e:
    train.train_and_evaluate(c, workdir)
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
  assert step_dir in str(e.value) and 'Delete' in str(e.value)
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
