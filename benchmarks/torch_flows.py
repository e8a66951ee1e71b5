"""Glow and Real NVP of flows/ in PyTorch eager, for speed comparisons.

The same functions as flows.glow.Glow (affine coupling, LU 1x1 convolutions, learned top
prior) and flows.realnvp.RealNVP (ResNet couplings with batch normalization, batch-norm
bijectors, logit preprocessing): the same layers, masks, squeezes, channel orders,
initial values and parameter count. Each step of flow and each coupling is its own
torch module (a ModuleList, as PyTorch implementations write them), not a stacked tensor.
`load_glow` and `load_realnvp` copy a Flax variable tree (the scanned layout: every step's
leaves stacked on a leading axis) into them; `check_glow` / `check_realnvp` assert that
both give the same log-densities (and Glow the same decoded images), so a benchmark that
compares the two compares the same computation.

Layout is NCHW (PyTorch's default); the Flax models are NHWC. Channel c of a Flax tensor
is channel c here, and the squeezes put the same pixel in the same channel, so every
intermediate tensor is the Flax one transposed. Flax kernels are HWIO and PyTorch's OIHW;
both frameworks compute cross-correlations, so the mapping is a transpose. Flax's 'SAME'
padding of a 3x3 kernel is PyTorch's padding=1.

Only benchmarks and their tests import this file (the `bench` extra installs torch).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flows import bijectors as fb

_LOG_2PI = math.log(2 * math.pi)
_ORDER = {True: [0, 3, 1, 2], False: [0, 1, 2, 3]}   # fb._SQUEEZE_ORDERS


def squeeze(x: torch.Tensor, ordered: bool = True) -> torch.Tensor:
  """fb.squeeze in NCHW: [B, C, H, W] -> [B, 4C, H/2, W/2], channel slot * C + c."""
  b, c, h, w = x.shape
  x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4)
  x = x.reshape(b, 4, c, h // 2, w // 2)[:, _ORDER[ordered]]
  return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(y: torch.Tensor, ordered: bool = True) -> torch.Tensor:
  b, c4, h, w = y.shape
  c = c4 // 4
  y = y.reshape(b, 4, c, h, w)[:, list(np.argsort(_ORDER[ordered]))]
  y = y.reshape(b, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2)
  return y.reshape(b, c, 2 * h, 2 * w)


def _per_example_sum(a: torch.Tensor) -> torch.Tensor:
  return a.flatten(1).sum(1)


def _chan(v: torch.Tensor) -> torch.Tensor:
  """A per-channel vector [C] broadcast over NCHW."""
  return v[None, :, None, None]


def _gaussian_log_prob(parts) -> torch.Tensor:
  return sum(_per_example_sum(-0.5 * e * e - 0.5 * _LOG_2PI) for e in parts)


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def bits_per_dim_loss(log_prob: torch.Tensor, num_dims: int) -> torch.Tensor:
  """ImageFlow.loss's objective: the mean over the batch of -log p(x_int) in bits/dim, with
  the discretization offset D log 256 (likelihood.discretization_offset)."""
  nll = -log_prob + num_dims * math.log(256)
  return (nll / (num_dims * math.log(2))).mean()


# --------------------------------------------------------------------------- Glow

class GlowStep(nn.Module):
  """actnorm -> LU 1x1 convolution -> Glow's affine coupling (flows.glow.FlowStep)."""

  def __init__(self, c: int, hidden: int):
    super().__init__()
    self.ca, cb = c // 2, c - c // 2
    self.an_bias = nn.Parameter(torch.zeros(c))
    self.an_log_scale = nn.Parameter(torch.zeros(c))
    self.lower = nn.Parameter(torch.zeros(c, c))
    self.upper = nn.Parameter(torch.zeros(c, c))
    self.log_s = nn.Parameter(torch.zeros(c))
    self.register_buffer('permutation', torch.eye(c))
    self.register_buffer('sign_s', torch.ones(c))
    self.conv0 = nn.Conv2d(self.ca, hidden, 3, padding=1)
    self.conv1 = nn.Conv2d(hidden, hidden, 1)
    self.out = nn.Conv2d(hidden, 2 * cb, 3, padding=1)
    self.out_logs = nn.Parameter(torch.zeros(2 * cb))

  def weight(self) -> torch.Tensor:
    c = self.log_s.shape[0]
    lower = torch.tril(self.lower, -1) + torch.eye(c, device=self.lower.device)
    upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
    return self.permutation @ lower @ upper

  def _net(self, xa):
    h = F.relu(self.conv1(F.relu(self.conv0(xa))))
    h = self.out(h) * _chan(torch.exp(3.0 * self.out_logs))
    return h[:, 0::2], h[:, 1::2] + 2.0

  def forward(self, x):
    hw = x.shape[2] * x.shape[3]
    x = (x + _chan(self.an_bias)) * _chan(torch.exp(self.an_log_scale))
    x = F.conv2d(x, self.weight().t()[:, :, None, None])   # y_j = sum_i x_i W_ij
    xa, xb = x[:, :self.ca], x[:, self.ca:]
    shift, logit = self._net(xa)
    yb = (xb + shift) * torch.sigmoid(logit)
    log_det = (hw * (self.an_log_scale.sum() + self.log_s.sum())
               + _per_example_sum(F.logsigmoid(logit)))
    return torch.cat([xa, yb], 1), log_det

  def inverse(self, y):
    ya, yb = y[:, :self.ca], y[:, self.ca:]
    shift, logit = self._net(ya)
    x = torch.cat([ya, yb / torch.sigmoid(logit) - shift], 1)
    x = F.conv2d(x, torch.linalg.inv(self.weight()).t()[:, :, None, None])
    return x * _chan(torch.exp(-self.an_log_scale)) - _chan(self.an_bias)


class SplitPrior(nn.Module):
  """flows.glow.SplitPrior: [mean, log sigma] of z2 from a zero-initialized 3x3 conv of z1."""

  def __init__(self, c_in: int, c_out: int):
    super().__init__()
    self.conv = nn.Conv2d(c_in, 2 * c_out, 3, padding=1)
    self.logs = nn.Parameter(torch.zeros(2 * c_out))

  def forward(self, z1):
    h = self.conv(z1) * _chan(torch.exp(3.0 * self.logs))
    return h[:, 0::2], h[:, 1::2]


class GlowTorch(nn.Module):
  """flows.glow.Glow with permutation='1x1conv', lu=True, coupling='affine', learn_top=True
  and preprocessing='shift' (its defaults)."""

  def __init__(self, image_shape=(32, 32, 1), num_levels: int = 3, num_steps: int = 32,
               hidden_features: int = 512):
    super().__init__()
    h, w, c = image_shape
    self.image_shape, self.num_dims = tuple(image_shape), h * w * c
    self.levels, self.splits, self.latent_shapes = nn.ModuleList(), nn.ModuleList(), []
    for level in range(num_levels):
      h, w, c = h // 2, w // 2, 4 * c
      self.levels.append(nn.ModuleList(GlowStep(c, hidden_features) for _ in range(num_steps)))
      if level < num_levels - 1:
        self.splits.append(SplitPrior(c // 2, c - c // 2))
        self.latent_shapes.append((h, w, c - c // 2))
        c = c // 2
    self.latent_shapes.append((h, w, c))
    self.top_mean = nn.Parameter(torch.zeros(c))
    self.top_logs = nn.Parameter(torch.zeros(c))

  def log_prob(self, x: torch.Tensor) -> torch.Tensor:
    """log p(x) [B] in nats for x in [0, 1)^D, NHWC (as Glow.log_prob)."""
    y = x.permute(0, 3, 1, 2) - 0.5
    log_det, latents = 0.0, []
    for level, steps in enumerate(self.levels):
      y = squeeze(y)
      for step in steps:
        y, ld = step(y)
        log_det = log_det + ld
      if level < len(self.levels) - 1:
        keep = y.shape[1] // 2
        z1, z2 = y[:, :keep], y[:, keep:]
        mean, logs = self.splits[level](z1)
        latents.append((z2 - mean) * torch.exp(-logs))
        log_det = log_det - _per_example_sum(logs)
        y = z1
    latents.append((y - _chan(self.top_mean)) * _chan(torch.exp(-self.top_logs)))
    log_det = log_det - y.shape[2] * y.shape[3] * self.top_logs.sum()
    return _gaussian_log_prob(latents) + log_det

  def loss(self, image: torch.Tensor) -> torch.Tensor:
    """Glow.loss: dequantize with fresh uniform noise, mean bits/dim."""
    x = (image.to(torch.float32) + torch.rand(image.shape)) / 256.0
    return bits_per_dim_loss(self.log_prob(x), self.num_dims)

  def decode(self, eps: torch.Tensor) -> torch.Tensor:
    """Glow.decode: latents [N, D] (Flax's order, NHWC pieces) -> x [N, H, W, C] in [0, 1)."""
    parts, start = [], 0
    for s in self.latent_shapes:
      size = math.prod(s)
      parts.append(eps[:, start:start + size].reshape(-1, *s).permute(0, 3, 1, 2))
      start += size
    y = _chan(self.top_mean) + _chan(torch.exp(self.top_logs)) * parts[-1]
    for level in reversed(range(len(self.levels))):
      if level < len(self.levels) - 1:
        mean, logs = self.splits[level](y)
        y = torch.cat([y, mean + torch.exp(logs) * parts[level]], 1)
      for step in reversed(self.levels[level]):
        y = step.inverse(y)
      y = unsqueeze(y)
    return y.permute(0, 2, 3, 1) + 0.5

  def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
    """Integer images [N, H, W, C] in {0..255} (Glow.sample)."""
    eps = temperature * torch.randn(n, self.num_dims)
    return torch.clamp(torch.floor(self.decode(eps) * 256), 0, 255).to(torch.int32)


def _t(a, transpose=None) -> torch.Tensor:
  a = np.asarray(a, np.float32)
  # A writable C-ordered copy (np.ascontiguousarray would make a 0-d array 1-d).
  return torch.from_numpy(np.array(a if transpose is None else a.transpose(transpose),
                                   order='C'))


def _hwio(a) -> torch.Tensor:
  return _t(a, (3, 2, 0, 1))


def _assign(model: nn.Module, state: dict) -> None:
  """Copies `state` (name -> tensor) into the model's parameters and buffers; every name on
  both sides must be used exactly once, with the same shape."""
  expected = dict(model.named_parameters()) | dict(model.named_buffers())
  missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
  if missing or extra:
    raise KeyError(f'Parameter mapping mismatch: not set from Flax {missing}, '
                   f'not in torch {extra}')
  with torch.no_grad():
    for name, value in state.items():
      if tuple(expected[name].shape) != tuple(value.shape):
        raise ValueError(f'{name}: torch {tuple(expected[name].shape)} vs '
                         f'Flax {tuple(value.shape)}')
      expected[name].copy_(value)


def load_glow(model: GlowTorch, variables: dict) -> None:
  """Flax Glow variables {'params', 'constants'} (scanned layout) -> `model`."""
  params, consts = variables['params'], variables['constants']
  state = {}
  for level, steps in enumerate(model.levels):
    p, c = params[f'level{level}_steps'], consts[f'level{level}_steps']
    net = p['coupling']['net']
    for k in range(len(steps)):
      pre = f'levels.{level}.{k}.'
      state |= {
          pre + 'an_bias': _t(p['actnorm']['bias'][k]),
          pre + 'an_log_scale': _t(p['actnorm']['log_scale'][k]),
          pre + 'lower': _t(p['invconv']['lower'][k]),
          pre + 'upper': _t(p['invconv']['upper'][k]),
          pre + 'log_s': _t(p['invconv']['log_s'][k]),
          pre + 'permutation': _t(c['invconv']['permutation'][k]),
          pre + 'sign_s': _t(c['invconv']['sign_s'][k]),
          pre + 'out_logs': _t(net['logs'][k]),
      }
      for torch_name, flax_name in (('conv0', 'Conv_0'), ('conv1', 'Conv_1'), ('out', 'out')):
        state[pre + f'{torch_name}.weight'] = _hwio(net[flax_name]['kernel'][k])
        state[pre + f'{torch_name}.bias'] = _t(net[flax_name]['bias'][k])
  for level in range(len(model.splits)):
    conv = params[f'level{level}_split']['prior']['conv']
    state[f'splits.{level}.conv.weight'] = _hwio(conv['out']['kernel'])
    state[f'splits.{level}.conv.bias'] = _t(conv['out']['bias'])
    state[f'splits.{level}.logs'] = _t(conv['logs'])
  state['top_mean'] = _t(params['top_prior']['mean'])
  state['top_logs'] = _t(params['top_prior']['logs'])
  _assign(model, state)


# --------------------------------------------------------------------------- Real NVP

class ResNet(nn.Module):
  """flows.realnvp.ResNet: conv3x3 -> blocks of BN-ReLU-conv-BN-ReLU-conv + skip -> BN-ReLU
  -> conv3x3. BatchNorm2d's momentum 0.1 is Flax's 0.9; eps 1e-5 in both."""

  def __init__(self, c_in: int, features: int, num_blocks: int, c_out: int):
    super().__init__()
    self.conv_in = nn.Conv2d(c_in, features, 3, padding=1)
    self.blocks = nn.ModuleList(nn.ModuleDict({
        'norm0': nn.BatchNorm2d(features), 'conv0': nn.Conv2d(features, features, 3, padding=1),
        'norm1': nn.BatchNorm2d(features), 'conv1': nn.Conv2d(features, features, 3, padding=1),
    }) for _ in range(num_blocks))
    self.norm_out = nn.BatchNorm2d(features)
    self.out = nn.Conv2d(features, c_out, 3, padding=1)

  def forward(self, x):
    h = self.conv_in(x)
    for b in self.blocks:
      r = b['conv0'](F.relu(b['norm0'](h)))
      h = h + b['conv1'](F.relu(b['norm1'](r)))
    return self.out(F.relu(self.norm_out(h)))


class Coupling(nn.Module):
  """flows.realnvp.ResNetCoupling followed by fb.BatchNormBijector (one _CouplingStep)."""

  def __init__(self, shape_hwc, mask: str, flip: bool, features: int, num_blocks: int,
               momentum: float = 0.99, epsilon: float = 1e-5):
    super().__init__()
    h, w, c = shape_hwc
    self.checkerboard, self.momentum, self.epsilon = mask == 'checkerboard', momentum, epsilon
    b = fb.coupling_mask((h, w, c), mask, flip).transpose(2, 0, 1)[None]
    self.register_buffer('mask', torch.from_numpy(np.ascontiguousarray(b)))
    self.net = ResNet(c + self.checkerboard, features, num_blocks, 2 * c)
    self.scale = nn.Parameter(torch.ones(c))
    self.bn_log_scale = nn.Parameter(torch.zeros(c))
    self.bn_bias = nn.Parameter(torch.zeros(c))
    self.register_buffer('bn_mean', torch.zeros(c))
    self.register_buffer('bn_var', torch.ones(c))
    self.register_buffer('bn_count', torch.zeros(()))

  def forward(self, x):
    b, c = self.mask, x.shape[1]
    net_in = b * x
    if self.checkerboard:
      net_in = torch.cat([net_in, b[:, :1].expand(x.shape[0], 1, *x.shape[2:])], 1)
    h = self.net(net_in)
    s = (1 - b) * _chan(self.scale) * torch.tanh(h[:, :c])
    y = x * torch.exp(s) + (1 - b) * h[:, c:]
    log_det = _per_example_sum(s)
    # The batch-norm bijector: batch statistics in training, running averages otherwise.
    if self.training:
      mean = y.mean((0, 2, 3))
      var = (y - _chan(mean)).square().mean((0, 2, 3))
      with torch.no_grad():
        n = self.bn_count + 1
        wgt = (1 - self.momentum) / (1 - self.momentum ** n)
        self.bn_mean += wgt * (mean - self.bn_mean)
        self.bn_var += wgt * (var - self.bn_var)
        self.bn_count.copy_(n)
    else:
      mean, var = self.bn_mean, self.bn_var
    log_scale = -0.5 * torch.log(var + self.epsilon) + self.bn_log_scale
    y = (y - _chan(mean)) * _chan(torch.exp(log_scale)) + _chan(self.bn_bias)
    return y, log_det + y.shape[2] * y.shape[3] * log_scale.sum()


class RealNVPTorch(nn.Module):
  """flows.realnvp.RealNVP with batch_norm and net_batch_norm (its defaults) and logit
  preprocessing (alpha 0.05)."""

  def __init__(self, image_shape=(32, 32, 1), num_scales: int = 2, features: int = 64,
               num_blocks: int = 8, alpha: float = 0.05):
    super().__init__()
    h, w, c = image_shape
    self.image_shape, self.num_dims, self.alpha = tuple(image_shape), h * w * c, alpha
    self.scales = nn.ModuleList()
    for s in range(num_scales):
      last = s == num_scales - 1
      f = features * 2 ** s
      group = nn.ModuleDict({'checkerboard': nn.ModuleList(
          Coupling((h, w, c), 'checkerboard', bool(i % 2), f, num_blocks)
          for i in range(4 if last else 3))})
      if not last:
        h, w, c = h // 2, w // 2, 4 * c
        group['channel'] = nn.ModuleList(
            Coupling((h, w, c), 'channel', bool(i % 2), f, num_blocks) for i in range(3))
        c = c // 2
      self.scales.append(group)

  def log_prob(self, x: torch.Tensor) -> torch.Tensor:
    """log p(x) [B] in nats for x in [0, 1)^D, NHWC (RealNVP.log_prob); batch statistics
    in train mode (model.train()), running averages in eval mode."""
    a = self.alpha
    p = a + (1 - 2 * a) * x.permute(0, 3, 1, 2)
    log_p, log_1mp = torch.log(p), torch.log1p(-p)
    log_det = _per_example_sum(math.log(1 - 2 * a) - log_p - log_1mp)
    y, latents = log_p - log_1mp, []
    for group in self.scales:
      for layer in group['checkerboard']:
        y, ld = layer(y)
        log_det = log_det + ld
      if 'channel' in group:
        y = squeeze(y, ordered=False)
        for layer in group['channel']:
          y, ld = layer(y)
          log_det = log_det + ld
        y = squeeze(unsqueeze(y, ordered=False), ordered=True)
        keep = y.shape[1] // 2
        latents.append(y[:, keep:])
        y = y[:, :keep]
    latents.append(y)
    return _gaussian_log_prob(latents) + log_det

  def loss(self, image: torch.Tensor) -> torch.Tensor:
    x = (image.to(torch.float32) + torch.rand(image.shape)) / 256.0
    return bits_per_dim_loss(self.log_prob(x), self.num_dims)


def load_realnvp(model: RealNVPTorch, variables: dict) -> None:
  """Flax RealNVP variables {'params', 'batch_stats'} (scanned layout) -> `model`."""
  params, stats = variables['params'], variables['batch_stats']
  state = {}

  def norm(pre, p, st, idx):
    state[pre + '.weight'] = _t(p['scale'][idx])
    state[pre + '.bias'] = _t(p['bias'][idx])
    state[pre + '.running_mean'] = _t(st['mean'][idx])
    state[pre + '.running_var'] = _t(st['var'][idx])
    state[pre + '.num_batches_tracked'] = torch.zeros((), dtype=torch.long)

  def conv(pre, p, idx):
    state[pre + '.weight'] = _hwio(p['kernel'][idx])
    state[pre + '.bias'] = _t(p['bias'][idx])

  for s, group in enumerate(model.scales):
    for kind, layers in group.items():
      p, st = params[f'scale{s}_{kind}']['steps'], stats[f'scale{s}_{kind}']['steps']
      net, net_st = p['coupling']['net'], st['coupling']['net']
      for k, layer in enumerate(layers):
        pre = f'scales.{s}.{kind}.{k}.'
        state[pre + 'mask'] = layer.mask.clone()
        state[pre + 'scale'] = _t(p['coupling']['scale'][k])
        state[pre + 'bn_log_scale'] = _t(p['batchnorm']['log_scale'][k])
        state[pre + 'bn_bias'] = _t(p['batchnorm']['bias'][k])
        state[pre + 'bn_mean'] = _t(st['batchnorm']['mean'][k])
        state[pre + 'bn_var'] = _t(st['batchnorm']['var'][k])
        state[pre + 'bn_count'] = _t(st['batchnorm']['count'][k])
        conv(pre + 'net.conv_in', net['conv_in'], k)
        conv(pre + 'net.out', net['out'], k)
        norm(pre + 'net.norm_out', net['norm_out'], net_st['norm_out'], k)
        for j in range(len(layer.net.blocks)):
          for name in ('conv0', 'conv1'):
            conv(pre + f'net.blocks.{j}.{name}', net['blocks'][name], (k, j))
          for name in ('norm0', 'norm1'):
            norm(pre + f'net.blocks.{j}.{name}', net['blocks'][name],
                 net_st['blocks'][name], (k, j))
  _assign(model, state)


# --------------------------------------------------------------------------- checks

def _close(want, got, what: str, rtol: float) -> float:
  want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
  if want.shape != got.shape:
    raise AssertionError(f'{what}: shapes differ, Flax {want.shape}, torch {got.shape}')
  err = float(np.max(np.abs(want - got)))
  scale = float(np.max(np.abs(want)))
  if not err <= rtol * max(1.0, scale):
    raise AssertionError(f'torch and Flax {what} differ by {err:.3e} (max |value| {scale:.3g})')
  return err


def _dequantized(shape, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return ((rng.integers(0, 256, size=shape) + rng.uniform(size=shape)) / 256.0).astype(
      np.float32)


def check_glow(flax_model, variables: dict, torch_model: GlowTorch, batch: int = 4,
               seed: int = 0, rtol: float = 1e-5) -> dict:
  """Loads `variables` into `torch_model`; asserts equal log p(x) on dequantized random
  images and equal decoded images for random latents. log p is O(D) nats, so rtol=1e-5 of
  it is a float32 agreement. Returns the largest differences."""
  import jax.numpy as jnp  # the only JAX use in this file
  load_glow(torch_model, variables)
  x = _dequantized((batch, *torch_model.image_shape), seed)
  eps = np.random.default_rng(seed + 1).standard_normal(
      (batch, torch_model.num_dims)).astype(np.float32)
  want_lp = flax_model.apply(variables, jnp.asarray(x), method='log_prob')
  want_x = flax_model.apply(variables, jnp.asarray(eps), method='decode')
  with torch.no_grad():
    got_lp = torch_model.log_prob(torch.from_numpy(x)).numpy()
    got_x = torch_model.decode(torch.from_numpy(eps)).numpy()
  return {'log_prob': _close(want_lp, got_lp, 'log p(x)', rtol),
          'decode': _close(want_x, got_x, 'decoded images', 1e-4)}


def check_realnvp(flax_model, variables: dict, torch_model: RealNVPTorch, batch: int = 8,
                  seed: int = 0, rtol: float = 1e-5) -> dict:
  """Loads `variables` into `torch_model`; asserts equal log p(x) in eval mode (running
  averages) and in train mode (batch statistics, as the train step computes it)."""
  import jax.numpy as jnp  # the only JAX use in this file
  load_realnvp(torch_model, variables)
  x = _dequantized((batch, *torch_model.image_shape), seed)
  want_eval = flax_model.apply(variables, jnp.asarray(x), method='log_prob')
  want_train, _ = flax_model.apply(variables, jnp.asarray(x), True, method='log_prob',
                                   mutable=['batch_stats'])
  was_training = torch_model.training
  saved = {k: v.clone() for k, v in torch_model.state_dict().items()}
  try:
    with torch.no_grad():
      torch_model.eval()
      got_eval = torch_model.log_prob(torch.from_numpy(x)).numpy()
      torch_model.train()
      got_train = torch_model.log_prob(torch.from_numpy(x)).numpy()
  finally:
    torch_model.load_state_dict(saved)   # the train-mode pass moved the running averages
    torch_model.train(was_training)
  return {'log_prob_eval': _close(want_eval, got_eval, 'eval-mode log p(x)', rtol),
          'log_prob_train': _close(want_train, got_train, 'train-mode log p(x)', rtol)}
