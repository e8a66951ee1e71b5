"""A DCGAN on MNIST (latent/gan.py; Goodfellow et al. 2014, arXiv 1406.2661; Radford et al.
2016, arXiv 1511.06434), sized for a CPU.

Presets (comma-separated):
  minimax       the minimax generator loss log(1 - D(G(z))) instead of the non-saturating one
  k=N           N discriminator updates per generator update (Goodfellow et al.'s k; default 1)
  cifar10       the 32x32 RGB DCGAN on CIFAR-10 (configs/dcgan_cifar10.py is this preset)
  tiny          a few-step run for the test suite

  DGM_DATA_DIR=../shared/data python -m experiments.main \\
      --config=configs/gan_mnist.py --workdir=runs/gan_mnist

Architecture: z ~ N(0, I_100) -> dense 7x7x128 -> BN, ReLU -> 4x4 stride-2 transposed conv 64
(14x14) -> BN, ReLU -> transposed conv 1 (28x28), tanh; the discriminator mirrors it (4x4
stride-2 convolutions 64 and 128, LeakyReLU 0.2, batch norm on the second) and ends in one
logit. DCGAN's optimizer (Adam, learning rate 2e-4, beta1 0.5, a constant rate) for both
players, each with its own moments; batch 64 (the paper's is 128); weights from N(0, 0.02).
Samples come from the generator's EMA (decay 0.999) with batch statistics recomputed for it.
The paper's networks are for 64x64 images (a 4x4x1024 projection and four transposed
convolutions); this is the common two-stage MNIST variant. MNIST is 8-bit grey, scaled to
[-1, 1]; samples are rounded back to the 256 levels.

Result (one core of the 2-core CPU, `taskset -c 0`; another job had the other core):
5,000 steps of batch 64 (5.3 passes) in 21.6 min at 3.8 steps/s. Test set at the end: D
accuracy real 0.93, generated 0.67; generated spread 1.01 of the data's (no collapse).
Sample quality (10,000 samples, --mode=sample_quality with the project's MNIST classifier):
FID (MNIST-classifier features, not Inception) 66.8, Inception Score 6.64 (test set: 9.75),
all 10 classes (KL from uniform 0.089). AIS on the first 50 test images (4 chains x 200
distributions x 5 leapfrog): 532.9 +- 48.9 nats at --ais_obs_std=0.1.

  DGM_DATA_DIR=../shared/data taskset -c 0 python -m experiments.main \
      --config=configs/gan_mnist.py --config.train.num_steps=5000 \
      --config.train.checkpoint_every=1000 --workdir=runs/gan_mnist
"""
from configs import common


def _parse(arg):
  opts = {'minimax': False, 'k': 1, 'cifar10': False, 'tiny': False}
  for tok in filter(None, (arg or '').split(',')):
    tok = tok.strip()
    if tok in ('minimax', 'cifar10', 'tiny'):
      opts[tok] = True
    elif tok.startswith('k=') and tok[2:].isdigit() and int(tok[2:]) >= 1:
      opts['k'] = int(tok[2:])
    else:
      raise ValueError(f'Unknown preset token {tok!r} in {arg!r}; use minimax, k=N (N >= 1), '
                       'cifar10, tiny.')
  return opts


def get_config(arg: str | None = None):
  opts = _parse(arg)
  c = common.base_config()
  c.model_name = 'gan'
  c.model.image_shape = (28, 28, 1)
  c.model.num_levels = 256
  c.model.latent_dim = 100
  c.model.generator_features = 64
  c.model.discriminator_features = 64
  c.model.batch_norm = True
  c.model.generator_loss = 'minimax' if opts['minimax'] else 'non_saturating'
  c.model.discriminator_steps = opts['k']
  c.model.obs_std = 0.0   # AIS: pass --ais_obs_std (Wu et al. choose it on validation data)

  adversarial_training(c)

  if opts['cifar10']:
    # DCGAN for 32x32 RGB: 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x3, and the mirror image.
    c.model.image_shape = (32, 32, 3)
    c.model.generator_features = 128
    c.model.discriminator_features = 128
    c.data.name = 'cifar10'
    c.data.batch_size = 128
    c.train.num_steps = 100_000
    c.train.log_every = 1000
    c.train.checkpoint_every = 10_000

  if opts['tiny']:
    c.model.latent_dim = 8
    c.model.generator_features = 8
    c.model.discriminator_features = 8
    tiny_adversarial(c)
  return c


def adversarial_training(c) -> None:
  """The data, optimizer and schedule the GAN and the VAE-GAN configs share: 8-bit MNIST in
  batches of 64, DCGAN's Adam (2e-4, beta1 0.5, constant, no clipping), EMA 0.999."""
  c.data.name = 'mnist'
  c.data.batch_size = 64
  c.data.eval_batch_size = 500
  c.data.eval_split = 'test'

  c.optimizer.learning_rate = 2e-4
  c.optimizer.b1 = 0.5
  c.optimizer.schedule = 'constant'
  c.optimizer.warmup_steps = 0
  c.optimizer.grad_clip_norm = 0.0
  c.train.num_steps = 20_000
  c.train.log_every = 500
  c.train.checkpoint_every = 5000
  c.train.num_samples = 64
  c.train.ema_decay = 0.999


def tiny_adversarial(c) -> None:
  """The few-step data and schedule of the adversarial configs' `tiny` presets."""
  c.data.batch_size = 16
  c.data.eval_batch_size = 128
  c.data.eval_split = 'test[:256]'
  c.train.num_steps = 5
  c.train.log_every = 1
  c.train.checkpoint_every = 5
  c.train.num_samples = 8
  c.train.batch_stats_batches = 2
