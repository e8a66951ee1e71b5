"""What a scan costs a convolutional train step on CPU: a chain of residual blocks, unrolled
against `lax.scan`, forward and backward.

  python -m benchmarks.scan_overhead                    # Real NVP's block size, 4 blocks
  python -m benchmarks.scan_overhead --shape 16,32,32,64 --blocks 8 --rounds 9
  python -m benchmarks.scan_overhead --quick            # tiny shapes: a smoke test

The flows scan over their repeated blocks (issue 18: compile time that does not grow with
depth), and their train steps trail PyTorch's. This isolates the scan's own part. Each
block is h -> h + conv3x3(tanh(h)) (B x H x W, C -> C, stride 1, 'SAME'; one kernel per
block); the loss is sum(h_N * w) for a fixed w, and each variant returns its gradients with
respect to the input and every kernel, compiled at the trainer's
`train.CPU_COMPILER_OPTIONS`, medians of `--rounds` interleaved calls:

  unrolled       a Python loop over the blocks, `conv_same_canonical_grad`
  scan           `lax.scan` over the stacked kernels, `conv_same_canonical_grad` (what the
                 flows' scanned blocks run in train mode)
  scan_remat     the same with `jax.checkpoint` on the body (policy nothing_saveable): the
                 backward recomputes each block's tanh from the carry instead of reading
                 stacked residuals
  scan_unroll2   `lax.scan(..., unroll=2)`
  tanh_unrolled  the chain without its convolutions (h -> h + tanh(h)), unrolled
  tanh_scan      the same scanned: the scan's bookkeeping alone
  torch          the unrolled chain in PyTorch eager (`--torch_threads`)

`--jax_transpose` adds `scan_jaxgrad`, the scan with JAX's own transposed convolutions
(many times slower inside a scan on XLA:CPU; seconds a call at the default size).
Every variant's gradients are checked against `unrolled` first (torch's too). The load
average before and after is printed; the last line is one JSON object, variant -> ms.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments import train
from flows import bijectors as fb

DEFAULT_SHAPE = '64,32,32,64'   # Real NVP's first-scale ResNet: batch 64, 32x32, 64 features
QUICK_SHAPE = '2,8,8,4'


def _block(conv):
  def block(h, k):
    return h + conv(jnp.tanh(h), k)
  return block


def _unrolled(conv):
  block = _block(conv)

  def f(x, ks, w):
    h = x
    for i in range(ks.shape[0]):
      h = block(h, ks[i])
    return jnp.sum(h * w)
  return f


def _scanned(conv, remat=False, unroll=1):
  block = _block(conv)

  def body(h, k):
    return block(h, k), None
  if remat:
    body = jax.checkpoint(body, policy=jax.checkpoint_policies.nothing_saveable)

  def f(x, ks, w):
    h, _ = jax.lax.scan(body, x, ks, unroll=unroll)
    return jnp.sum(h * w)
  return f


def _tanh_chain(scan):
  def f(x, ks, w):
    if scan:
      h, _ = jax.lax.scan(lambda h, _: (h + jnp.tanh(h), None), x, None, length=ks.shape[0])
    else:
      h = x
      for _ in range(ks.shape[0]):
        h = h + jnp.tanh(h)
    return jnp.sum(h * w) + 0.0 * jnp.sum(ks)
  return f


def variants(jax_transpose: bool) -> dict:
  canon = fb.conv_same_canonical_grad
  out = {'unrolled': _unrolled(canon), 'scan': _scanned(canon),
         'scan_remat': _scanned(canon, remat=True), 'scan_unroll2': _scanned(canon, unroll=2),
         'tanh_unrolled': _tanh_chain(False), 'tanh_scan': _tanh_chain(True)}
  if jax_transpose:
    out['scan_jaxgrad'] = _scanned(fb.conv_same)
  return out


def _torch_grads(x, ks, w, threads):
  import torch
  torch.set_num_threads(threads)
  xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous().requires_grad_()
  kt = [torch.from_numpy(np.array(k)).permute(3, 2, 0, 1).contiguous().requires_grad_()
        for k in ks]
  wt = torch.from_numpy(np.array(w)).permute(0, 3, 1, 2).contiguous()

  def run():
    for t in [xt, *kt]:
      t.grad = None
    h = xt
    for k in kt:
      h = h + torch.nn.functional.conv2d(torch.tanh(h), k, padding=1)
    (h * wt).sum().backward()
    return (xt.grad.permute(0, 2, 3, 1).numpy(),
            np.stack([k.grad.permute(2, 3, 1, 0).numpy() for k in kt]))
  return run


def bench(shape, blocks, rounds, torch_threads, jax_transpose):
  b, height, width, c = shape
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((b, height, width, c)), jnp.float32)
  ks = jnp.asarray(rng.standard_normal((blocks, 3, 3, c, c)) / np.sqrt(9 * c) * 0.5,
                   jnp.float32)
  w = jnp.asarray(rng.standard_normal((b, height, width, c)), jnp.float32)
  args = (x, ks, w)
  runs, compile_s = {}, {}
  for name, f in variants(jax_transpose).items():
    t0 = time.perf_counter()
    runs[name] = jax.jit(jax.grad(f, argnums=(0, 1))).lower(*args).compile(
        train.CPU_COMPILER_OPTIONS)
    compile_s[name] = time.perf_counter() - t0
  ref = [np.asarray(g) for g in runs['unrolled'](*args)]
  tanh_ref = [np.asarray(g) for g in runs['tanh_unrolled'](*args)]

  def check(name, got, want):
    for g, r, what in zip(got, want, ('input', 'kernel'), strict=True):
      err = float(np.max(np.abs(np.asarray(g) - r)))
      scale = float(np.max(np.abs(r))) or 1.0
      if err > 1e-4 * scale:
        raise AssertionError(f'{name}: {what} gradient differs by {err} (scale {scale})')
  for name, fn in runs.items():
    check(name, fn(*args), tanh_ref if name.startswith('tanh') else ref)
  calls = {n: (lambda fn=fn: jax.block_until_ready(fn(*args))) for n, fn in runs.items()}
  if torch_threads:
    tg = _torch_grads(x, ks, w, torch_threads)
    check('torch', tg(), ref)
    calls['torch'] = tg
  times = {n: [] for n in calls}
  for _ in range(rounds + 1):        # the first round warms up and is dropped
    for n, call in calls.items():
      t0 = time.perf_counter()
      call()
      times[n].append(time.perf_counter() - t0)
  return {n: 1000 * statistics.median(v[1:]) for n, v in times.items()}, compile_s


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--shape', help='B,H,W,C', default=None)
  p.add_argument('--blocks', type=int, default=4)
  p.add_argument('--rounds', type=int, default=7)
  p.add_argument('--torch_threads', type=int, default=2, help='0: skip PyTorch')
  p.add_argument('--jax_transpose', action='store_true',
                 help="add the scan with JAX's own transposed convolutions (slow)")
  p.add_argument('--quick', action='store_true')
  a = p.parse_args(argv)
  shape = tuple(int(v) for v in (a.shape or (QUICK_SHAPE if a.quick else DEFAULT_SHAPE))
                .split(','))
  rounds = 2 if a.quick else a.rounds
  print(common.machine(), '| load before', common.loadavg(), flush=True)
  usage = common.CpuUsage()
  ms, compile_s = bench(shape, a.blocks, rounds, a.torch_threads, a.jax_transpose)
  for n, v in ms.items():
    extra = f'  (compile {compile_s[n]:.2f} s)' if n in compile_s else ''
    print(f'{n:14s} {v:9.1f} ms{extra}')
  print('load after', common.loadavg(),
        f'| other processes {usage.others_cores():.2f} cores', flush=True)
  common.emit({'shape': list(shape), 'blocks': a.blocks,
               'ms': {n: round(v, 2) for n, v in ms.items()},
               'compile_s': {n: round(v, 2) for n, v in compile_s.items()}})


if __name__ == '__main__':
  main()
