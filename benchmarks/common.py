"""Shared benchmark helpers: timing compiled functions and the closing JSON line."""
from __future__ import annotations

import json
import os
import platform
import time

import jax


def compile_and_time(fn, *args, repeats: int = 1) -> tuple[float, float, object]:
  """(compile seconds, best run seconds, output) of jax.jit(fn)(*args), compiled ahead."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  best, out = float('inf'), None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - t0)
  return compile_s, best, out


def machine() -> str:
  return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'jax {jax.__version__} on {jax.devices()[0].platform}')


def print_table(rows: list[tuple], header: tuple) -> None:
  widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
  for r in [header, tuple('-' * w for w in widths), *rows]:
    print('  '.join(str(v).ljust(w) for v, w in zip(r, widths, strict=False)))


def emit(result: dict) -> None:
  """The last line of every benchmark: one JSON object."""
  print(json.dumps(result))


def loadavg() -> str:
  """The 1-, 5- and 15-minute load averages from /proc/loadavg ('n/a' where absent)."""
  try:
    with open('/proc/loadavg') as f:
      return ' '.join(f.read().split()[:3])
  except OSError:
    return 'n/a'


class CpuUsage:
  """CPU that other processes use from now on: the machine's busy time (/proc/stat) less
  this process's own (os.times), in cores. Where /proc/stat is absent, nan."""

  def __init__(self):
    self._start = self._sample()

  @staticmethod
  def _sample():
    t = os.times()
    try:
      with open('/proc/stat') as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
      return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return time.perf_counter(), busy / os.sysconf('SC_CLK_TCK'), t.user + t.system

  def others_cores(self) -> float:
    end = self._sample()
    if self._start is None or end is None:
      return float('nan')
    wall = end[0] - self._start[0]
    return max(0.0, (end[1] - self._start[1]) - (end[2] - self._start[2])) / wall


def compare_samplers(name: str, title: str, model, params, shape, cached_label: str = 'cached'):
  """Times model.sample against model.sample_cached (compiled ahead, same key), prints the
  table, the speed-up, whether the samples are identical and the load, and emits JSON."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = jax.random.key(1)
  load0, usage = loadavg(), CpuUsage()
  def naive(p, r):
    return model.apply(p, r, shape, method='sample')
  def cached(p, r):
    return model.apply(p, r, shape, method='sample_cached')
  c_cached, t_cached, s_cached = compile_and_time(cached, params, rng, repeats=2)
  c_naive, t_naive, s_naive = compile_and_time(naive, params, rng)
  same = bool(np.array_equal(np.asarray(s_naive), np.asarray(s_cached)))
  n, size = shape[0], shape[1]
  print(f'{title}, {n} images of {size}x{shape[2]}, {machine()}')
  print_table([('naive', f'{c_naive:.1f}', f'{t_naive:.2f}'),
               (cached_label, f'{c_cached:.1f}', f'{t_cached:.3f}')],
              ('sampler', 'compile s', 'run s'))
  print(f'speed-up {t_naive / t_cached:.1f}x; identical samples: {same}')
  others = usage.others_cores()
  print(f'load average before {load0}, after {loadavg()}; other processes used '
        f'{others:.2f} cores during the run; XLA threads: all {os.cpu_count()} cores')
  emit({'benchmark': name, 'num_images': n, 'image_size': size,
        'naive_s': round(t_naive, 3), 'cached_s': round(t_cached, 4),
        'speedup': round(t_naive / t_cached, 1), 'identical': same,
        'load_before': load0, 'others_cores': round(others, 2)})
