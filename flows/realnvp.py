"""Real NVP: the multi-scale architecture.

Dinh, Sohl-Dickstein & Bengio 2017, "Density estimation using Real NVP", arXiv 1605.08803.

- Preprocessing (Sec. 4.1): dequantized x in [0, 1) is mapped to logit space,
  y = logit(alpha + (1 - 2 alpha) x) with alpha = 0.05; its log-Jacobian enters the
  likelihood (flows/models.py).
- Affine coupling (Eqs. 6-9) y = b*x + (1-b) * (x * exp(s(b*x)) + t(b*x)), with the
  checkerboard and channel-wise masks b of Sec. 3.4 / Fig. 3, and s = scale * tanh(.) as in
  the paper's code. s and t come from a ResNet (Sec. 4.1: residual blocks of 3x3
  convolutions with batch normalization and rectifiers; the paper also uses weight
  normalization, which we leave out), whose last convolution starts at zero, so a fresh
  coupling is the identity. For checkerboard masks the mask itself is an extra input
  channel, so the network can tell a masked-out zero from a zero-valued pixel.
- Batch normalization as a bijector (Sec. 3.7, Appendix E) after every coupling: batch
  statistics in training (running averages in the 'batch_stats' collection; the trainer
  applies with mutable=['batch_stats']), running averages in evaluation and sampling.
- The multi-scale architecture (Sec. 3.6, Fig. 4): each scale but the last applies three
  checkerboard couplings, a squeeze, three channel-wise couplings, and factors out half of
  the channels as latent variables (standard normal). As in the paper's code, the
  channel-wise couplings see the plain space-to-depth squeeze (their halves are the top
  and bottom rows of each 2x2 block, not redundant with the checkerboard), and the
  factor-out uses the ordered layout (it keeps the even-parity pixels of each block); the
  last scale applies four checkerboard couplings. The couplings' ResNets double their features at
  every scale. CIFAR-10 (Sec. 4.1): 8 residual blocks, 64 features, downscaled once (num_scales=2);
  3.49 bits/dim on the test set (Table 1).

The latent of `encode` is [factored out at scale 0, ..., scale S-2, the last scale's
output], each flattened (flows/models.py).
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax.numpy as jnp

from flows import bijectors as fb
from flows.models import ImageFlow, flatten_latents, split_latents


class ResNet(nn.Module):
  """conv3x3 -> num_blocks x [BN-ReLU-conv3x3-BN-ReLU-conv3x3 + skip] -> BN-ReLU ->
  zero-initialized conv3x3 to out_features."""
  features: int
  num_blocks: int
  out_features: int
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(nn.Conv, self.features, (3, 3))
    if self.batch_norm:
      norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
    else:
      def norm():
        return (lambda h: h)
    h = conv()(x)
    for _ in range(self.num_blocks):
      r = conv()(nn.relu(norm()(h)))
      r = conv()(nn.relu(norm()(r)))
      h = h + r
    h = nn.relu(norm()(h))
    return nn.Conv(self.out_features, (3, 3), kernel_init=nn.initializers.zeros, name='out')(h)


class ResNetCoupling(fb.Bijector):
  """Real NVP's affine coupling (Eq. 9) with a ResNet for s and t; log_det = sum (1-b) s.
  Same map as flows.bijectors.AffineCoupling, with a batch-normalized ResNet as the net."""
  mask: str = 'checkerboard'
  flip: bool = False
  features: int = 64
  num_blocks: int = 8
  net_batch_norm: bool = True

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del context
    c = x.shape[-1]
    b_np = fb.coupling_mask(x.shape[1:], self.mask, self.flip)
    b = jnp.asarray(b_np, x.dtype)
    net_in = b * x
    if self.mask == 'checkerboard':
      net_in = jnp.concatenate([net_in, jnp.broadcast_to(b[..., :1], x.shape[:-1] + (1,))],
                               axis=-1)
    # The inverse only runs in eval mode (sampling and decoding).
    h = ResNet(self.features, self.num_blocks, 2 * c, self.net_batch_norm,
               name='net')(net_in, train=train and not inverse)
    scale = self.param('scale', nn.initializers.ones, (c,))
    s = (1 - b) * scale * jnp.tanh(h[..., :c])
    t = (1 - b) * h[..., c:]
    log_det = fb._per_example_sum(s)  # pylint: disable=protected-access
    if inverse:
      return ((x - t) * jnp.exp(-s)).astype(x.dtype), -log_det
    return (x * jnp.exp(s) + t).astype(x.dtype), log_det


class RealNVP(ImageFlow):
  """The multi-scale Real NVP on [H, W, C] images.

  Attributes (beyond ImageFlow's image_shape, preprocessing, alpha, prior):
    num_scales: scales; each but the last squeezes once and factors out half the channels,
      so H and W must be divisible by 2^(num_scales - 1).
    features: the ResNets' features at the first scale (doubled at each further scale).
    num_blocks: residual blocks per ResNet.
    batch_norm: a BatchNormBijector after every coupling (Sec. 3.7).
    net_batch_norm: batch normalization inside the ResNets.
    momentum: the BatchNormBijector's running-average momentum.
  """
  num_scales: int = 2
  features: int = 64
  num_blocks: int = 8
  batch_norm: bool = True
  net_batch_norm: bool = True
  momentum: float = 0.99
  preprocessing: str = 'logit'
  alpha: float = 0.05
  prior: str = 'gaussian'

  def setup(self):
    self._check_config()
    h, w, c = self.image_shape
    if self.num_scales < 1 or h % 2 ** (self.num_scales - 1) or w % 2 ** (self.num_scales - 1):
      raise ValueError(f'num_scales={self.num_scales} needs H and W divisible by '
                       f'2^(num_scales - 1); the images are {h}x{w}.')
    scales, shapes = [], []
    for s in range(self.num_scales):
      last = s == self.num_scales - 1
      layers, count = [], [0]

      def add(mask, flip, s=s, layers=layers, count=count):
        i = count[0]
        count[0] += 1
        layers.append(ResNetCoupling(
            mask=mask, flip=flip, features=self.features * 2 ** s,
            num_blocks=self.num_blocks, net_batch_norm=self.net_batch_norm,
            name=f'scale{s}_coupling{i}'))
        if self.batch_norm:
          layers.append(fb.BatchNormBijector(momentum=self.momentum,
                                             name=f'scale{s}_batchnorm{i}'))

      for i in range(4 if last else 3):
        add('checkerboard', bool(i % 2))
      if not last:
        # Channel-wise couplings on the plain squeeze, then the ordered layout for the
        # factor-out, as in the paper's code: on the ordered squeeze the channel halves
        # would be the checkerboard's halves again.
        layers.append(fb.Squeeze(ordered=False, name=f'scale{s}_squeeze'))
        h, w, c = h // 2, w // 2, 4 * c
        for i in range(3):
          add('channel', bool(i % 2))
        layers.append(fb.ReorderSqueezed(name=f'scale{s}_reorder'))
        shapes.append((h, w, c - c // 2))   # factored out
        c = c // 2
      scales.append(fb.Chain(layers))
    shapes.append((h, w, c))
    self.scales = scales
    self.latent_shapes = tuple(shapes)
    assert sum(math.prod(s) for s in shapes) == self.num_dims

  def _flow(self, y, train):
    log_det = jnp.zeros((y.shape[0],), jnp.float32)
    latents = []
    for s, chain in enumerate(self.scales):
      y, ld = chain(y, inverse=False, train=train)
      log_det = log_det + ld
      if s < self.num_scales - 1:
        keep = y.shape[-1] // 2
        latents.append(y[..., keep:])
        y = y[..., :keep]
    latents.append(y)
    return flatten_latents(latents), log_det

  def _flow_inverse(self, eps):
    parts = split_latents(eps, self.latent_shapes)
    y = parts[-1]
    for s in reversed(range(self.num_scales)):
      if s < self.num_scales - 1:
        y = jnp.concatenate([y, parts[s]], axis=-1)
      y, _ = self.scales[s](y, inverse=True, train=False)
    return y
