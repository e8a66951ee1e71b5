"""The command line end to end, exact resume after SIGKILL, and clear errors."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import experiments
from tests.conftest import REPO


def _env(**extra):
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)       # one CPU device, as a user's first run
  # Tiny models: compiling dominates, and XLA's optimization passes cost more than they save.
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
  env.update(extra)
  return env


def _cli(*args, env=None, timeout=240):
  cmd = [sys.executable, '-m', 'experiments.main', *args]
  return subprocess.run(cmd, cwd=REPO, env=env or _env(), capture_output=True, text=True,
                        timeout=timeout)


TINY = '--config=configs/pixelcnn_digits.py:tiny'


def test_train_eval_sample_and_load_run(tmp_path):
  workdir = str(tmp_path / 'run')
  r = _cli(TINY, f'--workdir={workdir}')
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(r.stdout.strip().splitlines()[-1])
  assert result['step'] == 20 and result['num_examples'] == 297
  assert 0 < result['bits_per_dim'] < np.log2(17)       # better than uniform over 17 levels
  assert 'steps/s' in r.stderr and 'left' in r.stderr and 'bits/dim' in r.stderr
  assert os.path.exists(os.path.join(workdir, 'samples', 'step_20.png'))
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  lines = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert any('train/loss' in record for record in lines)
  assert any('eval/nll' in record for record in lines)

  r = _cli(TINY, f'--workdir={workdir}', '--mode=eval')
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout.strip().splitlines()[-1])['nll'] == pytest.approx(result['nll'])
  r = _cli(TINY, f'--workdir={workdir}', '--mode=sample')
  assert r.returncode == 0 and 'samples:' in r.stdout
  r = _cli(TINY, f'--workdir={workdir}', '--mode=sample', '--config.sample.completion_rows=4')
  assert r.returncode == 0, r.stderr[-3000:]
  path = r.stdout.strip().split('samples: ')[-1]
  assert path.endswith('completions_step_20.png') and os.path.exists(path)
  assert os.path.dirname(os.path.dirname(path)) == os.path.join(workdir, 'samples')

  import jax  # the notebook path
  run = experiments.load_run(workdir)
  assert run.step == 20 and run.config.model_name == 'pixelcnn'
  samples = run.model.apply({'params': run.params}, jax.random.key(0), (2, 8, 8, 1),
                            method='sample')
  assert samples.shape == (2, 8, 8, 1) and 0 <= samples.min() and samples.max() <= 16


def _final_params(workdir):
  run = experiments.load_run(workdir)
  import jax
  return jax.tree.leaves(run.raw_params) + jax.tree.leaves(run.params)


def test_three_sigkills_and_resumes_are_bit_identical(tmp_path):
  """Killed three times (at whatever step training, or a checkpoint write, has reached
  once checkpoints 14, 35 and 56 exist), resumed each time over the stale lock: the end
  parameters equal an uninterrupted run's bit for bit, and metrics.jsonl holds each
  logged step once."""
  steps = ['--config.train.num_steps=80', '--config.train.checkpoint_every=7',
           '--config.train.log_every=10', '--config.train.sample_at_end=False']
  ref = str(tmp_path / 'uninterrupted')
  r = _cli(TINY, f'--workdir={ref}', *steps)
  assert r.returncode == 0, r.stderr[-3000:]

  killed = str(tmp_path / 'killed')
  ckpt_dir = os.path.join(killed, 'checkpoints')
  kills = []
  for reached in (14, 35, 56):
    proc = subprocess.Popen([sys.executable, '-m', 'experiments.main', TINY,
                             f'--workdir={killed}', *steps], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
      done = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
      if done and max(map(int, done)) >= reached:
        break
      time.sleep(0.05)
    assert proc.poll() is None, 'the run finished before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()))
  assert len(kills) == 3 and kills[-1] < 80
  assert os.path.exists(os.path.join(killed, 'run.lock'))   # left behind by the kill

  r = _cli(TINY, f'--workdir={killed}', *steps)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Resumed from' in r.stderr
  for a, b in zip(_final_params(ref), _final_params(killed), strict=True):
    np.testing.assert_array_equal(a, b)
  with open(os.path.join(killed, 'metrics.jsonl')) as f:
    logged = [json.loads(line)['step'] for line in f if 'train/loss' in line]
  assert logged == list(range(10, 81, 10))


def test_unknown_config_key_is_a_clear_error(tmp_path):
  r = _cli(TINY, f'--workdir={tmp_path}', '--config.optimizer.learnin_rate=0.1')
  assert r.returncode != 0
  assert 'learnin_rate' in r.stderr and 'Traceback' not in r.stderr[-2000:]


def test_missing_data_directory_is_a_clear_error(tmp_path):
  t = time.time()
  r = _cli('--config=configs/pixelcnn_mnist.py:tiny', f'--workdir={tmp_path / "run"}',
           '--config.data.source=local', env=_env(DGM_DATA_DIR=str(tmp_path / 'no_data')))
  assert r.returncode == 2
  assert 'no_data' in r.stderr and 'DGM_DATA_DIR' in r.stderr
  assert 'Traceback' not in r.stderr
  assert time.time() - t < 60


def test_mnist_tiny_preset_from_local_files(tmp_path, data_dir):
  r = _cli('--config=configs/pixelcnn_mnist.py:tiny', f'--workdir={tmp_path / "run"}',
           env=_env(DGM_DATA_DIR=data_dir))
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(r.stdout.strip().splitlines()[-1])
  assert result['num_examples'] == 512 and result['bits_per_dim'] < 1.0


def test_run_saved_on_8_devices_loads_on_1(tmp_path):
  from configs import pixelcnn_digits
  from experiments import train
  c = pixelcnn_digits.get_config('tiny')
  c.train.num_steps = 5
  c.train.sample_at_end = False
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(c, workdir)        # this process has 8 devices (conftest)
  code = ('import experiments, jax; r = experiments.load_run(%r); '
          'print(r.step, len(jax.devices()))' % workdir)
  r = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=_env(), capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.split() == ['5', '1']


def test_compilation_cache_rerun_reads_the_compiled_step_back(tmp_path):
  """--compilation_cache: the first run writes its compiled programs, a rerun of the same
  config reads the train step back (JAX's debug log says so) and trains to the same numbers;
  a folder that cannot be made only turns the cache off, with a warning naming it."""
  cache = str(tmp_path / 'cache')
  env = _env(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_LOGGING_LEVEL='DEBUG')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  args = (TINY, '--config.train.num_steps=4', '--config.train.sample_at_end=False',
          f'--compilation_cache={cache}')
  results = []
  for name in ('first', 'rerun'):
    r = _cli(*args, f'--workdir={tmp_path / name}', env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    results.append((json.loads(r.stdout.strip().splitlines()[-1]), r.stderr))
  assert any(f.startswith('jit_window_step-') for f in os.listdir(cache))
  assert "cache hit for 'jit_window_step'" not in results[0][1]
  assert "cache hit for 'jit_window_step'" in results[1][1]
  assert results[1][0]['nll'] == results[0][0]['nll']

  # Corrupt entries (a truncated write, a disk error) are compiled again, not trusted.
  for f in os.listdir(cache):
    (tmp_path / 'cache' / f).write_bytes(b'not a compiled program')
  r = _cli(*args, f'--workdir={tmp_path / "corrupt"}', env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout.strip().splitlines()[-1])['nll'] == results[0][0]['nll']

  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  r = _cli(TINY, '--config.train.num_steps=2', '--config.train.sample_at_end=False',
           f'--compilation_cache={blocker}/cache', f'--workdir={tmp_path / "third"}')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Compilation cache off: cannot use' in r.stderr and str(blocker) in r.stderr


def test_compilation_cache_enable_off_and_default(monkeypatch, tmp_path):
  import jax

  from experiments import compilation_cache
  # The suite's own cache folder (tests/conftest.py), if any, is set through jax's option,
  # which enable() keeps whatever it is asked.
  suite_cache = jax.config.jax_compilation_cache_dir
  if suite_cache:
    assert compilation_cache.enable('none') == suite_cache
    assert compilation_cache.enable(str(tmp_path / 'other')) == suite_cache
  jax.config.update('jax_compilation_cache_dir', '')
  try:
    for off in ('', 'none', 'None', 'off'):
      assert compilation_cache.enable(off) is None
    assert not jax.config.jax_compilation_cache_dir
  finally:
    jax.config.update('jax_compilation_cache_dir', suite_cache)
  monkeypatch.delenv('DGM_COMPILATION_CACHE', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  assert compilation_cache.default_dir() == str(tmp_path / 'dgm' / 'jax_compilation')
  monkeypatch.setenv('DGM_COMPILATION_CACHE', '/somewhere')
  assert compilation_cache.default_dir() == '/somewhere'
