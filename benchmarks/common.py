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


# --------------------------------------------------------------------------- FLOP counting

def _conv_flops(eqn) -> int:
  """2 x output elements x the contraction (kernel window x its input features): padded
  positions included, the usual convention for a convolution's FLOPs."""
  out = eqn.outvars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  spec = eqn.params['dimension_numbers'].rhs_spec   # (out feature, in feature, spatial...)
  window = 1
  for d in spec[2:]:
    window *= rhs[d]
  return 2 * _prod(out) * rhs[spec[1]] * window


def _dot_flops(eqn) -> int:
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  lhs = eqn.invars[0].aval.shape
  return 2 * _prod(eqn.outvars[0].aval.shape) * _prod(lhs[d] for d in lhs_contract)


def _prod(xs) -> int:
  n = 1
  for x in xs:
    n *= int(x)
  return n


def _jaxprs_of(value):
  """The sub-jaxprs one equation parameter holds (a jaxpr, a closed jaxpr, or tuples)."""
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top
  if isinstance(value, jex_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jex_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _jaxprs_of(v)


def jaxpr_matmul_flops(jaxpr) -> tuple[int, int]:
  """(FLOPs, while loops) of the convolutions and matmuls a jaxpr runs: a scan's body
  counts `length` times, a cond's costliest branch once, a while loop's body once (its
  trip count is not static; the second number says how many were met, so a caller can
  tell an exact count, 0, from a lower bound)."""
  flops, whiles = 0, 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      flops += _conv_flops(eqn)
    elif name == 'dot_general':
      flops += _dot_flops(eqn)
    elif name == 'cond':
      counts = [jaxpr_matmul_flops(j) for j in _jaxprs_of(eqn.params['branches'])]
      flops += max(c[0] for c in counts)
      whiles += max(c[1] for c in counts)
    else:
      times = eqn.params['length'] if name == 'scan' else 1
      whiles += name == 'while'
      for value in eqn.params.values():
        for sub in _jaxprs_of(value):
          f, w = jaxpr_matmul_flops(sub)
          flops += times * f
          whiles += w
  return flops, whiles


def matmul_flops(fn, *args) -> tuple[int, int]:
  """jaxpr_matmul_flops of fn(*args)'s jaxpr (traced, not run); fn may be jitted (with
  compiler options, which make_jaxpr refuses)."""
  closed = fn.trace(*args).jaxpr if hasattr(fn, 'trace') else jax.make_jaxpr(fn)(*args)
  return jaxpr_matmul_flops(closed.jaxpr)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, torch_threads: int | None = None
                       ) -> dict:
  """This machine's float32 matmul rate, GFLOP/s: the best of `repeats` n x n matmuls in
  XLA (compiled) and, where torch_threads is given, in PyTorch at that many threads."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (n, n), jax.numpy.float32)
  _, best, _ = compile_and_time(lambda x: x @ x, a, repeats=repeats)
  out = {'jax': 2 * n ** 3 / best / 1e9}
  if torch_threads:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(torch_threads)
    t = torch.from_numpy(np.array(a))
    times = []
    for _ in range(repeats + 1):
      t0 = time.perf_counter()
      t @ t
      times.append(time.perf_counter() - t0)
    out['torch'] = 2 * n ** 3 / min(times[1:]) / 1e9
  return out


def describe_peak(peak: dict, torch_threads: int | None) -> str:
  """One line: the float32 matmul rates matmul_peak_gflops measured."""
  line = ("float32 2048 x 2048 matmul (this machine's peak, for scale): "
          f"XLA {peak['jax']:.0f} GFLOP/s")
  if 'torch' in peak:
    line += f", torch {peak['torch']:.0f} GFLOP/s ({torch_threads} threads)"
  return line
