"""Misuse, as a demanding new user commits it (issue 12's table): each mistake is one
message on stderr naming the problem and the fix, exit status 2, no traceback, and
nothing in the workdir is lost or overwritten."""
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

import configs.pixelcnn_digits as digits_config
import experiments
import experiments.errors
from experiments import input_pipeline, validation
from experiments import workdir as workdir_lib
from experiments.datasets import DataError
from experiments.models import ConfigError, build_model
from tests.conftest import REPO
from tests.test_cli import TINY, _cli, _env

IS_ROOT = hasattr(os, 'geteuid') and os.geteuid() == 0


def _snapshot(workdir) -> dict:
  """Every file of a workdir: relative path -> sha1 of its bytes."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha1(f.read()).hexdigest()
  return out


def _user_error(r, *needles):
  """Exit status 2, one 'error:' message (the last thing printed) holding each needle, and
  no traceback. Returns the message."""
  assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  assert 'Event loop is closed' not in r.stderr and 'cannot schedule' not in r.stderr
  lines = r.stderr.strip().splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith('error: ')]
  assert len(starts) == 1, r.stderr[-3000:]
  msg = '\n'.join(lines[starts[0]:])[len('error: '):]
  # The message is the last thing printed: no log line or warning after it.
  assert not any(re.match(r'[IWEF]\d{4} |\S+Warning:', line) for line in lines[starts[0]:])
  for n in needles:
    assert n in msg, (n, msg)
  return msg


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 10-step digits run (checkpoints at 5 and 10), copied afresh for each test."""
  workdir = str(tmp_path_factory.mktemp('base') / 'run')
  r = _cli(TINY, f'--workdir={workdir}', '--config.train.num_steps=10',
           '--config.train.log_every=1')
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


@pytest.fixture
def run_copy(trained, tmp_path):
  dest = str(tmp_path / 'run')
  shutil.copytree(trained, dest)
  return dest


# --------------------------------------------------------------------------- resume changes

@pytest.mark.parametrize('flag, change', [
    ('--config.optimizer.grad_clip_norm=0', 'config.optimizer.grad_clip_norm: 1.0 -> 0.0'),
    ('--config.optimizer.name=adamw', "config.optimizer.name: 'adam' -> 'adamw'"),
])
def test_optimizer_change_on_resume_is_named_not_called_corruption(run_copy, flag, change):
  before = _snapshot(run_copy)
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=15', flag)
  msg = _user_error(r, 'is sound', change, '--reset_optimizer', 'original optimizer settings')
  assert 'corrupt' not in msg and 'Delete' not in msg
  assert _snapshot(run_copy) == before


def test_reset_optimizer_resumes_the_parameters_with_a_fresh_optimizer(run_copy):
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=15',
           '--config.optimizer.name=adamw', '--reset_optimizer')
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout.strip().splitlines()[-1])['step'] == 15
  assert 'starts afresh' in r.stderr
  history = workdir_lib.read_history(run_copy)
  assert [e['start_step'] for e in history] == [0, 10]
  assert history[1]['changes']['optimizer.name'] == ['adam', 'adamw']
  run = experiments.load_run(run_copy)
  assert run.step == 15 and run.config.optimizer.name == 'adamw'
  assert experiments.load_run(run_copy, step=10).config.optimizer.name == 'adam'


def test_another_data_set_on_resume_refuses_and_lists_the_difference(run_copy):
  before = _snapshot(run_copy)
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=15',
           '--config.data.name=mnist')
  _user_error(r, "config.data.name: 'digits' -> 'mnist'", '--allow_config_change',
              'config.json')
  assert _snapshot(run_copy) == before


def test_new_learning_rate_on_resume_is_logged_and_recorded(run_copy):
  with open(os.path.join(run_copy, 'config.json'), 'rb') as f:
    config_json = f.read()
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=15',
           '--config.optimizer.learning_rate=3e-4')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'config.optimizer.learning_rate: 0.003 -> 0.0003' in r.stderr
  with open(os.path.join(run_copy, 'config.json'), 'rb') as f:
    assert f.read() == config_json    # written once, when the run started
  history = workdir_lib.read_history(run_copy)
  assert [e['start_step'] for e in history] == [0, 10]
  # load_run describes each checkpoint with the config that wrote it.
  assert experiments.load_run(run_copy).config.optimizer.learning_rate == 3e-4
  assert experiments.load_run(run_copy, step=10).config.optimizer.learning_rate == 3e-3


def test_a_start_that_fails_keeps_config_json(run_copy):
  with open(os.path.join(run_copy, 'config.json'), 'rb') as f:
    config_json = f.read()
  # Resumes (the learning rate may change), then the update overflows at step 11.
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=15',
           '--config.optimizer.learning_rate=1e38')
  _user_error(r, 'NaNLossError', 'step 11', 'The last good checkpoint (step 10)')
  with open(os.path.join(run_copy, 'config.json'), 'rb') as f:
    assert f.read() == config_json
  assert 'checkpoints/10' in ' '.join(_snapshot(run_copy))


# --------------------------------------------------------------------------- one trainer

def test_second_trainer_exits_at_once_naming_the_first_and_a_stale_lock_is_taken(tmp_path):
  workdir = str(tmp_path / 'run')
  first = subprocess.Popen([sys.executable, '-m', 'experiments.main', TINY,
                            f'--workdir={workdir}', '--config.train.num_steps=100000',
                            '--config.train.checkpoint_every=0'],
                           cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    lock = os.path.join(workdir, 'run.lock')
    for _ in range(600):
      if os.path.exists(lock):
        break
      time.sleep(0.1)
    t = time.time()
    r = _cli(TINY, f'--workdir={workdir}', '--config.train.num_steps=100000')
    _user_error(r, 'Another trainer is using this workdir', f'pid {first.pid}',
                'Wait for it to finish')
    assert time.time() - t < 60
    assert first.poll() is None   # the first one is untouched
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # Killed: its lock stays, naming a dead pid, and the next trainer takes it over.
  assert os.path.exists(lock)
  r = _cli(TINY, f'--workdir={workdir}', '--config.train.num_steps=5',
           '--config.train.checkpoint_every=0')
  assert r.returncode == 0, r.stderr[-3000:]
  assert not os.path.exists(lock)   # released on exit


# --------------------------------------------------------------------------- bad values

@pytest.mark.parametrize('args, needles', [
    (['--config.optimizer.lr=1'],
     ['config.optimizer.lr', 'Did you mean config.optimizer.learning_rate']),
    (['--config.train.num_steps=-1'], ['config.train.num_steps=-1', 'must be >= 1']),
    (['--config.optimizer.learning_rate=-1'],
     ['config.optimizer.learning_rate=-1.0', '0.0 < value']),
    (['--config.data.eval_batch_size=0'], ['config.data.eval_batch_size=0', 'must be >= 1']),
    (['--config.train.log_every=-2'], ['config.train.log_every=-2', '0: only at the end']),
    (["--config.data.eval_split=test[:0]"], ["config.data.eval_split='test[:0]'",
                                              'selects no examples of the 297']),
    (['--config.train.num_steps=abc'], ['num_steps', 'abc']),
])
def test_bad_value_is_one_message_and_writes_nothing(tmp_path, args, needles):
  workdir = tmp_path / 'run'
  r = _cli(TINY, f'--workdir={workdir}', *args)
  _user_error(r, *needles)
  assert not workdir.exists()


def test_missing_config_file_is_named(tmp_path):
  r = _cli('--config=configs/pixelcnn_digit.py', f'--workdir={tmp_path / "run"}')
  _user_error(r, 'configs/pixelcnn_digit.py does not exist',
              'Did you mean configs/pixelcnn_digits.py')


def test_zero_every_means_only_at_the_end(tmp_path):
  workdir = str(tmp_path / 'run')
  r = _cli(TINY, f'--workdir={workdir}', '--config.train.num_steps=7',
           '--config.train.checkpoint_every=0', '--config.train.log_every=0',
           '--config.train.eval_every=0')
  assert r.returncode == 0, r.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['7']
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert [(r['step'], 'train/loss' in r) for r in rows] == [(7, True), (7, False)]


def test_empty_text_file_is_named(tmp_path):
  folder = tmp_path / 'data' / 'tiny_shakespeare'
  folder.mkdir(parents=True)
  (folder / 'input.txt').write_text('')
  r = _cli('--config=configs/bytenet_shakespeare.py:tiny', f'--workdir={tmp_path / "run"}',
           env=_env(DGM_DATA_DIR=str(tmp_path / 'data')))
  _user_error(r, 'input.txt', 'empty')
  assert not (tmp_path / 'run').exists()


def test_workdir_that_is_a_file_or_under_one(tmp_path):
  path = tmp_path / 'file'
  path.write_text('mine')
  _user_error(_cli(TINY, f'--workdir={path}'), 'is a file, not a directory')
  _user_error(_cli(TINY, f'--workdir={path / "sub"}'), 'not a directory', str(path))
  assert path.read_text() == 'mine'


def _mount_tmpfs(path, options):
  path.mkdir(parents=True, exist_ok=True)
  r = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)],
                     capture_output=True)
  if r.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {r.stderr.decode()[:200]}')


@pytest.mark.skipif(not IS_ROOT, reason='mounting a read-only or full file system needs root')
def test_read_only_workdir(tmp_path):
  mnt = tmp_path / 'ro'
  _mount_tmpfs(mnt, 'size=1m,ro')
  try:
    _user_error(_cli(TINY, f'--workdir={mnt / "run"}'), str(mnt / 'run'),
                'Read-only file system', 'Choose a writable --workdir')
  finally:
    subprocess.run(['umount', str(mnt)])


@pytest.mark.skipif(not IS_ROOT, reason='mounting a small file system needs root')
def test_full_disk_names_the_file_and_keeps_the_last_checkpoint(tmp_path):
  mnt = tmp_path / 'small'
  _mount_tmpfs(mnt, 'size=400k')
  workdir = mnt / 'run'
  try:
    r = _cli(TINY, f'--workdir={workdir}', '--config.train.num_steps=40')
    msg = _user_error(r, 'No space left on the device writing', str(workdir),
                      'resumes from its last complete checkpoint')
    saved = shutil.copytree(workdir, tmp_path / 'copy')
  finally:
    subprocess.run(['umount', str(mnt)])
  last = int(msg.split('The last complete checkpoint is step ')[1].rstrip('.'))
  assert last >= 5
  # On a disk with room the run resumes from that checkpoint and finishes.
  r = _cli(TINY, f'--workdir={saved}', '--config.train.num_steps=40')
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'at step {last}' in r.stderr


# --------------------------------------------------------------------------- checkpoints

def _corrupt_tensors(step_dir):
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    if os.path.basename(root) == 'd':
      for name in files:
        with open(os.path.join(root, name), 'wb') as f:
          f.write(os.urandom(100))


def test_corrupt_latest_checkpoint_is_set_aside_and_the_one_before_resumes(run_copy):
  _corrupt_tensors(os.path.join(run_copy, 'checkpoints', '10'))
  corrupt = _snapshot(os.path.join(run_copy, 'checkpoints', '10'))
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=12')
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'Event loop is closed' not in r.stderr and 'Traceback' not in r.stderr
  assert 'checkpoints/10' in r.stderr and 'cannot be read' in r.stderr
  assert 'Resumed from' in r.stderr and 'at step 5' in r.stderr
  aside = os.path.join(run_copy, 'corrupt_checkpoints', '10')
  assert _snapshot(aside) == corrupt   # kept, byte for byte
  assert sorted(os.listdir(os.path.join(run_copy, 'checkpoints'))) == ['10', '12', '5']


def test_eval_skips_a_corrupt_latest_checkpoint_and_writes_nothing(run_copy):
  _corrupt_tensors(os.path.join(run_copy, 'checkpoints', '10'))
  before = _snapshot(run_copy)
  r = _cli(TINY, f'--workdir={run_copy}', '--mode=eval')
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout.strip().splitlines()[-1])['step'] == 5
  assert 'checkpoints/10' in r.stderr and 'left in place' in r.stderr
  assert _snapshot(run_copy) == before


@pytest.mark.parametrize('mode', ['eval', 'sample'])
def test_eval_and_sample_on_an_empty_workdir_say_train_first(tmp_path, mode):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  _user_error(_cli(TINY, f'--workdir={workdir}', f'--mode={mode}'), 'No checkpoint',
              'train first')
  assert os.listdir(workdir) == []
  _user_error(_cli(TINY, f'--workdir={tmp_path / "none"}', f'--mode={mode}'),
              'does not exist')
  assert not (tmp_path / 'none').exists()


def test_eval_of_a_corrupt_only_checkpoint_is_one_message(trained, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  for step in ('5', '10'):
    _corrupt_tensors(os.path.join(workdir, 'checkpoints', step))
  before = _snapshot(workdir)
  r = _cli(TINY, f'--workdir={workdir}', '--mode=eval')
  _user_error(r, 'No checkpoint in this workdir can be restored', 'checkpoints/10',
              'checkpoints/5', 'Nothing was moved')
  assert _snapshot(workdir) == before


# --------------------------------------------------------------------------- metrics

def _tensorboard_purges(directory) -> list[int]:
  """The purge steps of a tensorboardX event directory (SessionLog START events)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  steps = []
  for name in sorted(os.listdir(directory)):
    with open(os.path.join(directory, name), 'rb') as f:
      data = f.read()
    i = 0
    while i + 12 <= len(data):
      (n,) = struct.unpack('<Q', data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
      if event.HasField('session_log') and event.session_log.status == 1:
        steps.append(event.step)
      i += 12 + n + 4
  return steps


def test_resumed_run_keeps_each_step_once_in_metrics_and_purges_tensorboard(run_copy):
  # As if the run had died after step 10's metrics, before checkpoint 10 was written.
  shutil.rmtree(os.path.join(run_copy, 'checkpoints', '10'))
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=10',
           '--config.train.log_every=1')
  assert r.returncode == 0, r.stderr[-3000:]
  with open(os.path.join(run_copy, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  train_steps = [r['step'] for r in rows if 'train/loss' in r]
  assert train_steps == list(range(1, 11))
  assert [r['step'] for r in rows if 'eval/nll' in r] == [10]
  assert 6 in _tensorboard_purges(os.path.join(run_copy, 'tensorboard'))


# --------------------------------------------------------------------------- model vs data

@pytest.mark.parametrize('config, data, needles', [
    ('configs/vae_2d_mnist.py', 'mnist',
     ["'bernoulli' decoder", "config.data.name='mnist' has 256 levels", 'data.binarize=True']),
    ('configs/vae_2d_mnist.py', 'fashion_mnist', ['fashion_mnist', 'data.binarize=True']),
    ('configs/pixelcnn_mnist.py:tiny', 'mnist',
     ['categorical head over 2 levels', 'config.model.num_levels=256']),
])
def test_binary_model_on_grey_data_is_refused_before_training(tmp_path, config, data, needles):
  r = _cli(f'--config={config}', f'--workdir={tmp_path / "run"}', f'--config.data.name={data}')
  _user_error(r, 'does not fit the data', *needles)
  assert not (tmp_path / 'run').exists()


def _expects(config_file, arg=None, **data_fields):
  import importlib  # pylint: disable=g-import-not-at-top
  c = importlib.import_module(f'configs.{config_file}').get_config(arg)
  c.data.update(data_fields)
  model = build_model(c.model_name, c.model.to_dict())
  validation.check_model_data(c, model, input_pipeline.data_info(c.data))


def test_model_data_checks_name_both_sides():
  with pytest.raises(ConfigError, match=r"3-channel images.*config.model.num_channels=3.*"
                                        r"have 1 channel"):
    _expects('gated_pixelcnn_cifar10', name='mnist')
  with pytest.raises(ConfigError, match="models image data, but config.data.name="
                                        "'tiny_shakespeare' is text data"):
    _expects('pixelcnn_digits', name='tiny_shakespeare')
  with pytest.raises(ConfigError, match=r'image_shape=\(32, 32, 3\).*\(28, 28, 1\)'):
    _expects('realnvp_cifar10', name='mnist')
  with pytest.raises(ConfigError, match='flow on 8-bit images.*2 levels'):
    _expects('realnvp_mnist', name='binarized_mnist')
  with pytest.raises(ConfigError, match="models audio data.*'digits' is image"):
    _expects('wavenet_spoken_digit', name='digits')
  # What fits passes: binarize makes any grey data set binary for the binary models.
  _expects('vae_2d_mnist', name='fashion_mnist', binarize=True)
  _expects('pixelcnn_mnist', name='mnist', binarize=True)
  for name in ('pixelcnn_digits', 'gated_pixelcnn_mnist', 'realnvp_mnist', 'glow_mnist',
               'maf_mnist', 'nice_mnist', 'iwae_binarized_mnist', 'm2_mnist',
               'pixelvae_binarized_mnist', 'wavenet_spoken_digit', 'bytenet_shakespeare',
               'gated_pixelcnn_cifar10', 'realnvp_cifar10', 'glow_cifar10'):
    _expects(name)


def test_binarize_turns_grey_images_into_binary_ones(data_dir):
  c = digits_config.get_config('tiny')
  c.data.update(name='mnist', binarize=True, local_dir=data_dir, eval_split='test[:64]',
                train_split='train[:256]')
  data = input_pipeline.create_datasets(c.data, seed=0)
  assert data.info.num_levels == 2
  train = next(data.train_iter)['image']
  test = next(iter(data.eval_batches()))['image']
  assert set(train.ravel().tolist()) == {0, 1} and set(test.ravel().tolist()) == {0, 1}
  with pytest.raises(DataError, match='grey'):
    c.data.update(name='tiny_shakespeare')
    input_pipeline.data_info(c.data)


# --------------------------------------------------------------------------- in-process

def test_validation_reports_every_problem_at_once():
  c = digits_config.get_config('tiny')
  c.train.num_steps, c.optimizer.learning_rate, c.data.batch_size = 0, float('nan'), -4
  c.train.checkpoint_every, c.sample.temperature = -1, -1.0
  with pytest.raises(ConfigError) as e:
    validation.validate_config(c)
  msg = str(e.value)
  assert msg.startswith('The config has 5 problems:')
  for needle in ('train.num_steps=0', 'learning_rate=nan', 'batch_size=-4',
                 'checkpoint_every=-1', 'temperature=-1.0'):
    assert needle in msg
  validation.validate_config(digits_config.get_config('tiny'))   # the preset is sound


def test_bad_read_ahead_is_refused_with_the_fix():
  c = digits_config.get_config('tiny')
  c.data.prefetch_threads, c.data.prefetch_batches = 4, 2
  with pytest.raises(ConfigError, match=r'prefetch_batches=2.*at least '
                     r'data.prefetch_threads=4.*prefetch_threads=0 for no read-ahead'):
    validation.validate_config(c)
  c.data.prefetch_threads = -1
  with pytest.raises(ConfigError, match='prefetch_threads=-1'):
    validation.validate_config(c)
  c.data.prefetch_threads, c.data.prefetch_batches = 0, 0
  validation.validate_config(c)


def test_suggestions_for_common_typos():
  keys = validation.all_keys(digits_config.get_config())
  for typo, want in [('optimizer.lr', 'optimizer.learning_rate'),
                     ('train.steps', 'train.num_steps'),
                     ('data.batchsize', 'data.batch_size'),
                     ('optimizer.clip', 'optimizer.grad_clip_norm'),
                     ('modle.features', 'model.features')]:
    assert f'config.{want}' in validation.suggest(typo, keys), typo


def test_os_errors_name_the_path_and_the_fix():
  e = OSError(errno.ENOSPC, 'No space left on device', '/x/checkpoints/5')
  assert '/x/checkpoints/5' in workdir_lib.describe_os_error(e)
  assert 'resumes from its last complete checkpoint' in workdir_lib.describe_os_error(e)
  e = OSError(errno.EACCES, 'Permission denied', '/x')
  assert 'Choose a writable --workdir' in workdir_lib.describe_os_error(e)


# --------------------------------------------------------------------------- the run record

def _history_workdir(tmp_path, entries, checkpoints=()):
  workdir = tmp_path / 'w'
  (workdir / 'checkpoints').mkdir(parents=True)
  for step in checkpoints:
    (workdir / 'checkpoints' / str(step)).mkdir()
  with open(workdir / 'config.json', 'w') as f:
    json.dump(entries[0]['config'], f)
  with open(workdir / 'config_history.jsonl', 'w') as f:
    for e in entries:
      f.write(json.dumps(e) + '\n')
  return str(workdir)


def _cfg(**updates):
  c = digits_config.get_config('tiny')
  for key, value in updates.items():
    section, field = key.split('__')
    c[section][field] = value
  return c


def test_resume_compares_with_the_config_of_the_latest_checkpoint(tmp_path):
  a = workdir_lib.config_json(_cfg())
  b = workdir_lib.config_json(_cfg(data__name='mnist'))
  # Checkpoint 10 was written by A; a deliberate start with B at step 10 wrote none.
  w = _history_workdir(tmp_path, [{'start_step': 0, 'config': a, 'changes': {}},
                                  {'start_step': 10, 'config': b, 'changes': {}}], [5, 10])
  assert workdir_lib.check_resume(w, _cfg(), allow_change=False) == ({}, {})
  with pytest.raises(experiments.errors.WorkdirError, match='checkpoint 10 was written'):
    workdir_lib.check_resume(w, _cfg(data__name='mnist'), allow_change=False)
  # No checkpoint at all: nothing to contradict.
  w2 = _history_workdir(tmp_path / 'x', [{'start_step': 0, 'config': a, 'changes': {}}])
  assert workdir_lib.check_resume(w2, _cfg(model__features=8), allow_change=False) == ({}, {})


def test_a_workdir_from_before_a_new_config_field_still_resumes(tmp_path):
  old = workdir_lib.config_json(_cfg())
  del old['data']['binarize']            # a field added to base_config since
  w = _history_workdir(tmp_path, [{'start_step': 0, 'config': old, 'changes': {}}], [10])
  assert workdir_lib.check_resume(w, _cfg(), allow_change=False) == ({}, {})


def test_evaluation_only_model_fields_may_change():
  assert workdir_lib.is_mutable('model.eval_num_samples')
  assert workdir_lib.is_mutable('model.eval_chunk_size')
  assert not workdir_lib.is_mutable('model.num_samples')     # the training objective's k


def test_eval_refusal_offers_no_fine_tuning(tmp_path):
  a = workdir_lib.config_json(_cfg())
  w = _history_workdir(tmp_path, [{'start_step': 0, 'config': a, 'changes': {}}], [10])
  with pytest.raises(experiments.errors.WorkdirError) as e:
    workdir_lib.check_resume(w, _cfg(model__features=8), allow_change=False, mode='evaluate')
  assert 'fine-tuning' not in str(e.value) and 'must be the run' in str(e.value)


def test_history_records_a_resume_from_an_earlier_step(tmp_path):
  a = workdir_lib.config_json(_cfg())
  b_cfg = _cfg(optimizer__learning_rate=3e-4)
  b = workdir_lib.config_json(b_cfg)
  w = _history_workdir(tmp_path, [{'start_step': 0, 'config': a, 'changes': {}},
                                  {'start_step': 10, 'config': b, 'changes': {}}], [5])
  # Checkpoint 10 was lost; B resumes from 5: the history must say B wrote what follows.
  workdir_lib.record_start(w, b_cfg, 5, {})
  entries = workdir_lib.read_history(w)
  assert [e['start_step'] for e in entries] == [0, 10, 5]
  assert workdir_lib.config_for_step(entries, 8)['optimizer']['learning_rate'] == 3e-4


def test_a_history_line_cut_by_a_crash_loses_only_itself(tmp_path):
  a = workdir_lib.config_json(_cfg())
  w = _history_workdir(tmp_path, [{'start_step': 0, 'config': a, 'changes': {}}], [5])
  with open(os.path.join(w, 'config_history.jsonl'), 'a') as f:
    f.write('{"start_step": 5, "conf')            # no newline: the crash
  workdir_lib.record_start(w, _cfg(optimizer__learning_rate=1e-4), 5,
                           {'optimizer.learning_rate': (3e-3, 1e-4)})
  assert [e['start_step'] for e in workdir_lib.read_history(w)] == [0, 5]


def test_binarize_uses_the_data_sets_own_levels():
  c = digits_config.get_config('tiny')
  c.data.update(binarize=True, eval_split='test')
  data = input_pipeline.create_datasets(c.data, seed=0)
  grey = input_pipeline.datasets.load_split('digits', 'test')['image'] / 16.0
  test = next(iter(data.eval_batches()))
  mask = test['example_mask'].astype(bool)
  assert abs(test['image'][mask].mean() - grey.mean()) < 0.02, (test['image'].mean(), grey.mean())


def test_bad_preset_is_one_line_without_the_config_files_traceback(tmp_path):
  r = _cli('--config=configs/pixelcnn_digits.py:nosuch', f'--workdir={tmp_path / "run"}')
  _user_error(r, "Unknown preset 'nosuch'", 'presets: tiny')


def test_reset_optimizer_acts_once_and_sample_mode_overwrites_nothing(run_copy):
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=12',
           '--config.optimizer.name=adamw', '--reset_optimizer')
  assert r.returncode == 0 and 'starts afresh' in r.stderr, r.stderr[-3000:]
  # Left in the launch script: the next resume restores the (adamw) optimizer state.
  r = _cli(TINY, f'--workdir={run_copy}', '--config.train.num_steps=14',
           '--config.optimizer.name=adamw', '--reset_optimizer')
  assert r.returncode == 0 and 'restored, not reset' in r.stderr, r.stderr[-3000:]
  entries = workdir_lib.read_history(run_copy)
  assert [e.get('reset_optimizer', False) for e in entries] == [False, True, False]
  picture = os.path.join(run_copy, 'samples', 'step_14.png')
  with open(picture, 'rb') as f:
    trained_picture = f.read()
  r = _cli(TINY, f'--workdir={run_copy}', '--mode=sample', '--config.optimizer.name=adamw',
           '--config.sample.temperature=0.5')
  assert r.returncode == 0, r.stderr[-3000:]
  written = r.stdout.strip().split('samples: ')[-1]
  assert os.path.exists(written) and 'sample_mode_' in written
  with open(picture, 'rb') as f:
    assert f.read() == trained_picture


# --------------------------------------------------------------------------- sequences

S2S = '--config=configs/seq2seq_reverse.py:tiny'


@pytest.mark.parametrize('args, needles', [
    ([S2S, '--config.model.ss_schedule=sigmoid'],
     ["config.model.ss_schedule='sigmoid'", "'inverse_sigmoid'"]),
    (['--config=configs/seq2seq_reverse.py:tiny,ss=sigmoid'],
     ["Unknown scheduled-sampling schedule 'sigmoid'", 'inverse_sigmoid']),
    # A schedule named without its decay would silently stay teacher forcing.
    ([S2S, '--config.model.ss_schedule=linear'],
     ['config.model.ss_k=1.0', 'ss_c=0.0', 'the preset ss=linear']),
    ([S2S, '--config.model.ss_schedule=exponential'], ['config.model.ss_k=1.0', '0 < value < 1']),
])
def test_unknown_scheduled_sampling_schedule_is_named(tmp_path, args, needles):
  workdir = tmp_path / 'run'
  _user_error(_cli(*args, f'--workdir={workdir}'), *needles)
  assert not workdir.exists()


@pytest.mark.parametrize('args, needles', [
    (['--config.sample.prompt=ROMEO~'],
     ["config.sample.prompt='ROMEO~'", "outside the vocabulary", "['~']"]),
    (['--config.data.seq_len=600000'],
     ['config.data.seq_len=600000', 'too few', 'Lower seq_len']),
    (['--config.data.seq_len=40000', '--config.data.batch_size=32',
      '--config.model.carry_batch=32'],
     ['config.data.batch_size=32', 'config.data.seq_len=40000', 'too few for one window']),
])
def test_bad_text_input_is_refused_before_training(tmp_path, args, needles):
  from tests.conftest import shared_data_dir  # pylint: disable=g-import-not-at-top
  root = shared_data_dir()
  if root is None:
    pytest.skip('no local data directory')
  workdir = tmp_path / 'run'
  r = _cli('--config=configs/char_rnn_shakespeare.py:tiny', f'--workdir={workdir}', *args,
           env=_env(DGM_DATA_DIR=root))
  _user_error(r, *needles)
  assert not (workdir / 'checkpoints').exists()


# ---------------------------------------------------------------------- discrete latents

SBN_TINY = '--config=configs/sbn_binarized_mnist.py:tiny'
GUMBEL_TINY = '--config=configs/gumbel_vae_binarized_mnist.py:tiny'


@pytest.mark.parametrize('args, needles', [
    ([SBN_TINY, '--config.model.latent_dims=(0,)'], ['config.model.latent_dims=(0,)', '>= 1']),
    ([SBN_TINY, '--config.model.estimator=nvill'],
     ["estimator='nvill'", 'wake_sleep, rws, reinforce, nvil, vimco']),
    (['--config=configs/sbn_binarized_mnist.py:vimco,tiny', '--config.model.num_samples=1'],
     ['num_samples >= 2', '--config.model.num_samples=5']),
    ([GUMBEL_TINY, '--config.model.temperature=0'], ['temperature=0.0 must be > 0']),
    ([GUMBEL_TINY, '--config.model.num_latents=0'], ['num_latents=0 must be >= 1']),
    ([GUMBEL_TINY, '--config.model.estimator=reinforce'],
     ["estimator='reinforce' is not a relaxed estimator", 'gumbel, straight_through']),
])
def test_bad_discrete_latent_settings_are_named(tmp_path, data_dir, args, needles):
  workdir = tmp_path / 'run'
  _user_error(_cli(*args, f'--workdir={workdir}', env=_env(DGM_DATA_DIR=data_dir)), *needles)
  assert not workdir.exists()
