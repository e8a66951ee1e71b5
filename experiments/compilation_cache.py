"""JAX's persistent compilation cache for the command line: a rerun skips XLA's compile.

A resumed run (after a preemption, or to train longer) and every rerun of the same config
compile the same programs again; with the cache they are read back from disk instead.
Real NVP's `:cpu` config on this 2-core machine: init + compile + first step 15.9 s on the
first run, 3.6 s on the rerun (compile 10.87 -> 0.54 s); Glow's `:cpu` 8.1 -> 2.6 s
(`python -m benchmarks.compile_time --rerun configs/realnvp_mnist.py:cpu
configs/glow_mnist.py:cpu`, 2026-12-07 02:27 UTC, load 0.61 before, 2 CPUs).

`experiments.main` turns it on (its --compilation_cache flag); in a notebook call
`compilation_cache.enable()` before the first compile. Entries are keyed by the program,
the compiler options, the devices and the jax/jaxlib versions, so a changed model or an
upgrade compiles afresh; JAX writes only programs that took over
`jax_persistent_cache_min_compile_time_secs` (1 s) to compile. An unreadable entry is
compiled again, with a warning from JAX; nothing else depends on the folder, which may be
deleted at any time.
"""
from __future__ import annotations

import os

import jax
from absl import logging

OFF = ('', 'none', 'off', 'false', '0')


def default_dir() -> str:
  """$DGM_COMPILATION_CACHE, else $XDG_CACHE_HOME/dgm/jax_compilation (~/.cache/...)."""
  if 'DGM_COMPILATION_CACHE' in os.environ:
    return os.environ['DGM_COMPILATION_CACHE']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'dgm', 'jax_compilation')


def enable(path: str | None = None) -> str | None:
  """Points JAX's persistent compilation cache at `path` (default: `default_dir()`).

  Returns the folder in use, or None where the cache stays off: `path` is one of OFF
  ('' or 'none'), or the folder cannot be created or written (a warning says which; the run
  goes on without the cache). A folder already set through jax's own
  `jax_compilation_cache_dir` (or $JAX_COMPILATION_CACHE_DIR) is kept."""
  own = jax.config.jax_compilation_cache_dir
  if own:
    return own
  path = default_dir() if path is None else path
  if path.strip().lower() in OFF:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
      raise PermissionError(f'{path} is not writable')
  except OSError as e:
    logging.warning('Compilation cache off: cannot use %s (%s). Pass '
                    '--compilation_cache=<a writable folder>, or none to silence this.', path, e)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  return path
