"""One stride-1 'SAME' convolution's kernel gradient, as XLA's convolution and as matmuls.

  python -m benchmarks.conv_weight_grad                 # Real NVP's 3x3, a 1x1, Glow's
  python -m benchmarks.conv_weight_grad --shape 64,32,32,64,64,3 --rounds 9
  python -m benchmarks.conv_weight_grad --quick         # tiny shapes: a smoke test

Issue 18 asked whether a custom VJP whose kernel gradient is one matmul over im2col
patches beats XLA:CPU's kernel-gradient convolution (the largest item in a flow's or a
PixelCNN's train step). For each shape B,H,W,C,D,K (batch, height, width, input and
output channels, a K x K kernel) this times, compiled at the trainer's
`train.CPU_COMPILER_OPTIONS`, medians of `--rounds` interleaved calls:

  xla      jax.grad of `flows.bijectors.conv_same` (what the models' train steps run)
  canon    `_conv_bwd` of `conv_same_canonical_grad` (canonical NHWC/HWIO convolutions)
  im2col   the K*K shifted slices of the padded input concatenated on channels, one matmul
           [B*H*W, K*K*C]^T x [B*H*W, D]
  taps     one matmul per kernel tap, [B*H*W, C]^T x [B*H*W, D], K*K of them
  rows     im2col per kernel row (K matmuls over K*C columns; a third of im2col's memory)
  batched  im2col per image, a batched matmul over the batch (contracting H*W), then a sum
  matmul   the im2col matmul alone, its patches given: a lower bound for im2col

each as the kernel gradient alone (the input gradient is a convolution in every variant),
and the same convolution's kernel gradient in PyTorch (eager, `--torch_threads`) for scale.
Every variant's gradient is checked against `xla` first. The load average before and
after is printed; the last line is one JSON object, shape -> variant -> ms.

Measured on a quiet 2-core CPU, 2026-12-06 12:27 UTC (load 0.15 before, 0.68 after from
its own XLA threads; XLA on both cores, torch 2 threads; 21 s), kernel gradient ms, medians
of 7: Real NVP's 3x3 64 x 32x32, 64 -> 64: xla 49.9, canon 53.4, im2col 133.8, taps 131.9,
rows 124.2, batched 161.2, the bare matmul 57.9, torch 71.1; Glow's 3x3 512 -> 4: xla 14.7,
canon 15.1, im2col 75.5, taps 65.4, rows 72.0, batched 92.5, matmul 40.2, torch 8.6.
The im2col matmul (a 65,536-long contraction into a 576 x 64 output) is no faster than
XLA's kernel-gradient convolution even with its patches given, and building the patches
doubles it: no matmul formulation of a k x k kernel gradient pays, and none is wired into
the models. A 1x1 is another matter (64 -> 64: xla 18.6, as a matmul 7-9, torch 28.9):
the flows already run their 1x1s as matmuls (`flows.bijectors.Conv`); Glow's 3x3 2 -> 512
(xla 2.0, im2col 0.9) is too small to matter in its step.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments import train
from flows import bijectors as fb

# B, H, W, C, D, K: Real NVP's residual-block conv (2 scales, 64 features, batch 64, first
# scale), a 1x1 of the same size, Glow's NN input and output convs (width 512, 16x16x4 at
# its first level, batch 16).
DEFAULT_SHAPES = ['64,32,32,64,64,3', '64,32,32,64,64,1', '16,16,16,2,512,3',
                  '16,16,16,512,4,3']
QUICK_SHAPES = ['2,8,8,4,5,3', '2,8,8,4,5,1']


def _patches(h, k):
  """The k*k shifted slices of the SAME-padded input, [B, H, W, C] each, tap-major."""
  hp = jnp.pad(h, [(0, 0)] + fb._same_padding((k, k)) + [(0, 0)])
  height, width = h.shape[1:3]
  return [hp[:, i:i + height, j:j + width, :] for i in range(k) for j in range(k)]


def dk_xla(h, g, k):
  kernel = jnp.zeros((k, k, h.shape[-1], g.shape[-1]), h.dtype)
  _, vjp = jax.vjp(lambda kk: fb.conv_same(h, kk), kernel)
  return vjp(g)[0]


def dk_canon(h, g, k):
  return fb._conv_bwd((h, jnp.zeros((k, k, h.shape[-1], g.shape[-1]), h.dtype)), g)[1]


def dk_im2col(h, g, k):
  cols = jnp.concatenate(_patches(h, k), -1).reshape(-1, k * k * h.shape[-1])
  return jnp.dot(cols.T, g.reshape(-1, g.shape[-1])).reshape(k, k, h.shape[-1], -1)


def dk_taps(h, g, k):
  g2 = g.reshape(-1, g.shape[-1])
  taps = [jnp.dot(s.reshape(-1, h.shape[-1]).T, g2) for s in _patches(h, k)]
  return jnp.stack(taps).reshape(k, k, h.shape[-1], -1)


def dk_rows(h, g, k):
  g2 = g.reshape(-1, g.shape[-1])
  p = _patches(h, k)
  rows = [jnp.dot(jnp.concatenate(p[i * k:(i + 1) * k], -1).reshape(-1, k * h.shape[-1]).T,
                  g2) for i in range(k)]
  return jnp.stack(rows).reshape(k, k, h.shape[-1], -1)


def dk_batched(h, g, k):
  b, height, width = h.shape[:3]
  cols = jnp.concatenate(_patches(h, k), -1).reshape(b, height * width, -1)
  dk = jax.lax.dot_general(cols, g.reshape(b, height * width, -1),
                           (((1,), (1,)), ((0,), (0,))))
  return dk.sum(0).reshape(k, k, h.shape[-1], -1)


VARIANTS = {'xla': dk_xla, 'canon': dk_canon, 'im2col': dk_im2col, 'taps': dk_taps,
            'rows': dk_rows, 'batched': dk_batched}


def _torch_dk(h, g, k, threads):
  import torch
  torch.set_num_threads(threads)
  ht = torch.from_numpy(np.asarray(h)).permute(0, 3, 1, 2).contiguous()
  gt = torch.from_numpy(np.asarray(g)).permute(0, 3, 1, 2).contiguous()
  w = torch.zeros(g.shape[-1], h.shape[-1], k, k, requires_grad=True)
  pad = (k - 1) // 2     # odd kernels: SAME; a 1x1 needs none

  def run():
    w.grad = None
    torch.nn.functional.conv2d(ht, w, padding=pad).backward(gt)
    return w.grad
  return run


def bench_shape(shape, rounds, torch_threads):
  b, height, width, c, d, k = shape
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.standard_normal((b, height, width, c)), jnp.float32)
  g = jnp.asarray(rng.standard_normal((b, height, width, d)), jnp.float32)
  fns = {n: jax.jit(f, static_argnums=2).lower(h, g, k).compile(train.CPU_COMPILER_OPTIONS)
         for n, f in VARIANTS.items()}
  cols = jnp.concatenate(_patches(h, k), -1).reshape(-1, k * k * c)
  g2 = g.reshape(-1, d)
  fns['matmul'] = jax.jit(lambda a, bb: jnp.dot(a.T, bb)).lower(cols, g2).compile(
      train.CPU_COMPILER_OPTIONS)
  args = {n: (h, g) for n in VARIANTS}
  args['matmul'] = (cols, g2)
  ref = np.asarray(fns['xla'](h, g))
  scale = float(np.max(np.abs(ref)))
  for n in VARIANTS:
    err = float(np.max(np.abs(np.asarray(fns[n](*args[n])) - ref)))
    if err > 1e-5 * scale * np.sqrt(b * height * width):
      raise AssertionError(f'{n} kernel gradient differs from jax.grad by {err} (scale {scale})')
  runs = dict(fns)
  if torch_threads:
    tdk = _torch_dk(h, g, k, torch_threads)
    err = float(np.max(np.abs(tdk().permute(2, 3, 1, 0).numpy() - ref)))
    if err > 1e-5 * scale * np.sqrt(b * height * width):
      raise AssertionError(f'torch kernel gradient differs by {err}')
    runs['torch'] = tdk
  times = {n: [] for n in runs}
  for _ in range(rounds + 1):        # the first round warms up and is dropped
    for n, f in runs.items():
      t0 = time.perf_counter()
      if n == 'torch':
        f()
      else:
        jax.block_until_ready(f(*args[n]))
      times[n].append(time.perf_counter() - t0)
  return {n: 1000 * statistics.median(v[1:]) for n, v in times.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--shape', action='append', help='B,H,W,C,D,K (repeatable)')
  p.add_argument('--rounds', type=int, default=7)
  p.add_argument('--torch_threads', type=int, default=2, help='0: skip PyTorch')
  p.add_argument('--quick', action='store_true')
  a = p.parse_args(argv)
  shapes = a.shape or (QUICK_SHAPES if a.quick else DEFAULT_SHAPES)
  rounds = 2 if a.quick else a.rounds
  print(common.machine(), '| load before', os.getloadavg())
  result = {}
  for s in shapes:
    shape = tuple(int(v) for v in s.split(','))
    ms = bench_shape(shape, rounds, a.torch_threads)
    result[s] = {n: round(v, 2) for n, v in ms.items()}
    print(s, '  '.join(f'{n} {v:.1f} ms' for n, v in ms.items()), flush=True)
  print('load after', os.getloadavg())
  common.emit(result)


if __name__ == '__main__':
  main()
