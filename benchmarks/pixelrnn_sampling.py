"""Naive vs row-cached sampling of the Row LSTM PixelRNN (van den Oord et al. 2016).

  python -m benchmarks.pixelrnn_sampling            # 16 images of 28x28, the binarized-MNIST
                                                    # `row` config's model (7 layers, h = 16)
  python -m benchmarks.pixelrnn_sampling --quick    # 4 images of 14x14, under a minute

The naive sampler runs the whole network for each of the 784 sub-pixels; the cached one
runs one row of each layer from the previous row's cached LSTM states. Both are compiled
ahead of time; the table gives compile and run seconds and the speed-up, and the two
samplers' outputs are checked to be identical. The last line is a JSON object.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from configs import pixelrnn_binarized_mnist
from experiments.models import build_model


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--num_images', type=int, default=None)
  args = parser.parse_args()
  config = pixelrnn_binarized_mnist.get_config('row')
  n, size = (4, 14) if args.quick else (16, 28)
  n = args.num_images or n
  model = build_model(config.model_name, config.model.to_dict())
  shape = (n, size, size, config.model.num_channels)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros(shape, jnp.int32))
  rng = jax.random.key(1)
  load0, usage = common.loadavg(), common.CpuUsage()

  naive = lambda p, r: model.apply(p, r, shape, method='sample')
  cached = lambda p, r: model.apply(p, r, shape, method='sample_cached')
  c_cached, t_cached, s_cached = common.compile_and_time(cached, params, rng, repeats=2)
  c_naive, t_naive, s_naive = common.compile_and_time(naive, params, rng)
  same = bool(np.array_equal(np.asarray(s_naive), np.asarray(s_cached)))

  print(f'Row LSTM PixelRNN ({config.model.num_layers} layers, h = {config.model.hidden}), '
        f'{n} images of {size}x{size}, {common.machine()}')
  common.print_table([('naive', f'{c_naive:.1f}', f'{t_naive:.2f}'),
                      ('row-cached', f'{c_cached:.1f}', f'{t_cached:.3f}')],
                     ('sampler', 'compile s', 'run s'))
  print(f'speed-up {t_naive / t_cached:.1f}x; identical samples: {same}')
  others = usage.others_cores()
  print(f'load average before {load0}, after {common.loadavg()}; other processes used '
        f'{others:.2f} cores during the run; XLA threads: all {common.os.cpu_count()} cores')
  common.emit({'benchmark': 'pixelrnn_sampling', 'num_images': n, 'image_size': size,
               'naive_s': round(t_naive, 3), 'cached_s': round(t_cached, 4),
               'speedup': round(t_naive / t_cached, 1), 'identical': same,
               'load_before': load0, 'others_cores': round(others, 2)})


if __name__ == '__main__':
  main()
