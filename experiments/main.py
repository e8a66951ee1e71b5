"""Command line: the only place that defines flags.

  python -m experiments.main --config=configs/pixelcnn_digits.py --workdir=runs/digits
  python -m experiments.main --config=configs/pixelcnn_mnist.py:tiny --workdir=runs/t \
      --config.optimizer.learning_rate=3e-4
  python -m experiments.main --config=... --workdir=runs/digits --mode=eval   # or sample

A run always resumes from its workdir. Known failures (bad config, missing data, corrupt
checkpoint, NaN loss) end with one clear message and exit status 1, not a traceback.
"""
from __future__ import annotations

import json
import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, optionally with a preset: configs/x.py:tiny.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, samples.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'sample'],
                          'train (resumes), eval (test metrics of the latest checkpoint), '
                          'sample (a sample grid from the latest checkpoint).')
flags.mark_flags_as_required(['config', 'workdir'])


def _known_errors():
  from experiments.checkpointing import CheckpointError
  from experiments.datasets import DataError
  from experiments.models import ConfigError
  from experiments.train import NaNLossError
  return (CheckpointError, DataError, ConfigError, NaNLossError, FileNotFoundError, ValueError)


def _quiet_libraries() -> None:
  """Keeps INFO lines from this project only; libraries (orbax logs every save) show WARNING+."""
  def keep(record):
    return record.levelno >= std_logging.WARNING or 'site-packages' not in record.pathname
  std_logging.getLogger('absl').addFilter(keep)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _quiet_libraries()
  config = _CONFIG.value
  import jax  # after flag parsing, so --help is fast
  if config.distributed:
    jax.distributed.initialize()
  from experiments import train
  logging.info('JAX devices: %s (process %d of %d)', jax.devices(), jax.process_index(),
               jax.process_count())
  try:
    if _MODE.value == 'train':
      result = train.train_and_evaluate(config, _WORKDIR.value)
      print(json.dumps({'workdir': _WORKDIR.value, **result}))
    elif _MODE.value == 'eval':
      print(json.dumps(train.evaluate_run(config, _WORKDIR.value)))
    else:
      print(f'samples: {train.sample_run(config, _WORKDIR.value)}')
  except _known_errors() as e:
    logging.error('%s: %s', type(e).__name__, e)
    print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
