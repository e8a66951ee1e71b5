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
  common.compare_samplers(
      'pixelrnn_sampling', f'Row LSTM PixelRNN ({config.model.num_layers} layers, '
      f'h = {config.model.hidden})', model, params, shape, cached_label='row-cached')

if __name__ == '__main__':
  main()
