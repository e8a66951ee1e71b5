"""What a workdir knows about its run: the lock, the config it was started with and the
history of changes, and metrics that hold each step once.

- `<workdir>/run.lock`: {host, pid, start time, command} of the trainer using the workdir.
  A second trainer exits at once naming it; a lock whose process is gone (same host, pid
  not running or reused) is stale and taken over.
- `<workdir>/config.json`: the config the run was started with, written once and kept.
- `<workdir>/config_history.jsonl`: one line per start of training, append-only:
  {'start_step', 'time', 'changes', 'config'}. Checkpoint t was written by the last entry
  whose start_step < t (the first entry for t = 0), which is what `load_run` reports.

A resume compares the new config with the latest entry. Fields that may change mid-run
(MUTABLE: learning rate and schedule, steps, logging, evaluation and sample settings,
where the data lives) are allowed, logged and recorded. Fields that change what a
checkpoint means (the model, the data, the objective, the seed, the optimizer's kind) refuse
to resume, listing the differences, unless the start is a deliberate one
(`--allow_config_change`: a fine-tuning start).
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
           'data.eval_batch_size', 'data.local_dir', 'data.source')


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

def _process_start(pid: int) -> str | None:
  """The kernel's start time of `pid` (Linux), to tell a live trainer from a reused pid."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class RunLock:
  """`<workdir>/run.lock`, created exclusively; released by `release()` (and on exit)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self.held = False

  def _describe(self, info: dict) -> str:
    started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.get('time', 0)))
    return (f'pid {info.get("pid")} on host {info.get("host")!r}, started {started}: '
            f'{info.get("command", "?")}')

  def acquire(self) -> None:
    info = {'host': socket.gethostname(), 'pid': os.getpid(), 'time': time.time(),
            'proc_start': _process_start(os.getpid()), 'command': ' '.join(sys.argv)}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        other = self._read()
        if other is not None and not self._stale(other):
          raise WorkdirError(
              f'Another trainer is using this workdir ({self.path}): '
              f'{self._describe(other)}. Wait for it to finish, or use another --workdir. '
              f'If no such process runs any more, delete {self.path}.') from None
        with contextlib.suppress(FileNotFoundError):   # stale: take it over
          os.remove(self.path)
        continue
      except OSError as e:
        raise WorkdirError(describe_os_error(e, ' (the run lock)')) from e
      with os.fdopen(fd, 'w') as f:
        json.dump(info, f)
      self.held = True
      return
    raise WorkdirError(f'Could not take the lock {self.path}; another trainer keeps taking '
                       'it. Use another --workdir.')

  def _read(self) -> dict | None:
    try:
      with open(self.path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      # Being written this instant by another trainer, or garbage: treat a young one as live.
      try:
        age = time.time() - os.path.getmtime(self.path)
      except OSError:
        return None
      return {'host': '?', 'pid': '?', 'time': time.time()} if age < 10 else {}

  @staticmethod
  def _stale(info: dict) -> bool:
    if not info:
      return True
    if info.get('host') != socket.gethostname():
      return False    # cannot look into another host: assume it runs
    pid = info.get('pid')
    if not isinstance(pid, int) or not _alive(pid):
      return True
    start = info.get('proc_start')
    return start is not None and _process_start(pid) not in (None, start)

  def release(self) -> None:
    if self.held:
      other = self._read()
      if other and other.get('pid') == os.getpid():
        with contextlib.suppress(OSError):
          os.remove(self.path)
      self.held = False


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
  a, b = flatten(old), flatten(new)
  return {k: (a.get(k, '<absent>'), b.get(k, '<absent>')) for k in sorted(set(a) | set(b))
          if a.get(k, '<absent>') != b.get(k, '<absent>')}


def format_changes(changes: dict[str, tuple]) -> str:
  return '\n'.join(f'  config.{k}: {a!r} -> {b!r}' for k, (a, b) in changes.items())


def check_resume(workdir: str, config, *, allow_change: bool) -> tuple[dict, dict]:
  """Compares `config` with the run's latest recorded config. Returns (all changes, the
  frozen ones allowed by `allow_change`); raises WorkdirError for frozen changes."""
  entries = read_history(workdir)
  if not entries:
    return {}, {}
  changes = diff(entries[-1]['config'], config_json(config))
  frozen = {k: v for k, v in changes.items() if not is_mutable(k)}
  if frozen and not allow_change:
    raise WorkdirError(
        f'{workdir} holds a run started with another config; these fields change what its '
        f'checkpoints mean and cannot change on resume:\n{format_changes(frozen)}\n'
        f'Rerun with the run\'s own values (its config is {os.path.join(workdir, CONFIG_NAME)}), '
        'use a new --workdir, or pass --allow_config_change to start from its checkpoint '
        'with the new config deliberately (a fine-tuning start).')
  return changes, frozen


def record_start(workdir: str, config, start_step: int, changes: dict) -> None:
  """Writes config.json if the run has none, and appends this start to the history."""
  config_path = os.path.join(workdir, CONFIG_NAME)
  history_path = os.path.join(workdir, HISTORY_NAME)
  cfg = config_json(config)
  try:
    if not os.path.exists(history_path) and os.path.exists(config_path):
      # A workdir from before the history: its config.json becomes the first entry.
      first = read_history(workdir)
      with open(history_path, 'a') as f:
        for e in first:
          f.write(json.dumps(e, sort_keys=True) + '\n')
    if not os.path.exists(config_path):
      tmp = config_path + '.tmp'
      with open(tmp, 'w') as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
      os.replace(tmp, config_path)
    entries = read_history(workdir) if os.path.exists(history_path) else []
    if entries and not changes and entries[-1]['config'] == cfg:
      return   # an unchanged resume adds nothing
    with open(history_path, 'a') as f:
      f.write(json.dumps({'start_step': int(start_step), 'time': time.time(),
                          'changes': {k: list(v) for k, v in changes.items()},
                          'config': cfg}, sort_keys=True) + '\n')
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
