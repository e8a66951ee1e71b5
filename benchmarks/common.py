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
    print('  '.join(str(v).ljust(w) for v, w in zip(r, widths)))


def emit(result: dict) -> None:
  """The last line of every benchmark: one JSON object."""
  print(json.dumps(result))
