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

Depth is scanned (issue 18): the residual blocks of every coupling ResNet are one
`_ResidualBlock` under `nn.scan`, and each run of couplings that share a mask kind within a
scale (3 checkerboard, 3 channel-wise; 4 checkerboard at the last scale) is one
`CouplingGroup`: a `_CouplingStep` (coupling, then its batch-norm bijector) under `nn.scan`
with the mask's parity (flip) as scanned data, reversed for the inverse. XLA compiles one
residual block and one coupling step per group, whatever the depth. In train mode the
ResNets' convolutions differentiate through `fb.conv_same_canonical_grad` (XLA:CPU runs JAX's own
transposed convolutions inside a scan about 40x slower); it has no forward-mode rule, so
jax.jacfwd works on the eval-mode flow only. Unrolling every scan (nn.scan's unroll, as
Glow's unroll_steps) did not pay: measured 2026-12-04 on the quiet 2-core AMD CPU (2
scales, 64 features, 8 blocks, batch 16) the fully unrolled step took 3.85 s against 3.56
scanned, and set-up + compile + first step 55.1 s against 19.8. Unrolling the coupling
groups alone (`unroll_couplings`, off by default) speeds a wide model's step by 10-16% on
the 2-core Intel CPU of 2026-12-07 for about a second more compile (its attribute's note).
In train mode each residual block is rematerialized, saving only its convolutions' outputs
(`_BLOCK_REMAT_POLICY`): XLA:CPU's scanned backward otherwise stacks every intermediate of
every block with a dynamic-update-slice and reads it back with a dynamic-slice, over half
of the traced op time in a profile of the step. The same values (the gradients are
tested against saving everything) and no convolution recomputed. Measured 2026-12-08 on the
2-core AMD EPYC, 2 scales x 64 features x 8 blocks, 32x32, batch 64, the trainer's step
(`benchmarks.flow_throughput --model realnvp --variant save_all_residuals`, medians of 5
alternating rounds, 03:55 UTC): saving every residual 2.13, with the remat 2.78 images/s;
start-up unchanged (benchmarks.compile_time).
Rematerializing the coupling steps as well, or Glow's steps, did not pay.

Variable layout (every collection, 'params' and 'batch_stats' alike; leading axes are the
scans', [steps] then [blocks]):

  scale{s}_{checkerboard,channel}/steps/coupling/scale                    [k, C]
  scale{s}_.../steps/coupling/net/{conv_in,norm_out,out}/...               [k, ...]
  scale{s}_.../steps/coupling/net/blocks/{conv0,conv1,norm0,norm1}/...     [k, B, ...]
  scale{s}_.../steps/batchnorm/{log_scale,bias | mean,var,count}           [k, ...]

Checkpoints of the unrolled layout before it (scale{s}_coupling{i} with net/Conv_0..Conv_2B
and net/BatchNorm_0..BatchNorm_2B, scale{s}_batchnorm{i}) convert with
`unrolled_to_scanned(variables)`, for a dict of collections ({'params': ...,
'batch_stats': ...}) or a {'params': tree} alone (an optimizer's moments); the values are
the same numbers, stacked, so the converted model computes the same function.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Sequence

import flax
import flax.linen as nn
import jax.numpy as jnp

from flows import bijectors as fb
from flows.models import ImageFlow, flatten_latents, split_latents

# One block's or one coupling step's variables are stacked on a leading axis.
_SCAN_AXES = {'params': 0, 'batch_stats': 0}


# The train-mode remat of each scanned residual block (the module docstring; fb.CONV_OUT).
_BLOCK_REMAT_POLICY = fb.SAVE_CONV_OUTPUTS


class _ResidualBlock(nn.Module):
  """BN-ReLU-conv3x3-BN-ReLU-conv3x3 + skip: the body `ResNet` scans."""
  features: int
  batch_norm: bool = True
  train: bool = False

  @nn.compact
  def __call__(self, h, _):
    conv = functools.partial(fb.Conv, self.features, canonical_grad=self.train)
    if self.batch_norm:
      norm = functools.partial(nn.BatchNorm, use_running_average=not self.train, momentum=0.9)
    else:
      def norm(name):
        del name
        return lambda h: h
    r = conv(name='conv0')(nn.relu(norm(name='norm0')(h)))
    r = conv(name='conv1')(nn.relu(norm(name='norm1')(r)))
    return h + r, None


class ResNet(nn.Module):
  """conv3x3 -> num_blocks x [BN-ReLU-conv3x3-BN-ReLU-conv3x3 + skip] -> BN-ReLU ->
  zero-initialized conv3x3 to out_features. The blocks are one scanned `_ResidualBlock`
  (variables 'blocks/...' with a leading [num_blocks] axis)."""
  features: int
  num_blocks: int
  out_features: int
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = fb.Conv(self.features, canonical_grad=train, name='conv_in')(x)
    if self.num_blocks:
      body = (nn.remat(_ResidualBlock, policy=_BLOCK_REMAT_POLICY, prevent_cse=False)
              if train else _ResidualBlock)
      blocks = nn.scan(body, variable_axes=_SCAN_AXES, split_rngs={'params': True},
                       length=self.num_blocks)
      h, _ = blocks(self.features, self.batch_norm, train, name='blocks')(h, None)
    if self.batch_norm:
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name='norm_out')(h)
    h = nn.relu(h)
    return fb.Conv(self.out_features, kernel_init=nn.initializers.zeros, canonical_grad=train,
                 name='out')(h)


class ResNetCoupling(fb.Bijector):
  """Real NVP's affine coupling (Eq. 9) with a ResNet for s and t; log_det = sum (1-b) s.
  Same map as flows.bijectors.AffineCoupling, with a batch-normalized ResNet as the net.

  `flip` may also be given to the call as a (traced) 0/1 scalar, which overrides the
  attribute: the flipped mask is 1 - b, so a scan can carry the parity as data."""
  mask: str = 'checkerboard'
  flip: bool = False
  features: int = 64
  num_blocks: int = 8
  net_batch_norm: bool = True

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None, flip=None):
    del context
    c = x.shape[-1]
    if flip is None:
      b = jnp.asarray(fb.coupling_mask(x.shape[1:], self.mask, self.flip), x.dtype)
    else:
      b0 = jnp.asarray(fb.coupling_mask(x.shape[1:], self.mask, False), x.dtype)
      flip = jnp.asarray(flip, x.dtype)
      b = b0 + flip * (1 - 2 * b0)
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


class _CouplingStep(nn.Module):
  """One coupling and its batch-norm bijector, the body `CouplingGroup` scans: carry
  (x, log_det), scanned data the mask's flip."""
  mask: str
  features: int
  num_blocks: int
  net_batch_norm: bool
  batch_norm: bool
  momentum: float
  inverse: bool = False
  train: bool = False

  @nn.compact
  def __call__(self, carry, flip):
    x, log_det = carry
    coupling = ResNetCoupling(mask=self.mask, features=self.features,
                              num_blocks=self.num_blocks, net_batch_norm=self.net_batch_norm,
                              name='coupling')
    norm = (fb.BatchNormBijector(momentum=self.momentum, name='batchnorm')
            if self.batch_norm else None)
    if self.inverse:
      if norm is not None:
        x, ld = norm(x, inverse=True)
        log_det = log_det + ld
      x, ld = coupling(x, inverse=True, flip=flip)
      return (x, log_det + ld), None
    x, ld = coupling(x, train=self.train, flip=flip)
    log_det = log_det + ld
    if norm is not None:
      x, ld = norm(x, train=self.train)
      log_det = log_det + ld
    return (x, log_det), None


class CouplingGroup(fb.Bijector):
  """len(flips) couplings of one mask kind, each followed by a BatchNormBijector when
  batch_norm, as one scanned `_CouplingStep` (variables 'steps/...' with a leading
  [len(flips)] axis); the inverse runs the scan backwards."""
  mask: str = 'checkerboard'
  flips: Sequence[bool] = (False, True, False)
  features: int = 64
  num_blocks: int = 8
  net_batch_norm: bool = True
  batch_norm: bool = True
  momentum: float = 0.99
  unroll: bool = False

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del context
    steps = nn.scan(_CouplingStep, variable_axes=_SCAN_AXES, split_rngs={'params': True},
                    length=len(self.flips), reverse=inverse,
                    unroll=len(self.flips) if self.unroll else 1)
    step = steps(self.mask, self.features, self.num_blocks, self.net_batch_norm,
                 self.batch_norm, self.momentum, inverse, train and not inverse, name='steps')
    carry = (x, jnp.zeros((x.shape[0],), jnp.float32))
    (y, log_det), _ = step(carry, jnp.asarray(self.flips, jnp.float32))
    return y, log_det


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
    unroll_couplings: run each coupling group's scan unrolled (nn.scan's unroll; the same
      variables and values). A faster train step for wide models, a slower first compile:
      2026-12-07, 2-core Intel Xeon, quiet, jitted loss and gradients, 2 scales x 64
      features x 8 blocks, 32x32x1, batch 16, two alternating rounds: step 3.03 / 3.18 ->
      2.72 / 2.66 s, compile 5.3 / 5.5 -> 6.7 / 6.6 s (unrolling the residual blocks
      instead: no gain, 3.17-3.22 s). benchmarks.compile_time: realnvp_mnist.py:cpu compile
      6.33 -> 7.84 s with no step gain (0.13-0.14 s); the paper's realnvp_mnist.py compile
      9.6-9.9 -> 11.0 s, next step 13.1-13.5 -> 11.8 s, first step 18.5 s. Off by default
      (start-up, issue 18); for long runs of wide models set model.unroll_couplings=True.
  """
  num_scales: int = 2
  features: int = 64
  num_blocks: int = 8
  batch_norm: bool = True
  net_batch_norm: bool = True
  momentum: float = 0.99
  unroll_couplings: bool = False
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

      def group(mask, n, s=s):
        return CouplingGroup(
            mask=mask, flips=tuple(bool(i % 2) for i in range(n)),
            features=self.features * 2 ** s, num_blocks=self.num_blocks,
            net_batch_norm=self.net_batch_norm, batch_norm=self.batch_norm,
            momentum=self.momentum, unroll=self.unroll_couplings, name=f'scale{s}_{mask}')

      layers = [group('checkerboard', 4 if last else 3)]
      if not last:
        # Channel-wise couplings on the plain squeeze, then the ordered layout for the
        # factor-out, as in the paper's code: on the ordered squeeze the channel halves
        # would be the checkerboard's halves again.
        layers.append(fb.Squeeze(ordered=False, name=f'scale{s}_squeeze'))
        h, w, c = h // 2, w // 2, 4 * c
        layers.append(group('channel', 3))
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


# -- Checkpoints of the unrolled layout ---------------------------------------------------

_OLD_LAYER = re.compile(r'scale(\d+)_(coupling|batchnorm)(\d+)$')
_OLD_NET = re.compile(r'(Conv|BatchNorm)_(\d+)$')


def _stack(leaves: dict) -> dict:
  """{new path: {index tuple: array}} -> {new path: the arrays stacked on leading axes}."""
  out = {}
  for path, by_index in leaves.items():
    keys = sorted(by_index)
    grid = tuple(max(k[a] for k in keys) + 1 for a in range(len(keys[0])))
    if len(keys) != math.prod(grid):
      raise ValueError(f'{"/".join(path)}: missing layers, have indices {keys}')
    first = by_index[keys[0]]
    out[path] = jnp.stack([jnp.asarray(by_index[k]) for k in keys]).reshape(
        grid + tuple(first.shape))
  return out


def unrolled_to_scanned(variables: dict) -> dict:
  """Variables of the unrolled RealNVP (before the scans) -> the scanned layout above.

  `variables` is a dict of collections ({'params': ..., 'batch_stats': ...}, e.g. init's
  output or a checkpoint's params plus model_state), or {'params': tree} alone, as for
  Adam's mu and nu. Every leaf keeps its value; a coupling's leaves are stacked over the
  couplings of its group (axis 0) and its ResNet blocks' over the blocks (axis 1).
  """
  converted = {}
  for collection, tree in variables.items():
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
    last_scale = max((int(m.group(1)) for p in flat if (m := _OLD_LAYER.match(p[0]))),
                     default=-1)
    # Blocks per ResNet, from the convolutions (or, in 'batch_stats', the norms) present.
    counts = {}
    for path in flat:
      if len(path) > 2 and path[1] == 'net' and (m := _OLD_NET.match(path[2])):
        counts.setdefault((path[0], m.group(1)), set()).add(int(m.group(2)))
    leaves = {}
    for path, value in flat.items():
      m = _OLD_LAYER.match(path[0])
      if not m:
        raise ValueError(f'{collection}/{"/".join(path)} is not a layer of the unrolled '
                         'RealNVP (scale{s}_coupling{i} or scale{s}_batchnorm{i})')
      s, kind, i = int(m.group(1)), m.group(2), int(m.group(3))
      group, k = ('checkerboard', i) if i < 3 or s == last_scale else ('channel', i - 3)
      prefix = (f'scale{s}_{group}', 'steps')
      if kind == 'batchnorm':
        leaves.setdefault(prefix + ('batchnorm',) + path[1:], {})[(k,)] = value
        continue
      rest = path[1:]
      index = (k,)
      if len(rest) > 1 and rest[0] == 'net' and (n := _OLD_NET.match(rest[1])):
        layer, j = n.group(1), int(n.group(2))
        present = counts[(path[0], layer)]
        num_blocks = (len(present) - 1) // 2
        if layer == 'Conv' and j == 0:
          rest = ('net', 'conv_in') + rest[2:]
        elif layer == 'BatchNorm' and j == 2 * num_blocks:
          rest = ('net', 'norm_out') + rest[2:]
        else:
          b = (j - 1) if layer == 'Conv' else j
          name = ('conv' if layer == 'Conv' else 'norm') + str(b % 2)
          rest = ('net', 'blocks', name) + rest[2:]
          index = (k, b // 2)
      leaves.setdefault(prefix + ('coupling',) + rest, {})[index] = value
    converted[collection] = flax.traverse_util.unflatten_dict(_stack(leaves))
  return converted
