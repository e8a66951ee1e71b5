"""PixelCNN on scikit-learn's 8x8 handwritten digits (17 grey levels): the README demo.

The data ship inside scikit-learn (1,797 real scans, UCI optdigits), so this runs offline
with no download: 1,500 training images, 297 test images.

  python -m experiments.main --config=configs/pixelcnn_digits.py --workdir=runs/digits

Result (2026-11-22, 2-core CPU shared with another training run, 114 s wall):
test NLL 81.00 nats per image, 1.826 bits/dim (297 test images; 80.67 at step 500).
`configs/pixelcnn_digits.py:tiny` is the same model, smaller, for tests (< 30 s).
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'pixelcnn'
  c.model.num_levels = 17
  c.model.num_channels = 1
  c.model.features = 64
  c.model.num_layers = 4
  c.model.first_kernel = 5
  c.model.kernel_size = 3
  c.model.output_features = 64

  c.data.name = 'digits'
  c.data.batch_size = 64
  c.data.eval_batch_size = 297

  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 100
  c.train.num_steps = 1000
  c.train.log_every = 100
  c.train.eval_every = 250
  c.train.checkpoint_every = 500
  c.train.ema_decay = 0.995
  c.train.num_samples = 64

  if arg == 'tiny':
    c.model.features = 16
    c.model.num_layers = 1
    c.model.output_features = 16
    c.data.batch_size = 32
    c.optimizer.warmup_steps = 5
    c.train.num_steps = 20
    c.train.log_every = 5
    c.train.checkpoint_every = 5
    c.train.num_samples = 16
  elif arg:
    raise ValueError(f'Unknown preset {arg!r} for pixelcnn_digits; presets: tiny.')
  return c
