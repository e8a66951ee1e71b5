"""The DCGAN on CIFAR-10 (32x32 RGB; latent/gan.py), for an accelerator: configs/gan_mnist.py's
`cifar10` preset. Not yet trained here (there is no CIFAR-10 on the project's CPU machines).

  python -m experiments.main --config=configs/dcgan_cifar10.py --workdir=runs/dcgan_cifar10

Generator: z ~ N(0, I_100) -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x3 (4x4 stride-2
transposed convolutions, BN and ReLU, tanh output); the discriminator mirrors it with
LeakyReLU 0.2 and no batch norm on its input layer (Radford et al. 2016, Sec. 3); Adam 2e-4,
beta1 0.5, batch 128 (the paper's), 100,000 steps. Presets: those of configs/gan_mnist.py
(minimax, k=N, tiny).
"""
from configs import gan_mnist


def get_config(arg: str | None = None):
  return gan_mnist.get_config(','.join(filter(None, ['cifar10', arg or ''])))
