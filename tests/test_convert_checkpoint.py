"""experiments.convert_checkpoint on a real run written before Glow's steps were scanned.

tests/data/glow_unrolled_run is a 3-step run of configs/glow_mnist.py:tiny (hidden 8,
evaluated on test[:64]) trained by the code of commit 4bf0f54, whose steps were separate
modules (level{L}_step{k}_*). The figures below are what that code printed: its
evaluation at step 3, and at step 5 after resuming the same checkpoint for two steps.
"""
import os
import shutil

import pytest

from configs import glow_mnist
from experiments import convert_checkpoint, train

FIXTURE = os.path.join(os.path.dirname(__file__), 'data', 'glow_unrolled_run')
OLD_NLL_STEP3 = 4269.6875
OLD_NLL_STEP5 = 4260.05810546875   # the old code, resumed from step 3 for two steps


def _config(num_steps: int):
  c = glow_mnist.get_config('tiny')
  c.model.hidden_features = 8
  c.data.eval_split = 'test[:64]'
  c.train.update(num_steps=num_steps, sample_at_end=False, keep_checkpoints=1)
  return c


def test_an_unrolled_glow_run_converts_evaluates_and_resumes_as_the_old_code(
    data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv('DGM_DATA_DIR', data_dir)
  old, new = str(tmp_path / 'old'), str(tmp_path / 'new')
  shutil.copytree(FIXTURE, old)
  # The current model does not fit the old checkpoint: a clear error, nothing moved.
  with pytest.raises(Exception, match='does not match the model'):
    train.evaluate_run(_config(3), old)
  assert convert_checkpoint.convert_workdir(old, new) == 3
  assert train.evaluate_run(_config(3), new)['nll'] == OLD_NLL_STEP3
  # The old figure came from one device; the suite trains on 8 simulated ones, whose
  # gradient sum adds in another order (float rounding; bit-identical on one device).
  assert train.train_and_evaluate(_config(5), new)['nll'] == pytest.approx(OLD_NLL_STEP5,
                                                                            rel=1e-6)
  # Converting again: the output exists; the converted run is already current.
  with pytest.raises(convert_checkpoint.ConversionError, match='exists'):
    convert_checkpoint.convert_workdir(old, new)
  with pytest.raises(convert_checkpoint.ConversionError, match='already in the current'):
    convert_checkpoint.convert_workdir(new, str(tmp_path / 'again'))
  assert sorted(os.listdir(os.path.join(old, 'checkpoints'))) == ['3']   # only read
