"""The VAE-GAN on MNIST (latent/vaegan.py; Larsen et al. 2016, arXiv 1512.09300), sized for a
CPU.

Presets (comma-separated):
  non_saturating   the decoder plays -log Dis(Dec(z)) instead of the minimax side
  gamma=G          the weight of the feature reconstruction in the decoder's update
  tiny             a few-step run for the test suite

  DGM_DATA_DIR=../shared/data python -m experiments.main \\
      --config=configs/vaegan_mnist.py --workdir=runs/vaegan_mnist

How it differs from the paper (64x64 faces): DCGAN-style 4x4 stride-2 networks for 28x28
grey images (encoder convolutions 32, 64 with batch norm and a 512-unit layer; decoder
7x7x64 -> 32 -> 1; discriminator 32 -> 64), 32 latents instead of 128, the reconstruction
compared in the discriminator's last convolution's features, Adam (2e-4, beta1 0.5) instead
of RMSProp (3e-4), and gamma = 1e-2, the default of the authors' released code
(recon_vs_gan_weight); their equilibrium rule is not used. 8-bit MNIST on [-1, 1].

Result (one core of the 2-core CPU, `taskset -c 0`): 3,000 steps of batch 64 in 10.3 min at
4.8 steps/s. Test set: KL 82.8 nats, pixel MSE of the reconstructions 0.014 (they are
sharp), D accuracy real 0.70, reconstructions 0.62, prior samples 0.93: the prior samples
are the weak part (the feature reconstruction, ~470 nats, outweighs the KL in the encoder's
loss, so q(z|x) sits far from p(z)). Sample quality (10,000 prior samples, MNIST-classifier
features): FID 139.6, Inception Score 4.64, all 10 classes (KL from uniform 0.147). AIS on
the first 50 test images (4 chains x 200 distributions x 5 leapfrog, --ais_obs_std=0.1):
667.5 +- 22.3 nats, against the DCGAN's 532.9 +- 48.9 under the same settings.

  DGM_DATA_DIR=../shared/data taskset -c 0 python -m experiments.main \
      --config=configs/vaegan_mnist.py --config.train.num_steps=3000 \
      --config.train.checkpoint_every=1000 --config.train.log_every=250 \
      --workdir=runs/vaegan_mnist
"""
from configs import common, gan_mnist


def _parse(arg):
  opts = {'non_saturating': False, 'gamma': 1e-2, 'tiny': False}
  for tok in filter(None, (arg or '').split(',')):
    tok = tok.strip()
    if tok in ('non_saturating', 'tiny'):
      opts[tok] = True
    elif tok.startswith('gamma='):
      try:
        opts['gamma'] = float(tok[6:])
      except ValueError:
        raise ValueError(f'Preset token {tok!r}: gamma must be a number.') from None
    else:
      raise ValueError(f'Unknown preset token {tok!r} in {arg!r}; use non_saturating, '
                       'gamma=G, tiny.')
  return opts


def get_config(arg: str | None = None):
  opts = _parse(arg)
  c = common.base_config()
  c.model_name = 'vaegan'
  c.model.image_shape = (28, 28, 1)
  c.model.num_levels = 256
  c.model.latent_dim = 32
  c.model.encoder_features = 32
  c.model.encoder_hidden = 512
  c.model.generator_features = 32
  c.model.discriminator_features = 32
  c.model.feature_layer = 0
  c.model.gamma = opts['gamma']
  c.model.batch_norm = True
  c.model.generator_loss = 'non_saturating' if opts['non_saturating'] else 'minimax'
  c.model.obs_std = 0.0

  gan_mnist.adversarial_training(c)

  if opts['tiny']:
    c.model.latent_dim = 4
    c.model.encoder_features = 8
    c.model.encoder_hidden = 16
    c.model.generator_features = 8
    c.model.discriminator_features = 8
    gan_mnist.tiny_adversarial(c)
  return c
