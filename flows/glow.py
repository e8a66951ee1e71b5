"""Glow: generative flow with invertible 1x1 convolutions.

Kingma & Dhariwal 2018, arXiv 1807.03039, with the details of their released code.

- Preprocessing: x = (image + u) / 256 - 0.5 (the code's `x / n_bins - .5`; Jacobian 1).
- One step of flow (Sec. 3, Table 1, Fig. 2a): actnorm (data-dependent initialization on
  the batch `init` sees) -> invertible 1x1 convolution (LU-decomposed by default, Sec. 3.2;
  its P and sign(s) are fixed constants in the 'constants' collection; the released code's
  `invertible_1x1_conv` runs the plain one unless edited) -> affine coupling (the code's
  version: scale = sigmoid(h + 2), flows/bijectors.py GlowCoupling).
- The comparison of Fig. 3, as the code's `flow_permutation` and `flow_coupling`
  options: `permutation` 'reverse' (the channel order reversed, Real NVP's fixed
  permutation) or 'shuffle' (a fixed random channel permutation, a different one per step)
  in place of the 1x1 convolution, and `coupling` 'additive' (NICE's y_b = x_b + NN(x_a),
  log-det 0, GlowCoupling(additive=True)) in place of the affine one.
- The multi-scale architecture (Fig. 2b): L levels, each a squeeze, K steps of flow and,
  except at the last level, a split: half of the channels z2 are factored out with a
  learned conditional prior N(mu, sigma^2), [mu, log sigma] = Conv2dZeros(z1), a
  zero-initialized 3x3 convolution of the kept half (the code's `split2d`). At the top,
  `learn_top` gives the last latent a learned per-channel mean and log-scale (the code's
  `learntop`, which is a zero-initialized convolution of zeros).

Latents are returned standardized: a factored-out z2 as eps2 = (z2 - mu) / sigma (log-det
-sum log sigma), so the whole latent is N(0, I) under the model and sampling at
temperature T draws z2 = mu + T * sigma * eps2 (flows/models.py). The latent of `encode`
is [eps of level 0's split, ..., level L-2's, the top], each flattened.

The K steps of each level are one `nn.scan` over a `FlowStep` (actnorm -> permutation ->
coupling; the inverse scans the steps backwards, each step inverting its layers in reverse
order), so XLA compiles one step's program per level whatever K is: the train step's
program no longer grows with depth. At init each step gets its own 'params' key and its
actnorm initializes on the activations that step sees, as the unrolled layers did; the
shuffle permutations (one seed per step, level * K + k) are a scanned input, not a variable.

Parameter layout (changed with the scan; densities and samples are unchanged). Before, every
step's layers were top-level entries 'level{L}_step{k}_actnorm', '..._invconv' and
'..._coupling' (with 'level{L}_step{k}_invconv' in 'constants' for the LU permutation and
signs). Now each level has one entry 'level{L}_steps' holding 'actnorm', 'invconv' (when
permutation='1x1conv') and 'coupling', every leaf stacked over the K steps on a new leading
axis (the same in 'constants'); 'level{L}_split' and 'top_prior' are as they were. Saved
runs of the unrolled model convert with `unrolled_to_scanned(variables)` (a dict of
collections; Adam's mu and nu or EMA parameters as {'params': tree}), and
`scanned_to_unrolled` goes back; the trainer does not convert by itself, so a workdir saved
before the change must be converted before it resumes.

Glow reports 3.35 bits/dim on CIFAR-10 (L=3, K=32, 512 hidden channels, affine coupling,
Table 2). The Glow paper has no MNIST result; 1.05 bits/dim for Glow on MNIST is the figure
Grathwohl et al. 2019 (FFJORD, arXiv 1810.01367, Table 2) report. The released code pads
MNIST to 32x32 for three levels; we keep 28x28 (D = 784 exactly) and use two levels
(28 -> 14 -> 7).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flows import bijectors as fb
from flows.models import ImageFlow, flatten_latents, split_latents


class Conv2dZeros(nn.Module):
  """Glow's zero-initialized 3x3 convolution with the exp(3 * logs) output rescaling."""
  features: int

  @nn.compact
  def __call__(self, x):
    return fb.Conditioner((), self.features, output_kernel_size=3,
                          output_logscale_factor=3.0, name='conv')(x)


class SplitPrior(nn.Module):
  """log p(z2 | z1) by standardizing: returns eps2 = (z2 - mu) * exp(-logs) and
  log_det = -sum logs (forward), or z2 = mu + exp(logs) * eps2 (inverse)."""

  @nn.compact
  def __call__(self, z1, z2, inverse=False):
    h = Conv2dZeros(2 * z2.shape[-1], name='prior')(z1)
    mean, logs = h[..., 0::2], h[..., 1::2]
    log_det = -fb._per_example_sum(logs)  # pylint: disable=protected-access
    if inverse:
      return mean + jnp.exp(logs) * z2, -log_det
    return (z2 - mean) * jnp.exp(-logs), log_det


class TopPrior(nn.Module):
  """The top latent's prior: learned per-channel mean and log-scale (zero at the start)."""

  @nn.compact
  def __call__(self, z, inverse=False):
    c = z.shape[-1]
    mean = self.param('mean', nn.initializers.zeros, (c,))
    logs = self.param('logs', nn.initializers.zeros, (c,))
    log_det = -fb._batch_constant(z, fb._spatial_size(z) * jnp.sum(logs))  # pylint: disable=protected-access
    if inverse:
      return mean + jnp.exp(logs) * z, -log_det
    return (z - mean) * jnp.exp(-logs), log_det


COUPLINGS = ('affine', 'additive')
PERMUTATIONS = ('1x1conv', 'shuffle', 'reverse')

# The collections a step's variables live in, each stacked on a leading step axis.
SCANNED_COLLECTIONS = ('params', 'constants')
_UNROLLED_STEP = re.compile(r'^level(\d+)_step(\d+)_([a-z0-9]+)$')
_SCANNED_LEVEL = re.compile(r'^level(\d+)_steps$')


class FlowStep(nn.Module):
  """One step of flow (Table 1): actnorm -> permutation -> coupling; the inverse runs them
  in reverse order. `Glow` scans it over K steps, so its variables carry a leading step
  axis in the model's tree.

  `__call__(x, log_det, shuffle, inverse)` adds each layer's log-determinant to `log_det`
  in turn (the order the unrolled chain added them, so the sums round alike); `shuffle` is
  the step's (permutation, inverse permutation) pair of channel indices for
  permutation='shuffle', else None.
  """
  hidden_features: int = 512
  additive: bool = False
  permutation: str = '1x1conv'
  lu: bool = True

  @nn.compact
  def __call__(self, x, log_det, shuffle=None, inverse=False, train=False):
    actnorm = fb.ActNorm(name='actnorm')
    coupling = fb.GlowCoupling(self.hidden_features, additive=self.additive, name='coupling')
    if self.permutation == '1x1conv':
      conv = fb.LUInvertible1x1Conv if self.lu else fb.Invertible1x1Conv
      permute = conv(name='invconv')
    elif self.permutation == 'shuffle':
      def permute(v, inverse):
        return jnp.take(v, shuffle[1] if inverse else shuffle[0], axis=-1), 0.0
    else:
      def permute(v, inverse):
        return v[..., ::-1], 0.0
    for layer in ((coupling, permute, actnorm) if inverse else (actnorm, permute, coupling)):
      x, ld = (coupling(x, inverse=inverse, train=train) if layer is coupling
               else layer(x, inverse=inverse))
      log_det = log_det + ld
    return x, log_det


class Glow(ImageFlow):
  """Glow on [H, W, C] images.

  Attributes (beyond ImageFlow's image_shape, preprocessing, prior):
    num_levels: L; H and W must be divisible by 2^L.
    num_steps: K steps of flow per level.
    hidden_features: the coupling networks' hidden channels (512 in the paper).
    lu: with permutation='1x1conv', the LU-decomposed 1x1 convolution (else the plain one
      with a slogdet); the fixed permutations have no weights and ignore it.
    learn_top: a learned mean and scale for the top latent (else N(0, I)).
    coupling: 'affine' (the paper's model) or 'additive' (Fig. 3).
    permutation: '1x1conv' (the paper's model), 'shuffle' or 'reverse' (Fig. 3).
      The defaults are the layers of runs saved before these options.
    unroll_steps: how many steps each iteration of the scan over a level's steps runs
      (nn.scan's `unroll`): 1 traces and compiles one step; num_steps unrolls the loop, so
      the program grows with K again. The parameters are the same either way. In train mode
      the couplings' convolutions differentiate through fb.conv_same_canonical_grad:
      without it XLA:CPU (jax 0.10.2) ran the scanned steps' backward pass 3-8x slower than
      the unrolled one; with it the :cpu config trains at 7.5 steps/s against 1.3
      (benchmarks.host_fetch, 10-step blocks, medians of 3, other processes 0.01 cores).

  Actnorm's data-dependent initialization needs a batch with several distinct values per
  channel at every level: the trainer initializes on the first config.train.init_examples
  (256, the released code's n_batch_init) images of an evaluation batch. With two images
  and a 1x1 top level the per-channel std estimates can be near zero, and the initial
  scales then overflow float32 after a few dozen steps.
  """
  num_levels: int = 3
  num_steps: int = 32
  hidden_features: int = 512
  lu: bool = True
  learn_top: bool = True
  coupling: str = 'affine'
  permutation: str = '1x1conv'
  unroll_steps: int = 1
  preprocessing: str = 'shift'
  prior: str = 'gaussian'

  def setup(self):
    self._check_config()
    h, w, c = self.image_shape
    if self.num_levels < 1 or h % 2 ** self.num_levels or w % 2 ** self.num_levels:
      raise ValueError(f'num_levels={self.num_levels} needs H and W divisible by '
                       f'2^num_levels; the images are {h}x{w}.')
    if self.num_steps < 1:
      raise ValueError(f'num_steps={self.num_steps} must be at least 1.')
    if not 1 <= self.unroll_steps <= self.num_steps:
      raise ValueError(f'unroll_steps={self.unroll_steps} must lie in 1..num_steps='
                       f'{self.num_steps}.')
    if self.coupling not in COUPLINGS:
      raise ValueError(f'coupling={self.coupling!r}; choose one of {COUPLINGS}.')
    if self.permutation not in PERMUTATIONS:
      raise ValueError(f'permutation={self.permutation!r}; choose one of {PERMUTATIONS}.')
    steps, priors, shapes = [], [], []
    for level in range(self.num_levels):
      h, w, c = h // 2, w // 2, 4 * c
      steps.append(FlowStep(self.hidden_features, additive=self.coupling == 'additive',
                            permutation=self.permutation, lu=self.lu,
                            name=f'level{level}_steps'))
      if level < self.num_levels - 1:
        priors.append(SplitPrior(name=f'level{level}_split'))
        shapes.append((h, w, c - c // 2))
        c = c // 2
    shapes.append((h, w, c))
    self.steps = steps
    self.split_priors = priors
    if self.learn_top:
      self.top_prior = TopPrior()
    self.latent_shapes = tuple(shapes)
    assert sum(math.prod(s) for s in shapes) == self.num_dims

  def shuffle_permutations(self, level: int, channels: int) -> np.ndarray:
    """permutation='shuffle': level `level`'s K channel permutations [K, C], step k's drawn
    from seed level * K + k (the code seeds each step's shuffle from its scope name, so the
    steps permute differently); the draws of fb.Permute(seed=...), as the unrolled model
    made them."""
    return np.stack([np.random.RandomState(level * self.num_steps + k).permutation(channels)
                     for k in range(self.num_steps)])

  def _level_steps(self, level: int, y, inverse: bool, train: bool = False):
    """The K steps of one level as one scanned step: XLA compiles a single step's program
    whatever K is. Forward runs steps 0..K-1, the inverse K-1..0; the step's variables
    are sliced from the stacked ones, and at init each step creates its own (a fresh 'params'
    key per step, and actnorm initialized on the activations the step actually sees)."""
    shuffle = None
    if self.permutation == 'shuffle':
      perms = self.shuffle_permutations(level, y.shape[-1])
      shuffle = (jnp.asarray(perms, jnp.int32),
                 jnp.asarray(np.argsort(perms, axis=-1), jnp.int32))

    def body(step, carry, shuffle):
      return step(*carry, shuffle, inverse=inverse, train=train), None

    scan = nn.scan(body, variable_axes={c: 0 for c in SCANNED_COLLECTIONS},
                   split_rngs={'params': True}, length=self.num_steps, reverse=inverse,
                   unroll=self.unroll_steps)
    (y, log_det), _ = scan(self.steps[level], (y, jnp.zeros((y.shape[0],), jnp.float32)),
                           shuffle)
    return y, log_det

  def _flow(self, y, train):
    # Glow has no batch statistics; train only selects the couplings' canonical-gradient
    # convolutions (the same values).
    log_det = jnp.zeros((y.shape[0],), jnp.float32)
    latents = []
    for level in range(self.num_levels):
      y, ld = self._level_steps(level, fb.squeeze(y), inverse=False, train=train)
      log_det = log_det + ld
      if level < self.num_levels - 1:
        keep = y.shape[-1] // 2
        eps2, ld = self.split_priors[level](y[..., :keep], y[..., keep:])
        latents.append(eps2)
        log_det = log_det + ld
        y = y[..., :keep]
    if self.learn_top:
      y, ld = self.top_prior(y)
      log_det = log_det + ld
    latents.append(y)
    return flatten_latents(latents), log_det

  def _flow_inverse(self, eps):
    parts = split_latents(eps, self.latent_shapes)
    y = parts[-1]
    if self.learn_top:
      y, _ = self.top_prior(y, inverse=True)
    for level in reversed(range(self.num_levels)):
      if level < self.num_levels - 1:
        z2, _ = self.split_priors[level](y, parts[level], inverse=True)
        y = jnp.concatenate([y, z2], axis=-1)
      y, _ = self._level_steps(level, y, inverse=True)
      y = fb.unsqueeze(y)
    return y


# -- Checkpoints of the unrolled model ---------------------------------------------------

def unrolled_to_scanned(variables: Mapping[str, Any]) -> dict:
  """Variables of the unrolled Glow (before the steps were scanned) -> this layout.

  `variables` maps collection names to trees, e.g. `init`'s {'params': ..., 'constants':
  ...}, or {'params': tree} for any tree shaped like the parameters (Adam's mu and nu, EMA
  parameters). Every top-level entry 'level{L}_step{k}_{layer}' becomes
  'level{L}_steps'/'{layer}' with step k at index k of a new leading axis of each leaf;
  everything else (the split and top priors) is kept as it is. The steps of each
  level must be numbered 0..K-1 with none missing.
  """
  out = {}
  for collection, tree in variables.items():
    new, stacks = {}, {}
    for key, value in tree.items():
      m = _UNROLLED_STEP.match(key)
      if m is None:
        new[key] = value
      else:
        stacks.setdefault((int(m[1]), m[3]), {})[int(m[2])] = value
    for (level, layer), by_step in sorted(stacks.items()):
      if sorted(by_step) != list(range(len(by_step))):
        raise ValueError(f"{collection}: level {level}'s {layer} layers are numbered "
                         f'{sorted(by_step)}, not 0..K-1.')
      name = f'level{level}_steps'
      if name in tree:
        raise ValueError(f'{collection} holds both {name} and unrolled steps of level {level}.')
      new.setdefault(name, {})[layer] = jax.tree.map(
          lambda *leaves: jnp.stack(leaves), *(by_step[k] for k in range(len(by_step))))
    out[collection] = new
  return out


def scanned_to_unrolled(variables: Mapping[str, Any]) -> dict:
  """The inverse of `unrolled_to_scanned`: 'level{L}_steps'/'{layer}' with K stacked
  steps -> 'level{L}_step{k}_{layer}' for k = 0..K-1 (e.g. to read a new checkpoint with
  code from before the scan)."""
  out = {}
  for collection, tree in variables.items():
    new = {}
    for key, value in tree.items():
      if _SCANNED_LEVEL.match(key) is None:
        new[key] = value
        continue
      level = key[len('level'):-len('_steps')]
      for layer, stacked in value.items():
        num_steps = jax.tree.leaves(stacked)[0].shape[0]
        for k in range(num_steps):
          new[f'level{level}_step{k}_{layer}'] = jax.tree.map(lambda a, k=k: a[k], stacked)
    out[collection] = new
  return out
