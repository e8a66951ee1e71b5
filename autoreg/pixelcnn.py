"""PixelCNN: van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
ICML 2016, arXiv 1601.06759.

p(x) = prod_i p(x_i | x_<i) over pixels in raster order and, within a pixel, over colour
channels R -> G -> B (Eq. 1-2). Each conditional is a categorical over `num_levels`
values (the paper's 256-way softmax, Sec. 3.2; 2 levels for binarized MNIST). The network
is a 7x7 mask-A convolution, residual blocks of 1x1 -> 3x3 mask-B -> 1x1 convolutions
(Fig. 5, h = features // 2), then ReLU and two mask-B 1x1 output layers (Table 4).

Known property (tested): a stack of masked 3x3 convolutions has a blind spot up and to the
right of each pixel; the Gated PixelCNN removes it.

The residual blocks stay unrolled (issue 18, item 1): under nn.scan their 3x3 convolutions'
gradients ran 10-30x slower on XLA:CPU and the train step compiled no faster (1.9 against
1.0-1.6 CPU s for the 5-block config's gradient); see autoreg/gated_pixelcnn.py.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from autoreg import likelihood
from autoreg.masked import MaskedConv2D
from autoreg.sampling import naive_raster_sample


def to_network_input(x, num_levels: int):
  """Integer pixels {0..L-1} -> floats in [-1, 1]."""
  return x.astype(jnp.float32) * (2.0 / (num_levels - 1)) - 1.0


class ResidualBlock(nn.Module):
  """Fig. 5 of the paper: 2h -> h (1x1) -> h (3x3 mask B) -> 2h (1x1), added to the input."""
  features: int
  kernel_size: int = 3
  num_colors: int = 1

  @nn.compact
  def __call__(self, x):
    h = self.features // 2
    y = MaskedConv2D(h, (1, 1), 'B', self.num_colors)(nn.relu(x))
    y = MaskedConv2D(h, (self.kernel_size,) * 2, 'B', self.num_colors)(nn.relu(y))
    y = MaskedConv2D(self.features, (1, 1), 'B', self.num_colors)(nn.relu(y))
    return x + y


class PixelCNN(nn.Module):
  """PixelCNN over integer images [B, H, W, C] with values in {0..num_levels-1}.

  Attributes:
    num_levels: values per sub-pixel (256 for 8-bit, 2 for binarized, 17 for 8x8 digits).
    num_channels: colour channels C of the images (1 grey, 3 RGB).
    features: channels of the hidden layers (2h in the paper; a multiple of num_channels).
    num_layers: residual blocks after the first layer (the paper: 15 for CIFAR and MNIST).
    first_kernel: kernel size of the mask-A input layer (7 in the paper).
    kernel_size: kernel size of the mask-B layers in the residual blocks (3).
    output_features: channels of the hidden 1x1 output layer (1024 in the paper for CIFAR).
  """
  num_levels: int = 256
  num_channels: int = 1
  features: int = 128
  num_layers: int = 15
  first_kernel: int = 7
  kernel_size: int = 3
  output_features: int = 256

  @nn.compact
  def __call__(self, x, train: bool = False):
    """Logits [B, H, W, C, num_levels] of each sub-pixel given all earlier ones.

    x: integer images in {0..num_levels-1}, or floats already scaled to [-1, 1] (so
    gradients with respect to the input can be taken, as the causality tests do).
    """
    del train  # no dropout or batch statistics
    if x.ndim != 4 or x.shape[-1] != self.num_channels:
      raise ValueError(f'PixelCNN expects [B, H, W, {self.num_channels}] images, got '
                       f'shape {x.shape}')
    c = self.num_colors
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = to_network_input(x, self.num_levels)
    h = MaskedConv2D(self.features, (self.first_kernel,) * 2, 'A', c)(x)
    for _ in range(self.num_layers):
      h = ResidualBlock(self.features, self.kernel_size, c)(h)
    h = MaskedConv2D(self.output_features, (1, 1), 'B', c)(nn.relu(h))
    logits = MaskedConv2D(self.num_channels * self.num_levels, (1, 1), 'B', c)(nn.relu(h))
    # Output channel k belongs to colour k // num_levels, matching channel_groups().
    return logits.reshape(*x.shape, self.num_levels)

  @property
  def num_colors(self) -> int:
    return self.num_channels

  def log_prob(self, x):
    """Exact log p(x) per example, in nats. x: int [B, H, W, C]."""
    return likelihood.categorical_log_prob(self(x), x)

  def loss(self, batch, train: bool = True):
    """The trainer's objective: mean NLL in nats, and per-batch metrics."""
    nll = -self.log_prob(batch['image'])
    return nll.mean(), {'nll': nll}

  def sample(self, rng, shape, temperature: float = 1.0, init=None, start=0):
    """Naive ancestral sampling: one full forward pass per sub-pixel, in a compiled loop
    (autoreg.sampling.naive_raster_sample: sub-pixel t draws with fold_in(rng, t); `init`
    and `start` continue from a partly given image)."""
    return naive_raster_sample(self, rng, shape, temperature, init, start)
