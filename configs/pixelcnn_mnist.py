"""PixelCNN on binarized MNIST (van den Oord et al. 2016, arXiv 1601.06759, Table 4).

Protocol: dynamic binarization of the 8-bit training images (a fresh Bernoulli draw per
epoch), evaluation on a fixed seeded binarization of the exact 10,000-image test set
(config.data.eval_binarization_seed). The paper's 81.30 nats uses the fixed binarization of
Larochelle & Murray (2011), which is not available offline; numbers are close, not equal.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/pixelcnn_mnist.py --workdir=runs/pixelcnn_mnist

The paper's MNIST model: 7x7 mask A, 15 residual blocks of 3x3 mask B, 2h = 128 features
(here `features`), 1x1 output layers. The default here is smaller so that a CPU run makes
progress; `:paper` selects the paper's size.

Result (2026-11-22, 2-core CPU shared with the test suite, 37 min wall, 3,500 steps):
test NLL 91.21 nats (0.1678 bits/dim) on the seeded binarization of the 10,000 test images.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'pixelcnn'
  c.model.num_levels = 2
  c.model.num_channels = 1
  c.model.features = 64
  c.model.num_layers = 5
  c.model.first_kernel = 7
  c.model.kernel_size = 3
  c.model.output_features = 64

  c.data.name = 'binarized_mnist'
  c.data.eval_binarization_seed = 0
  c.data.batch_size = 32
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 200
  c.train.num_steps = 3500      # about 20 minutes on 2 CPU cores
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.eval_every = 0
  c.train.ema_decay = 0.999
  c.train.num_samples = 16

  if arg == 'paper':
    c.model.features = 128
    c.model.num_layers = 15
    c.model.output_features = 128
    c.data.batch_size = 64
    c.train.num_steps = 100000
  elif arg == 'tiny':
    c.model.features = 16
    c.model.num_layers = 1
    c.model.first_kernel = 5
    c.model.output_features = 16
    c.data.batch_size = 16
    c.data.eval_split = 'test[:512]'
    c.optimizer.warmup_steps = 5
    c.train.num_steps = 20
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.train.num_samples = 4
  elif arg:
    raise ValueError(f'Unknown preset {arg!r} for pixelcnn_mnist; presets: tiny, paper.')
  return c
