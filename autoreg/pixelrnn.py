"""PixelRNN: van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
ICML 2016, arXiv 1601.06759: the Row LSTM (Sec. 3.1) and the Diagonal BiLSTM (Sec. 3.2).

p(x) = prod_i p(x_i | x_<i) over pixels in raster order, R -> G -> B within a pixel
(Eq. 1-2), each conditional a categorical over `num_levels` values (Sec. 3.2, the 256-way
softmax; 2 for binarized MNIST). The network (Fig. 4, Table 4 of the paper):

  7x7 mask-A convolution -> 2h features
  num_layers residual LSTM layers: LSTM(2h -> h), 1x1 mask-B convolution h -> 2h, added
  ReLU, 1x1 mask-B convolution -> output_features, ReLU, 1x1 mask-B -> C * num_levels logits

Both LSTM layers compute all four gates [o, f, i, g] = sigma(K_ss * h_prev + K_is * x)
(sigma the logistic for o, f, i and tanh for g), c = f . c_prev + i . g, h = o . tanh(c):

  * Row LSTM: K_is is a 1 x k convolution along the row, masked (mask B) to the pixels left
    of and at the current one, computed for the whole map at once; K_ss is a 1 x k
    convolution (k = 3) over the previous row's states; rows are scanned top to bottom
    (`nn.scan`). The context of pixel (i, j) is a triangle above it: row i - d reaches
    columns j - d - 1 .. j + d + 1 per layer and the first layer's 7x7 window.
  * Diagonal BiLSTM: the input map is skewed (row i shifted right by i), K_is is a 1x1
    convolution and K_ss a 2 x 1 convolution down each column of the skewed map (the pixel
    above and the pixel to the left in the image), columns are scanned left to right. A
    second LSTM with its own weights runs on the mirrored image; its output is shifted down
    one row so that it sees no pixel of the current row, and the two are added. The context
    is every earlier pixel (no blind spot).

For RGB every channel block is split into colour groups as in autoreg.masked, per gate, so
colour c of pixel (i, j) sees colours < c of that pixel only (mask A in the first layer,
mask B after). The recurrences (the previous row, the previous diagonal) only carry past
pixels, so the state-to-state convolutions mix all channels.

`sample` is naive ancestral sampling (the whole network per sub-pixel). The Row LSTM's
`sample_cached` recomputes only the current row: a row's states depend on the rows above
only through the previous row's states, which are cached per layer, so each sub-pixel costs
one row of each layer instead of the whole image. Both draw the same samples under the same
key (sub-pixel t draws with fold_in(rng, t)).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from autoreg import likelihood
from autoreg.masked import MaskedConv2D, jax_conv, pixelcnn_mask
from autoreg.pixelcnn import to_network_input
from autoreg.sampling import naive_raster_sample

ARCHITECTURES = ('row_lstm', 'diagonal_bilstm')


def gate_mask(kernel_size, in_features: int, hidden: int, num_colors: int,
              mask_type: str = 'B', num_gates: int = 4) -> np.ndarray:
  """[kh, kw, in, num_gates * hidden] mask: PixelCNN's mask for `hidden` outputs, repeated
  per gate, so channel k of every gate is in the colour group of hidden channel k."""
  m = pixelcnn_mask(kernel_size, in_features, hidden, mask_type, num_colors)
  return np.concatenate([m] * num_gates, axis=-1)


class GateConv(nn.Module):
  """A same-padded convolution to 4 * hidden gate pre-activations, masked by gate_mask."""
  hidden: int
  kernel_size: tuple = (1, 3)
  num_colors: int = 1

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], 4 * self.hidden))
    bias = self.param('bias', nn.initializers.zeros, (4 * self.hidden,))
    mask = gate_mask(self.kernel_size, x.shape[-1], self.hidden, self.num_colors)
    return jax_conv(x, kernel * jnp.asarray(mask, kernel.dtype)) + bias


def lstm_update(z, c_prev):
  """[o, f, i, g] pre-activations (last axis 4h) and c_prev -> (c, h)."""
  o, f, i, g = jnp.split(z, 4, axis=-1)
  c = nn.sigmoid(f) * c_prev + nn.sigmoid(i) * jnp.tanh(g)
  return c, nn.sigmoid(o) * jnp.tanh(c)


def conv1d_same(h, kernel):
  """h [B, N, Cin], kernel [k, Cin, Cout] (k odd): a same-padded 1-D convolution
  (cross-correlation, as lax.conv_general_dilated's 'SAME'), computed as one matmul of the
  k shifted copies of h concatenated along channels (im2col) with the kernel [k Cin, Cout].

  Not lax.conv_general_dilated, on purpose (issue 18): the Row LSTM applies this inside its
  nn.scan over rows, where XLA:CPU ran the convolution's gradients slowly; the matmul form
  took the `row` config's train step from 0.64 s to 0.25 s (benchmarks.compile_time's
  `next step`, 2026-12-06, quiet 2-core CPU), the outputs equal to float tolerance
  (tests/test_pixelrnn.py compares them)."""
  k, cin, cout = kernel.shape
  pad = (k - 1) // 2
  n = h.shape[1]
  padded = jnp.pad(h, ((0, 0), (pad, pad), (0, 0)))
  taps = jnp.concatenate([padded[:, j:j + n] for j in range(k)], axis=-1)
  return taps @ kernel.reshape(k * cin, cout)


def skew(x):
  """[B, H, W, C] -> [B, H, W + H - 1, C]: row i shifted right by i (zeros elsewhere)."""
  b, hgt, wid, c = x.shape
  x = jnp.pad(x, ((0, 0), (0, 0), (0, hgt), (0, 0)))          # each row W + H long
  x = x.reshape(b, hgt * (wid + hgt), c)[:, :hgt * (wid + hgt - 1)]
  return x.reshape(b, hgt, wid + hgt - 1, c)


def unskew(x, width: int):
  """The inverse of skew: [B, H, W + H - 1, C] -> [B, H, W, C]."""
  hgt = x.shape[1]
  idx = np.arange(hgt)[:, None] + np.arange(width)[None, :]        # row i: columns i..i+W-1
  return jnp.take_along_axis(x, jnp.asarray(idx)[None, :, :, None], axis=2)


class RowLSTMStep(nn.Module):
  """One row of the Row LSTM: the state-to-state 1 x k convolution of the previous row's
  states plus the given input-to-state pre-activations."""
  hidden: int
  kernel: int = 3

  @nn.compact
  def __call__(self, carry, z_is):
    c_prev, h_prev = carry
    k_ss = self.param('kernel', nn.initializers.lecun_normal(),
                      (self.kernel, self.hidden, 4 * self.hidden))
    c, h = lstm_update(conv1d_same(h_prev, k_ss) + z_is, c_prev)
    return (c, h), h


class DiagonalKernel(nn.Module):
  """One direction's 2 x 1 state-to-state kernel [2, h, 4h]: [0] for the state of the row
  above, [1] for the same row, both in the previous column of the skewed map."""
  hidden: int

  @nn.compact
  def __call__(self):
    return self.param('kernel', nn.initializers.lecun_normal(),
                      (2, self.hidden, 4 * self.hidden))


def diagonal_scan(z_is, kernels):
  """Both directions of a Diagonal BiLSTM layer in one scan over the skewed columns.

  z_is [D, B, H, W', 4h]: each direction's input-to-state pre-activations on its skewed
  map; kernels [D, 2, h, 4h] (DiagonalKernel's). Column j's state of row i is
  lstm_update(h(i-1, j-1) K[0] + h(i, j-1) K[1] + z(i, j)); returns the states h
  [D, B, H, W', h]. One lax.scan for the D directions (not one nn.scan each): half the
  loops to trace and compile (issue 18)."""
  d, b, hgt, _, _ = z_is.shape
  hidden = kernels.shape[2]

  def column(carry, z_col):                                        # z_col [D, B, H, 4h]
    c_prev, h_prev = carry
    above = jnp.pad(h_prev, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]   # row i - 1
    z = (jnp.einsum('dbhi,dio->dbho', above, kernels[:, 0]) +
         jnp.einsum('dbhi,dio->dbho', h_prev, kernels[:, 1]) + z_col)
    c, h = lstm_update(z, c_prev)
    return (c, h), h

  zeros = jnp.zeros((d, b, hgt, hidden), z_is.dtype)
  _, h = jax.lax.scan(column, (zeros, zeros), jnp.moveaxis(z_is, 3, 0))
  return jnp.moveaxis(h, 0, 3)


def _scan(step_cls, axis_in: int, **kwargs):
  """nn.scan of a step module over axis `axis_in` of its input, stacking outputs there."""
  return nn.scan(step_cls, variable_broadcast='params', split_rngs={'params': False},
                 in_axes=axis_in, out_axes=axis_in)(**kwargs)


class PixelRNN(nn.Module):
  """PixelRNN over integer images [B, H, W, C] with values in {0..num_levels-1}.

  Attributes:
    num_levels: values per sub-pixel (256 for 8-bit, 2 for binarized MNIST).
    num_channels: colour channels C (1 grey, 3 RGB).
    architecture: 'row_lstm' or 'diagonal_bilstm'.
    hidden: h, the LSTM state channels; the residual stream has 2h (the paper: h = 16 for
      the 7-layer and 32 for the 1-layer Diagonal BiLSTM on MNIST, 128 on CIFAR-10).
    num_layers: LSTM layers (7 on MNIST, 12 on CIFAR-10).
    first_kernel: the mask-A input convolution's size (7).
    row_kernel: the Row LSTM's k (3) for both its convolutions.
    output_features: channels of the hidden 1x1 output layer.
    full_context: Diagonal BiLSTM only. The paper's construction has a one-pixel blind
      spot: the first layer's mask-A convolution never shows a row's last pixel x(i, W-1)
      to row i itself, and the rows below see it only through outputs within k/2 columns
      of the right edge, so pixel (i + 1, j) for j < W - 1 - k/2 misses it (tested). With
      True (the default), the first LSTM layer's mirrored direction also reads the image
      itself (a 1x1 map of the pixels; its output is shifted down a row, so this is
      causal), which closes the gap: every earlier pixel is in the context.
  """
  num_levels: int = 256
  num_channels: int = 1
  architecture: str = 'diagonal_bilstm'
  hidden: int = 16
  num_layers: int = 7
  first_kernel: int = 7
  row_kernel: int = 3
  output_features: int = 32
  full_context: bool = True

  def setup(self):
    if self.architecture not in ARCHITECTURES:
      raise ValueError(f'PixelRNN architecture={self.architecture!r}; choose one of '
                       f'{ARCHITECTURES}.')
    c, h = self.num_channels, self.hidden
    if h % c:
      raise ValueError(f'PixelRNN hidden={h} must be a multiple of num_channels={c} (one '
                       'block of state channels per colour).')
    if self.row_kernel % 2 == 0:
      raise ValueError(f'PixelRNN row_kernel={self.row_kernel} must be odd.')
    self.first = MaskedConv2D(2 * h, (self.first_kernel,) * 2, 'A', c)
    if self.architecture == 'row_lstm':
      self.input_to_state = [GateConv(h, (1, self.row_kernel), c)
                             for _ in range(self.num_layers)]
      self.rows = [_scan(RowLSTMStep, 1, hidden=h, kernel=self.row_kernel)
                   for _ in range(self.num_layers)]
    else:
      self.input_to_state = [GateConv(h, (1, 1), c) for _ in range(self.num_layers)]
      self.mirror_input_to_state = [GateConv(h, (1, 1), c) for _ in range(self.num_layers)]
      self.diagonals = [DiagonalKernel(h) for _ in range(self.num_layers)]
      self.mirror_diagonals = [DiagonalKernel(h) for _ in range(self.num_layers)]
      if self.full_context:
        self.mirror_pixels = nn.Dense(4 * h, use_bias=False)
    self.residual = [MaskedConv2D(2 * h, (1, 1), 'B', c) for _ in range(self.num_layers)]
    self.out_hidden = MaskedConv2D(self.output_features, (1, 1), 'B', c)
    self.out_logits = MaskedConv2D(c * self.num_levels, (1, 1), 'B', c)

  @property
  def has_cached_sampler(self) -> bool:
    """Whether sample_cached works for this architecture (the trainer's 'auto' sampler)."""
    return self.architecture == 'row_lstm'

  # -- the full forward pass ---------------------------------------------------------------

  def _input(self, x):
    if x.ndim != 4 or x.shape[-1] != self.num_channels:
      raise ValueError(f'PixelRNN expects [B, H, W, {self.num_channels}] images, got shape '
                       f'{x.shape}')
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = to_network_input(x, self.num_levels)
    return x

  def _head(self, y):
    h = self.out_hidden(nn.relu(y))
    logits = self.out_logits(nn.relu(h))
    return logits.reshape(*logits.shape[:-1], self.num_channels, self.num_levels)

  def _row_lstm_layer(self, layer, y):
    b, _, w, _ = y.shape
    zeros = jnp.zeros((b, w, self.hidden), y.dtype)
    _, h = self.rows[layer]((zeros, zeros), self.input_to_state[layer](y))
    return h

  def _diagonal_layer(self, layer, y, pixels):
    w = y.shape[2]
    z = self.input_to_state[layer](y)
    z_mirror = self.mirror_input_to_state[layer](y[:, :, ::-1])
    if layer == 0 and self.full_context:
      z_mirror = z_mirror + self.mirror_pixels(pixels[:, :, ::-1])
    h = diagonal_scan(jnp.stack([skew(z), skew(z_mirror)]),
                      jnp.stack([self.diagonals[layer](), self.mirror_diagonals[layer]()]))
    forward, mirrored = unskew(h[0], w), unskew(h[1], w)[:, :, ::-1]
    # The mirrored direction sees the rest of the current row: shifted down one row, each
    # pixel gets it from the row above only.
    mirrored = jnp.pad(mirrored, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    return forward + mirrored

  def __call__(self, x, train: bool = False):
    """Logits [B, H, W, C, num_levels] of each sub-pixel given all earlier ones.

    x: integer images, or floats already scaled to [-1, 1] (for gradient tests)."""
    del train
    pixels = self._input(x)
    y = self.first(pixels)
    for layer in range(self.num_layers):
      h = (self._row_lstm_layer(layer, y) if self.architecture == 'row_lstm' else
           self._diagonal_layer(layer, y, pixels))
      y = y + self.residual[layer](h)
    return self._head(y)

  def log_prob(self, x):
    """Exact log p(x) per example, in nats. x: int [B, H, W, C]."""
    return likelihood.categorical_log_prob(self(x), x)

  def loss(self, batch, train: bool = True):
    nll = -self.log_prob(batch['image'])
    return nll.mean(), {'nll': nll}

  # -- sampling ------------------------------------------------------------------------------

  def sample(self, rng, shape, temperature: float = 1.0, init=None, start=0):
    """Naive ancestral sampling: the whole network per sub-pixel, in a compiled loop
    (autoreg.sampling.naive_raster_sample: sub-pixel t draws with fold_in(rng, t); `init`
    and `start` continue from a partly given image, for completions)."""
    return naive_raster_sample(self, rng, shape, temperature, init, start)

  def _row(self, x, i, states):
    """Logits [B, W, C, L] of row i and each layer's (c, h) of row i, given the image x and
    each layer's states of row i - 1: exactly what the full pass computes for row i."""
    k = self.first_kernel // 2
    xf = jnp.pad(self._input(x), ((0, 0), (k, k), (0, 0), (0, 0)))
    window = jax.lax.dynamic_slice_in_dim(xf, i, 2 * k + 1, axis=1)
    y = self.first(window)[:, k:k + 1]                                # [B, 1, W, 2h]
    new_states = []
    for layer in range(self.num_layers):
      z_is = self.input_to_state[layer](y)[:, 0]                       # [B, W, 4h]
      step = self.rows[layer]
      (c, h), _ = step(states[layer], z_is[:, None])                   # one row of the scan
      new_states.append((c, h))
      y = y + self.residual[layer](h[:, None])
    return self._head(y)[:, 0], new_states

  def sample_cached(self, rng, shape, temperature: float = 1.0):
    """Row LSTM sampling that recomputes only the current row (see the module docstring);
    the same draws as `sample` under the same key."""
    if self.architecture != 'row_lstm':
      raise ValueError('sample_cached is the Row LSTM sampler; the Diagonal BiLSTM samples '
                       "with sample (config.sample.sampler='naive').")
    b, hgt, wid, ch = shape
    zeros = jnp.zeros((b, wid, self.hidden), jnp.float32)
    states = [(zeros, zeros)] * self.num_layers

    def row_body(i, carry):
      x, states = carry

      def pixel_body(r, x):
        j, c = jnp.divmod(r, ch)
        logits, _ = self._row(x, i, states)
        t = i * wid * ch + r
        draw = jax.random.categorical(jax.random.fold_in(rng, t),
                                      logits[:, j, c] / temperature)
        return x.at[:, i, j, c].set(draw.astype(jnp.int32))

      x = jax.lax.fori_loop(0, wid * ch, pixel_body, x)
      _, states = self._row(x, i, states)                              # the finished row
      return x, states

    x, _ = jax.lax.fori_loop(0, hgt, row_body, (jnp.zeros(shape, jnp.int32), states))
    return x
