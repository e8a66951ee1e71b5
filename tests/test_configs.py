"""Every config builds its model, and the gated presets train end to end."""
import glob
import importlib
import os
import pickle

import numpy as np
import pytest

from experiments import train
from experiments.models import build_model
from tests.conftest import REPO

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                 if not os.path.basename(p).startswith(('_', 'common')))


@pytest.mark.parametrize('name', CONFIGS)
def test_config_and_tiny_preset_build_their_model(name):
  module = importlib.import_module(f'configs.{name}')
  for arg in (None, 'tiny'):
    c = module.get_config(arg)
    model = build_model(c.model_name, c.model.to_dict())
    if arg == 'tiny':   # the paper configs keep the papers' batch sizes (e.g. IWAE's 100)
      assert c.data.batch_size % 8 == 0, 'global batches shard over 8 devices in tests'
    assert module.__doc__ and 'python -m experiments.main' in module.__doc__, name
    del model
  with pytest.raises(ValueError, match='Unknown preset'):
    module.get_config('no_such_preset')


def test_gated_class_conditional_tiny_trains_and_samples_one_row_per_class(tmp_path, data_dir):
  from configs import gated_pixelcnn_mnist_conditional
  c = gated_pixelcnn_mnist_conditional.get_config('tiny')
  c.data.local_dir = data_dir
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert result['num_examples'] == 256 and np.isfinite(result['nll'])
  assert os.path.exists(tmp_path / 'run' / 'samples' / 'step_10.png')


def _fake_cifar(root, n_train=64, n_test=32):
  """A CIFAR-10 folder in the publisher's pickle format, with random images."""
  d = root / 'cifar10' / 'cifar-10-batches-py'
  d.mkdir(parents=True)
  rng = np.random.default_rng(0)
  files = [(f'data_batch_{i}', n_train // 5) for i in range(1, 6)] + [('test_batch', n_test)]
  for name, n in files:
    with open(d / name, 'wb') as f:
      pickle.dump({b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   b'labels': list(rng.integers(0, 10, n))}, f)
  return str(root)


@pytest.mark.parametrize('preset', ['tiny', 'tiny,logistic'])
def test_gated_rgb_tiny_trains_on_cifar_format_files(tmp_path, preset):
  from configs import gated_pixelcnn_cifar10
  c = gated_pixelcnn_cifar10.get_config(preset)
  c.data.local_dir = _fake_cifar(tmp_path / 'data')
  c.data.eval_split = 'test'
  c.train.num_steps = 3
  c.train.sample_at_end = 'logistic' in preset   # sample one head; both train
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert result['num_examples'] == 32
  # uniformly random pixels: about 8 bits/dim for a model that has barely trained
  assert 7.0 < result['bits_per_dim'] < 10.0
