"""Gated PixelCNN on 8-bit MNIST: a 256-way softmax per pixel (arXiv 1606.05328).

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/gated_pixelcnn_mnist.py --workdir=runs/gated_mnist8

Reported in nats per image and bits/dim over the exact 10,000-image test set.
`:tiny` is for tests.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'gated_pixelcnn'
  c.model.num_levels = 256
  c.model.num_channels = 1
  c.model.features = 64
  c.model.num_layers = 10
  c.model.first_kernel = 7
  c.model.kernel_size = 3
  c.model.output_features = 256
  c.model.num_classes = 0

  c.data.name = 'mnist'
  c.data.batch_size = 32
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-3
  c.train.num_steps = 50_000
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.num_samples = 16
  c.sample.sampler = 'cached'
  if arg == 'tiny':
    common.tiny_image_preset(c)
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny.')
  return c
