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
Samples at a lower temperature look cleaner: --config.sample.temperature=0.7.

Presets:
  :tiny   a few steps of a tiny model for the test suite.
  :cpu    for about 50 minutes on one CPU core: L = 2 levels of K = 8 steps with 64
          hidden channels, batch 32, 13,000 steps; 152,384 parameters. Measured
          (2026-11-22): 4.3-4.5 steps/s pinned to one core (`taskset -c 1`) of the 2-core
          machine while a Real NVP training had the other (about 8 steps/s on both cores
          alone); compiling takes about 40 s. Result: see the README's model table.

Sweeps: the comparison of the paper's Fig. 3 (Sec. 5.1), which the paper ran on CIFAR-10
(configs/glow_cifar10.py), applied to this MNIST model, so its numbers are ours and not
the paper's: additive or affine coupling (`coupling`), the reverse, shuffle or 1x1-
convolution permutation (`permutation`; the 1x1 convolution LU-decomposed, model.lu), each
with the figure's three seeds (`seed`, 0..2); `sweep()` is all 18 units.
`--config=configs/glow_mnist.py:cpu` sweeps the :cpu model. The paper's one depth comparison
(Sec. 6, "Effect of model depth") shows samples, no likelihoods, of L = 4 against L = 6
levels on CelebA-HQ 256x256; 28x28 images have at most L = 2. Not run here.

  python -m experiments.launch --config=configs/glow_mnist.py \
      --sweep=coupling,permutation,seed --root=sweeps --launcher=local
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


def sweep_coupling():
  """Glow Fig. 3's panels (a CIFAR-10 figure; on MNIST ours): additive or affine coupling."""
  for coupling in ('additive', 'affine'):
    yield {'model.coupling': coupling}


def sweep_permutation():
  """Glow Fig. 3's three curves: reverse (Real NVP), shuffle and the invertible 1x1 conv."""
  for permutation in ('reverse', 'shuffle', '1x1conv'):
    yield {'model.permutation': permutation}


def sweep_seed():
  """Glow Fig. 3's three runs of each variant (its mean and standard deviation): seeds 0-2."""
  for seed in (0, 1, 2):
    yield {'seed': seed}


def sweep():
  """Glow Fig. 3's comparison on MNIST: coupling x permutation x seed (18 units)."""
  for a in sweep_coupling():
    for b in sweep_permutation():
      for c in sweep_seed():
        yield {**a, **b, **c}
