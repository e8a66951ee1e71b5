"""Train steps/s with a host fetch of the metrics every step (the loop before issue 17)
against the loop's on-device metric window fetched every --log_every steps.

  python -m benchmarks.host_fetch                       # pixelcnn_digits:tiny, CPU
  python -m benchmarks.host_fetch --config=configs/glow_mnist.py:cpu --steps=50

Both loops run the same model, optimizer, data iterator and batches through
`experiments.train`: the old one calls `make_train_step`, then `jax.device_get` of the
metrics and a finiteness check on the host after every step; the new one calls
`WindowTrainStep` and fetches the window (and checks it) every --log_every steps. Each
loop is compiled and warmed up first; then --repeats timed blocks of --steps steps
alternate between the two, and the median steps/s of each is reported with the load
average and the CPU other processes used meanwhile. The last line is a JSON object.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax
import numpy as np

from benchmarks import common


def _load_config(spec: str):
  from experiments import launch  # pylint: disable=g-import-not-at-top
  module, arg, _ = launch.load_config_module(spec)
  return module.get_config(arg)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/pixelcnn_digits.py:tiny')
  parser.add_argument('--steps', type=int, default=200, help='steps per timed block')
  parser.add_argument('--log_every', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  from experiments import train  # pylint: disable=g-import-not-at-top

  config = _load_config(args.config)
  with tempfile.TemporaryDirectory() as workdir:
    run = train.Run(config, os.path.join(workdir, 'run'), restore=False)
    try:
      tc = config.train
      kw = dict(ema_decay=tc.ema_decay, num_dims=run.data.num_dims, mesh=run.mesh)
      old_step = train.make_train_step(run.model, run.tx, run.schedule, **kw)
      new_step = train.WindowTrainStep(run.model, run.tx, run.schedule, **kw)
      state = {'old': jax.tree.map(lambda x: x.copy(), run.state), 'new': run.state}

      def next_batch():
        return train.to_global_batch(next(run.data.train_iter), run.mesh)

      def old_block(n):
        s = state['old']
        for _ in range(n):
          s, metrics = old_step(s, next_batch())
          metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
          if not all(np.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(metrics)
        state['old'] = s

      def new_block(n):
        s, window = state['new'], None
        for i in range(1, n + 1):
          batch = next_batch()
          if window is None:
            window = new_step.init_window(s, batch)
          s, window = new_step(s, batch, window)
          if i % args.log_every == 0 or i == n:
            fetched = jax.device_get(window)
            if int(fetched['bad_step']) >= 0:
              raise FloatingPointError(fetched)
            train.window_means(fetched)
            window = None
        jax.block_until_ready(s)
        state['new'] = s

      for block in (old_block, new_block):   # compile and warm up
        block(5)
      usage = common.CpuUsage()
      times = {'old': [], 'new': []}
      for _ in range(args.repeats):
        for name, block in (('old', old_block), ('new', new_block)):
          t0 = time.perf_counter()
          block(args.steps)
          times[name].append(time.perf_counter() - t0)
      others = usage.others_cores()
    finally:
      run.close()

  rate = {k: args.steps / statistics.median(v) for k, v in times.items()}
  rows = [('per-step host fetch (old)', f"{rate['old']:.1f}"),
          (f'on-device window, fetched every {args.log_every} (new)', f"{rate['new']:.1f}")]
  print(f'{args.config}: {args.repeats} blocks of {args.steps} steps each, '
        f'batch {config.data.batch_size}, {len(jax.devices())} device(s), {common.machine()}')
  common.print_table(rows, ('loop', 'median steps/s'))
  print(f"speed-up {rate['new'] / rate['old']:.2f}x; load {common.loadavg()}; other processes "
        f'used {others:.2f} cores meanwhile')
  common.emit({'benchmark': 'host_fetch', 'config': args.config, 'steps': args.steps,
               'log_every': args.log_every, 'repeats': args.repeats,
               'old_steps_per_s': rate['old'], 'new_steps_per_s': rate['new'],
               'speedup': rate['new'] / rate['old'],
               'old_block_s': times['old'], 'new_block_s': times['new'],
               'loadavg': common.loadavg(), 'others_cores': others,
               'xla_flags': os.environ.get('XLA_FLAGS', '')})


if __name__ == '__main__':
  main()
