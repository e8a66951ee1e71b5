"""Start-up cost of a config: data and model set-up, init, then the train step's trace,
lower, compile and first run, each timed on its own.

  python -m benchmarks.compile_time                       # the default list below
  python -m benchmarks.compile_time configs/glow_mnist.py:cpu configs/realnvp_mnist.py
  python -m benchmarks.compile_time --rerun ...           # and a rerun from the cache

Each config runs in a fresh subprocess (so no compilation cache is shared between them and
the figures are what a user's first `experiments.main` pays), on the data of $DGM_DATA_DIR.
Phases: `setup` is experiments.train.Run (data loading, model construction, the jitted
init and its run), `trace`, `lower` and `compile` are the train step's
(`jax.jit(...).trace(...).lower().compile()`), `first step` runs the compiled step once
and waits for it; `total` is their sum. `next step` (not in the total) runs the step once
more on the state the first returned: the steady-state step, so that a slow step is not
mistaken for start-up cost (a first step many times the next one is), nor a step that
regressed for compute (the VPN's scanned ConvLSTM ran its step 20x slower, 18 s, and read
as an 18 s "first step"). The table, the load average and a closing JSON line are printed;
run it on a quiet machine, one benchmark at a time.

--rerun gives each config a fresh persistent compilation cache (experiments.
compilation_cache, which experiments.main turns on): the first child fills it, a second
child runs the same config again and reads its programs back, the start-up a resumed or
repeated run pays ('rerun compile', 'rerun total').
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

DEFAULT_CONFIGS = (
    'configs/pixelcnn_mnist.py',
    'configs/gated_pixelcnn_mnist.py',
    'configs/gated_pixelcnn_binarized_mnist.py',
    'configs/pixelrnn_binarized_mnist.py',
    'configs/pixelrnn_binarized_mnist.py:row',
    'configs/nice_mnist.py',
    'configs/realnvp_mnist.py:cpu',
    'configs/realnvp_mnist.py',
    'configs/glow_mnist.py:cpu',
    'configs/glow_mnist.py',
    'configs/maf_mnist.py',
    'configs/wavenet_spoken_digit.py',
    'configs/vpn_moving_mnist.py',
)
PHASES = ('setup', 'trace', 'lower', 'compile', 'first step')


def measure(config_arg: str, cache_dir: str | None = None) -> dict:
  """The phases of one config, in this process (with a compilation cache in cache_dir)."""
  import jax  # pylint: disable=g-import-not-at-top

  from experiments import compilation_cache, launch, train  # pylint: disable=g-import-not-at-top
  if cache_dir is not None:
    assert compilation_cache.enable(cache_dir) == cache_dir
  module, arg, _ = launch.load_config_module(config_arg)
  config = module.get_config(arg)
  out = {}
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    run = train.Run(config, os.path.join(workdir, 'run'), restore=False)
    try:
      jax.block_until_ready(run.state)
      out['setup'] = time.perf_counter() - t0
      tc = config.train
      step = train.WindowTrainStep(run.model, run.tx, run.schedule, ema_decay=tc.ema_decay,
                                   num_dims=run.data.num_dims, mesh=run.mesh)
      batch = train.to_global_batch(next(run.data.train_iter), run.mesh)
      window = step.init_window(run.state, batch)
      t = time.perf_counter()
      traced = step._step.trace(run.state, batch, window)  # pylint: disable=protected-access
      out['trace'] = time.perf_counter() - t
      t = time.perf_counter()
      lowered = traced.lower()
      out['lower'] = time.perf_counter() - t
      t = time.perf_counter()
      compiled = lowered.compile()
      out['compile'] = time.perf_counter() - t
      t = time.perf_counter()
      state, window = compiled(run.state, batch, window)
      jax.block_until_ready(state)
      out['first step'] = time.perf_counter() - t
      t = time.perf_counter()
      jax.block_until_ready(compiled(state, batch, window))
      out['next step'] = time.perf_counter() - t
      out['hlo_ops'] = lowered.as_text().count('\n')
      out['parameters'] = int(sum(x.size for x in jax.tree.leaves(run.state.params)))
    finally:
      run.close()
  out['total'] = sum(out[p] for p in PHASES)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('configs', nargs='*', default=list(DEFAULT_CONFIGS))
  parser.add_argument('--rerun', action='store_true',
                      help='Also time a second run that reads the compilation cache.')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--cache_dir', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.configs[0], args.cache_dir)))
    return
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  print(f'load before: {common.loadavg()}; {common.machine()}', flush=True)
  usage, children = common.CpuUsage(), os.times()
  rows, results = [], {}
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}

  def child(config_arg, cache_dir):
    cache_args = ['--cache_dir', cache_dir] if cache_dir else []
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.compile_time', '--child',
                           *cache_args, config_arg], capture_output=True, text=True,
                          check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    if proc.returncode or not lines:
      print(f'{config_arg}: failed ({proc.returncode}):\n{proc.stderr[-2000:]}', flush=True)
      return {'error': proc.stderr[-500:]}
    return json.loads(lines[-1])

  rerun_cols = ('rerun compile s', 'rerun total s') if args.rerun else ()
  for config_arg in args.configs:
    if args.rerun:
      with tempfile.TemporaryDirectory() as cache_dir:
        r = child(config_arg, cache_dir)
        if 'error' not in r:
          r['rerun'] = child(config_arg, cache_dir)
    else:
      r = child(config_arg, None)
    results[config_arg] = r
    if 'error' in r:
      continue
    extra = ()
    if args.rerun:
      again = r['rerun']
      extra = (('failed', 'failed') if 'error' in again else
               (f"{again['compile']:.2f}", f"{again['total']:.1f}"))
    rows.append((config_arg, f"{r['parameters']:,}", *(f'{r[p]:.2f}' for p in PHASES),
                 f"{r['total']:.1f}", f"{r['next step']:.2f}", f"{r['hlo_ops']:,}", *extra))
    print(f'{config_arg}: total {r["total"]:.1f} s', flush=True)
  common.print_table(rows, ('config', 'params', *(f'{p} s' for p in PHASES), 'total s',
                            'next step s', 'HLO lines', *rerun_cols))
  # The children's CPU is this benchmark's own: take it out of "other processes".
  end = os.times()
  wall = time.perf_counter() - usage._start[0] if usage._start else float('nan')  # pylint: disable=protected-access
  own_children = (end.children_user - children.children_user + end.children_system -
                  children.children_system)
  others = max(0.0, usage.others_cores() - own_children / wall)
  print(f'load after: {common.loadavg()}; other processes used {others:.2f} cores meanwhile')
  common.emit({'benchmark': 'compile_time', 'results': results, 'loadavg': common.loadavg(),
               'others_cores': others})


if __name__ == '__main__':
  main()
