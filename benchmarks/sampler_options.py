"""The trainer's sampler with XLA's default CPU options and with CPU_COMPILER_OPTIONS.

  python -m benchmarks.sampler_options                    # the image configs below
  python -m benchmarks.sampler_options configs/glow_mnist.py:cpu --num_samples 16

For each config: experiments.train.Run builds the model from its config (random
initialization, on $DGM_DATA_DIR's data), and the sampler Run._sample uses
(config.sample.sampler, 'auto': the cached one where the model has it) draws
config.train.num_samples images (or --num_samples), compiled twice: with XLA's defaults
and with experiments.train.CPU_COMPILER_OPTIONS (convolutions by XLA's own emitters, not
YNNPACK), the options the train and eval steps use on CPU. After one warm-up call each, the
timed calls alternate for --rounds rounds; the table gives medians, whether the two
executables drew the same images, and the load. The last line is a JSON object.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

DEFAULT_CONFIGS = (
    'configs/pixelcnn_mnist.py',
    'configs/gated_pixelcnn_binarized_mnist.py',
    'configs/pixelrnn_binarized_mnist.py',
    'configs/nice_mnist.py',
    'configs/realnvp_mnist.py:cpu',
    'configs/glow_mnist.py:cpu',
    'configs/maf_mnist.py',
)


def measure(config_arg: str, num_samples: int | None, rounds: int) -> dict:
  from experiments import launch, train  # pylint: disable=g-import-not-at-top
  module, arg, _ = launch.load_config_module(config_arg)
  config = module.get_config(arg)
  with tempfile.TemporaryDirectory() as workdir:
    run = train.Run(config, workdir, restore=False)
    try:
      model, sc = run.model, config.sample
      method = train.sampler_method(model, sc.sampler)
      n = num_samples or config.train.num_samples
      kwargs = {}
      if getattr(model, 'num_classes', 0):
        kwargs['label'] = jnp.arange(n) % model.num_classes
      shape = (n, *run.data.example_shape)
      variables = run.eval_variables

      def sample(v, rng, kw):
        return model.apply(v, rng, shape, temperature=sc.temperature, method=method, **kw)

      lowered = jax.jit(sample).lower(variables, jax.random.key(1), kwargs)
      fns, compile_s, out = {}, {}, {}
      for name, opts in (('default', None), ('cpu_options', train.CPU_COMPILER_OPTIONS)):
        t0 = time.perf_counter()
        fns[name] = lowered.compile(compiler_options=opts) if opts else lowered.compile()
        compile_s[name] = time.perf_counter() - t0
        out[name] = np.asarray(jax.block_until_ready(
            fns[name](variables, jax.random.key(1), kwargs)))
      times = {name: [] for name in fns}
      for _ in range(rounds):
        for name, fn in fns.items():
          t0 = time.perf_counter()
          jax.block_until_ready(fn(variables, jax.random.key(1), kwargs))
          times[name].append(time.perf_counter() - t0)
    finally:
      run.close()
  med = {name: statistics.median(t) for name, t in times.items()}
  return {'method': method, 'num_samples': n, 'default_s': round(med['default'], 4),
          'cpu_options_s': round(med['cpu_options'], 4),
          'speedup': round(med['default'] / med['cpu_options'], 2),
          'compile_s': {k: round(v, 1) for k, v in compile_s.items()},
          'identical': bool(np.array_equal(out['default'], out['cpu_options']))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('configs', nargs='*', default=list(DEFAULT_CONFIGS))
  parser.add_argument('--num_samples', type=int, default=None)
  parser.add_argument('--rounds', type=int, default=5)
  args = parser.parse_args()
  load0, usage = common.loadavg(), common.CpuUsage()
  print(f'load before: {load0}; {common.machine()}', flush=True)
  results, rows = {}, []
  for config_arg in args.configs:
    r = measure(config_arg, args.num_samples, args.rounds)
    results[config_arg] = r
    print(f'{config_arg}: {r}', flush=True)
    rows.append((config_arg, r['method'], r['num_samples'], f'{r["default_s"]:.3f}',
                 f'{r["cpu_options_s"]:.3f}', f'{r["speedup"]:.2f}', r['identical']))
  common.print_table(rows, ('config', 'sampler', 'n', 'default s', 'CPU options s',
                            'speed-up', 'same draws'))
  others = usage.others_cores()
  print(f'load after: {common.loadavg()}; other processes used {others:.2f} cores meanwhile')
  common.emit({'benchmark': 'sampler_options', 'results': results, 'load_before': load0,
               'others_cores': round(others, 2)})


if __name__ == '__main__':
  main()
