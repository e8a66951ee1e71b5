"""Multi-process training on one machine: the multi-host path, proven with processes joined
by `jax.distributed.initialize(coordinator_address='localhost:PORT', ...)` through the
trainer's own command line (--coordinator_address, --num_processes, --process_id), on CPU
with gloo collectives, one device per process.

- One train step on 2 and on 4 processes, each loading only its shard of the batch, equals
  the one-process step on the same global batch (to float rounding: the gradient sum
  adds in another order), and evaluation counts every test example exactly once.
- A checkpoint written by two processes restores in one and in two, for evaluation and
  for training on.
- A run killed in every process mid-run and restarted resumes bit-identically.

Marked `multiprocess` (`-m "not multiprocess"` deselects them); they skip where no
localhost port can be bound. The pure data-sharding properties behind them run
everywhere.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import experiments
from configs import pixelcnn_digits
from experiments import input_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'configs/pixelcnn_digits.py:tiny'
# 37 test examples: not a multiple of 2 or 4 processes, nor of the 8-example eval batch.
ARGS = ['--config.data.eval_split=test[:37]', '--config.data.eval_batch_size=8',
        '--config.train.log_every=2', '--config.train.checkpoint_every=2',
        '--config.train.eval_every=0', '--config.train.sample_at_end=False']
TIMEOUT = 300


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _can_bind() -> bool:
  try:
    _free_port()
    return True
  except OSError:
    return False


needs_ports = pytest.mark.skipif(not _can_bind(), reason='no localhost port can be bound')


def _env() -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}   # one device a process
  env.update(JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1', PYTHONPATH=REPO)
  return env


class Launch:
  """N processes of one run, their output in files under log_dir."""

  def __init__(self, n: int, workdir: str, args, log_dir: str, script=None):
    os.makedirs(log_dir, exist_ok=True)
    self.n, self.log_dir, self.procs, self.files = n, log_dir, [], []
    port = _free_port()
    for i in range(n):
      cmd = [sys.executable] + (script or ['-m', 'experiments.main']) + [
          f'--config={TINY}', f'--workdir={workdir}', *ARGS, *args]
      if n > 1:
        cmd += [f'--coordinator_address=localhost:{port}', f'--num_processes={n}',
                f'--process_id={i}']
      out = open(os.path.join(log_dir, f'out.{i}'), 'w')
      err = open(os.path.join(log_dir, f'err.{i}'), 'w')
      self.files += [out, err]
      self.procs.append(subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=err))

  def _read(self, name: str, i: int) -> str:
    with open(os.path.join(self.log_dir, f'{name}.{i}')) as f:
      return f.read()

  def logs(self, i: int) -> str:
    return self._read('err', i)

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    for p in self.procs:
      p.wait()
    for f in self.files:
      f.close()

  def finish(self) -> list[dict]:
    """Waits for every process; each must exit 0. Returns each one's closing JSON line."""
    deadline = time.time() + TIMEOUT
    try:
      for p in self.procs:
        p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f'timed out after {TIMEOUT} s:\n' + self.logs(0)[-3000:])
    for f in self.files:
      f.close()
    results = []
    for i, p in enumerate(self.procs):
      assert p.returncode == 0, f'process {i} exited {p.returncode}:\n{self.logs(i)[-3000:]}'
      lines = [line for line in self._read('out', i).splitlines() if line.startswith('{')]
      results.append(json.loads(lines[-1]))
    return results


def _run(n, workdir, log_dir, *args) -> list[dict]:
  return Launch(n, workdir, list(args), log_dir).finish()


def _leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _max_diff(a, b) -> float:
  return max(float(np.max(np.abs(x - y))) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _identical(a, b) -> bool:
  return all(x.dtype == y.dtype and np.array_equal(x, y)
             for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _metric_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in ('time', 'train/steps_per_s')} for r in rows]


# --------------------------------------------------------------------------- data sharding

def test_process_shards_of_each_train_batch_make_the_one_process_batch():
  c = pixelcnn_digits.get_config('tiny')
  one = input_pipeline.create_datasets(c.data, seed=0)
  for n in (2, 4):
    shards = [input_pipeline.create_datasets(c.data, seed=0, process_index=i, process_count=n)
              for i in range(n)]
    for _ in range(3):
      want = next(one.train_iter)['image']
      got = [next(s.train_iter)['image'] for s in shards]
      assert all(len(g) == len(want) // n for g in got)
      # Process i holds examples i, i + n, ... of the global batch.
      np.testing.assert_array_equal(np.stack(got, 1).reshape(want.shape), want)
    one = input_pipeline.create_datasets(c.data, seed=0)


def test_every_test_example_is_evaluated_by_exactly_one_process():
  c = pixelcnn_digits.get_config('tiny')
  c.data.eval_split, c.data.eval_batch_size, c.data.batch_size = 'test[:37]', 8, 24
  everything = np.concatenate([b['image'][b['example_mask']] for b in
                               input_pipeline.create_datasets(c.data, seed=0).eval_batches()])
  assert len(everything) == 37
  for n in (2, 3, 4):
    per_process = [[b for b in input_pipeline.create_datasets(
        c.data, seed=0, process_index=i, process_count=n).eval_batches()] for i in range(n)]
    # Every process runs the same number of equal batches (the collectives need it).
    assert len({len(batches) for batches in per_process}) == 1
    assert len({b['image'].shape for batches in per_process for b in batches}) == 1
    seen = np.concatenate([b['image'][b['example_mask']] for batches in per_process
                           for b in batches])
    assert len(seen) == 37
    # The same 37 examples, each once: compare as sorted byte strings.
    as_bytes = sorted(x.tobytes() for x in seen)
    assert as_bytes == sorted(x.tobytes() for x in everything)


# --------------------------------------------------------------------------- processes

@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory):
  """8 steps of pixelcnn_digits:tiny in two processes, checkpoints every 2 steps."""
  root = tmp_path_factory.mktemp('two_process')
  workdir = str(root / 'run')
  launch = Launch(2, workdir, ['--config.train.num_steps=8'], str(root / 'logs'))
  results = launch.finish()
  return {'workdir': workdir, 'results': results, 'logs': [launch.logs(i) for i in range(2)]}


@pytest.mark.multiprocess
@needs_ports
def test_one_step_on_two_and_four_processes_equals_the_one_process_step(tmp_path):
  runs = {}
  for n in (1, 2, 4):
    workdir = str(tmp_path / f'{n}')
    launch = Launch(n, workdir, ['--config.train.num_steps=1'], str(tmp_path / f'logs{n}'))
    results = launch.finish()
    if n > 1:
      for i in range(n):   # each process loads only its shard of the 32-example batch
        assert f'Process {i} of {n} loads {32 // n} of each 32-example batch' in launch.logs(i)
      assert all(r == results[0] for r in results)   # every process reports the same
    runs[n] = (results[0], experiments.load_run(workdir))
  ref, ref_run = runs[1]
  for n in (2, 4):
    result, run = runs[n]
    assert result['step'] == 1 and result['num_examples'] == 37, result
    np.testing.assert_allclose(result['nll'], ref['nll'], rtol=1e-6)
    # Measured: at most ~1e-8 (float rounding of the sum over the batch).
    assert _max_diff(run.raw_params, ref_run.raw_params) <= 1e-6
    assert _max_diff(run.params, ref_run.params) <= 1e-6


@pytest.mark.multiprocess
@needs_ports
def test_a_two_process_checkpoint_restores_in_one_and_in_two_processes(two_process_run,
                                                                        tmp_path):
  source, trained = two_process_run['workdir'], two_process_run['results'][0]
  assert trained['step'] == 8 and trained['num_examples'] == 37
  for n in (1, 2):
    (result, *_) = _run(n, source, str(tmp_path / f'eval{n}'), '--config.train.num_steps=8',
                        '--mode=eval')
    assert result['step'] == 8 and result['num_examples'] == 37
    np.testing.assert_allclose(result['nll'], trained['nll'], rtol=1e-6)
  resumed = {}
  for n in (1, 2):
    workdir = str(tmp_path / f'resumed{n}')
    shutil.copytree(source, workdir)
    launch = Launch(n, workdir, ['--config.train.num_steps=10'], str(tmp_path / f'train{n}'))
    (result, *_) = launch.finish()
    assert 'at step 8' in launch.logs(0) and result['step'] == 10
    resumed[n] = experiments.load_run(workdir)
  assert _max_diff(resumed[1].raw_params, resumed[2].raw_params) <= 1e-6


@pytest.mark.multiprocess
@needs_ports
def test_a_run_killed_in_every_process_resumes_bit_identically(two_process_run, tmp_path):
  workdir, markers = str(tmp_path / 'run'), str(tmp_path / 'markers')
  os.makedirs(markers)
  script = [os.path.join(REPO, 'tests', 'pause_at_checkpoint.py'), '6', markers]
  launch = Launch(2, workdir, ['--config.train.num_steps=8'], str(tmp_path / 'logs'),
                  script=script)
  deadline = time.time() + TIMEOUT
  while not all(os.path.exists(os.path.join(markers, f'paused.{i}')) for i in range(2)):
    dead = [i for i, p in enumerate(launch.procs) if p.poll() is not None]
    if dead or time.time() > deadline:
      launch.kill()
      log = launch.logs(dead[0] if dead else 0)[-3000:]
      pytest.fail(f'process {dead} ended before the pause:\n{log}')
    time.sleep(0.2)
  launch.kill()   # SIGKILL, after step 6 was computed and before its checkpoint
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']

  again = Launch(2, workdir, ['--config.train.num_steps=8'], str(tmp_path / 'logs_again'))
  results = again.finish()
  assert 'at step 4' in again.logs(0)
  reference = two_process_run['results'][0]
  assert results[0] == {**reference, 'workdir': workdir}   # the same evaluation, bit for bit
  a, b = experiments.load_run(workdir), experiments.load_run(two_process_run['workdir'])
  assert a.step == b.step == 8
  assert _identical(a.raw_params, b.raw_params) and _identical(a.params, b.params)
  assert _metric_rows(workdir) == _metric_rows(two_process_run['workdir'])
