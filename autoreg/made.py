"""MADE: Masked Autoencoder for Distribution Estimation.

Germain, Gregor, Murray & Larochelle 2015, arXiv 1502.03509, Sec. 4 (the masks M^W and M^V,
and their deep versions for L hidden layers). Every input x_d gets a degree m(d) in {1..D}
(a permutation: the autoregressive ordering) and every hidden unit k of layer l a degree
m^l(k) in {min m^{l-1}, ..., D-1}. A weight from a unit of degree a to a hidden unit of
degree b is kept iff b >= a (M^W), and a weight from a hidden unit of degree a to the
output for input d is kept iff m(d) > a (M^V, strict). Then the outputs for x_d
depend only on inputs of strictly smaller degree, x_<d in the ordering, so the network's
outputs are the conditionals of an autoregressive model in one pass.

`num_outputs_per_dim` outputs share the degree of their input (e.g. 2 for MAF's mean and
log-scale, Papamakarios et al. 2017, arXiv 1705.07057). An optional context (a conditioning
vector, such as IAF's h) enters every layer through unmasked weights: it carries no
information about x, so connecting it everywhere keeps the autoregressive property.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

Ordering = Union[str, Sequence[int]]


def input_degrees(num_inputs: int, order: Ordering = 'natural', seed: int = 0) -> np.ndarray:
  """Degrees in {1..D} of the inputs: 'natural' (1..D), 'reversed' (D..1), 'random' (a
  permutation drawn from `seed`), or an explicit permutation of 1..D."""
  if isinstance(order, str):
    if order == 'natural':
      return np.arange(1, num_inputs + 1)
    if order == 'reversed':
      return np.arange(num_inputs, 0, -1)
    if order == 'random':
      return np.random.RandomState(seed).permutation(num_inputs) + 1
    raise ValueError(f"input order must be 'natural', 'reversed', 'random' or a permutation, "
                     f'got {order!r}')
  degrees = np.asarray(order, np.int64)
  if sorted(degrees.tolist()) != list(range(1, num_inputs + 1)):
    raise ValueError(f'an explicit input order must be a permutation of 1..{num_inputs}, '
                     f'got {order!r}')
  return degrees


def made_degrees(num_inputs: int, hidden_sizes: Sequence[int],
                 input_order: Ordering = 'natural', hidden_order: str = 'random',
                 seed: int = 0) -> list[np.ndarray]:
  """Degrees of the inputs and of every hidden layer: [m^0 (inputs), m^1, ..., m^L].

  Hidden degrees lie in {min m^{l-1}, ..., D-1} (Sec. 4), drawn uniformly ('random') or
  cycled through that range ('sequential', which guarantees every degree appears when the
  layer is wide enough). For D == 1 there is no valid degree below D; hidden units get
  degree 1 and the output sees nothing, as it must.
  """
  if hidden_order not in ('random', 'sequential'):
    raise ValueError(f"hidden order must be 'random' or 'sequential', got {hidden_order!r}")
  rng = np.random.RandomState(seed)
  degrees = [input_degrees(num_inputs, input_order, seed)]
  top = max(num_inputs - 1, 1)
  for size in hidden_sizes:
    low = min(int(degrees[-1].min()), top)
    if hidden_order == 'random':
      degrees.append(rng.randint(low, top + 1, size=size))
    else:
      degrees.append(low + np.arange(size) % (top - low + 1))
  return degrees


def made_masks(num_inputs: int, hidden_sizes: Sequence[int], num_outputs_per_dim: int = 1,
               input_order: Ordering = 'natural', hidden_order: str = 'random',
               seed: int = 0) -> list[np.ndarray]:
  """The 0/1 masks [fan_in, fan_out] of every layer: L hidden masks, then the output mask.

  The output mask is [H_L, D * num_outputs_per_dim] with column d * k + j for output j of
  input d, so outputs reshape to [..., D, num_outputs_per_dim].
  """
  degrees = made_degrees(num_inputs, hidden_sizes, input_order, hidden_order, seed)
  masks = [(d_out[None, :] >= d_in[:, None]).astype(np.float32)        # M^W
           for d_in, d_out in zip(degrees[:-1], degrees[1:], strict=True)]
  out = (degrees[0][None, :] > degrees[-1][:, None]).astype(np.float32)  # M^V
  masks.append(np.repeat(out, num_outputs_per_dim, axis=1))
  return masks


class MaskedDense(nn.Module):
  """A dense layer whose [in, out] kernel is multiplied by a fixed 0/1 mask."""
  features: int
  mask: np.ndarray
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features))
    y = x @ (kernel * jnp.asarray(self.mask, kernel.dtype))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


class MADE(nn.Module):
  """x [B, D] (and optional context [B, C]) -> [B, D, num_outputs_per_dim].

  Output [b, d, j] depends only on the inputs whose degree is below that of input d (see
  `made_masks`), and on the whole context. `output_kernel_init` = zeros makes the network
  output its bias (zero) at initialization, which flows use to start at the identity.
  """
  hidden_sizes: Sequence[int]
  num_outputs_per_dim: int = 1
  input_order: Ordering = 'natural'
  hidden_order: str = 'random'
  seed: int = 0
  activation: Callable = nn.relu
  output_kernel_init: Callable = nn.initializers.lecun_normal()

  def masks(self, num_inputs: int) -> list[np.ndarray]:
    return made_masks(num_inputs, self.hidden_sizes, self.num_outputs_per_dim,
                      self.input_order, self.hidden_order, self.seed)

  def degrees(self, num_inputs: int) -> np.ndarray:
    """The degree of each input: output d depends on inputs of smaller degree only."""
    return input_degrees(num_inputs, self.input_order, self.seed)

  @nn.compact
  def __call__(self, x, context: Optional[jnp.ndarray] = None):
    num_inputs = x.shape[-1]
    masks = self.masks(num_inputs)
    h = x
    for i, mask in enumerate(masks):
      last = i == len(masks) - 1
      h = MaskedDense(mask.shape[1], mask,
                      kernel_init=self.output_kernel_init if last else
                      nn.initializers.lecun_normal(), name=f'masked_{i}')(h)
      if context is not None:
        h = h + nn.Dense(mask.shape[1], use_bias=False,
                         kernel_init=self.output_kernel_init if last else
                         nn.initializers.lecun_normal(), name=f'context_{i}')(context)
      if not last:
        h = self.activation(h)
    return h.reshape(*x.shape[:-1], num_inputs, self.num_outputs_per_dim)
