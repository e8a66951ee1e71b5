"""Glow on CIFAR-10 (Kingma & Dhariwal 2018, arXiv 1807.03039), flows/glow.py: L = 3
levels of K = 32 steps (actnorm -> LU-decomposed invertible 1x1 convolution -> affine
coupling with 512 hidden channels), a split with a learned conditional prior after each
level but the last, a learned top prior; dequantized pixels shifted to [-0.5, 0.5).
Adam at 1e-3 with a linear warmup.

For GPU/TPU users (the 2-core CPU cannot train this in reasonable time):

  python -m experiments.main --config=configs/glow_cifar10.py --workdir=runs/glow_c10

Published: 3.35 bits/dim on the CIFAR-10 test set (Table 2, affine coupling with the 1x1
convolution). Samples look cleaner at a lower temperature, --config.sample.temperature=0.7.
`:tiny` is for tests.

Sweeps: the paper's Fig. 3 (Sec. 5.1), this model (L = 3, K = 32, 512 channels, Adam 1e-3)
with additive or affine coupling (`coupling`, the figure's left and right panels) and the
reverse (Real NVP's), shuffle or 1x1-convolution permutation (`permutation`, its three
curves), each run with three seeds (`seed`, 0..2: the figure plots their mean and standard
deviation), as the released code's ablation command does (github openai/glow README:
--flow_permutation 0/1/2 --flow_coupling 0/1 --seed 0/1/2). `sweep()` is all 18 units.
What differs: our 1x1 convolution is the LU-decomposed one (--config.model.lu=False for the
plain one the released code runs), and our shuffles are fixed per step, the same for every
seed. The paper's one depth comparison (Sec. 6, "Effect of model depth") shows samples, no
likelihoods, of L = 4 against L = 6 levels on CelebA-HQ 256x256 (32x32 images allow at most
L = 5); its K and L are otherwise per-dataset settings (CIFAR-10: K = 32, L = 3). Not run here.

  python -m experiments.launch --config=configs/glow_cifar10.py \
      --sweep=coupling,permutation,seed --root=sweeps --launcher=local
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


def sweep_coupling():
  """Glow Fig. 3 (CIFAR-10, L = 3, K = 32): additive (left panel) or affine (right) coupling."""
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
  """All of Glow Fig. 3: coupling x permutation x seed (18 units)."""
  for a in sweep_coupling():
    for b in sweep_permutation():
      for c in sweep_seed():
        yield {**a, **b, **c}
