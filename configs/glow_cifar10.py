"""Glow on CIFAR-10 (Kingma & Dhariwal 2018, arXiv 1807.03039), flows/glow.py: L = 3
levels of K = 32 steps (actnorm -> LU-decomposed invertible 1x1 convolution -> affine
coupling with 512 hidden channels), a split with a learned conditional prior after each
level but the last, a learned top prior; dequantized pixels shifted to [-0.5, 0.5).
Adam at 1e-3 with a linear warmup.

For GPU/TPU users (the 2-core CPU cannot train this in reasonable time):

  python -m experiments.main --config=configs/glow_cifar10.py --workdir=runs/glow_c10

Published: 3.35 bits/dim on the CIFAR-10 test set (Table 2, affine coupling with the 1x1
convolution). The paper's Fig. 3 compares, on CIFAR-10, additive and affine couplings with
reverse, shuffle and 1x1-convolution permutations: --config.model.coupling=additive and
--config.model.permutation=shuffle or reverse. Samples look cleaner at a lower temperature,
--config.sample.temperature=0.7. `:tiny` is for tests.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'glow'
  c.model.image_shape = (32, 32, 3)
  c.model.num_levels = 3
  c.model.num_steps = 32
  c.model.hidden_features = 512
  c.model.lu = True
  c.model.learn_top = True
  c.model.coupling = 'affine'         # or 'additive'
  c.model.permutation = '1x1conv'     # or 'shuffle', 'reverse'

  c.data.name = 'cifar10'
  c.data.batch_size = 64
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 5000
  c.optimizer.grad_clip_norm = 100.0    # a guard against rare spikes only
  c.train.num_steps = 500_000
  c.train.log_every = 500
  c.train.eval_every = 25_000
  c.train.checkpoint_every = 5000
  c.train.num_samples = 64

  if arg == 'tiny':
    c.model.num_levels = 2
    c.model.num_steps = 2
    c.model.hidden_features = 8
    c.data.batch_size = 16
    c.data.eval_batch_size = 128
    c.data.eval_split = 'test[:256]'
    c.optimizer.warmup_steps = 1
    c.train.num_steps = 3
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.checkpoint_every = 3
    c.train.num_samples = 4
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny.')
  return c
