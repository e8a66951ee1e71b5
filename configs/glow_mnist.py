"""Glow on 8-bit MNIST (Kingma & Dhariwal 2018, arXiv 1807.03039), flows/glow.py:
dequantized pixels shifted to [-0.5, 0.5), levels of K steps of actnorm -> LU-decomposed
invertible 1x1 convolution -> affine coupling, a squeeze per level and a split with a
learned conditional prior, a learned top prior.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/glow_mnist.py --workdir=runs/glow_mnist

Default (for an accelerator): the paper's depth and width, K = 32 steps per level and
512 hidden channels, on L = 2 levels (28 -> 14 -> 7; the released code pads MNIST to 32x32
for 3 levels, which changes the data's dimension). Adam at 1e-3 with a linear warmup, as in
the paper. Published: 1.05 bits/dim for Glow on MNIST, as reported by Grathwohl et al. 2019
(FFJORD, arXiv 1810.01367, Table 2); the Glow paper itself has no MNIST result.
The paper's Fig. 3 comparison: --config.model.coupling=additive (else affine) and
--config.model.permutation=shuffle or reverse (else 1x1conv; lu picks its LU form).
Samples at a lower temperature look cleaner: --config.sample.temperature=0.7.

Presets:
  :tiny   a few steps of a tiny model for the test suite.
  :cpu    for about 50 minutes on one CPU core: L = 2 levels of K = 8 steps with 64
          hidden channels, batch 32, 13,000 steps; 152,384 parameters. Measured
          (2026-11-22): 4.3-4.5 steps/s pinned to one core (`taskset -c 1`) of the 2-core
          machine while a Real NVP training had the other (about 8 steps/s on both cores
          alone); compiling takes about 40 s. Result: see the README's model table.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'glow'
  c.model.image_shape = (28, 28, 1)
  c.model.num_levels = 2
  c.model.num_steps = 32
  c.model.hidden_features = 512
  c.model.lu = True
  c.model.learn_top = True
  c.model.coupling = 'affine'         # or 'additive'
  c.model.permutation = '1x1conv'     # or 'shuffle', 'reverse'

  c.data.name = 'mnist'
  c.data.batch_size = 64
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 1000
  c.optimizer.grad_clip_norm = 100.0    # a guard against rare spikes only
  c.train.num_steps = 100_000
  c.train.log_every = 200
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 2000
  c.train.num_samples = 64

  if arg == 'tiny':
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
  elif arg == 'cpu':
    c.model.num_steps = 8
    c.model.hidden_features = 64
    c.data.batch_size = 32
    c.optimizer.warmup_steps = 200
    c.train.num_steps = 13000
    c.train.log_every = 100
    c.train.eval_every = 0
    c.train.checkpoint_every = 1000
    c.train.num_samples = 64
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny, cpu.')
  return c
