"""The gated PixelCNN of autoreg/gated_pixelcnn.py in PyTorch eager, for speed comparisons.

The same function as `GatedPixelCNN` with a categorical output head and no conditioning
(van den Oord et al. 2016, arXiv 1606.05328, Eq. 4 and Fig. 2): the same layers, kernel
shapes, padding and down-shift, colour masks, gates, residuals, skips and 1x1 output
layers, hence the same parameter count. `load_flax_params` copies a Flax parameter tree
into it, and `check_against_flax` asserts that both give the same logits, so a benchmark
that compares the two compares the same computation.

Layout is NCHW (PyTorch's default; oneDNN picks its own blocked layout inside each conv).
Flax kernels are HWIO and PyTorch's OIHW; both frameworks compute cross-correlations, so
the mapping is a transpose.

Only benchmarks import this file (the `bench` extra of setup.py installs torch).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autoreg.gated_pixelcnn import current_pixel_mask


def _gate(pre: torch.Tensor) -> torch.Tensor:
  f, g = pre.chunk(2, dim=1)
  return torch.tanh(f) * torch.sigmoid(g)


class GatedPixelCNNTorch(nn.Module):
  """Arguments as for autoreg.gated_pixelcnn.GatedPixelCNN (num_classes=0, no cond_map)."""

  def __init__(self, num_levels: int = 256, num_channels: int = 1, features: int = 128,
               num_layers: int = 15, first_kernel: int = 7, kernel_size: int = 3,
               output_features: int = 256):
    super().__init__()
    self.num_levels, self.num_channels, self.num_layers = num_levels, num_channels, num_layers
    kernels = [first_kernel] + [kernel_size] * (num_layers - 1)
    self.pads = [k // 2 for k in kernels]
    f, f2, c = features, 2 * features, num_channels
    ins = [c] + [f] * (num_layers - 1)
    self.vertical = nn.ModuleList(
        nn.Conv2d(i, f2, (p + 1, 2 * p + 1)) for i, p in zip(ins, self.pads, strict=True))
    self.horizontal = nn.ModuleList(
        nn.Conv2d(i, f2, (1, p + 1)) for i, p in zip(ins, self.pads, strict=True))
    self.vertical_to_horizontal = nn.ModuleList(nn.Conv2d(f2, f2, 1) for _ in kernels)
    self.skip = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in kernels)
    self.residual = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(num_layers - 1))
    self.hidden_out = nn.Conv2d(f, output_features, 1)
    self.logits_out = nn.Conv2d(output_features, c * num_levels, 1)

    # The Flax model multiplies these kernels by a mask on the current-pixel tap. Masks that
    # are all ones (every mask-B 1x1 of a grey model) are skipped: multiplying by them
    # changes nothing. Only the first horizontal layer's mask A is left for grey images.
    self._masked = {}
    for layer, p in enumerate(self.pads):
      self._add_mask(f'horizontal.{layer}', self.horizontal[layer],
                     current_pixel_mask((1, p + 1), ins[layer], f2,
                                        'A' if layer == 0 else 'B', c, gated=True))
      self._add_mask(f'skip.{layer}', self.skip[layer], current_pixel_mask((1, 1), f, f, 'B', c))
      if layer < num_layers - 1:
        self._add_mask(f'residual.{layer}', self.residual[layer],
                       current_pixel_mask((1, 1), f, f, 'B', c))
    self._add_mask('hidden_out', self.hidden_out,
                   current_pixel_mask((1, 1), f, output_features, 'B', c))
    self._add_mask('logits_out', self.logits_out,
                   current_pixel_mask((1, 1), output_features, c * num_levels, 'B', c))

  def _add_mask(self, name: str, conv: nn.Conv2d, mask_hwio: np.ndarray) -> None:
    if mask_hwio.all():
      return
    buf = 'mask_' + name.replace('.', '_')
    self.register_buffer(buf, torch.from_numpy(mask_hwio.transpose(3, 2, 0, 1).copy()))
    self._masked[id(conv)] = buf

  def _conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    w = conv.weight
    if id(conv) in self._masked:
      w = w * getattr(self, self._masked[id(conv)])
    return F.conv2d(x, w, conv.bias)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Integer images [B, H, W, C] -> logits [B, H, W, C, num_levels]."""
    b, hgt, wid, c = x.shape
    x = (x.to(torch.float32) * (2.0 / (self.num_levels - 1)) - 1.0).permute(0, 3, 1, 2)
    v_in = F.pad(x, (0, 0, 1, 0))[:, :, :-1]   # shifted down one row
    h_in, skip = x, None
    for layer, p in enumerate(self.pads):
      v_pre = self._conv(self.vertical[layer], F.pad(v_in, (p, p, p, 0)))
      pre = (self._conv(self.horizontal[layer], F.pad(h_in, (p, 0, 0, 0)))
             + self._conv(self.vertical_to_horizontal[layer], v_pre))
      y = _gate(pre)
      if layer < self.num_layers - 1:
        h = self._conv(self.residual[layer], y)
        h_in = h if layer == 0 else h_in + h
      s = self._conv(self.skip[layer], y)
      skip = s if skip is None else skip + s
      v_in = _gate(v_pre)
    out = self._conv(self.logits_out, F.relu(self._conv(self.hidden_out, F.relu(skip))))
    return out.permute(0, 2, 3, 1).reshape(b, hgt, wid, c, self.num_levels)

  def loss(self, x: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats per image, as GatedPixelCNN.loss computes it."""
    logp = F.log_softmax(self(x), dim=-1)
    picked = logp.gather(-1, x.long().unsqueeze(-1)).squeeze(-1)
    return -picked.reshape(x.shape[0], -1).sum(-1).mean()


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def load_flax_params(model: GatedPixelCNNTorch, params: dict) -> None:
  """Copies Flax parameters (the 'params' collection) into the torch model.

  Flax names submodules of a list attribute `name_i`; PyTorch's ModuleList gives `name.i`.
  Kernels go from HWIO to OIHW. Every tensor on both sides must be used exactly once.
  """
  state = {}
  for mod_name, leaves in params.items():
    base, _, idx = mod_name.rpartition('_')
    torch_name = f'{base}.{idx}' if idx.isdigit() else mod_name
    for leaf, value in leaves.items():
      value = np.asarray(value, np.float32)
      if leaf == 'kernel':
        state[f'{torch_name}.weight'] = torch.from_numpy(value.transpose(3, 2, 0, 1).copy())
      elif leaf == 'bias':
        state[f'{torch_name}.bias'] = torch.from_numpy(value.copy())
      else:
        raise KeyError(f'Unexpected Flax parameter {mod_name}/{leaf}')
  expected = dict(model.named_parameters())
  missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
  if missing or extra:
    raise KeyError(f'Parameter mapping mismatch: missing in Flax {missing}, '
                   f'not in torch {extra}')
  with torch.no_grad():
    for name, value in state.items():
      if expected[name].shape != value.shape:
        raise ValueError(f'{name}: torch {tuple(expected[name].shape)} vs '
                         f'Flax {tuple(value.shape)}')
      expected[name].copy_(value)


def check_against_flax(flax_model, params: dict, torch_model: GatedPixelCNNTorch,
                       image_shape, seed: int = 0, atol: float = 1e-4) -> float:
  """Loads `params` into `torch_model` and asserts equal logits on random integer images.

  Returns the largest absolute difference. The comparison runs on a small batch; the logits
  are O(1)-O(10), so atol=1e-4 is a float32 agreement, not a loose one.
  """
  import jax.numpy as jnp  # the only JAX use in this file

  load_flax_params(torch_model, params)
  rng = np.random.default_rng(seed)
  x = rng.integers(0, flax_model.num_levels, size=image_shape).astype(np.int32)
  want = np.asarray(flax_model.apply({'params': params}, jnp.asarray(x)))
  with torch.no_grad():
    got = torch_model(torch.from_numpy(x)).numpy()
  if want.shape != got.shape:
    raise AssertionError(f'logit shapes differ: Flax {want.shape}, torch {got.shape}')
  err = float(np.max(np.abs(want - got)))
  scale = float(np.max(np.abs(want)))
  if not err <= atol * max(1.0, scale):
    raise AssertionError(f'torch and Flax logits differ by {err:.2e} (max |logit| {scale:.2f})')
  return err
