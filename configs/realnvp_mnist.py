"""Real NVP on 8-bit MNIST (Dinh, Sohl-Dickstein & Bengio 2017, arXiv 1605.08803),
flows/realnvp.py: dequantized pixels in logit space (alpha = 0.05, its Jacobian in the
likelihood), the multi-scale architecture with ResNet affine couplings and batch-norm
bijectors.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/realnvp_mnist.py --workdir=runs/realnvp_mnist

Default (for an accelerator): the paper's CIFAR-10 coupling networks (8 residual blocks of
64 features; we double the features at each coarser scale) on three scales, 28x28 -> 14x14 -> 7x7:
per scale 3 checkerboard couplings, a squeeze, 3 channel-wise couplings and half the channels
factored out; 4 checkerboard couplings at the last scale. Adam at 1e-3, batch 64, as in the paper.
Published: 1.06 bits/dim on MNIST (Real NVP as listed in later comparisons, e.g. FFJORD, Grathwohl
et al. 2019, arXiv 1810.01367); the paper itself reports CIFAR-10, 3.49
(configs/realnvp_cifar10.py).

Presets:
  :tiny   a few steps of a tiny model for the test suite.
  :cpu    the same architecture, smaller, for about 30-60 minutes on one CPU core:
          three scales, ResNets of 1 block x 16 features (doubled per scale), no batch
          norm inside the ResNets (the batch-norm bijectors stay), batch 32, 9,500 steps;
          498,737 parameters.
          Measured (2026-12-02, after the channel-wise couplings moved to the plain squeeze,
          Sec. 3.6), pinned to one core (`taskset -c 0`) of the 2-core CPU while an M2
          training held the other: 3.9-6.6 steps/s, 28.2 min with the final evaluation:
          1.477 bits/dim on the 10,000 test images (EMA weights with the training run's
          batch statistics, the evaluation of that time). The same command with the old,
          redundant channel masks (2026-11-22, 55.3 min beside a Glow run): 1.496.
          Evaluating that checkpoint (`--mode=eval`) three ways: EMA weights with batch
          statistics recomputed for them (train.eval_batch_stats='recompute', the default)
          1.4523; raw weights with their own statistics (train.eval_with_ema=False) 1.4561;
          EMA weights with the raw weights' statistics ('current') 1.4748.

Sweep, ours and not a paper table (Real NVP's Table 1 has one model per dataset and the paper
compares no depths): `sweep_depth`, residual blocks per coupling ResNet (model.num_blocks)
2, 4 and 8, the three sizes its Sec. 4.1 uses (2 for 64x64 images, 4 with 32 features for
32x32 ImageNet, 8 with 64 features for CIFAR-10); the features stay at this config's. With
`configs/realnvp_mnist.py:cpu` it sweeps the :cpu model's blocks (16 features). Not run here.

  python -m experiments.launch --config=configs/realnvp_mnist.py --sweep=depth \
      --root=sweeps --launcher=local
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'realnvp'
  c.model.image_shape = (28, 28, 1)
  c.model.num_scales = 3
  c.model.features = 64
  c.model.num_blocks = 8
  c.model.batch_norm = True
  c.model.net_batch_norm = True
  c.model.momentum = 0.99
  # True: a faster train step for wide models, a slower first compile (flows/realnvp.py).
  c.model.unroll_couplings = False
  c.model.alpha = 0.05

  c.data.name = 'mnist'
  c.data.batch_size = 64
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 500
  c.optimizer.grad_clip_norm = 100.0    # a guard against rare spikes only
  c.train.num_steps = 100_000
  c.train.log_every = 200
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 2000
  c.train.num_samples = 64

  if arg == 'tiny':
    c.model.num_scales = 2
    c.model.features = 4
    c.model.num_blocks = 1
    c.model.net_batch_norm = False    # the batch-norm bijectors stay
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
    c.model.features = 16
    c.model.num_blocks = 1
    c.model.net_batch_norm = False
    c.data.batch_size = 32
    c.optimizer.warmup_steps = 200
    c.train.num_steps = 9500
    c.train.log_every = 100
    c.train.eval_every = 0
    c.train.checkpoint_every = 1000
    c.train.num_samples = 64
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny, cpu.')
  return c


def sweep_depth():
  """Ours, no paper table: 2, 4 or 8 residual blocks per coupling ResNet (Sec. 4.1's sizes)."""
  for num_blocks in (2, 4, 8):
    yield {'model.num_blocks': num_blocks}
