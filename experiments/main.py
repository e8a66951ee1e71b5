"""Command line: the only place that defines flags.

  python -m experiments.main --config=configs/pixelcnn_digits.py --workdir=runs/digits
  python -m experiments.main --config=configs/pixelcnn_mnist.py:tiny --workdir=runs/t \
      --config.optimizer.learning_rate=3e-4
  python -m experiments.main --config=... --workdir=runs/digits --mode=eval   # or sample

A run always resumes from its workdir. Every mistake a user can make (a config key or
value, a path, missing or corrupt data, a checkpoint that does not fit, a workdir held by
another trainer, NaN loss) ends with one message naming the problem and the fix, and exit
status 2, without a traceback; --verbose (or DGM_VERBOSE=1) adds the traceback. Anything
else is a bug: its traceback and exit status 1.
"""
from __future__ import annotations

import importlib.util
import json
import logging as std_logging
import os
import re
import sys
import traceback
import warnings

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, optionally with a preset: configs/x.py:tiny.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, samples.')
_MODE = flags.DEFINE_enum('mode', 'train',
                          ['train', 'eval', 'sample', 'sample_quality', 'ais'],
                          'train (resumes), eval (test metrics of the latest checkpoint), '
                          'sample (a sample grid from the latest checkpoint), '
                          'sample_quality (FID, IS, class histogram of samples; '
                          'experiments/sample_quality.py), '
                          'ais (log p(x) by annealed importance sampling; '
                          'experiments/ais_eval.py).')
_CLASSIFIER_WORKDIR = flags.DEFINE_string(
    'classifier_workdir', None, '--mode=sample_quality: workdir of a trained MNIST classifier '
    '(configs/mnist_classifier.py).')
_QUALITY_NUM_SAMPLES = flags.DEFINE_integer(
    'quality_num_samples', 10000, '--mode=sample_quality: samples to draw and score.')
_AIS_NUM_EXAMPLES = flags.DEFINE_integer('ais_num_examples', 1000,
                                         '--mode=ais: the first N examples of --ais_split.')
_AIS_CHAINS = flags.DEFINE_integer('ais_chains', 16, '--mode=ais: chains per example.')
_AIS_STEPS = flags.DEFINE_integer('ais_steps', 1000, '--mode=ais: intermediate distributions.')
_AIS_LEAPFROG = flags.DEFINE_integer('ais_leapfrog', 10, '--mode=ais: leapfrog steps per HMC move.')
_AIS_OBS_STD = flags.DEFINE_float('ais_obs_std', None, '--mode=ais: the Gaussian observation '
                                  "model's std for models without a decoder density (GANs).")
_AIS_BDMC = flags.DEFINE_bool('ais_bdmc', False, '--mode=ais: also forward and reverse AIS '
                              '(BDMC) on data simulated from the model.')
_AIS_BDMC_EXAMPLES = flags.DEFINE_integer('ais_bdmc_examples', 100,
                                          '--mode=ais: simulated examples for --ais_bdmc.')
_AIS_SPLIT = flags.DEFINE_string('ais_split', 'test', '--mode=ais: the data split to score.')
_AIS_BATCH_SIZE = flags.DEFINE_integer('ais_batch_size', 0, '--mode=ais: examples per compiled '
                                       'batch (0: about 4096 chains).')
_AIS_SEED = flags.DEFINE_integer('ais_seed', 0, '--mode=ais: the random seed.')
_ALLOW_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False,
    'Resume although fields that change what the checkpoints mean (model, data, '
    'objective, seed) differ from the run\'s config: a deliberate fine-tuning start, '
    'recorded in config_history.jsonl.')
_RESET_OPTIMIZER = flags.DEFINE_bool(
    'reset_optimizer', False,
    'Resume the parameters, EMA, step and data position of the latest checkpoint, but start '
    'the optimizer afresh: the way to change its structure (adam <-> adamw, clipping on/off).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'Multi-process: host:port of process 0 for '
    'jax.distributed.initialize (e.g. localhost:12355 for several processes on one machine). '
    'With --num_processes and --process_id; on Slurm, TPU pods and Kubernetes '
    '--config.distributed=True detects all three.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Multi-process: how many processes join the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'Multi-process: this process\'s index, 0 .. num_processes-1.')
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', None,
    'Folder of JAX\'s persistent compilation cache, so a resumed or repeated run reads its '
    'compiled programs back instead of compiling them again (default $DGM_COMPILATION_CACHE, '
    'else ~/.cache/dgm/jax_compilation); none turns it off.')
_VERBOSE = flags.DEFINE_bool('verbose', False,
                             'Print the traceback of user errors too (also: DGM_VERBOSE=1).')
flags.mark_flags_as_required(['config', 'workdir'])

USAGE_EXIT = 2


def _verbose() -> bool:
  if os.environ.get('DGM_VERBOSE', '') not in ('', '0'):
    return True
  return any(a in ('--verbose', '-verbose', '--verbose=true', '--verbose=True') for a in sys.argv)


def _fail(message: str, exc: BaseException | None = None) -> None:
  """Prints one message (and, verbose, the traceback) and exits with status 2."""
  if exc is not None and _verbose():
    traceback.print_exception(exc)
  print(f'error: {message}', file=sys.stderr)
  sys.exit(USAGE_EXIT)


def _flag_value(argv, name: str) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith(f'--{name}='):
      return a.split('=', 1)[1]
    if a == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config_file(spec: str):
  """The ConfigDict `configs/x.py:arg` gives, loaded the way config_flags loads it."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_dgm_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _check_config_file(argv) -> None:
  spec = _flag_value(argv, 'config')
  if spec is None:
    return
  path = spec.partition(':')[0]
  if not os.path.isfile(path):
    import difflib  # pylint: disable=g-import-not-at-top
    folder = os.path.dirname(path) or '.'
    names = sorted(f for f in os.listdir(folder) if f.endswith('.py')) if os.path.isdir(
        folder) else []
    close = difflib.get_close_matches(os.path.basename(path), names, n=3, cutoff=0.5)
    hint = (f' Did you mean {" or ".join(os.path.join(folder, c) for c in close)}?' if close
            else f' The configs are in configs/ ({", ".join(sorted(os.listdir("configs")))[:400]}).'
            if os.path.isdir('configs') else '')
    _fail(f'--config={spec}: the config file {path} does not exist.{hint}')


def _diagnose_override(argv, exc: BaseException) -> None:
  """An override naming a key the config does not have: the key and the closest ones."""
  from experiments import validation  # pylint: disable=g-import-not-at-top
  spec = _flag_value(argv, 'config')
  try:
    config = _load_config_file(spec)
  except Exception as e:  # pylint: disable=broad-except
    _fail(f'--config={spec} could not be loaded: {type(e).__name__}: {e}', e)
  keys = validation.all_keys(config)
  for a in argv:
    m = re.match(r'--config\.([\w.]+)(=|$)', a)
    if m and m.group(1) not in keys:
      key = m.group(1)
      _fail(f'--config.{key}: the config {spec} has no key config.{key}.'
            f'{validation.suggest(key, keys)}', exc)
  _fail(f'The command line could not be parsed: {type(exc).__name__}: {exc}', exc)


def parse_flags(argv):
  """absl's flag parsing, with each mistake as one message and exit status 2."""
  _check_config_file(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if 'Traceback (most recent call last)' in text:
      # config_flags puts the config file's traceback into its message: its last line is
      # the config's own error (an unknown preset, a bad argument, a syntax error).
      last = [line for line in text.splitlines() if line.strip()][-1].strip()
      _fail(f'--config={_flag_value(argv, "config")} could not be loaded: {last}', e)
    _fail(f'{text}. Pass --helpshort for the flags.', e)
  except (AttributeError, KeyError) as e:
    _diagnose_override(argv, e)
  except Exception as e:  # pylint: disable=broad-except
    if _flag_value(argv, 'config') is not None and re.search(r'config', str(e), re.I):
      _fail(f'--config={_flag_value(argv, "config")} could not be loaded: '
            f'{type(e).__name__}: {e}', e)
    raise


def _quiet_libraries() -> None:
  """Keeps INFO lines from this project only; libraries (orbax logs every save) show WARNING+.
  asyncio's "Task exception was never retrieved" (orbax's other reads of a checkpoint that
  failed) is dropped: the one error is reported by this program."""
  def keep(record):
    if 'site-packages' not in record.pathname:
      return True
    if 'orbax' in record.pathname and record.levelno >= std_logging.ERROR and not _verbose():
      return False   # a background write's failure: raised again, and reported, by the run
    return record.levelno >= std_logging.WARNING
  std_logging.getLogger('absl').addFilter(keep)
  warnings.filterwarnings('ignore', message='coroutine .* was never awaited')
  std_logging.getLogger('asyncio').setLevel(std_logging.CRITICAL)


# What orbax's and TensorStore's background tasks raise after a read failed and the event
# loop has gone (one checkpoint read error makes dozens): the error is reported once, here.
_BACKGROUND_NOISE = ('Event loop is closed', 'cannot schedule new futures',
                     'Encountered error while reading array')


def _drop_background_noise() -> None:
  default = sys.unraisablehook

  def hook(unraisable):
    text = str(unraisable.exc_value)
    if not _verbose() and any(n in text for n in _BACKGROUND_NOISE):
      return
    default(unraisable)
  sys.unraisablehook = hook


def _user_error_types():
  from experiments.errors import UserError  # pylint: disable=g-import-not-at-top
  return (UserError, ValueError, FileNotFoundError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _quiet_libraries()
  _drop_background_noise()
  try:
    config = _CONFIG.value
  except Exception as e:  # pylint: disable=broad-except
    _fail(f'--config={_flag_value(sys.argv, "config")} could not be loaded: '
          f'{type(e).__name__}: {e}', e)
  import jax  # after flag parsing, so --help is fast

  from experiments import compilation_cache, train  # pylint: disable=g-import-not-at-top
  from experiments import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  cache_dir = compilation_cache.enable(_COMPILATION_CACHE.value)
  logging.info('Compilation cache: %s', cache_dir or 'off')
  try:
    explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if any(v is not None for v in explicit) and None in explicit:
      raise ValueError('--coordinator_address, --num_processes and --process_id go together: '
                       f'got {explicit}. Give all three (or none, with '
                       '--config.distributed=True on a cluster that says them).')
    if config.distributed or explicit[0] is not None:
      # CPU processes exchange gradients through gloo (XLA's CPU collectives); GPUs and
      # TPUs use their own, whatever this says.
      if jax.config.jax_cpu_collectives_implementation in (None, '', 'none'):
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
      jax.distributed.initialize(coordinator_address=explicit[0], num_processes=explicit[1],
                                 process_id=explicit[2])
    logging.info('JAX devices: %s (process %d of %d)', jax.devices(), jax.process_index(),
                 jax.process_count())
    workdir, allow = _WORKDIR.value, _ALLOW_CHANGE.value
    if _MODE.value == 'train':
      result = train.train_and_evaluate(config, workdir, allow_config_change=allow,
                                        reset_optimizer=_RESET_OPTIMIZER.value)
      print(json.dumps({'workdir': workdir, **result}))
    elif _MODE.value == 'eval':
      print(json.dumps(train.evaluate_run(config, workdir, allow_config_change=allow)))
    elif _MODE.value == 'sample_quality':
      from experiments import sample_quality  # pylint: disable=g-import-not-at-top
      print(json.dumps(sample_quality.sample_quality_run(
          config, workdir, classifier_workdir=_CLASSIFIER_WORKDIR.value,
          num_samples=_QUALITY_NUM_SAMPLES.value, allow_config_change=allow)))
    elif _MODE.value == 'ais':
      from experiments import ais_eval  # pylint: disable=g-import-not-at-top
      print(json.dumps(ais_eval.ais_run(
          config, workdir, num_examples=_AIS_NUM_EXAMPLES.value, num_chains=_AIS_CHAINS.value,
          num_steps=_AIS_STEPS.value, leapfrog_steps=_AIS_LEAPFROG.value,
          obs_std=_AIS_OBS_STD.value, seed=_AIS_SEED.value, split=_AIS_SPLIT.value,
          bdmc=_AIS_BDMC.value, bdmc_examples=_AIS_BDMC_EXAMPLES.value,
          batch_size=_AIS_BATCH_SIZE.value, allow_config_change=allow)))
    else:
      print(f'samples: {train.sample_run(config, workdir, allow_config_change=allow)}')
  except _user_error_types() as e:
    logging.flush()
    _fail(f'{type(e).__name__}: {e}', e)
  except OSError as e:
    logging.flush()
    _fail(f'OSError: {workdir_lib.describe_os_error(e)}', e)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
