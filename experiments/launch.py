"""Config sweeps: expand a config file's sweep generators into work units and run them here,
on a Slurm cluster or on a TPU pod; summarize their results.

A config file may define `sweep()` and any number of `sweep_NAME()` generators, each
yielding a dict of dotted overrides of the config (the pattern of Kauldron's configs):

  def sweep_k():
    for k in (1, 5, 50):
      yield {'model.objective': 'iwae', 'model.num_samples': k}

`--sweep=k,layers` takes the product of several. Every unit gets a deterministic workdir
named by its overrides, `ROOT/<config>/<sweep>/<k1=v1,k2=v2>`, so launching the same sweep
again resumes every unfinished unit (the trainer resumes from its workdir) and skips the
finished ones (those whose `launch_status.json` records exit code 0).

  python -m experiments.launch --config=configs/iwae_binarized_mnist.py:tiny --sweep=k \\
      --root=sweeps --launcher=local --parallel=2
  python -m experiments.launch --summarize --root=sweeps \
      [--metric=eval/nll --against=model.num_samples]

Launchers:
  local   the units as subprocesses, --parallel at a time, each pinned (taskset, where it
          exists) to cores of its own; a log per unit (ROOT/.../<unit>.log) and a status
          line (done / running / failed / waiting, elapsed).
  slurm   one `sbatch --array` script running unit $SLURM_ARRAY_TASK_ID; --submit calls
          sbatch. Multi-node units set config.distributed=True (jax.distributed.initialize()
          detects Slurm).
  tpu     one `gcloud compute tpus tpu-vm ssh ... --worker=all --command ...` line per unit;
          --submit runs them one after another.
  print   the commands only.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

from experiments.errors import UserError

STATUS_FILE = 'launch_status.json'
LAUNCHERS = ('local', 'slurm', 'tpu', 'print')


class SweepError(UserError, ValueError):
  """A sweep that cannot be expanded: an unknown sweep name, a bad override key."""


@dataclasses.dataclass(frozen=True)
class Unit:
  """One work unit: its overrides (dotted config keys -> values), name and workdir."""
  overrides: dict
  name: str
  workdir: str

  def command(self, config_arg: str, python: str = sys.executable) -> list[str]:
    return [python, '-m', 'experiments.main', f'--config={config_arg}',
            f'--workdir={self.workdir}'] + [f'--config.{k}={_flag_value(v)}'
                                            for k, v in self.overrides.items()]


def _flag_value(v) -> str:
  """A value as config_flags parses it back: tuples and numbers as literals, strings bare."""
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, (list, tuple)):
    return repr(tuple(v))
  return str(v)


def _short(v) -> str:
  text = _flag_value(v).replace(' ', '')
  return ''.join(ch if ch.isalnum() or ch in '._-+()' else '_' for ch in text)


def unit_name(overrides: dict) -> str:
  """'k1=v1,k2=v2' with the last component of each key: readable and deterministic."""
  if not overrides:
    return 'base'
  return ','.join(f'{k.rpartition(".")[2]}={_short(v)}' for k, v in overrides.items())


def load_config_module(config_arg: str):
  """(module, preset arg, config stem) of 'configs/x.py[:arg]'."""
  path, _, arg = config_arg.partition(':')
  if not os.path.isfile(path):
    raise SweepError(f'--config={config_arg!r}: no config file {path}.')
  stem = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f'_sweep_config_{stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, (arg or None), stem


def _valid_keys(config) -> set[str]:
  from experiments.validation import all_keys  # pylint: disable=g-import-not-at-top
  return set(all_keys(config))


def expand(config_arg: str, sweeps: Sequence[str], root: str) -> list[Unit]:
  """The product of the named sweeps (each a sweep_NAME generator; '' or 'sweep' is
  `sweep()`), as units under ROOT/<config>/<sweep names>/. Override keys are checked against
  the config the preset builds."""
  module, arg, stem = load_config_module(config_arg)
  config = module.get_config(arg)
  valid = _valid_keys(config)
  lists = []
  for name in sweeps or ['sweep']:
    fn_name = 'sweep' if name in ('', 'sweep') else f'sweep_{name}'
    fn = getattr(module, fn_name, None)
    if fn is None:
      have = sorted(n[len('sweep_'):] if n != 'sweep' else 'sweep' for n in dir(module)
                    if n == 'sweep' or n.startswith('sweep_'))
      raise SweepError(f'{config_arg} defines no {fn_name}(); its sweeps: '
                       f'{", ".join(have) or "none"}.')
    rows = [dict(r) for r in fn()]
    for r in rows:
      bad = sorted(k for k in (k.removeprefix('config.') for k in r) if k not in valid)
      if bad:
        raise SweepError(f'{fn_name}() of {config_arg} overrides {", ".join(bad)}, which the '
                         'config does not have.')
    lists.append([{k.removeprefix('config.'): v for k, v in r.items()} for r in rows])
  sweep_dir = os.path.join(root, stem + (f'_{arg}' if arg else ''), '+'.join(
      s or 'sweep' for s in (sweeps or ['sweep'])))
  units, seen = [], set()
  for combo in itertools.product(*lists):
    overrides = {}
    for part in combo:
      overrides.update(part)
    name = unit_name(overrides)
    if name in seen:
      raise SweepError(f'Two units of the sweep are both named {name!r}: their overrides '
                       'differ only where the name does not show it.')
    seen.add(name)
    units.append(Unit(overrides, name, os.path.join(sweep_dir, name)))
  return units


def status(unit: Unit) -> str:
  """'done', 'failed' (the last launch exited non-zero), or 'todo'."""
  path = os.path.join(unit.workdir, STATUS_FILE)
  if not os.path.exists(path):
    return 'todo'
  with open(path) as f:
    rc = json.load(f).get('returncode')
  return 'done' if rc == 0 else 'failed'


def _record(unit: Unit, config_arg: str, returncode: int, seconds: float) -> None:
  os.makedirs(unit.workdir, exist_ok=True)
  with open(os.path.join(unit.workdir, STATUS_FILE), 'w') as f:
    json.dump({'config': config_arg, 'overrides': {k: _flag_value(v) for k, v in
                                                    unit.overrides.items()},
               'returncode': returncode, 'seconds': round(seconds, 1),
               'time': time.strftime('%Y-%m-%dT%H:%M:%S')}, f)


def _core_sets(parallel: int) -> list[list[int]]:
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else list(
      range(os.cpu_count() or 1))
  per = max(1, len(cores) // parallel)
  return [cores[i * per:(i + 1) * per] or cores[-per:] for i in range(parallel)]


def run_local(units: Sequence[Unit], config_arg: str, parallel: int = 1, env=None,
              out=sys.stdout) -> dict[str, str]:
  """Runs the units not yet done, `parallel` at a time, each pinned to its own cores.
  Returns {unit name: final status}."""
  todo = [u for u in units if status(u) != 'done']
  skipped = len(units) - len(todo)
  slots = _core_sets(parallel)
  free, running, result = list(range(parallel)), {}, {u.name: 'done' for u in units
                                                        if u not in todo}
  start, queue = time.time(), list(todo)
  taskset = shutil.which('taskset')

  def line():
    done = sum(1 for s in result.values() if s == 'done')
    failed = sum(1 for s in result.values() if s == 'failed')
    out.write(f'[{time.time() - start:7.0f} s] done {done} (skipped {skipped}), running '
              f'{len(running)}, failed {failed}, waiting {len(queue)} of {len(units)}\n')
    out.flush()

  line()
  while queue or running:
    while queue and free:
      unit, slot = queue.pop(0), free.pop(0)
      os.makedirs(unit.workdir, exist_ok=True)
      log = open(unit.workdir + '.log', 'a')  # pylint: disable=consider-using-with
      cmd = unit.command(config_arg)
      if taskset:
        cmd = [taskset, '-c', ','.join(map(str, slots[slot]))] + cmd
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
      running[proc] = (unit, slot, log, time.time())
      line()
    time.sleep(0.2)
    for proc in [p for p in running if p.poll() is not None]:
      unit, slot, log, t0 = running.pop(proc)
      log.close()
      _record(unit, config_arg, proc.returncode, time.time() - t0)
      result[unit.name] = 'done' if proc.returncode == 0 else 'failed'
      free.append(slot)
      line()
  return result


def slurm_script(units: Sequence[Unit], config_arg: str, python: str = 'python') -> str:
  """An sbatch array script: task i runs unit i (in the repository it is submitted from)."""
  cases = '\n'.join(f'  {i}) {shlex.join(u.command(config_arg, python))} ;;'
                    for i, u in enumerate(units))
  return (f'#!/bin/bash\n#SBATCH --array=0-{len(units) - 1}\n#SBATCH --job-name=dgm-sweep\n'
          '#SBATCH --output=slurm-%A_%a.out\n'
          '# Add --nodes/--gres/--time for your cluster; multi-node units need\n'
          '# --config.distributed=True (jax.distributed.initialize() reads Slurm\'s variables).\n'
          f'cd {shlex.quote(os.getcwd())}\ncase "$SLURM_ARRAY_TASK_ID" in\n{cases}\nesac\n')


def tpu_commands(units: Sequence[Unit], config_arg: str, tpu: str, zone: str,
                 repo: str = '~/dgm-jax') -> list[str]:
  """One gcloud line per unit, running it on every worker of a TPU VM pod slice (each
  worker joins through jax.distributed.initialize(), config.distributed=True)."""
  lines = []
  for u in units:
    cmd = shlex.join(u.command(config_arg, 'python3') + ['--config.distributed=True'])
    lines.append(f'gcloud compute tpus tpu-vm ssh {shlex.quote(tpu)} --zone={shlex.quote(zone)} '
                 f'--worker=all --command={shlex.quote(f"cd {repo} && {cmd}")}')
  return lines


# ---------------------------------------------------------------------------- summaries


def _final_metrics(workdir: str) -> tuple[dict, int | None]:
  """The last evaluation record of a run's metrics.jsonl (eval/ keys) and its last step."""
  path = os.path.join(workdir, 'metrics.jsonl')
  evals, step = {}, None
  if os.path.exists(path):
    with open(path) as f:
      for raw in f:
        try:
          row = json.loads(raw)
        except json.JSONDecodeError:
          continue   # a line a crash cut short
        step = row.get('step', step)
        e = {k: v for k, v in row.items() if k.startswith('eval/')}
        if e:
          evals = dict(e, step=row.get('step'))
  return evals, step


def summarize(root: str) -> list[dict]:
  """One row per unit found under root (a directory holding launch_status.json or a
  metrics.jsonl): its sweep, overrides, status and final evaluation metrics."""
  rows = []
  for dirpath, _, files in sorted(os.walk(root)):
    if STATUS_FILE not in files and 'metrics.jsonl' not in files:
      continue
    info = {}
    if STATUS_FILE in files:
      with open(os.path.join(dirpath, STATUS_FILE)) as f:
        info = json.load(f)
    metrics, step = _final_metrics(dirpath)
    state = ('done' if info.get('returncode') == 0 else
             'failed' if info else 'unfinished')
    if state == 'done' and not metrics:
      state = 'done (no evaluation)'
    rows.append({'sweep': os.path.relpath(os.path.dirname(dirpath), root),
                 'unit': os.path.basename(dirpath), 'status': state, 'last_step': step,
                 **{f'override:{k}': v for k, v in info.get('overrides', {}).items()},
                 **metrics})
  return rows


def _columns(rows: Iterable[dict]) -> list[str]:
  cols = []
  for r in rows:
    cols += [k for k in r if k not in cols]
  return cols


def _fmt(v) -> str:
  if isinstance(v, float):
    return f'{v:.4f}'
  return '' if v is None else str(v)


def write_summary(rows: list[dict], root: str) -> tuple[str, str]:
  """ROOT/summary.md and ROOT/summary.csv; returns their paths."""
  cols = _columns(rows)
  md = os.path.join(root, 'summary.md')
  with open(md, 'w') as f:
    f.write('| ' + ' | '.join(cols) + ' |\n|' + '---|' * len(cols) + '\n')
    for r in rows:
      f.write('| ' + ' | '.join(_fmt(r.get(c)) for c in cols) + ' |\n')
  path_csv = os.path.join(root, 'summary.csv')
  with open(path_csv, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
  return md, path_csv


def plot(rows: list[dict], metric: str, against: str, path: str) -> str | None:
  """A PNG of `metric` against the swept value `against` (numeric), one point per finished
  unit, drawn with PIL (no plotting library needed). Returns the path, or None if no unit
  has both."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  key = f'override:{against}'
  pts = []
  for r in rows:
    try:
      pts.append((float(r[key]), float(r[metric])))
    except (KeyError, TypeError, ValueError):
      continue
  if not pts:
    return None
  pts.sort()
  w, h, m = 480, 320, 50
  img = Image.new('RGB', (w, h), 'white')
  d = ImageDraw.Draw(img)
  xs, ys = [p[0] for p in pts], [p[1] for p in pts]
  x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
  y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

  def at(x, y):
    return (m + (x - x0) / (x1 - x0) * (w - 2 * m), h - m - (y - y0) / (y1 - y0) * (h - 2 * m))
  d.rectangle([m, m, w - m, h - m], outline='black')
  if len(pts) > 1:
    d.line([at(x, y) for x, y in pts], fill='blue', width=2)
  for x, y in pts:
    cx, cy = at(x, y)
    d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill='blue')
    d.text((cx + 4, cy - 12), f'{y:.4g}', fill='black')
  d.text((m, h - m + 8), f'{against}: {x0:g} .. {x1:g}', fill='black')
  d.text((m, 10), f'{metric}: {y0:.4g} .. {y1:.4g}', fill='black')
  img.save(path)
  return path


def main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog='python -m experiments.launch',
                              description=__doc__.splitlines()[0])
  p.add_argument('--config', help='configs/x.py[:preset]')
  p.add_argument('--sweep', default='', help='sweep names, comma-separated (their product)')
  p.add_argument('--root', required=True, help='directory of the sweeps\' workdirs')
  p.add_argument('--launcher', default='print', choices=LAUNCHERS)
  p.add_argument('--parallel', type=int, default=1, help='local: units at a time')
  p.add_argument('--submit', action='store_true', help='slurm / tpu: submit, not just write')
  p.add_argument('--tpu', default='$TPU_NAME', help='tpu: the TPU VM name')
  p.add_argument('--zone', default='$ZONE', help='tpu: its zone')
  p.add_argument('--summarize', action='store_true', help='gather the results under --root')
  p.add_argument('--metric', default='eval/nll', help='summarize: the metric to plot')
  p.add_argument('--against', default=None, help='summarize: the override to plot it against')
  a = p.parse_args(argv)
  try:
    if a.summarize:
      rows = summarize(a.root)
      if not rows:
        raise SweepError(f'No runs under --root={a.root}.')
      md, path_csv = write_summary(rows, a.root)
      print(open(md).read(), end='')
      print(f'written: {md}, {path_csv}')
      if a.against:
        png = plot(rows, a.metric, a.against, os.path.join(a.root, 'summary.png'))
        print(f'plot: {png}' if png else f'no unit has both {a.metric} and {a.against}')
      return 0
    if not a.config:
      raise SweepError('--config=configs/x.py[:preset] is needed to launch a sweep.')
    if a.parallel < 1:
      raise SweepError(f'--parallel={a.parallel} must be >= 1.')
    units = expand(a.config, [s.strip() for s in a.sweep.split(',') if s.strip()], a.root)
    if a.launcher == 'print':
      for u in units:
        print(f'[{status(u)}] ' + shlex.join(u.command(a.config, 'python')))
    elif a.launcher == 'local':
      result = run_local(units, a.config, a.parallel)
      failed = [n for n, s in result.items() if s == 'failed']
      print(f'{len(result) - len(failed)} of {len(units)} units done'
            + (f'; failed: {", ".join(failed)} (see their .log files)' if failed else ''))
      return 1 if failed else 0
    elif a.launcher == 'slurm':
      script = slurm_script(units, a.config)
      path = os.path.join(os.path.dirname(units[0].workdir), 'sweep.sbatch')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        f.write(script)
      print(f'wrote {path} ({len(units)} array tasks)')
      if a.submit:
        if not shutil.which('sbatch'):
          raise SweepError('--submit: sbatch is not on this machine\'s PATH.')
        return subprocess.call(['sbatch', path])
    else:
      lines = tpu_commands(units, a.config, a.tpu, a.zone)
      for line in lines:
        print(line)
        if a.submit and subprocess.call(line, shell=True):
          return 1
    return 0
  except UserError as e:
    print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
