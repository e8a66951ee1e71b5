"""Bijectors: invertible layers that return (output, log_det) in both directions.

Every bijector is a Flax Linen module with

  forward(x, *, train=False, context=None) -> (y, log_det)    log_det = log|det dy/dx|
  inverse(y, *, train=False, context=None) -> (x, log_det)    log_det = log|det dx/dy|

with log_det of shape [B] in float32, one value per example, so inverse's log_det is minus
forward's at corresponding points. Both methods go through the module's one compact
`__call__(x, inverse=False, train=False, context=None)`, so they share parameters. `train`
matters only to `BatchNormBijector`, `context` only to `MAF` and `IAF`; the others accept and
ignore them so a `Chain` can pass both to every layer.

Direction. `forward` is the direction a layer computes in one pass. For the density models
(NICE, Real NVP, Glow, MAF) it maps data x to latent z, so
log p(x) = log p_z(z) + forward log_det. IAF is the exception by design: its one-pass
direction maps base noise to a posterior sample, so log q(z) = log p(eps) - forward log_det.

Images are NHWC; per-channel layers (actnorm, 1x1 convolutions, batch norm) also take flat
[B, D] vectors, where the spatial size H*W in their log-determinants is 1.

Papers and equations:
- NICE (Dinh, Krueger & Bengio 2014, arXiv 1410.8516): additive coupling y2 = x2 + m(x1)
  (Sec. 3.2, unit Jacobian) and the diagonal scaling layer y = exp(s) * x (Sec. 3.3,
  log_det = sum s). `AdditiveCoupling`, `DiagonalScaling`.
- Real NVP (Dinh, Sohl-Dickstein & Bengio 2017, arXiv 1605.08803): affine coupling
  y2 = x2 * exp(s(x1)) + t(x1) with log_det = sum s (Sec. 3.2-3.3), its inverse
  (Eqs. 7-8) and the masked form y = b*x + (1-b)*(x*exp(s(b*x)) + t(b*x)) (Eq. 9);
  checkerboard and channel-wise masks (Sec. 3.4, Fig. 3); squeezing (Sec. 3.6); batch
  normalization as a bijector (Sec. 3.7, Appendix E).
  `AffineCoupling`, `Squeeze`, `BatchNormBijector`.
- Glow (Kingma & Dhariwal 2018, arXiv 1807.03039, Table 1): actnorm with data-dependent
  initialization, the invertible 1x1 convolution (plain and LU-decomposed) and the affine
  coupling of the released code. `ActNorm`, `Invertible1x1Conv`, `LUInvertible1x1Conv`,
  `GlowCoupling`.
- MAF (Papamakarios, Pavlakou & Murray 2017, arXiv 1705.07057, Sec. 3.1): one MADE gives
  u_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)) for all i in one pass. `MAF`.
- IAF (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016, arXiv 1606.04934,
  Eqs. 10-14): z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t, [m_t, s_t] = MADE(z_{t-1}, h),
  sigma_t = sigmoid(s_t + forget_bias). `IAF`.
- `Chain`, `Reverse`, `Permute`: composition and fixed permutations of flat vectors.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from autoreg.made import MADE, Ordering, input_degrees

_zeros = nn.initializers.zeros


def _per_example_sum(a) -> jnp.ndarray:
  """Sum over all but the batch axis, in float32: [B, ...] -> [B]."""
  a = a.astype(jnp.float32)
  return a.reshape(a.shape[0], -1).sum(axis=-1)


def _spatial_size(x) -> int:
  """H * W for NHWC images, 1 for flat [B, D] vectors: the pixels a per-channel map acts on."""
  return int(np.prod(x.shape[1:-1], dtype=np.int64))


def _batch_constant(x, value) -> jnp.ndarray:
  """A per-example log_det [B] equal to the (float32) scalar `value` for every example."""
  return jnp.broadcast_to(jnp.asarray(value, jnp.float32), (x.shape[0],))


# ------------------------------------------------------------------------------------------
# Masks and the squeeze


def checkerboard_mask(event_shape: Sequence[int], flip: bool = False) -> np.ndarray:
  """1 where the coupling keeps the input, 0 where it transforms it.

  Images [H, W, C]: 1 where (i + j) is even (all channels alike). Flat [D]: 1 at even
  indices. `flip` swaps the two parts, as alternate layers must.
  """
  if len(event_shape) == 3:
    h, w, c = event_shape
    keep = (np.add.outer(np.arange(h), np.arange(w)) % 2 == 0)[:, :, None]
    keep = np.broadcast_to(keep, (h, w, c))
  elif len(event_shape) == 1:
    keep = np.arange(event_shape[0]) % 2 == 0
  else:
    raise ValueError(f'masks are for [H, W, C] images or [D] vectors, got {event_shape}')
  return (keep != flip).astype(np.float32)


def channel_mask(event_shape: Sequence[int], flip: bool = False) -> np.ndarray:
  """1 on the first half (floor(C/2)) of the last axis, 0 on the rest; `flip` swaps.

  For flat vectors this is the first-half/second-half partition of NICE.
  """
  c = event_shape[-1]
  if c < 2:
    raise ValueError(f'a channel mask needs at least 2 channels, got {c}')
  keep = np.broadcast_to(np.arange(c) < c // 2, tuple(event_shape))
  return (keep != flip).astype(np.float32)


def coupling_mask(event_shape: Sequence[int], kind: str, flip: bool = False) -> np.ndarray:
  if kind == 'checkerboard':
    return checkerboard_mask(event_shape, flip)
  if kind == 'channel':
    return channel_mask(event_shape, flip)
  raise ValueError(f"mask must be 'checkerboard' or 'channel', got {kind!r}")


# Position (di, dj) of each of the four channel slots inside a 2x2 block, slot -> di*2 + dj.
# The plain space-to-depth squeeze (Real NVP's squeeze_2x2, Glow's squeeze2d) keeps raster
# order. The ordered one (Real NVP's squeeze_2x2_ordered) puts the two even-parity positions
# first, so a checkerboard mask before it becomes the channel mask after it (Fig. 3); Real
# NVP uses it only to choose which half to factor out, because channel-wise couplings on it
# would split the pixels exactly as the checkerboard couplings before them did (Sec. 3.6
# asks for a channel masking that is not redundant with the checkerboard).
_SQUEEZE_ORDERS = {
    True: np.array([0, 3, 1, 2]),    # ordered: (0,0), (1,1), (0,1), (1,0)
    False: np.array([0, 1, 2, 3]),   # plain: (0,0), (0,1), (1,0), (1,1)
}


def squeeze(x, ordered: bool = True) -> jnp.ndarray:
  """[B, H, W, C] -> [B, H/2, W/2, 4C]; output channel slot * C + c, slots as above."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'squeeze needs even height and width, got {h}x{w}')
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(b, h // 2, w // 2, 4, c)[:, :, :, _SQUEEZE_ORDERS[bool(ordered)]]
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(y, ordered: bool = True) -> jnp.ndarray:
  """The inverse of `squeeze`: [B, H, W, 4C] -> [B, 2H, 2W, C]."""
  b, h, w, c4 = y.shape
  if c4 % 4:
    raise ValueError(f'unsqueeze needs a multiple of 4 channels, got {c4}')
  c = c4 // 4
  y = y.reshape(b, h, w, 4, c)[:, :, :, np.argsort(_SQUEEZE_ORDERS[bool(ordered)])]
  y = y.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, c)


def reorder_squeezed(y, to_ordered: bool = True) -> jnp.ndarray:
  """Maps a plainly squeezed tensor to the ordered layout (or back): a channel permutation."""
  return squeeze(unsqueeze(y, ordered=not to_ordered), ordered=to_ordered)


# ------------------------------------------------------------------------------------------
# Base class, composition, permutations


class Bijector(nn.Module):
  """Subclasses implement the compact `__call__(x, inverse=False, train=False, context=None)`."""

  def forward(self, x, *, train: bool = False, context=None):
    return self(x, inverse=False, train=train, context=context)

  def inverse(self, y, *, train: bool = False, context=None):
    return self(y, inverse=True, train=train, context=context)


class Chain(Bijector):
  """Composition: forward applies the bijectors in order, inverse in reverse order; the
  log-determinants add (chain rule)."""
  bijectors: Sequence[Bijector]

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    log_det = jnp.zeros((x.shape[0],), jnp.float32)
    layers = reversed(self.bijectors) if inverse else self.bijectors
    for layer in layers:
      x, ld = layer(x, inverse=inverse, train=train, context=context)
      log_det = log_det + ld
    return x, log_det


class Reverse(Bijector):
  """Reverses the last axis (the ordering of a flat vector); log_det = 0."""

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del inverse, train, context  # its own inverse
    return x[..., ::-1], jnp.zeros((x.shape[0],), jnp.float32)


class Permute(Bijector):
  """y[..., i] = x[..., permutation[i]]; log_det = 0.

  `permutation` fixes the order explicitly; without it one is drawn in NumPy from `seed`
  when the input size is known. It is a constant of the module, never a parameter.
  """
  permutation: Optional[Sequence[int]] = None
  seed: int = 0

  def _permutation(self, size: int) -> np.ndarray:
    if self.permutation is None:
      return np.random.RandomState(self.seed).permutation(size)
    perm = np.asarray(self.permutation)
    if sorted(perm.tolist()) != list(range(size)):
      raise ValueError(f'not a permutation of {size} elements: {self.permutation}')
    return perm

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    perm = self._permutation(x.shape[-1])
    index = np.argsort(perm) if inverse else perm
    return x[..., index], jnp.zeros((x.shape[0],), jnp.float32)


class Squeeze(Bijector):
  """Real NVP's space-to-depth (Sec. 3.6) as a bijector: forward squeezes, inverse
  unsqueezes; a permutation, so log_det = 0. `ordered` picks the channel layout (above)."""
  ordered: bool = True

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    if inverse:
      y = unsqueeze(x, self.ordered)
    else:
      y = squeeze(x, self.ordered)
    return y, jnp.zeros((x.shape[0],), jnp.float32)


class ReorderSqueezed(Bijector):
  """Forward: the plain squeeze's channel layout -> the ordered one; a permutation."""

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    return reorder_squeezed(x, to_ordered=not inverse), jnp.zeros((x.shape[0],), jnp.float32)


# ------------------------------------------------------------------------------------------
# Coupling networks


# ------------------------------------------------------------------------------------------
# Convolutions with canonical gradients

_DIMS = ('NHWC', 'HWIO', 'NHWC')


def _same_padding(kernel_shape, transpose=False):
  """'SAME' padding of a stride-1 convolution, (lo, hi) per spatial axis: lo = (k-1)//2,
  hi = k//2 (XLA's and nn.Conv's split); its transpose pads (hi, lo)."""
  pads = [((k - 1) // 2, k // 2) for k in kernel_shape[:2]]
  return [(hi, lo) for lo, hi in pads] if transpose else pads


def conv_same(h, k):
  """A stride-1 'SAME' NHWC/HWIO convolution (nn.Conv's, without the bias)."""
  return jax.lax.conv_general_dilated(h, k, (1, 1), _same_padding(k.shape),
                                      dimension_numbers=_DIMS)


@jax.custom_vjp
def conv_same_canonical_grad(h, k):
  """`conv_same` whose gradients are canonical NHWC/HWIO convolutions.

  Inside a scan, XLA:CPU (jaxlib 0.10) runs the convolutions of JAX's own transpose rules
  (kernel and batch axes swapped through dimension numbers) many times slower than in
  unrolled code (measured: 6 scanned 3x3 residual convolutions, 32 features, 16 x 28x28,
  3.2 s against 0.07 s per gradient; Glow's scanned steps 3-8x); written as ordinary
  convolutions they run at the unrolled speed. The values are the same. Reverse mode
  only (a custom VJP has no forward-mode rule): the flows use it in train mode and
  `conv_same` otherwise, so jax.jacfwd of an eval-mode flow still works."""
  return conv_same(h, k)


def _conv_fwd(h, k):
  return conv_same(h, k), (h, k)


def _conv_bwd(res, g):
  h, k = res
  # dh: the convolution of g with the spatially flipped, in/out-swapped kernel, padded as
  # the transpose of 'SAME'.
  dh = jax.lax.conv_general_dilated(g, jnp.flip(k, (0, 1)).swapaxes(2, 3), (1, 1),
                                    _same_padding(k.shape, transpose=True),
                                    dimension_numbers=_DIMS)
  # dk[i, j, c, d] = sum_{b, y, x} h_pad[b, y + i, x + j, c] g[b, y, x, d]: a 'VALID'
  # convolution with the batch as the contracted feature axis.
  hp = jnp.pad(h, [(0, 0)] + _same_padding(k.shape) + [(0, 0)])
  dk = jax.lax.conv_general_dilated(hp.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3),
                                    (1, 1), 'VALID', dimension_numbers=_DIMS)
  return dh.astype(h.dtype), dk.transpose(1, 2, 0, 3).astype(k.dtype)


conv_same_canonical_grad.defvjp(_conv_fwd, _conv_bwd)


class Conv(nn.Module):
  """nn.Conv's stride-1 'SAME' convolution with its variables ('kernel' [kh, kw, in, out],
  'bias', the same initializers and values); canonical_grad selects
  `conv_same_canonical_grad` (train mode in scans). A 1x1 kernel runs as a matmul over
  channels (the same values within float32 rounding)."""
  features: int
  kernel_size: tuple = (3, 3)
  kernel_init: Callable = nn.initializers.lecun_normal()
  canonical_grad: bool = False

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    if tuple(self.kernel_size) == (1, 1):
      # A 1x1 convolution is a matmul over channels; as one, its forward pass and both
      # gradients are matmuls (YNNPACK's on CPU) rather than convolutions.
      return checkpoint_name(_channel_matmul(x, kernel[0, 0]) + bias.astype(x.dtype),
                             CONV_OUT)
    conv = conv_same_canonical_grad if self.canonical_grad else conv_same
    return checkpoint_name(conv(x, kernel.astype(x.dtype)) + bias.astype(x.dtype), CONV_OUT)


# Every `Conv`'s output is named CONV_OUT for jax.checkpoint policies (a no-op elsewhere).
# Real NVP rematerializes its scanned residual blocks in train mode with SAVE_CONV_OUTPUTS:
# the backward pass reads back only the convolutions' outputs (and each block's input, the
# carry) and recomputes the cheap layers between them (batch norms, ReLUs) instead of
# stacking every intermediate in the scan's residuals; no convolution is computed twice.
# (The same on Glow's scanned steps did not pay: 1.50 -> 1.46 s a step, within noise.)
CONV_OUT = 'dgm_conv_out'
SAVE_CONV_OUTPUTS = jax.checkpoint_policies.save_only_these_names(CONV_OUT)


class Conditioner(nn.Module):
  """The network of a coupling layer: Dense layers for [B, D] input, same-padded convs for
  [B, H, W, C], ReLU between, and a zero-initialized output layer, so a fresh coupling's
  shift and log-scale start at zero.

  `kernel_sizes` gives each hidden conv's size (default 3); `output_logscale_factor` adds
  Glow's Conv2dZeros rescaling out * exp(factor * logs), logs a zero-initialized
  per-channel parameter. `canonical_grad` differentiates the convolutions through
  `conv_same_canonical_grad` (same values; reverse mode only).
  """
  hidden: Sequence[int]
  out_features: int
  kernel_sizes: Optional[Sequence[int]] = None
  output_kernel_size: int = 3
  output_logscale_factor: Optional[float] = None
  canonical_grad: bool = False

  @nn.compact
  def __call__(self, x):
    image = x.ndim == 4
    kernels = self.kernel_sizes or (3,) * len(self.hidden)
    for i, (features, k) in enumerate(zip(self.hidden, kernels, strict=True)):
      if image:
        x = Conv(features, (k, k), canonical_grad=self.canonical_grad, name=f'Conv_{i}')(x)
      else:
        x = nn.Dense(features)(x)
      x = nn.relu(x)
    if image:
      k = self.output_kernel_size
      out = Conv(self.out_features, (k, k), kernel_init=_zeros,
                 canonical_grad=self.canonical_grad, name='out')(x)
    else:
      out = nn.Dense(self.out_features, kernel_init=_zeros, name='out')(x)
    if self.output_logscale_factor is not None:
      logs = self.param('logs', _zeros, (self.out_features,))
      out = out * jnp.exp(self.output_logscale_factor * logs)
    return out


class AdditiveCoupling(Bijector):
  """NICE's additive coupling (Sec. 3.2): y = x + (1-b) * m(b*x); log_det = 0.

  `mask`: 'checkerboard' (flat vectors: even/odd indices) or 'channel' (flat vectors: first
  and second half); `flip` swaps which part is kept. Works on [B, D] and [B, H, W, C].
  """
  mask: str = 'checkerboard'
  flip: bool = False
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    b = jnp.asarray(coupling_mask(x.shape[1:], self.mask, self.flip), x.dtype)
    # b * x is unchanged by the layer, so the same shift is computed in both directions.
    shift = (1 - b) * Conditioner(self.hidden, x.shape[-1], name='net')(b * x)
    y = x - shift if inverse else x + shift
    return y.astype(x.dtype), jnp.zeros((x.shape[0],), jnp.float32)


class DiagonalScaling(Bijector):
  """NICE's scaling layer (Sec. 3.3): y = exp(s) * x, one s per dimension; log_det = sum s."""

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    s = self.param('log_scale', _zeros, x.shape[1:])
    log_det = _batch_constant(x, jnp.sum(s.astype(jnp.float32)))
    if inverse:
      return x * jnp.exp(-s).astype(x.dtype), -log_det
    return x * jnp.exp(s).astype(x.dtype), log_det


class AffineCoupling(Bijector):
  """Real NVP's affine coupling (Eq. 9): y = b*x + (1-b) * (x * exp(s) + t), with
  (s_raw, t) = net(b*x) and s = scale * tanh(s_raw).

  The log-scale is bounded by a tanh times a learned per-channel `scale` (initialized to 1),
  as in Real NVP's code: the tanh keeps early training stable, the learned scale lets the
  layer reach large scalings. The net's last layer starts at zero, so a fresh layer is the
  identity. log_det = sum (1-b) * s; the inverse is x = (y - t) * exp(-s) on the
  transformed part.
  """
  mask: str = 'checkerboard'
  flip: bool = False
  hidden: Sequence[int] = (64, 64)

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    c = x.shape[-1]
    b = jnp.asarray(coupling_mask(x.shape[1:], self.mask, self.flip), x.dtype)
    h = Conditioner(self.hidden, 2 * c, name='net')(b * x)
    scale = self.param('scale', nn.initializers.ones, (c,))
    s = (1 - b) * scale * jnp.tanh(h[..., :c])
    t = (1 - b) * h[..., c:]
    if inverse:
      return ((x - t) * jnp.exp(-s)).astype(x.dtype), -_per_example_sum(s)
    return (x * jnp.exp(s) + t).astype(x.dtype), _per_example_sum(s)


class GlowCoupling(Bijector):
  """Glow's affine coupling (Table 1) as in the released code: the input is split into
  channel halves (x_a, x_b) = (first floor(C/2), rest); h = NN(x_a);
  shift = h[..., 0::2], scale = sigmoid(h[..., 1::2] + 2); y_b = (x_b + shift) * scale.
  log_det = sum log(scale), computed as log_sigmoid in float32.

  NN is conv3x3 - ReLU - conv1x1 - ReLU - zero-initialized conv3x3 with Glow's
  exp(3 * logs) output rescaling (Dense layers for flat input). With the zero start, a fresh
  layer has shift 0 and scale sigmoid(2) ~ 0.881: a fixed contraction of x_b, not the
  identity, exactly as in Glow's code (the paper's Table 1 writes s = exp(log s)).

  additive=True is the additive coupling of the Glow paper's comparison (Sec. 3.3, Fig. 3;
  the code's flow_coupling=0): y_b = x_b + NN(x_a), NN with one output per channel of x_b,
  log_det = 0, and a fresh layer is the identity.

  train=True differentiates the network's convolutions through `conv_same_canonical_grad`
  (the same values; XLA:CPU runs the gradients of Glow's scanned steps at the unrolled
  speed that way; reverse mode only, so jax.jacfwd needs train=False).
  """
  hidden_features: int = 64
  additive: bool = False

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del context
    c = x.shape[-1]
    if c < 2:
      raise ValueError(f'Glow coupling splits channels and needs at least 2, got {c}')
    xa, xb = x[..., :c // 2], x[..., c // 2:]
    width = xb.shape[-1] if self.additive else 2 * xb.shape[-1]
    h = Conditioner((self.hidden_features, self.hidden_features), width,
                    kernel_sizes=(3, 1), output_logscale_factor=3.0,
                    canonical_grad=train and not inverse, name='net')(xa)
    if self.additive:
      yb = (xb - h if inverse else xb + h).astype(x.dtype)
      return jnp.concatenate([xa, yb], axis=-1), jnp.zeros((x.shape[0],), jnp.float32)
    shift = h[..., 0::2]
    logit = h[..., 1::2].astype(jnp.float32) + 2.0
    log_scale = jax.nn.log_sigmoid(logit)
    scale = jax.nn.sigmoid(logit).astype(x.dtype)
    if inverse:
      yb = (xb / scale - shift).astype(x.dtype)
      return jnp.concatenate([xa, yb], axis=-1), -_per_example_sum(log_scale)
    yb = ((xb + shift) * scale).astype(x.dtype)
    return jnp.concatenate([xa, yb], axis=-1), _per_example_sum(log_scale)


# ------------------------------------------------------------------------------------------
# Normalization layers


class BatchNormBijector(Bijector):
  """Real NVP's batch normalization (Sec. 3.7, Appendix E):
  y = (x - mu) / sqrt(var + eps) * exp(log_gamma) + beta, per channel.

  train=True: mu, var are the batch's (over all axes but the last), and the running
  averages in the 'batch_stats' collection move towards them (apply with
  mutable=['batch_stats']); the batch statistics are treated as constants of the map, so
  log_det = H*W * sum_c(-0.5 log(var_c + eps) + log_gamma_c). train=False uses the running
  averages, which makes the layer an ordinary per-example bijection. The inverse needs
  fixed statistics, so it always runs in eval mode; asking for train=True there is an error.

  The running averages are bias-corrected exponential moving averages (as Adam's moments):
  the n-th update moves them by w_n = (1 - momentum) / (1 - momentum^n) towards the batch's
  statistics, so the first update takes the batch's statistics outright and later ones tend
  to the plain EMA. Without the correction, 0.99^n of the initial (0, 1) lingers in them:
  a Real NVP evaluated after 200 steps scored 70 bits/dim against a training loss of 2.0.
  'count' in 'batch_stats' holds n.
  """
  momentum: float = 0.99
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del context
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
    count = self.variable('batch_stats', 'count', lambda: jnp.zeros((), jnp.float32))
    log_gamma = self.param('log_scale', _zeros, (c,))
    beta = self.param('bias', _zeros, (c,))
    if train and inverse:
      raise ValueError('BatchNormBijector.inverse uses the running averages; call it with '
                       'train=False (the batch statistics of x are unknown given y).')
    if train:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.float32)
      mean = xf.mean(axes)
      var = jnp.square(xf - mean).mean(axes)
      if not self.is_initializing():
        n = count.value + 1.0
        w = (1.0 - self.momentum) / (1.0 - self.momentum ** n)
        ra_mean.value = ra_mean.value + w * (mean - ra_mean.value)
        ra_var.value = ra_var.value + w * (var - ra_var.value)
        count.value = n
    else:
      mean, var = ra_mean.value, ra_var.value
    log_inv_std = -0.5 * jnp.log(var + self.epsilon)
    log_scale = log_inv_std + log_gamma.astype(jnp.float32)
    log_det = _batch_constant(x, _spatial_size(x) * jnp.sum(log_scale))
    if inverse:
      out = (x.astype(jnp.float32) - beta) * jnp.exp(-log_scale) + mean
      return out.astype(x.dtype), -log_det
    out = (x.astype(jnp.float32) - mean) * jnp.exp(log_scale) + beta
    return out.astype(x.dtype), log_det


class ActNorm(Bijector):
  """Glow's actnorm (Table 1): y = (x + bias) * exp(log_scale) per channel;
  log_det = H*W * sum(log|s|) with |s| = exp(log_scale).

  Data-dependent initialization: the call that creates the parameters (initialize through
  `forward` on a data batch) sets bias = -mean and log_scale = -log(std + eps) of that
  batch per channel, so its output has zero mean and unit variance per channel.
  """
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    c = x.shape[-1]
    axes = tuple(range(x.ndim - 1))

    def init_bias(_, shape):
      return -x.astype(jnp.float32).mean(axes).reshape(shape)

    def init_log_scale(_, shape):
      std = x.astype(jnp.float32).std(axes)
      return -jnp.log(std + self.epsilon).reshape(shape)

    bias = self.param('bias', init_bias, (c,))
    log_scale = self.param('log_scale', init_log_scale, (c,))
    log_det = _batch_constant(x, _spatial_size(x) * jnp.sum(log_scale.astype(jnp.float32)))
    if inverse:
      return (x * jnp.exp(-log_scale) - bias).astype(x.dtype), -log_det
    return ((x + bias) * jnp.exp(log_scale)).astype(x.dtype), log_det


# ------------------------------------------------------------------------------------------
# Invertible 1x1 convolutions


def random_rotation(key, shape, dtype=jnp.float32) -> jnp.ndarray:
  """A Haar-random rotation (orthogonal, det +1) of shape [C, C]."""
  q, r = jnp.linalg.qr(jax.random.normal(key, shape, jnp.float32))
  q = q * jnp.sign(jnp.diag(r))[None, :]
  q = q.at[:, 0].multiply(jnp.sign(jnp.linalg.det(q)))
  return q.astype(dtype)


def _channel_matmul(x, w):
  """A 1x1 convolution: y[..., j] = sum_i x[..., i] W[i, j]."""
  return jnp.einsum('...i,ij->...j', x, w.astype(x.dtype))


class Invertible1x1Conv(Bijector):
  """Glow's invertible 1x1 convolution (Table 1), y = x W per pixel, W initialized as a
  random rotation; log_det = H*W * log|det W| via slogdet in float32."""

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    c = x.shape[-1]
    w = self.param('kernel', random_rotation, (c, c)).astype(jnp.float32)
    _, log_abs_det = jnp.linalg.slogdet(w)
    log_det = _batch_constant(x, _spatial_size(x) * log_abs_det)
    if inverse:
      return _channel_matmul(x, jnp.linalg.inv(w)), -log_det
    return _channel_matmul(x, w), log_det


def lu_weight(permutation, lower, upper, sign_s, log_s) -> jnp.ndarray:
  """W = P L (U + diag(sign(s) * exp(log|s|))), L unit lower and U strictly upper triangular
  (only those parts of `lower` and `upper` are used)."""
  c = permutation.shape[0]
  l_unit = jnp.tril(lower, -1) + jnp.eye(c, dtype=lower.dtype)
  u = jnp.triu(upper, 1) + jnp.diag(sign_s * jnp.exp(log_s))
  return permutation @ l_unit @ u


class LUInvertible1x1Conv(Bijector):
  """Glow's LU-decomposed 1x1 convolution (Sec. 3.2, Table 1):
  W = P L (U + diag(sign(s) * exp(log|s|))); log_det = H*W * sum(log|s|).

  At initialization W is a random rotation, decomposed with pivoting (W = P L U). P and
  sign(s) stay fixed: they live in the 'constants' collection (pass every collection of
  `init`'s output to `apply`; only 'params' are trained), so a checkpoint holds them. The
  diagonal is exp(log|s|), never zero, so W stays invertible whatever the parameters.
  The inverse applies W^-1 = U^-1 L^-1 P^T through triangular solves.
  """

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train, context
    c = x.shape[-1]
    if not self.is_initializing() and not self.has_variable('constants', 'permutation'):
      raise ValueError("LUInvertible1x1Conv needs its 'constants' collection (P and sign(s)): "
                       "apply it with every collection that init returned.")
    # One draw shared by every initializer, so P, L, U and s come from the same rotation.
    # (Flax also traces initializers at apply time to check shapes; the key is a dummy then.)
    key = self.make_rng('params') if self.is_initializing() else jax.random.key(0)
    decomposition = []

    def plu():
      if not decomposition:   # once per call, however many initializers ask
        decomposition.append(jax.scipy.linalg.lu(random_rotation(key, (c, c))))
      return decomposition[0]

    lower = self.param('lower', lambda _: jnp.tril(plu()[1], -1))
    upper = self.param('upper', lambda _: jnp.triu(plu()[2], 1))
    log_s = self.param('log_s', lambda _: jnp.log(jnp.abs(jnp.diag(plu()[2]))))
    perm = self.variable('constants', 'permutation', lambda: plu()[0]).value
    sign_s = self.variable('constants', 'sign_s', lambda: jnp.sign(jnp.diag(plu()[2]))).value
    log_det = _batch_constant(x, _spatial_size(x) * jnp.sum(log_s.astype(jnp.float32)))
    if not inverse:
      return _channel_matmul(x, lu_weight(perm, lower, upper, sign_s, log_s)), log_det
    l_unit = jnp.tril(lower, -1) + jnp.eye(c, dtype=lower.dtype)
    u = jnp.triu(upper, 1) + jnp.diag(sign_s * jnp.exp(log_s))
    l_inv_pt = jax.scipy.linalg.solve_triangular(l_unit, perm.T, lower=True, unit_diagonal=True)
    w_inv = jax.scipy.linalg.solve_triangular(u, l_inv_pt, lower=False)
    return _channel_matmul(x, w_inv), -log_det


# ------------------------------------------------------------------------------------------
# Autoregressive flows on flat vectors


class _AutoregressiveLayer(Bijector):
  """Shared MADE plumbing of MAF and IAF: a MADE with two outputs per dimension whose output
  layer starts at zero, and a pure function of its input for the D sequential passes."""
  hidden_sizes: Sequence[int] = (64, 64)
  input_order: Ordering = 'natural'
  hidden_order: str = 'sequential'
  seed: int = 0
  activation: Callable = nn.relu

  def _made(self):
    return MADE(self.hidden_sizes, num_outputs_per_dim=2, input_order=self.input_order,
                hidden_order=self.hidden_order, seed=self.seed, activation=self.activation,
                output_kernel_init=_zeros, name='made')

  def _pure(self, made, x, context):
    """MADE as a function of x with its parameters closed over, for use inside
    lax.fori_loop (a bound Flax module must not be called from inside a JAX transform)."""
    if self.is_initializing():
      made(x, context)   # create the parameters outside the loop
    variables = made.variables
    fresh = made.clone(parent=None)
    return lambda v: fresh.apply(variables, v, context)

  def _sequential_inverse(self, step, y):
    """Inverts an autoregressive map by D passes. Pass k sets only the variable of degree
    k, from inputs of degree < k that earlier passes already set exactly; the rest stay
    at zero until their turn, so no intermediate value can overflow and poison the masked
    matmuls (a zero weight times an inf is a NaN). `step(x)` returns the candidate
    inverse and the per-dimension log-determinant [B, D] computed from x."""
    degrees = jnp.asarray(input_degrees(y.shape[-1], self.input_order, self.seed))

    def body(k, carry):
      x, log_det = carry
      x_new, log_det_dims = step(x)
      selected = degrees == k + 1
      x = jnp.where(selected, x_new, x)
      log_det = log_det + jnp.where(selected, log_det_dims, 0.0).sum(axis=-1)
      return x, log_det

    init = (jnp.zeros_like(y), jnp.zeros((y.shape[0],), jnp.float32))
    return jax.lax.fori_loop(0, y.shape[-1], body, init)


class MAF(_AutoregressiveLayer):
  """A MAF layer (Papamakarios et al. 2017, Sec. 3.1): forward x -> u with
  u_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)), all i in one MADE pass (density
  evaluation); log_det = log|du/dx| = -sum alpha. The inverse u -> x,
  x_i = u_i * exp(alpha_i(x_<i)) + mu_i(x_<i), takes D sequential MADE passes in a
  lax.fori_loop, pass k filling in the k-th variable of the ordering; its
  log_det = log|dx/du| = +sum alpha(x). The MADE output starts at zero, so a fresh layer
  is the identity. `context` [B, C] conditions every MADE layer. Stack layers with
  alternating `input_order` (or a `Reverse` between them).
  """

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del train
    made = self._made()
    if not inverse:
      out = made(x, context)
      mu, alpha = out[..., 0], out[..., 1]
      return (x - mu) * jnp.exp(-alpha), -_per_example_sum(alpha)
    u = x
    net = self._pure(made, u, context)

    def step(x):
      out = net(x)
      mu, alpha = out[..., 0], out[..., 1]
      return u * jnp.exp(alpha) + mu, alpha.astype(jnp.float32)
    return self._sequential_inverse(step, u)


class IAF(_AutoregressiveLayer):
  """An IAF step (Kingma et al. 2016, Eqs. 10-14) for a VAE posterior: forward
  z_{t-1} -> z_t = sigma * z_{t-1} + (1 - sigma) * m, [m, s] = MADE(z_{t-1}, h),
  sigma = sigmoid(s + forget_bias), in one pass (sampling direction);
  log_det = log|dz_t/dz_{t-1}| = sum log sigma, so with z_0 = mu_0 + sigma_0 * eps from
  the encoder, log q(z_T|x) = log q(z_0|x) - sum_t forward log_det_t (the paper's
  -sum_i(eps_i^2/2 + log(2 pi)/2 + sum_t log sigma_t,i)). `context` is the encoder's h.
  The inverse (D sequential passes, as in `MAF`) has log_det = -sum log sigma. The MADE
  output starts at zero, so a fresh step is z_t = sigmoid(forget_bias) * z_{t-1}: a
  positive forget bias (the paper suggests +1 or +2) keeps sigma near 1, so
  each step changes z only slightly at the start of training.
  """
  forget_bias: float = 1.0

  def _gate(self, out):
    m = out[..., 0]
    logit = out[..., 1].astype(jnp.float32) + self.forget_bias
    return m, jax.nn.sigmoid(logit).astype(out.dtype), jax.nn.log_sigmoid(logit)

  @nn.compact
  def __call__(self, z, inverse=False, train=False, context=None):
    del train
    made = self._made()
    if not inverse:
      m, sigma, log_sigma = self._gate(made(z, context))
      return sigma * z + (1 - sigma) * m, _per_example_sum(log_sigma)
    y = z
    net = self._pure(made, y, context)

    def step(z_prev):
      m, sigma, log_sigma = self._gate(net(z_prev))
      return (y - (1 - sigma) * m) / sigma, -log_sigma
    return self._sequential_inverse(step, y)
