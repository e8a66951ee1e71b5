"""Naive vs cached sampling of the gated PixelCNN (Ramachandran et al. 2017, 1704.06001).

  python -m benchmarks.pixelcnn_sampling            # 16 images of 28x28, the binarized-MNIST
                                                    # config's model
  python -m benchmarks.pixelcnn_sampling --quick    # 4 images of 14x14, under a minute

Both samplers are compiled ahead of time; the table gives compile and run seconds, and the
run times give the speed-up. The two samplers' outputs are checked to be identical. The
last line is a JSON object with naive_s, cached_s and speedup.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks import common
from configs import gated_pixelcnn_binarized_mnist
from experiments.models import build_model


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--num_images', type=int, default=None)
  args = parser.parse_args()
  config = gated_pixelcnn_binarized_mnist.get_config()
  n, size = (4, 14) if args.quick else (16, 28)
  n = args.num_images or n
  model = build_model(config.model_name, config.model.to_dict())
  shape = (n, size, size, config.model.num_channels)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros(shape, jnp.int32))
  common.compare_samplers(
      'pixelcnn_sampling', f'Gated PixelCNN ({config.model.num_layers} layers x '
      f'{config.model.features} features)', model, params, shape)

if __name__ == '__main__':
  main()
