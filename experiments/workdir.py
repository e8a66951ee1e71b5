"""What a workdir knows about its run: the lock, the config it was started with and the
history of changes, and metrics that hold each step once.

- `<workdir>/run.lock`: flock'ed by the trainer using the workdir, naming its host, pid,
  start time and command. A second trainer exits at once naming it; a trainer that died
  released its flock with its life, so its leftover file is simply taken over.
- `<workdir>/config.json`: the config the run was started with, written once and kept.
- `<workdir>/config_history.jsonl`: one line per start of training, append-only:
  {'start_step', 'time', 'changes', 'config'}. Checkpoint t was written by the last entry
  whose start_step < t (the first entry for t = 0), which is what `load_run` reports.

A resume compares the new config with the config that wrote the latest checkpoint. Fields that may
change mid-run (MUTABLE: learning rate and schedule, steps, logging, evaluation and sample settings,
where the data lives) are allowed, logged and recorded. Fields that change what a checkpoint means
(the model, the data, the objective, the seed, the optimizer's kind) refuse to resume, listing the
differences, unless the start is a deliberate one (`--allow_config_change`: a fine-tuning start).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from typing import Any

import ml_collections

from experiments.errors import WorkdirError

LOCK_NAME = 'run.lock'
CONFIG_NAME = 'config.json'
HISTORY_NAME = 'config_history.jsonl'

# Dotted keys (or prefixes ending in '.') a resume may change. Everything else is frozen.
# Every optimizer field may change: one that changes the optimizer state's structure
# (adam <-> adamw, clipping on <-> off) is caught when the checkpoint is restored, with the
# choice of the original settings or --reset_optimizer.
MUTABLE = ('train.', 'sample.', 'optimizer.', 'distributed', 'data.eval_split',
           'data.eval_batch_size', 'data.local_dir', 'data.source',
           'data.prefetch_threads', 'data.prefetch_batches',   # read-ahead, not the order
           # model fields that only say how to evaluate (importance samples, chunking)
           'model.eval_num_samples', 'model.eval_chunk_size')


def is_mutable(key: str) -> bool:
  return any(key == m or (m.endswith('.') and key.startswith(m)) for m in MUTABLE)


# --------------------------------------------------------------------------- OS errors

def describe_os_error(e: OSError, what: str = '') -> str:
  """One sentence naming the path and what to do, for an OSError on the workdir. `what`
  says where it happened: ' (--workdir=runs/x)', ' writing the run config'."""
  path = e.filename or '?'
  if e.errno == errno.ENOSPC:
    return (f'No space left on the device writing {path}{what}. Free space (or choose a '
            '--workdir on a larger disk) and rerun: the run resumes from its last complete '
            'checkpoint.')
  if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return (f'Cannot write {path}{what}: {e.strerror}. Choose a writable --workdir, or fix '
            'the permissions.')
  if e.errno in (errno.ENOTDIR, errno.EEXIST):
    return (f'Cannot create {path}{what}: a part of the path is a file, not a directory '
            f'({e.strerror}). Choose another --workdir.')
  if e.errno == errno.EDQUOT:
    return f'Disk quota exceeded writing {path}{what}. Free space and rerun.'
  return f'{e.strerror or e}: {path}{what}.'


def prepare(workdir: str) -> bool:
  """Creates `workdir` (and parents) if needed and checks it is a writable directory.
  Returns whether it was created (see `remove_if_empty`)."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} is a file, not a directory. Choose another '
                       '--workdir.')
  created = not os.path.exists(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test.{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(describe_os_error(e, f' (--workdir={workdir})')) from e
  return created


def remove_if_empty(workdir: str) -> None:
  """After a start that failed before writing anything: the workdir it created goes."""
  with contextlib.suppress(OSError):
    os.rmdir(workdir)


# --------------------------------------------------------------------------- the lock

class RunLock:
  """`<workdir>/run.lock`: an exclusive `flock` on the file, which the kernel releases when
  the trainer exits or dies (so a killed trainer leaves no live lock), holding who holds
  it. Removed on a normal exit."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  @staticmethod
  def _describe(info: dict) -> str:
    started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.get('time', 0)))
    return (f'pid {info.get("pid")} on host {info.get("host")!r}, started {started}: '
            f'{info.get("command", "?")}')

  def acquire(self) -> None:
    import fcntl  # pylint: disable=g-import-not-at-top
    for _ in range(10):
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as e:
        raise WorkdirError(describe_os_error(e, ' (the run lock)')) from e
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        try:
          with open(self.path) as f:
            other = json.load(f)
        except (OSError, ValueError):
          other = {}
        os.close(fd)
        who = self._describe(other) if other else 'a process that has not said who it is yet'
        raise WorkdirError(
            f'Another trainer is using this workdir ({self.path}): {who}. Wait for it to '
            'finish, or use another --workdir.') from None
      # The file may have been removed (by a trainer that just finished) between open and
      # flock: then this lock guards nothing; try again on the new file.
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if not same:
        os.close(fd)
        continue
      info = {'host': socket.gethostname(), 'pid': os.getpid(), 'time': time.time(),
              'command': ' '.join(sys.argv)}
      os.ftruncate(fd, 0)
      os.write(fd, json.dumps(info).encode())
      self._fd = fd
      return
    raise WorkdirError(f'Could not take the lock {self.path}; other trainers keep taking it. '
                       'Use another --workdir.')

  def release(self) -> None:
    if self._fd is None:
      return
    with contextlib.suppress(OSError):
      os.remove(self.path)       # while still holding it: nobody can hold the old file
    with contextlib.suppress(OSError):
      os.close(self._fd)
    self._fd = None


# --------------------------------------------------------------------------- config record

def flatten(config: Any, prefix: str = '') -> dict[str, Any]:
  """{'optimizer.learning_rate': 0.001, ...} from a ConfigDict or a JSON-loaded dict."""
  if isinstance(config, ml_collections.ConfigDict):
    config = json.loads(config.to_json_best_effort())
  out = {}
  for k, v in config.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = list(v) if isinstance(v, tuple) else v
  return out


def config_json(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def read_history(workdir: str) -> list[dict]:
  """The run's config history; a workdir from before the history has config.json only."""
  path = os.path.join(workdir, HISTORY_NAME)
  entries = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        line = line.strip()
        if line:
          try:
            entries.append(json.loads(line))
          except ValueError:
            continue   # a line cut by a crash mid-write
  if not entries:
    config_path = os.path.join(workdir, CONFIG_NAME)
    if os.path.exists(config_path):
      with open(config_path) as f:
        entries = [{'start_step': 0, 'time': os.path.getmtime(config_path), 'changes': {},
                    'config': json.load(f)}]
  return entries


def config_for_step(entries: list[dict], step: int) -> dict | None:
  """The config that wrote checkpoint `step`: the last entry started before it (the
  first entry for step 0)."""
  chosen = entries[0] if entries else None
  for e in entries:
    if e['start_step'] < step:
      chosen = e
  return chosen['config'] if chosen else None


def diff(old: dict, new: dict) -> dict[str, tuple]:
  """{key: (old, new)} for the keys both configs have and that differ. A key only one side
  has is a field added to (or dropped from) the code since the run started, not a change
  the user made: an old workdir stays resumable."""
  a, b = flatten(old), flatten(new)
  return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if a[k] != b[k]}


def format_changes(changes: dict[str, tuple]) -> str:
  return '\n'.join(f'  config.{k}: {a!r} -> {b!r}' for k, (a, b) in changes.items())


def latest_checkpoint_step(workdir: str) -> int | None:
  """The newest step directory in <workdir>/checkpoints (finished saves only)."""
  directory = os.path.join(workdir, 'checkpoints')
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(
      directory) else []
  return max(steps) if steps else None


def check_resume(workdir: str, config, *, allow_change: bool,
                 mode: str = 'train') -> tuple[dict, dict]:
  """Compares `config` with the config that wrote the workdir's latest checkpoint. Returns
  (all changes, the frozen ones allowed by `allow_change`); raises WorkdirError for frozen
  changes. A workdir without checkpoints has nothing to contradict: no changes."""
  entries = read_history(workdir)
  step = latest_checkpoint_step(workdir)
  if not entries or step is None:
    return {}, {}
  changes = diff(config_for_step(entries, step), config_json(config))
  frozen = {k: v for k, v in changes.items() if not is_mutable(k)}
  if frozen and not allow_change:
    what = ('cannot change on resume' if mode == 'train' else
            f'must be the run\'s own to {mode} its checkpoints')
    fix = ('use a new --workdir, or pass --allow_config_change to start from its checkpoint '
           'with the new config deliberately (a fine-tuning start).' if mode == 'train' else
           f'or pass --allow_config_change to {mode} with the new config deliberately.')
    raise WorkdirError(
        f'{workdir} holds a run whose checkpoint {step} was written with another config; '
        f'these fields change what its checkpoints mean and {what}:\n'
        f'{format_changes(frozen)}\nRerun with the run\'s own values (its config is '
        f'{os.path.join(workdir, CONFIG_NAME)}), {fix}')
  return changes, frozen


def append_json_line(path: str, line: str) -> None:
  """Appends one JSON line; a line a crash cut short is closed first, so it alone is lost."""
  needs_newline = False
  if os.path.exists(path) and os.path.getsize(path):
    with open(path, 'rb') as f:
      f.seek(-1, os.SEEK_END)
      needs_newline = f.read(1) != b'\n'
  with open(path, 'a') as f:
    f.write(('\n' if needs_newline else '') + line + '\n')


def record_start(workdir: str, config, start_step: int, changes: dict, *,
                 fresh: bool = False, reset_optimizer: bool = False) -> None:
  """Appends this start to the history, and writes config.json if the run has none or,
  `fresh`, if it has no checkpoint (an earlier start that wrote none stays in the history)."""
  config_path = os.path.join(workdir, CONFIG_NAME)
  history_path = os.path.join(workdir, HISTORY_NAME)
  cfg = config_json(config)
  try:
    if not os.path.exists(history_path) and os.path.exists(config_path):
      # A workdir from before the history: its config.json becomes the first entry.
      for e in read_history(workdir):
        append_json_line(history_path, json.dumps(e, sort_keys=True))
    if fresh or not os.path.exists(config_path):
      tmp = config_path + '.tmp'
      with open(tmp, 'w') as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
      os.replace(tmp, config_path)
    entries = read_history(workdir) if os.path.exists(history_path) else []
    if (entries and not changes and not fresh and not reset_optimizer
        and entries[-1]['config'] == cfg and start_step >= entries[-1]['start_step']):
      return   # an unchanged resume adds nothing
    entry = {'start_step': int(start_step), 'time': time.time(),
             'changes': {k: list(v) for k, v in changes.items()}, 'config': cfg}
    if reset_optimizer:
      entry['reset_optimizer'] = True
    append_json_line(history_path, json.dumps(entry, sort_keys=True))
  except OSError as e:
    raise WorkdirError(describe_os_error(e, ' (the run config)')) from e


# --------------------------------------------------------------------------- metrics

def truncate_metrics(workdir: str, step: int) -> int:
  """Drops the rows of metrics.jsonl past `step` (the steps a resumed run redoes); returns
  how many were dropped. The file is replaced atomically."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        row_step = json.loads(line)['step']
      except (ValueError, KeyError, TypeError):
        dropped += 1   # a row cut by a crash mid-write
        continue
      if row_step > step:
        dropped += 1
      else:
        kept.append(line if line.endswith('\n') else line + '\n')
  if dropped:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return dropped
