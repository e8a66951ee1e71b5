"""Masked 2-D convolutions for raster-scan autoregressive image models.

PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, arXiv 1601.06759, Sec. 3.4 and
Fig. 2): a k x k kernel is zeroed at every position after the centre in raster order, and
at the centre pixel the feature channels are split into one contiguous group per colour
(R, G, B for RGB; one group for grey). Mask A (first layer) lets colour group j see only
the input groups i < j of the current pixel, so no output sees its own input; mask B (every
later layer) also allows i == j, which is safe because hidden group j never saw input j.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def channel_groups(num_channels: int, num_colors: int) -> np.ndarray:
  """Colour group of each channel: contiguous blocks, channel c -> c * colors // channels."""
  if num_channels % num_colors:
    raise ValueError(
        f'{num_channels} channels cannot be split into {num_colors} colour groups; '
        'use a multiple of the number of colours.')
  return np.arange(num_channels) * num_colors // num_channels


def pixelcnn_mask(kernel_size: Sequence[int], in_features: int, out_features: int,
                  mask_type: str, num_colors: int = 1) -> np.ndarray:
  """The [kh, kw, in, out] 0/1 mask of a raster-order masked convolution."""
  if mask_type not in ('A', 'B'):
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
  kh, kw = kernel_size
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f'masked convolutions need odd kernel sizes, got {kernel_size}')
  ch, cw = kh // 2, kw // 2
  mask = np.zeros((kh, kw, in_features, out_features), np.float32)
  mask[:ch] = 1.0          # rows above the centre
  mask[ch, :cw] = 1.0      # left of the centre in the centre row
  gin = channel_groups(in_features, num_colors)[:, None]
  gout = channel_groups(out_features, num_colors)[None, :]
  centre = (gin < gout) if mask_type == 'A' else (gin <= gout)
  mask[ch, cw] = centre.astype(np.float32)
  return mask


class MaskedConv2D(nn.Module):
  """A same-padded 2-D convolution whose kernel is multiplied by a PixelCNN mask."""
  features: int
  kernel_size: Sequence[int] = (3, 3)
  mask_type: str = 'B'
  num_colors: int = 1
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    in_features = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (kh, kw, in_features, self.features))
    mask = pixelcnn_mask(self.kernel_size, in_features, self.features, self.mask_type,
                         self.num_colors)
    y = jax_conv(x, kernel * jnp.asarray(mask, kernel.dtype))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


def jax_conv(x, kernel):
  """NHWC 'SAME' convolution with an HWIO kernel."""
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
