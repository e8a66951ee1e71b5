"""Gated PixelCNN: van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu,
"Conditional Image Generation with PixelCNN Decoders", NeurIPS 2016, arXiv 1606.05328.

p(x | h) = prod_i p(x_i | x_<i, h) over sub-pixels in raster order, R -> G -> B within a
pixel (Eq. 1 and 3). Two stacks replace the masked convolutions of the PixelCNN (Sec. 2.2,
Fig. 2), which removes its blind spot:

  * the vertical stack, (k//2 + 1) x k convolutions over the rows above: its features at
    row i see every pixel of rows < i within the receptive field (the first layer's input
    is shifted down one row, so no later layer needs masking);
  * the horizontal stack, 1 x (k//2 + 1) convolutions over the current row up to and
    including the current pixel, plus a 1x1 convolution of the vertical stack's
    pre-activation. The first layer excludes the current pixel (mask A); later layers
    include it (mask B). For RGB the current-pixel taps are split into colour groups
    exactly as in autoreg.masked, so colour g sees only colours < g of its own pixel.

Every layer is a gated unit (Eq. 4, and Eq. 5 for a spatial map s):

  y = tanh(W_f * x + V_f h + V'_f * s) . sigmoid(W_g * x + V_g h + V'_g * s),

h a one-hot class label (V a per-layer dense map) and s a conditioning map [B, H, W, Cc]
(V' a 1x1 convolution), both added to the pre-activations of both stacks. The horizontal
stack is residual after its first layer; 1x1 skip connections from every layer are summed
and fed to ReLU -> 1x1 -> ReLU -> 1x1 output layers that give num_channels * num_levels
logits per pixel.

With output='logistic_mixture' the head instead gives the parameters of PixelCNN++'s
discretized logistic mixture for the whole pixel (Salimans, Karpathy, Chen & Kingma 2017,
arXiv 1701.05517, Eq. 2-3; autoreg.distributions): p(x) = prod_(i,j) p(x_ij | x_<ij), one
factor per pixel, with R -> G -> B coupled inside the pixel through the mixture's linear
mean coefficients rather than through the network. Every output of pixel (i, j) must then
be blind to all of that pixel's channels, so the masks use a single colour group: the
first horizontal layer's current-pixel tap is masked out entirely (mask A with one group)
and later layers' are open (mask B). Outputs at (i, j) see exactly the pixels strictly
before (i, j) in raster order, all channels.

`sample_cached` is the fast generation of Ramachandran et al., "Fast Generation for
Convolutional Autoregressive Models", ICLR workshop 2017, arXiv 1704.06001: each layer's
activations are computed once per new row (vertical stack) or per new sub-pixel
(horizontal stack) from cached state, rather than re-running the network on the whole
image for every sub-pixel as `sample` does. Both samplers draw the same samples under the
same key. With the mixture head both step per pixel instead of per sub-pixel.

The layers are unrolled (per-layer parameters vertical_l, horizontal_l, ...), on purpose
(issue 18, item 1): an nn.scan over the identical middle layers (kept on the branch
issue18-scan-autoreg-experiment, with a checkpoint converter and fixtures) compiled the
train step slower, not faster, on XLA:CPU at the MNIST configs' depths: init + compile +
first step 14-18 CPU s against 10-12 unrolled for 6 x 32 layers, a wash for 10 x 64; the
unrolled step's compile grows by only ~0.03 s per layer. (Inside the scan JAX's transposed
convolutions also run 10-30x slower, so its gradients must be written as canonical
convolutions.) Measured on the shared 2-core CPU, rough.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from autoreg import distributions, likelihood
from autoreg.gating import gate
from autoreg.masked import pixelcnn_mask
from autoreg.pixelcnn import to_network_input
from autoreg.sampling import naive_raster_sample


def current_pixel_mask(kernel_size: Sequence[int], in_features: int, out_features: int,
                       mask_type: str, num_colors: int, gated: bool = False) -> np.ndarray:
  """[kh, kw, in, out] mask that is 1 everywhere except the last tap (the current pixel),
  where it is PixelCNN's colour-group mask A or B.

  With gated=True the outputs are the two halves (tanh, sigmoid) of a gated unit: each half
  is grouped by colour on its own, so output channel o and o + out/2 belong to one colour.
  """
  half = out_features // 2 if gated else out_features
  centre = pixelcnn_mask((1, 1), in_features, half, mask_type, num_colors)[0, 0]
  if gated:
    centre = np.concatenate([centre, centre], axis=-1)
  mask = np.ones((*kernel_size, in_features, out_features), np.float32)
  mask[-1, -1] = centre
  return mask


POINTWISE_GRAD_CHUNKS = 8


@jax.custom_vjp
def pointwise_conv(x, w):
  """A 1x1 convolution, [B, H, W, C] x [C, D] -> [B, H, W, D], as a matmul over channels.

  Its kernel gradient is `POINTWISE_GRAD_CHUNKS` batched matmuls over chunks of whole
  images, summed, not one matmul contracting every pixel of the batch. In the gated
  PixelCNN train step on XLA:CPU (benchmarks/pixelcnn_throughput.py, 15 x 64, batch 32,
  quiet 2-core CPU, 2026-12-06) that is 1.08-1.14x the step with lax's 1x1 convolutions,
  where one matmul (no chunks, the same custom VJP) gave 0.97x and JAX's own dot transpose
  rule 1.03x; per-image chunks measured the same as 8 but run 2-3x slower for wide layers
  (512 x 512 at 16x16: 40 ms against 22), hence a fixed 8. Glow's 512 x 512 1x1s (scanned
  steps, batch 16) ran slower with it (train step 17.64 -> 13.96 images/s, PyTorch 22.32
  and 20.71 in the same runs), so the flows keep a plain matmul (flows.bijectors.Conv).
  The values are those of the convolution up to float rounding. Reverse mode only (a
  custom VJP has no forward-mode rule)."""
  return _pointwise(x, w)


def _pointwise(x, w):
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _pointwise_fwd(x, w):
  return _pointwise(x, w), (x, w)


def _pointwise_bwd(res, dy):
  x, w = res
  dx = jax.lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())))
  n = math.gcd(x.shape[0], POINTWISE_GRAD_CHUNKS)     # chunks of whole images
  xs = x.reshape(n, -1, x.shape[-1])
  dys = dy.reshape(n, -1, dy.shape[-1])
  dw = jax.lax.dot_general(xs, dys, (((1,), (1,)), ((0,), (0,)))).sum(0)
  return dx.astype(x.dtype), dw.astype(w.dtype)


pointwise_conv.defvjp(_pointwise_fwd, _pointwise_bwd)


class Conv(nn.Module):
  """A VALID convolution of an input the caller has already padded (a 1x1 kernel as
  `pointwise_conv`).

  The full forward pass and the cached sampler both call this on their own windows, so
  both compute every activation with the same op, weights and padding values.
  """
  features: int
  kernel_size: Sequence[int] = (1, 1)
  mask_type: str | None = None   # 'A'/'B': colour-group mask on the current-pixel tap
  num_colors: int = 1
  gated: bool = False
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    if self.mask_type is not None:
      mask = current_pixel_mask(self.kernel_size, x.shape[-1], self.features,
                                self.mask_type, self.num_colors, self.gated)
      kernel = kernel * jnp.asarray(mask, kernel.dtype)
    if kh == kw == 1:
      y = pointwise_conv(x, kernel[0, 0])
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,))
    return y


class GatedPixelCNN(nn.Module):
  """Gated PixelCNN over integer images [B, H, W, C] with values in {0..num_levels-1}.

  Attributes:
    num_levels: values per sub-pixel (256 for 8-bit, 2 for binarized).
    num_channels: colour channels C (1 grey, 3 RGB).
    features: channels of each stack (p in Fig. 2; a multiple of num_channels).
    num_layers: gated layers (the paper: 15 for CIFAR-10 and 20 for ImageNet).
    first_kernel: k of the first layer (its vertical kernel is (k//2+1) x k).
    kernel_size: k of every later layer.
    output_features: channels of the hidden 1x1 output layer (a multiple of num_channels).
    num_classes: classes of the label h of Eq. 4; 0 for an unconditional model.
    output: 'categorical' (num_levels-way softmax per sub-pixel, colours masked into groups)
      or 'logistic_mixture' (PixelCNN++'s discretized logistic mixture per pixel; then
      features and output_features need not be multiples of num_channels).
    num_mixtures: K, logistic components per pixel in 'logistic_mixture' mode.

  A spatial conditioning map (Eq. 5) is a call argument, `cond_map`; its 1x1 projections
  are created at `init`, so initialize with a cond_map to use one.
  """
  num_levels: int = 256
  num_channels: int = 1
  features: int = 128
  num_layers: int = 15
  first_kernel: int = 7
  kernel_size: int = 3
  output_features: int = 256
  num_classes: int = 0
  output: str = 'categorical'
  num_mixtures: int = 10

  @property
  def _mixture(self) -> bool:
    return self.output == 'logistic_mixture'

  def setup(self):
    if self.output not in ('categorical', 'logistic_mixture'):
      raise ValueError("GatedPixelCNN output must be 'categorical' or 'logistic_mixture', "
                       f'got {self.output!r}')
    if self._mixture and self.num_mixtures < 1:
      raise ValueError(f'num_mixtures must be >= 1, got {self.num_mixtures}')
    kernels = [self.first_kernel] + [self.kernel_size] * (self.num_layers - 1)
    if self.num_layers < 1 or any(k < 1 or k % 2 == 0 for k in kernels):
      raise ValueError('GatedPixelCNN needs num_layers >= 1 and odd kernel sizes, got '
                       f'num_layers={self.num_layers}, first_kernel={self.first_kernel}, '
                       f'kernel_size={self.kernel_size}')
    self.pads = [k // 2 for k in kernels]
    f2 = 2 * self.features
    # Colour groups of the current-pixel masks: one per channel for per-sub-pixel logits;
    # one for the mixture head, whose outputs are for the whole pixel and so must not see
    # any of its channels.
    c = 1 if self._mixture else self.num_channels
    self.vertical = [Conv(f2, (p + 1, 2 * p + 1)) for p in self.pads]
    self.horizontal = [Conv(f2, (1, p + 1), 'A' if layer == 0 else 'B', c, gated=True)
                       for layer, p in enumerate(self.pads)]
    # Vertical features hold only rows above, so they enter every colour group unmasked.
    self.vertical_to_horizontal = [Conv(f2) for _ in kernels]
    self.skip = [Conv(self.features, mask_type='B', num_colors=c) for _ in kernels]
    # The last layer's horizontal output would feed nothing: only its skip is used.
    self.residual = [Conv(self.features, mask_type='B', num_colors=c)
                     for _ in range(self.num_layers - 1)]
    if self.num_classes:
      self.label_proj = [nn.Dense(f2, use_bias=False) for _ in kernels]
    self.map_proj = [Conv(f2, use_bias=False) for _ in kernels]
    self.hidden_out = Conv(self.output_features, mask_type='B', num_colors=c)
    # Named logits_out in both modes so categorical checkpoints keep their parameter names.
    self.logits_out = Conv(self._head_features, mask_type='B', num_colors=c)

  @property
  def _head_features(self) -> int:
    if self._mixture:
      return distributions.num_params(self.num_channels, self.num_mixtures)
    return self.num_channels * self.num_levels

  # -- Pieces shared by the full forward pass and the cached sampler ----------------------

  def _conditioning(self, label, cond_map, shape):
    """Per layer, V h + V' * s (broadcastable to [B, H, W, 2 features]), or None."""
    if self.num_classes and label is None:
      raise ValueError(f'GatedPixelCNN(num_classes={self.num_classes}) needs a label.')
    if not self.num_classes and label is not None:
      raise ValueError('A label was given to an unconditional GatedPixelCNN '
                       '(num_classes=0).')
    if cond_map is not None and cond_map.shape[:3] != tuple(shape[:3]):
      raise ValueError(f'cond_map {cond_map.shape} must be [B, H, W, Cc] for images of '
                       f'shape {tuple(shape)}.')
    terms = []
    for layer in range(self.num_layers):
      term = None
      if self.num_classes:
        onehot = jax.nn.one_hot(label, self.num_classes)
        term = self.label_proj[layer](onehot)[:, None, None, :]
      if cond_map is not None:
        spatial = self.map_proj[layer](cond_map.astype(jnp.float32))
        term = spatial if term is None else term + spatial
      terms.append(term)
    return terms

  def _vertical(self, layer, window, cond):
    """Layer `layer`'s vertical pre-activation from a window padded by (p above, p each side)."""
    pre = self.vertical[layer](window)
    return pre if cond is None else pre + cond

  def _horizontal(self, layer, window, v_pre, cond, h_prev):
    """Layer `layer` of the horizontal stack from a window left-padded by p.

    Returns (horizontal output or None for the last layer, skip contribution).
    """
    pre = self.horizontal[layer](window) + self.vertical_to_horizontal[layer](v_pre)
    if cond is not None:
      pre = pre + cond
    y = gate(pre)
    h = None
    if layer < self.num_layers - 1:
      h = self.residual[layer](y)
      if layer > 0:  # the first layer's input has C channels, not `features`
        h = h_prev + h
    return h, self.skip[layer](y)

  def _head(self, skip):
    h = self.hidden_out(nn.relu(skip))
    return self.logits_out(nn.relu(h))

  # -- Entry points -----------------------------------------------------------------------

  def __call__(self, x, train: bool = False, label=None, cond_map=None):
    """Logits [B, H, W, C, num_levels] of each sub-pixel given all earlier ones; with
    output='logistic_mixture', mixture parameters [B, H, W, distributions.num_params(C, K)]
    of each pixel given all earlier pixels.

    x: integer images in {0..num_levels-1}, or floats already scaled to [-1, 1] (so
    gradients with respect to the input can be taken). label: int [B] for a
    class-conditional model. cond_map: optional [B, H, W, Cc] conditioning map.
    """
    del train  # no dropout or batch statistics
    if x.ndim != 4 or x.shape[-1] != self.num_channels:
      raise ValueError(f'GatedPixelCNN expects [B, H, W, {self.num_channels}] images, got '
                       f'shape {x.shape}')
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = to_network_input(x, self.num_levels)
    cond = self._conditioning(label, cond_map, x.shape)
    # Shifted down one row: the vertical stack at row i then sees rows < i only.
    v_in = jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    h_in, skip = x, None
    for layer, p in enumerate(self.pads):
      v_pre = self._vertical(layer, jnp.pad(v_in, ((0, 0), (p, 0), (p, p), (0, 0))), cond[layer])
      h_window = jnp.pad(h_in, ((0, 0), (0, 0), (p, 0), (0, 0)))
      h_in, s = self._horizontal(layer, h_window, v_pre, cond[layer], h_in)
      skip = s if skip is None else skip + s
      v_in = gate(v_pre)
    out = self._head(skip)
    if self._mixture:
      return out
    # Output channel k belongs to colour k // num_levels, matching channel_groups().
    return out.reshape(*x.shape, self.num_levels)

  def log_prob(self, x, label=None, cond_map=None):
    """Exact log p(x | label, cond_map) per example, in nats. x: int [B, H, W, C]."""
    out = self(x, label=label, cond_map=cond_map)
    if self._mixture:
      return distributions.log_prob(out, x, self.num_levels, self.num_mixtures)
    return likelihood.categorical_log_prob(out, x)

  def loss(self, batch, train: bool = True, cond_map=None):
    """The trainer's objective: mean NLL in nats, and per-example metrics."""
    # Unconditional models ignore labels that the input pipeline may carry.
    label = batch.get('label') if self.num_classes else None
    nll = -self.log_prob(batch['image'], label=label, cond_map=cond_map)
    return nll.mean(), {'nll': nll}

  def sample(self, rng, shape, temperature: float = 1.0, label=None, cond_map=None,
             init=None, start: int = 0):
    """Naive ancestral sampling: one full forward pass per sub-pixel, in a compiled loop.

    The draw for sub-pixel index t (raster order, then colour) uses
    jax.random.fold_in(rng, t), as in PixelCNN.sample; `sample_cached` reproduces it.
    `init` and `start` continue from a partially given image (sub-pixels before `start`
    are kept).

    With output='logistic_mixture' there is one forward pass per pixel, and pixel index t
    (raster order) is drawn whole by distributions.sample(jax.random.fold_in(rng, t), ...).
    `start` still counts sub-pixels in both modes (so `rows * W * C` means the same), and
    must then be a multiple of C: pixels before start // C are kept. A traced `start` that
    falls inside a pixel is rounded down, redrawing that whole pixel.
    """
    _, _, wid, ch = shape
    x = jnp.zeros(shape, jnp.int32) if init is None else init.astype(jnp.int32)
    if self._mixture:
      if isinstance(start, (int, np.integer)) and start % ch:
        raise ValueError(f'start={start} counts sub-pixels and must be a multiple of '
                         f'num_channels={ch} with the logistic mixture head, which draws '
                         'whole pixels.')

      def pixel(t, x):
        i, j = jnp.divmod(t, wid)
        params = self(x, label=label, cond_map=cond_map)
        params = jax.lax.dynamic_index_in_dim(params, i, 1, keepdims=False)
        params = jax.lax.dynamic_index_in_dim(params, j, 1, keepdims=False)
        draw = distributions.sample(jax.random.fold_in(rng, t), params, ch, self.num_levels,
                                    self.num_mixtures, temperature)
        return x.at[:, i, j].set(draw.astype(jnp.int32))

      return jax.lax.fori_loop(start // ch, shape[1] * wid, pixel, x)

    return naive_raster_sample(lambda z: self(z, label=label, cond_map=cond_map), rng, shape,
                               temperature, x, start)

  def sample_cached(self, rng, shape, temperature: float = 1.0, label=None, cond_map=None,
                    return_logits: bool = False):
    """Fast ancestral sampling from cached activations (Ramachandran et al. 2017).

    The same draws as `sample` under the same rng. Work per image is O(H W) layer
    evaluations on one row or one pixel instead of O((H W)^2) for the naive sampler:

      * at the start of row i, every input of the vertical stack at row i (rows < i) is
        final, so all layers' vertical activations for the row are computed once, each
        layer from a (p + 1)-row window of the previous layer's cached outputs;
      * for each sub-pixel (i, j, c), the horizontal stack is evaluated at pixel (i, j)
        only, each layer from a (p + 1)-pixel window of a buffer holding that layer's
        inputs along the current row, plus the cached vertical activation at (i, j).
        For RGB it runs once per colour: the current pixel's earlier colours change its
        masked centre taps, and what it writes to the buffers for the next pixel does not
        depend on colours not yet drawn.

    With output='logistic_mixture' the horizontal stack runs once per pixel, and the whole
    pixel is drawn from the mixture as in `sample`.

    Returns samples int [B, H, W, C]; with return_logits, also the logits
    [B, H, W, C, num_levels] that each draw used (before the temperature), or in mixture
    mode the mixture parameters [B, H, W, num_params(C, K)].
    """
    b, hgt, wid, ch = shape
    lv, f, pads = self.num_levels, self.features, self.pads
    cond = self._conditioning(label, cond_map, shape)
    cond = [None if c is None else jnp.broadcast_to(c, (b, hgt, wid, 2 * f)) for c in cond]
    p0 = pads[0]
    # The network input, padded as the full forward pass pads it: one extra row on top for
    # the vertical stack's down-shift. Sub-pixels not yet drawn are 0 here (-1 in the full
    # pass), which never matters: they only ever meet zero (masked) weights.
    xin = jnp.zeros((b, hgt + p0 + 1, wid + 2 * p0, ch), jnp.float32)
    # vbuf[l]: vertical outputs of layer l = inputs of layer l + 1, padded for its kernel.
    vbuf = [jnp.zeros((b, hgt + p, wid + 2 * p, f), jnp.float32) for p in pads[1:]]
    # hbuf[l]: the current row's horizontal inputs of layer l >= 1, left-padded. Columns
    # >= j still hold the previous row, but each is overwritten before it is read.
    hbuf = [None] + [jnp.zeros((b, 1, wid + p, f), jnp.float32) for p in pads[1:]]
    # Steps per pixel: one per colour for per-sub-pixel logits, one for the mixture head.
    steps = 1 if self._mixture else ch
    out_shape = (b, hgt, wid, self._head_features) if self._mixture else (*shape, lv)
    carry = dict(x=jnp.zeros(shape, jnp.int32), xin=xin, vbuf=vbuf, hbuf=hbuf,
                 logits=jnp.zeros(out_shape, jnp.float32) if return_logits else None)

    def row(i, carry):
      carry = dict(carry, vbuf=list(carry['vbuf']))
      v_pre = []
      window = jax.lax.dynamic_slice_in_dim(carry['xin'], i, p0 + 1, axis=1)
      for layer in range(self.num_layers):
        c_row = None if cond[layer] is None else jax.lax.dynamic_slice_in_dim(cond[layer], i, 1, 1)
        pre = self._vertical(layer, window, c_row)  # [B, 1, W, 2f]
        v_pre.append(pre)
        if layer < self.num_layers - 1:
          p = pads[layer + 1]
          carry['vbuf'][layer] = jax.lax.dynamic_update_slice(
              carry['vbuf'][layer], gate(pre), (0, i + p, p, 0))
          window = jax.lax.dynamic_slice_in_dim(carry['vbuf'][layer], i, p + 1, axis=1)

      def subpixel(s, carry):
        carry = dict(carry, hbuf=list(carry['hbuf']))
        j, c = jnp.divmod(s, steps)
        t = (i * wid + j) * steps + c
        h, skip = None, None
        for layer, p in enumerate(pads):
          if layer == 0:
            window = jax.lax.dynamic_slice(carry['xin'], (0, i + p0 + 1, j, 0),
                                           (b, 1, p0 + 1, ch))
          else:
            window = jax.lax.dynamic_slice(carry['hbuf'][layer], (0, 0, j, 0), (b, 1, p + 1, f))
          v = jax.lax.dynamic_slice_in_dim(v_pre[layer], j, 1, axis=2)
          c_pix = None if cond[layer] is None else jax.lax.dynamic_slice(
              cond[layer], (0, i, j, 0), (b, 1, 1, 2 * f))
          h, sk = self._horizontal(layer, window, v, c_pix, h)
          skip = sk if skip is None else skip + sk
          if h is not None:
            carry['hbuf'][layer + 1] = jax.lax.dynamic_update_slice(
                carry['hbuf'][layer + 1], h, (0, 0, j + pads[layer + 1], 0))
        if self._mixture:
          params = self._head(skip).reshape(b, -1)
          draw = distributions.sample(jax.random.fold_in(rng, t), params, ch, lv,
                                      self.num_mixtures, temperature).astype(jnp.int32)
          carry['x'] = carry['x'].at[:, i, j].set(draw)
          carry['xin'] = carry['xin'].at[:, i + p0 + 1, j + p0].set(
              to_network_input(draw, lv))
          if return_logits:
            carry['logits'] = carry['logits'].at[:, i, j].set(params)
          return carry
        logits = self._head(skip).reshape(b, ch, lv)
        step_logits = jax.lax.dynamic_index_in_dim(logits, c, 1, keepdims=False)
        draw = jax.random.categorical(jax.random.fold_in(rng, t), step_logits / temperature)
        draw = draw.astype(jnp.int32)
        carry['x'] = carry['x'].at[:, i, j, c].set(draw)
        carry['xin'] = carry['xin'].at[:, i + p0 + 1, j + p0, c].set(
            to_network_input(draw, lv))
        if return_logits:
          carry['logits'] = carry['logits'].at[:, i, j, c].set(step_logits)
        return carry

      return jax.lax.fori_loop(0, wid * steps, subpixel, carry)

    carry = jax.lax.fori_loop(0, hgt, row, carry)
    return (carry['x'], carry['logits']) if return_logits else carry['x']
