"""Dilated causal 1-D convolutions and WaveNet's gated residual stack, with the per-layer
ring buffers of fast generation. Shared by autoreg.wavenet and autoreg.bytenet.

  * A causal convolution of kernel k and dilation d (van den Oord et al. 2016, "WaveNet:
    A Generative Model for Raw Audio", arXiv 1609.03499, Sec. 2.1, Fig. 2-3) computes

      y_t = sum_{j=0}^{k-1} W_j x_{t - (k-1-j) d} + b,

    reading zeros before t = 0, so y_t depends on x_{t-(k-1)d .. t} only.
  * A gated residual block (Sec. 2.3-2.4, Eq. 3, Fig. 4):
    z = tanh(W_f * x + V_f c) . sigmoid(W_g * x + V_g c) with * the dilated causal
    convolution and c the conditioning (Eq. 5 global, Eq. 6 local; the model adds it to
    both pre-activations); one 1x1 convolution of z gives the residual update (x + ...)
    and the skip output.
  * Fast generation (Paine, Khorrami, Chang, Zhang, Ramachandran, Hasegawa-Johnson &
    Huang 2016, "Fast Wavenet Generation Algorithm", arXiv 1611.09482): to produce y_t a
    layer needs its inputs at t - (k-1)d, ..., t - d, all computed at earlier steps. Each
    layer keeps them in a queue of (k-1) d entries, here a ring buffer indexed by t mod
    (k-1) d (`ring_taps`): the entry for time t - j d sits in slot (t - j d) mod (k-1) d,
    and the new input x_t overwrites slot t mod (k-1) d, whose old content (time
    t - (k-1) d) has just been read for the last time. A zero-initialized buffer returns
    exactly the zero padding of the full pass for t < (k-1) d. One generated step then
    costs O(layers), independent of the receptive field.

Both paths compute a convolution as one matrix product of the k taps concatenated along
channels (`CausalConv1D`), so the full pass and one cached step run the same op on the
same numbers.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg.gating import gate


def shift_right(x, n: int):
  """x [B, T, ...] delayed by n steps along time: zeros for t < n."""
  if n == 0:
    return x
  pad = [(0, 0)] * x.ndim
  pad[1] = (n, 0)
  return jnp.pad(x, pad)[:, :x.shape[1]]


def receptive_field(kernel_size: int, dilations: Sequence[int]) -> int:
  """Inputs one output of a stack of causal convolutions sees, its own position included."""
  return 1 + sum((kernel_size - 1) * d for d in dilations)


def ring_taps(cache, x_t, t, kernel_size: int, dilation: int):
  """One step of a layer's queue (Paine et al. 2016).

  cache: [B, (k-1) d, C] the layer's last (k-1) d inputs, input s at slot s mod (k-1) d;
  x_t: [B, 1, C] its input at step t (a traced int). Returns the taps
  [B, k, C] = inputs at t - (k-1) d, ..., t - d, t, and the cache holding x_t.
  """
  size = (kernel_size - 1) * dilation
  if size == 0:
    return x_t, cache
  past = [jax.lax.dynamic_slice_in_dim(cache, jnp.remainder(t - j * dilation, size), 1, 1)
          for j in range(kernel_size - 1, 0, -1)]
  cache = jax.lax.dynamic_update_slice_in_dim(cache, x_t, jnp.remainder(t, size), 1)
  return jnp.concatenate(past + [x_t], axis=1), cache


class CausalConv1D(nn.Module):
  """A causal convolution over [B, T, C] of kernel k and dilation d.

  Called with decode=True on taps [B, k, C] (the inputs at t - (k-1) d, ..., t, as
  `ring_taps` returns them) it gives the single output [B, 1, F] at t with the same
  matrix product as the full pass.
  """
  features: int
  kernel_size: int = 2
  dilation: int = 1
  use_bias: bool = True

  @nn.compact
  def __call__(self, x, decode: bool = False):
    k, d = self.kernel_size, self.dilation
    c = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, c, self.features))
    if decode:
      if x.shape[1] != k:
        raise ValueError(f'decode=True takes the {k} taps [B, {k}, C], got {x.shape}')
      taps = x.reshape(x.shape[0], 1, k * c)
    else:
      taps = jnp.concatenate([shift_right(x, (k - 1 - j) * d) for j in range(k)], axis=-1)
    y = jnp.dot(taps, kernel.reshape(k * c, self.features))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


class GatedResidualStack(nn.Module):
  """WaveNet's stack of gated residual blocks (Sec. 2.3-2.4, Fig. 4).

  Attributes:
    dilations: one block per entry (WaveNet: 1, 2, ..., 512 repeated).
    residual_channels: channels of the residual stream (its input must have these).
    gate_channels: channels of z (the paper's "dilation channels").
    skip_channels: channels of each block's skip output; 0 for none (ByteNet reads the
      residual stream instead).
    kernel_size: k of every dilated convolution (2 in WaveNet, 3 in ByteNet).
    dropout_rate: dropout on each block's gated activation while training (needs a
      'dropout' rng); 0 for none. Generation (block_step) never drops.

  Conditioning terms (V_f c, V_g c), one per block, are the caller's: each is None or an
  array broadcastable to the block's pre-activation [B, T, 2 gate_channels].
  """
  dilations: Sequence[int]
  residual_channels: int
  gate_channels: int
  skip_channels: int = 0
  kernel_size: int = 2
  dropout_rate: float = 0.0

  def setup(self):
    if not self.dilations or min(self.dilations) < 1 or self.kernel_size < 1:
      raise ValueError(f'GatedResidualStack needs dilations >= 1 and kernel_size >= 1, got '
                       f'dilations={tuple(self.dilations)}, kernel_size={self.kernel_size}')
    self.convs = [CausalConv1D(2 * self.gate_channels, self.kernel_size, d)
                  for d in self.dilations]
    # One 1x1 convolution gives both the residual update and the skip output.
    self.outs = [nn.Dense(self.residual_channels + self.skip_channels)
                 for _ in self.dilations]
    self.dropout = nn.Dropout(self.dropout_rate)

  @property
  def receptive_field(self) -> int:
    return receptive_field(self.kernel_size, self.dilations)

  def block(self, layer: int, x, cond=None, decode: bool = False, train: bool = False):
    """Block `layer` on a sequence x [B, T, R], or with decode=True on its taps [B, k, R].

    Returns (residual output [B, T or 1, R], skip output [B, T or 1, S] or None).
    """
    pre = self.convs[layer](x, decode=decode)
    if cond is not None:
      pre = pre + cond
    z = gate(pre)
    if train and self.dropout_rate > 0:
      z = self.dropout(z, deterministic=False)
    out = self.outs[layer](z)
    current = x[:, -1:] if decode else x
    r = self.residual_channels
    return current + out[..., :r], (out[..., r:] if self.skip_channels else None)

  def __call__(self, h, conds=None, train: bool = False):
    """The full pass: (residual stream after the last block, sum of skips or None)."""
    skip = None
    for layer in range(len(self.dilations)):
      h, s = self.block(layer, h, None if conds is None else conds[layer], train=train)
      if s is not None:
        skip = s if skip is None else skip + s
    return h, skip

  # -- Fast generation -------------------------------------------------------------------

  def init_cache(self, batch_size: int, dtype=jnp.float32):
    """Zeroed ring buffers, one [B, (k-1) d, R] per block."""
    return [jnp.zeros((batch_size, (self.kernel_size - 1) * d, self.residual_channels), dtype)
            for d in self.dilations]

  def block_step(self, layer: int, cache, h_t, t, cond=None):
    """Block `layer` at step t from its ring buffer: (h [B, 1, R], skip or None, new cache)."""
    taps, cache = ring_taps(cache, h_t, t, self.kernel_size, self.dilations[layer])
    h, s = self.block(layer, taps, cond, decode=True)
    return h, s, cache
