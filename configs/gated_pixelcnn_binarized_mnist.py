"""Gated PixelCNN on binarized MNIST (van den Oord et al. 2016, arXiv 1606.05328).

Protocol: dynamic binarization for training, a fixed seeded binarization of the exact
10,000-image test set for evaluation (the Larochelle & Murray fixed set is not available
offline). PixelCNN's 81.30 nats (arXiv 1601.06759, Table 4) is the reference number.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/gated_pixelcnn_binarized_mnist.py --workdir=runs/gated_bmnist

The default is sized for a CPU run of about an hour; `:paper` is 15 layers of 128
features; `:tiny` is for tests.

Result (2026-11-22, 2-core CPU shared with other jobs): the run was stopped at the 60-minute
mark and its step-4000 checkpoint evaluated (`--mode=eval`, EMA parameters): test NLL
88.34 nats (0.1626 bits/dim) on the seeded binarization of the 10,000 test images.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'gated_pixelcnn'
  c.model.num_levels = 2
  c.model.num_channels = 1
  c.model.features = 32
  c.model.num_layers = 6
  c.model.first_kernel = 7
  c.model.kernel_size = 3
  c.model.output_features = 64
  c.model.num_classes = 0

  c.data.name = 'binarized_mnist'
  c.data.eval_binarization_seed = 0
  c.data.batch_size = 32
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 200
  c.train.num_steps = 5000      # about an hour on 2 shared CPU cores
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.ema_decay = 0.999
  c.train.num_samples = 16
  c.sample.sampler = 'cached'

  if arg == 'paper':
    c.model.features = 128
    c.model.num_layers = 15
    c.model.output_features = 256
    c.data.batch_size = 64
    c.train.num_steps = 100_000
  elif arg == 'tiny':
    common.tiny_image_preset(c)
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny, paper.')
  return c
