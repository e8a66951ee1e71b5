"""MAF: Masked Autoregressive Flow for density estimation.

Papamakarios, Pavlakou & Murray 2017, arXiv 1705.07057. A stack of MADE layers (Sec. 3.1,
flows/bijectors.py MAF): each computes u_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)) for
all i in one pass, log-determinant -sum alpha; consecutive layers reverse the ordering
(Sec. 3.1: "use a different order in each layer"), and the base density is N(0, I)
(Eq. 2). With batch_norm, a batch-normalization bijector follows every MADE, the last
included, as in the authors' code (github gpapamak/maf, ml/models/mafs.py
MaskedAutoregressiveFlow: a BatchNorm after each MADE, following Real NVP); its running
averages live in 'batch_stats'.

Images (the paper's MNIST and CIFAR-10 experiments): the flat image, dequantized and mapped to logit
space, y = logit(lambda + (1 - 2 lambda) x) with lambda = 1e-6, the Jacobian entering the likelihood
(flows/models.py). The MNIST models use MADEs of two hidden layers of 1024 ReLU units (the code's
run_experiments.py: [1024] * 2 for every MNIST model); Papamakarios et al. report MAF (5) at about
1.89 bits/pixel on MNIST.

Density evaluation (and so training) is one pass per layer; sampling and `decode` invert
each layer with D sequential MADE passes.

Depth is scanned (issue 18): the layers are one `_MAFStep` (a MADE, then its batch-norm
bijector) under `nn.scan`, so XLA compiles one MADE whatever num_layers. A MADE of
'reversed' order is the same map as a 'natural' one between two reversals of the vector,
with its first kernel's rows and its output kernel's and bias's columns reversed (the
hidden degrees do not depend on the input order), so every step holds a natural-order MADE
and a scanned flag says whether the step reverses around it (layers 1, 3, ...).

Variable layout (leading axis [num_layers]):

  layers/steps/made/made/masked_{0..L}/{kernel,bias}                         [num_layers, ...]
  layers/steps/batchnorm/{log_scale,bias}, batch_stats .../batchnorm/...     [num_layers, D]

Checkpoints of the unrolled layout before it (made_{i}/made/masked_*, batchnorm_{i}, odd
layers with input_order='reversed') convert with `unrolled_to_scanned(variables)`, for a
dict of collections or a {'params': tree} alone (an optimizer's moments); odd layers'
first and output kernels are reversed as above, everything else is stacked unchanged.
"""
from __future__ import annotations

import re
from typing import Sequence

import flax
import flax.linen as nn
import jax.numpy as jnp

from flows import bijectors as fb
from flows.models import ImageFlow


def _maybe_reverse(x, reverse):
  """x[..., ::-1] where the (traced) 0/1 flag `reverse` is set, else x."""
  return jnp.where(reverse > 0, x[..., ::-1], x)


class _MAFStep(nn.Module):
  """One MAF layer (natural order, between reversals where `reverse`) and its batch-norm
  bijector: the body `MAFModel` scans; carry (x, log_det), scanned data the flag."""
  hidden_sizes: Sequence[int]
  batch_norm: bool
  momentum: float
  inverse: bool = False
  train: bool = False

  @nn.compact
  def __call__(self, carry, reverse):
    x, log_det = carry
    made = fb.MAF(tuple(self.hidden_sizes), input_order='natural', name='made')
    norm = (fb.BatchNormBijector(momentum=self.momentum, name='batchnorm')
            if self.batch_norm else None)
    if self.inverse:
      if norm is not None:
        x, ld = norm(x, inverse=True)
        log_det = log_det + ld
      x, ld = made(_maybe_reverse(x, reverse), inverse=True)
      return (_maybe_reverse(x, reverse), log_det + ld), None
    x, ld = made(_maybe_reverse(x, reverse))
    x = _maybe_reverse(x, reverse)
    log_det = log_det + ld
    if norm is not None:
      x, ld = norm(x, train=self.train)
      log_det = log_det + ld
    return (x, log_det), None


class MAFStack(fb.Bijector):
  """num_layers MAF layers (orders natural, reversed, natural, ...), each followed by a
  BatchNormBijector when batch_norm, as one scanned `_MAFStep` (variables 'steps/...' with
  a leading [num_layers] axis); the inverse runs the scan backwards."""
  num_layers: int = 5
  hidden_sizes: Sequence[int] = (1024, 1024)
  batch_norm: bool = True
  momentum: float = 0.99

  @nn.compact
  def __call__(self, x, inverse=False, train=False, context=None):
    del context
    steps = nn.scan(_MAFStep, variable_axes={'params': 0, 'batch_stats': 0},
                    split_rngs={'params': True}, length=self.num_layers, reverse=inverse)
    step = steps(tuple(self.hidden_sizes), self.batch_norm, self.momentum, inverse,
                 train and not inverse, name='steps')
    reverse = jnp.arange(self.num_layers) % 2
    (y, log_det), _ = step((x, jnp.zeros((x.shape[0],), jnp.float32)), reverse)
    return y, log_det


class MAFModel(ImageFlow):
  """MAF on flat images.

  Attributes (beyond ImageFlow's image_shape, preprocessing, alpha, prior):
    num_layers: MADE layers (5 in the paper's MAF (5)).
    hidden_sizes: each MADE's hidden widths ((1024, 1024) for MNIST).
    batch_norm: a BatchNormBijector after every MADE, the last included.
    momentum: its running-average momentum.
  """
  num_layers: int = 5
  hidden_sizes: Sequence[int] = (1024, 1024)
  batch_norm: bool = True
  momentum: float = 0.99
  preprocessing: str = 'logit'
  alpha: float = 1e-6
  prior: str = 'gaussian'

  def setup(self):
    self._check_config()
    if self.num_layers < 1:
      raise ValueError(f'num_layers={self.num_layers} must be at least 1.')
    self.layers = MAFStack(self.num_layers, tuple(self.hidden_sizes), self.batch_norm,
                           self.momentum)

  def _flow(self, y, train):
    return self.layers(y.reshape(y.shape[0], -1), inverse=False, train=train)

  def _flow_inverse(self, eps):
    return self.layers(eps, inverse=True)[0]


# -- Checkpoints of the unrolled layout ---------------------------------------------------

_OLD_LAYER = re.compile(r'(made|batchnorm)_(\d+)$')
_MASKED = re.compile(r'masked_(\d+)$')


def _reverse_dims(path, value, num_masked):
  """A reversed-order MADE's leaf -> the natural-order MADE's (see the module docstring)."""
  m = _MASKED.match(path[-2]) if len(path) > 1 else None
  if m is None:
    if path[-2].startswith('context_'):
      raise ValueError('MAFModel has no context; cannot convert context kernels')
    return value
  i, name = int(m.group(1)), path[-1]
  value = jnp.asarray(value)
  if i == 0 and name == 'kernel':
    value = value[::-1]
  if i == num_masked - 1:        # the output layer, columns d * 2 + j
    if name == 'kernel':
      h, width = value.shape
      value = value.reshape(h, width // 2, 2)[:, ::-1].reshape(h, width)
    else:
      value = value.reshape(-1, 2)[::-1].reshape(-1)
  return value


def unrolled_to_scanned(variables: dict) -> dict:
  """Variables of the unrolled MAFModel (made_{i}, batchnorm_{i}) -> the scanned layout.

  `variables` is a dict of collections ({'params': ..., 'batch_stats': ...}) or
  {'params': tree} alone (Adam's mu and nu convert the same way: the reversal is a
  permutation, so it commutes with elementwise moments).
  """
  converted = {}
  for collection, tree in variables.items():
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
    num_masked = len({p[2] for p in flat if p[0].startswith('made_') and len(p) > 2
                      and _MASKED.match(p[2])})
    leaves = {}
    for path, value in flat.items():
      m = _OLD_LAYER.match(path[0])
      if not m:
        raise ValueError(f'{collection}/{"/".join(path)} is not a layer of the unrolled '
                         'MAFModel (made_{i} or batchnorm_{i})')
      kind, i = m.group(1), int(m.group(2))
      if kind == 'made' and i % 2:
        value = _reverse_dims(path, value, num_masked)
      leaves.setdefault(('layers', 'steps', kind) + path[1:], {})[i] = jnp.asarray(value)
    out = {}
    for path, by_layer in leaves.items():
      if sorted(by_layer) != list(range(len(by_layer))):
        raise ValueError(f'{"/".join(path)}: missing layers, have {sorted(by_layer)}')
      out[path] = jnp.stack([by_layer[i] for i in range(len(by_layer))])
    converted[collection] = flax.traverse_util.unflatten_dict(out)
  return converted
