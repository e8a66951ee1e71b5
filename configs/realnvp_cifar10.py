"""Real NVP on CIFAR-10 (Dinh, Sohl-Dickstein & Bengio 2017, arXiv 1605.08803, Sec. 4.1),
flows/realnvp.py: dequantized pixels in logit space (alpha = 0.05, its Jacobian in the
likelihood), ResNet affine couplings with 8 residual blocks of 64 features, batch-norm
bijectors after every coupling, and the multi-scale architecture downscaled once
(two scales: 3 checkerboard couplings, squeeze, 3 channel-wise couplings, factor out half;
then 4 checkerboard couplings). Adam at 1e-3, batch 64. The paper's L2 weight decay
(5e-5) and weight normalization are left out.

For GPU/TPU users (the 2-core CPU cannot train this in reasonable time):

  python -m experiments.main --config=configs/realnvp_cifar10.py --workdir=runs/realnvp_c10

Published: 3.49 bits/dim on the CIFAR-10 test set (Table 1). `:tiny` is for tests.

Sweep, ours and not a paper table (Real NVP's Table 1 has one model per dataset and the paper
compares no depths): `sweep_depth`, residual blocks per coupling ResNet (model.num_blocks)
2, 4 and 8, the three sizes its Sec. 4.1 uses (2 for 64x64 images, 4 with 32 features for
32x32 ImageNet, 8 with 64 features for CIFAR-10, the paper's model here); the features stay
at 64. Not run here.

  python -m experiments.launch --config=configs/realnvp_cifar10.py --sweep=depth \
      --root=sweeps --launcher=local
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'realnvp'
  c.model.image_shape = (32, 32, 3)
  c.model.num_scales = 2
  c.model.features = 64
  c.model.num_blocks = 8
  c.model.batch_norm = True
  c.model.net_batch_norm = True
  c.model.momentum = 0.99
  # True: a faster train step for wide models, a slower first compile (flows/realnvp.py).
  c.model.unroll_couplings = False
  c.model.alpha = 0.05

  c.data.name = 'cifar10'
  c.data.batch_size = 64
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 1000
  c.optimizer.grad_clip_norm = 100.0    # a guard against rare spikes only
  c.train.num_steps = 500_000
  c.train.log_every = 500
  c.train.eval_every = 25_000
  c.train.checkpoint_every = 5000
  c.train.num_samples = 64

  if arg == 'tiny':
    c.model.features = 4
    c.model.num_blocks = 1
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


def sweep_depth():
  """Ours, no paper table: 2, 4 or 8 residual blocks per coupling ResNet (Sec. 4.1's sizes)."""
  for num_blocks in (2, 4, 8):
    yield {'model.num_blocks': num_blocks}
