"""Gated PixelCNN train-step throughput: JAX (the project's jitted step) vs PyTorch eager.

  python -m benchmarks.pixelcnn_throughput            # 15 layers x 64 features, 28x28, batch 32
  python -m benchmarks.pixelcnn_throughput --quick    # 4 layers x 32 features, under a minute
  python -m benchmarks.pixelcnn_throughput --variant noynnconv,chunkdw+noynnconv
  python -m benchmarks.pixelcnn_throughput --ops      # per-convolution fwd / dW / dX timing
  python -m benchmarks.pixelcnn_throughput --profile  # where the train step's time goes
  taskset -c 1 python -m benchmarks.pixelcnn_throughput --torch_threads 1   # one core each

The model is the binarized-MNIST gated PixelCNN (2 levels, grey, unconditional, categorical
head): 7x7 first layer, then (k//2+1) x k vertical, 1 x (k//2+1) horizontal and 1x1
convolutions, k = --kernel_size (3 by default: 2x3 and 1x2 kernels; 5 is the 2.44 M
parameter model with 3x5 kernels).

JAX runs `experiments.train.make_train_step` on a 1-device mesh with `create_optimizer`
(the pixelcnn_mnist config's Adam, warmup + cosine, global-norm clipping at 1.0) and
`init_train_state`: forward, backward, clipping, Adam, EMA and metrics, fetched every step
as the training loop does. PyTorch runs the same network (benchmarks/torch_gated_pixelcnn.py:
same parameter count, asserted; the same logits from the same parameters, asserted) with the
same batch, clipping, Adam (constant learning rate; the value does not change the speed)
and EMA, and reads the loss every step.

Threads: XLA:CPU sizes its pool by the cores the process may use, so PyTorch's reference
row uses that many threads (torch.set_num_threads); a second row uses 1 thread, because
when other processes hold a core PyTorch's OpenMP threads spin at every barrier and 2
threads run several times slower than 1 (OMP_WAIT_POLICY=PASSIVE mostly fixes that).

Both are warmed up; then timed rounds alternate (JAX, [variants,] torch, JAX, ...) so all
see the same machine load; the table gives the median images/s of each, and this process's
CPU seconds per step, which moves less than wall time when other processes take the cores.
Machine load (/proc/loadavg, and the cores other processes used during the timed rounds)
is printed. The last line is a JSON object with jax_images_per_s, torch_images_per_s and
ratio (jax / torch, the reference thread count). The GFLOP/s column counts the train step's
convolutions and matmuls from its jaxpr (benchmarks.common.matmul_flops; for the forward
pass it equals `forward_flops`, the architecture's own count, a test checks), and a line
gives this machine's float32 2048 x 2048 matmul rate in XLA and torch for scale.

--variant also times, interleaved and through the same train step:
  XLA compiler options for the model's step (jax.jit(..., compiler_options=...)):
    noynnconv  convolutions by XLA's own (Eigen) emitters instead of YNNPACK, the rest
               unchanged; the same executable as the environment variable
      XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION
    noynn      YNNPACK off altogether
    fastmath   xla_cpu_enable_fast_math
  standalone reimplementations of the network (the model's parameter tree; their logits
  are asserted equal to the model's), with the convolutions written differently:
    conv     lax.conv_general_dilated everywhere, the model before its 1x1s became
             `pointwise_conv` (2026-12-06)
    dot1x1   1x1 convolutions as dot_general, the others as lax convolutions
    im2col   k x k convolutions as shifted slices concatenated + one dot_general; 1x1 as dot
    taps     k x k convolutions as a sum of one dot_general per kernel tap; 1x1 as dot
    fused    im2col, with the horizontal taps and the vertical-to-horizontal 1x1 in one
             matmul and the skip and residual 1x1s in one matmul
    chunkdw  lax convolutions for k x k; 1x1 as the model's `pointwise_conv` (a custom
             VJP whose weight gradient is 8 batched matmuls summed): the model's program
    canon    lax convolutions everywhere, differentiated through a custom VJP whose input
             and weight gradients are canonical NHWC/HWIO convolutions (Glow's and Real
             NVP's fb.conv_same_canonical_grad, for VALID windows)
  and the two joined, e.g. chunkdw+noynnconv.

Measured 2026-11-22 on this 2-core machine while a training run held one core (default
model, images/s, medians of interleaved rounds; `taskset -c 1`, torch 1 thread):
jax 5.51, im2col 6.53 (x1.19), chunkdw 6.64 (x1.21), noynnconv 8.05 (x1.46),
chunkdw+noynnconv 8.83 (x1.60), torch 9.78. On both cores: jax 4.09, noynnconv 6.77,
chunkdw+noynnconv 7.65, torch 2.80 (2 threads) / 9.33 (1 thread).
Quiet (other processes 0.01 cores), 2026-12-04, both cores, `--variant canon`: jax 14.23
(12.75-14.51), canon 14.81 (14.44-15.33; x1.04, within the rounds' spread; the same
gradients to the last bit in float64), torch 21.07 (2 threads, jax 0.68x) / 11.95 (1 thread):
the canonical-gradient convolutions that made Glow's scanned steps 5.7x faster do not pay
in the unrolled PixelCNN, so the model keeps JAX's own transpose rules.
"""
from __future__ import annotations

import argparse
import collections
import functools
import glob
import os
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from autoreg import likelihood
from autoreg.gated_pixelcnn import GatedPixelCNN, current_pixel_mask, pointwise_conv
from autoreg.pixelcnn import to_network_input
from benchmarks import common
from configs import pixelcnn_mnist
from experiments import train

VARIANTS = ('conv', 'dot1x1', 'im2col', 'taps', 'fused', 'chunkdw', 'canon')
# XLA options for the train step's compilation (jax.jit(..., compiler_options=...) or
# .compile(compiler_options=...)); set per executable, so they interleave in one process.
XLA_OPTIONS = {
    # YNNPACK for everything but convolutions, which go to XLA's own (Eigen) emitters.
    # compiler_options does not take XLA_FLAGS' +/- form, so the remaining default YNN
    # fusion types of jaxlib 0.10.2 are listed (the compiled HLO is the same as with
    # --xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION).
    'noynnconv': {'xla_cpu_experimental_ynn_fusion_type':
                  'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'},
    # jaxlib 0.10.2's default YNN fusion types: YNNPACK's convolutions too (what the
    # trainer's options turn off; measured per machine, see the README).
    'ynnconv': {'xla_cpu_experimental_ynn_fusion_type':
                'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE,'
                'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'},
    # YNNPACK off: XLA's own convolutions, dots and reductions.
    'noynn': {'xla_cpu_experimental_ynn_fusion_type': ''},
    'fastmath': {'xla_cpu_enable_fast_math': True},
}


def parse_variant(name: str):
  """'im2col', 'noynn' or 'im2col+noynn' -> (formulation or None for the model, options)."""
  form, opts = None, {}
  for part in name.split('+'):
    if part in FORMULATIONS and form is None:
      form = part
    elif part in XLA_OPTIONS:
      opts.update(XLA_OPTIONS[part])
    else:
      raise ValueError(part)
  return form, opts


# --------------------------------------------------------------------------- the model

def model_kwargs(args) -> dict:
  return dict(num_levels=2, num_channels=1, features=args.features, num_layers=args.layers,
              first_kernel=args.first_kernel, kernel_size=args.kernel_size,
              output_features=args.output_features)


def forward_flops(kw: dict, batch: int, size: int) -> float:
  """Multiply-adds x 2 of every convolution of one forward pass (elementwise ops left out)."""
  f, c, n = kw['features'], kw['num_channels'], kw['num_layers']
  total = 0
  for layer in range(n):
    k = kw['first_kernel'] if layer == 0 else kw['kernel_size']
    p, cin = k // 2, (c if layer == 0 else f)
    total += (p + 1) * (2 * p + 1) * cin * 2 * f      # vertical
    total += (p + 1) * cin * 2 * f                    # horizontal
    total += 2 * f * 2 * f + f * f                    # vertical->horizontal, skip
    total += f * f if layer < n - 1 else 0            # residual
  total += f * kw['output_features'] + kw['output_features'] * c * kw['num_levels']
  return 2.0 * total * batch * size * size


# --------------------------------------------------------------------------- reimplementations

def _dot(x, w):
  """[..., K] x [K, N] -> [..., N]."""
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _patches(x, kh: int, kw: int):
  """The kh*kw shifted [B, H, W, C] windows of an input padded for a VALID convolution,
  in the kernel's HWIO (row, column) order."""
  h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  return [x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]


_DIMS = ('NHWC', 'HWIO', 'NHWC')


def _valid_conv(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), 'VALID', dimension_numbers=_DIMS)


@jax.custom_vjp
def _conv_canonical_grad(x, k):
  """_valid_conv whose gradients are canonical NHWC/HWIO convolutions (as
  flows.bijectors.conv_same_canonical_grad), not JAX's transpose rules' convolutions with
  swapped dimension numbers."""
  return _valid_conv(x, k)


def _canon_fwd(x, k):
  return _valid_conv(x, k), (x, k)


def _canon_bwd(res, g):
  x, k = res
  kh, kw = k.shape[:2]
  dx = _valid_conv(jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0))),
                   jnp.flip(k, (0, 1)).swapaxes(2, 3))
  dk = _valid_conv(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3))   # [C, kh, kw, D]
  return dx, dk.transpose(1, 2, 0, 3)


_conv_canonical_grad.defvjp(_canon_fwd, _canon_bwd)


def conv(x, kernel, how: str, how_1x1: str):
  """VALID convolution of a padded NHWC input with an HWIO kernel, written `how`."""
  kh, kw, cin, cout = kernel.shape
  if kh == kw == 1 and how_1x1 == 'dot':
    return _dot(x, kernel[0, 0])
  if kh == kw == 1 and how_1x1 == 'chunkdw':
    return pointwise_conv(x, kernel[0, 0])
  if how == 'canon':
    return _conv_canonical_grad(x, kernel)
  if how == 'lax' or (kh == kw == 1):
    return _valid_conv(x, kernel)
  cols = _patches(x, kh, kw)
  if how == 'im2col':
    return _dot(jnp.concatenate(cols, axis=-1), kernel.reshape(kh * kw * cin, cout))
  if how == 'taps':
    taps = kernel.reshape(kh * kw, cin, cout)
    return sum(_dot(col, taps[t]) for t, col in enumerate(cols))
  raise ValueError(how)


FORMULATIONS = {
    'conv': dict(how='lax', how_1x1='lax', fuse=False),
    'dot1x1': dict(how='lax', how_1x1='dot', fuse=False),
    'im2col': dict(how='im2col', how_1x1='dot', fuse=False),
    'taps': dict(how='taps', how_1x1='dot', fuse=False),
    'fused': dict(how='im2col', how_1x1='dot', fuse=True),
    'chunkdw': dict(how='lax', how_1x1='chunkdw', fuse=False),
    'canon': dict(how='canon', how_1x1='canon', fuse=False),
}


def reimplemented_logits(params, x, kw: dict, how: str, how_1x1: str, fuse: bool):
  """GatedPixelCNN.__call__ (num_classes=0, no cond_map) on its own parameter tree."""
  nl, c, n, f = kw['num_levels'], kw['num_channels'], kw['num_layers'], kw['features']
  kernels = [kw['first_kernel']] + [kw['kernel_size']] * (n - 1)

  def kernel(name, mask=None):
    k = params[name]['kernel']
    if mask is not None:
      k = k * jnp.asarray(mask, k.dtype)
    return k

  def bias(name):
    return params[name]['bias']

  def mask_b(cin, cout):
    return current_pixel_mask((1, 1), cin, cout, 'B', c)

  def conv1x1(name, y):
    k = kernel(name, mask_b(y.shape[-1], params[name]['kernel'].shape[-1]))
    return conv(y, k, how, how_1x1) + bias(name)

  def gate(pre):
    a, b = jnp.split(pre, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)

  x = to_network_input(x, nl) if not jnp.issubdtype(x.dtype, jnp.floating) else x
  v_in = jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
  h_in, skip = x, None
  for layer, k in enumerate(kernels):
    p = k // 2
    cin = h_in.shape[-1]
    v_pre = conv(jnp.pad(v_in, ((0, 0), (p, 0), (p, p), (0, 0))), kernel(f'vertical_{layer}'),
                 how, how_1x1) + bias(f'vertical_{layer}')
    hk = kernel(f'horizontal_{layer}',
                current_pixel_mask((1, p + 1), cin, 2 * f, 'A' if layer == 0 else 'B', c,
                                   gated=True))
    v2h = kernel(f'vertical_to_horizontal_{layer}')
    h_window = jnp.pad(h_in, ((0, 0), (0, 0), (p, 0), (0, 0)))
    hb = bias(f'horizontal_{layer}') + bias(f'vertical_to_horizontal_{layer}')
    if fuse:
      cols = _patches(h_window, 1, p + 1) + [v_pre]
      w = jnp.concatenate([hk.reshape((p + 1) * cin, 2 * f), v2h[0, 0]], axis=0)
      pre = _dot(jnp.concatenate(cols, axis=-1), w) + hb
    else:
      pre = conv(h_window, hk, how, how_1x1) + conv(v_pre, v2h, how, how_1x1) + hb
    y = gate(pre)
    last = layer == n - 1
    names = [f'skip_{layer}'] + ([] if last else [f'residual_{layer}'])
    if fuse and not last:
      w = jnp.concatenate([kernel(m, mask_b(f, f))[0, 0] for m in names], axis=-1)
      b = jnp.concatenate([bias(m) for m in names])
      s, h = jnp.split(_dot(y, w) + b, 2, axis=-1)
    else:
      s = conv1x1(names[0], y)
      h = None if last else conv1x1(names[1], y)
    if not last:
      h_in = h if layer == 0 else h_in + h
    skip = s if skip is None else skip + s
    v_in = gate(v_pre)
  out = conv1x1('logits_out', jax.nn.relu(conv1x1('hidden_out', jax.nn.relu(skip))))
  return out.reshape(*x.shape, nl)


class Reimplementation:
  """Stands in for the Flax model in make_train_step / init_train_state: `init` is the
  model's (the same parameter tree), `apply(..., method='loss')` the reimplementation."""

  def __init__(self, model: GatedPixelCNN, kw: dict, variant: str):
    self.model, self.kw, self.form = model, kw, FORMULATIONS[variant]

  def init(self, *args, **kwargs):
    return self.model.init(*args, **kwargs)

  def logits(self, params, x):
    return reimplemented_logits(params, x, self.kw, **self.form)

  def apply(self, variables, batch, train=True, rngs=None, method='loss', mutable=False):
    del train, rngs
    assert method == 'loss' and not mutable, (method, mutable)
    x = batch['image']
    nll = -likelihood.categorical_log_prob(self.logits(variables['params'], x), x)
    return nll.mean(), {'nll': nll}


# --------------------------------------------------------------------------- runners

class JaxRunner:
  """The project's train step on a 1-device mesh; `run(n)` times n steps."""

  def __init__(self, model, batch: dict, num_dims: int, seed: int = 0,
               compiler_options: dict | None = None, config=None):
    cfg = config or pixelcnn_mnist.get_config()   # its optimizer and EMA
    self.mesh = train.make_mesh(jax.devices()[:1])
    tx, schedule = train.create_optimizer(cfg.optimizer, cfg.train.num_steps)
    self.state = train.init_train_state(model, tx, batch, seed, self.mesh)
    self.step = train.make_train_step(model, tx, schedule, ema_decay=cfg.train.ema_decay,
                                      num_dims=num_dims, mesh=self.mesh)
    self.batch = train.to_global_batch(batch, self.mesh)
    self.opt_cfg = cfg.optimizer
    self.compiler_options = compiler_options
    self._jitted = self.step
    if compiler_options:
      self.step = self.step.lower(self.state, self.batch).compile(
          compiler_options=compiler_options)

  @property
  def params(self):
    return self.state.params

  def run(self, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
      self.state, metrics = self.step(self.state, self.batch)
      jax.device_get(metrics)   # the training loop reads every metric every step
    return time.perf_counter() - t0

  def flops(self) -> int:
    """Convolution and matmul FLOPs of one train step, counted from its jaxpr
    (common.matmul_flops: forward, backward and the optimizer's, scans times their
    length); the step has no while loop, asserted, so the count is exact."""
    flops, whiles = common.matmul_flops(self._jitted, self.state, self.batch)
    assert not whiles, f'{whiles} while loops in the train step: a FLOP lower bound only'
    return flops

  def compiled_text(self) -> str:
    if self.compiler_options:
      return self.step.as_text()
    return self.step.lower(self.state, self.batch).compile().as_text()


class TorchRunner:
  """The same step in PyTorch eager: forward, backward, clipping, Adam, EMA."""

  def __init__(self, kw: dict, params, batch: dict, opt_cfg, ema_decay: float, threads: int):
    import torch

    from benchmarks import torch_gated_pixelcnn as tg
    self.torch, self.threads = torch, threads
    self.model = tg.GatedPixelCNNTorch(**kw)
    tg.load_flax_params(self.model, jax.device_get(params))
    self.params = list(self.model.parameters())
    self.ema = [p.detach().clone() for p in self.params]
    self.opt = torch.optim.Adam(self.params, lr=opt_cfg.learning_rate,
                                betas=(opt_cfg.b1, opt_cfg.b2), eps=opt_cfg.eps)
    self.clip, self.ema_decay = opt_cfg.grad_clip_norm, ema_decay
    self.x = torch.from_numpy(np.asarray(batch['image']))

  def run(self, n: int) -> float:
    torch = self.torch
    torch.set_num_threads(self.threads)
    t0 = time.perf_counter()
    for _ in range(n):
      self.opt.zero_grad(set_to_none=True)
      loss = self.model.loss(self.x)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(self.params, self.clip)
      self.opt.step()
      with torch.no_grad():
        torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
      loss.item()
    return time.perf_counter() - t0


def interleaved(runners: dict, batch_size: int, rounds: int, round_s: float):
  """Warm-up, then `rounds` rounds that run each runner in turn.

  Returns images/s per round, steps per round, and this process's CPU seconds per step
  (user + system, all threads; spinning threads count) per round: CPU time moves less than
  wall time when other processes take the cores.
  """
  steps = {}
  for name, r in runners.items():
    r.run(1)                                   # compile / first-call allocation
    dt = r.run(1)
    steps[name] = max(1, round(round_s / dt))
  rates = {name: [] for name in runners}
  cpu = {name: [] for name in runners}
  for _ in range(rounds):
    for name, r in runners.items():
      t0 = os.times()
      rates[name].append(steps[name] * batch_size / r.run(steps[name]))
      t1 = os.times()
      cpu[name].append((t1.user + t1.system - t0.user - t0.system) / steps[name])
  return rates, steps, cpu


# --------------------------------------------------------------------------- per-op timing

def _best(fn, *args, reps: int) -> float:
  jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def _torch_best(fn, reps: int) -> float:
  fn()
  best = float('inf')
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def op_shapes(kw: dict):
  """(name, kernel [kh, kw, cin, cout], (pad top, pad left, pad right), uses per train step)."""
  f, n, p = kw['features'], kw['num_layers'], kw['kernel_size'] // 2
  return [
      (f'vertical {p + 1}x{2 * p + 1}', (p + 1, 2 * p + 1, f, 2 * f), (p, p, p), n - 1),
      (f'horizontal 1x{p + 1}', (1, p + 1, f, 2 * f), (0, p, 0), n - 1),
      (f'1x1 {2 * f}->{2 * f}', (1, 1, 2 * f, 2 * f), (0, 0, 0), n),
      (f'1x1 {f}->{f}', (1, 1, f, f), (0, 0, 0), 2 * n - 1),
  ]


def time_ops(kw: dict, batch: int, size: int, reps: int, torch_threads):
  """Forward, weight-gradient and input-gradient times of each convolution shape of layers
  2..n: XLA's lax.conv through YNNPACK (the default) and through its own Eigen emitters
  ('noynnconv'), im2col and per-tap dot_general, the chunked 1x1 weight gradient, and
  PyTorch (oneDNN) at each thread count."""
  import torch
  rows, totals = [], collections.defaultdict(float)
  rng = np.random.default_rng(0)
  for name, (kh, kw_, cin, cout), (pt, pl, pr), uses in op_shapes(kw):
    x = rng.standard_normal((batch, size + pt, size + pl + pr, cin), np.float32)
    k = rng.standard_normal((kh, kw_, cin, cout), np.float32) * 0.1
    dy = rng.standard_normal((batch, size, size, cout), np.float32)
    flops = 2.0 * batch * size * size * kh * kw_ * cin * cout
    res = {}
    eigen = XLA_OPTIONS['noynnconv']
    # For a 1x1 kernel im2col and taps are both one dot_general; chunkdw differs from the
    # lax convolution only there.
    impls = [('xla conv', ('lax', 'lax'), None), ('xla conv noynnconv', ('lax', 'lax'), eigen),
             ('xla im2col', ('im2col', 'dot'), None), ('xla taps', ('taps', 'dot'), None),
             ('xla chunkdw noynnconv', ('lax', 'chunkdw'), eigen)]
    xj, kj, dyj = jnp.asarray(x), jnp.asarray(k), jnp.asarray(dy)
    for impl, how, opts in impls:
      if how[1] == 'chunkdw' and kh * kw_ > 1:   # the same program as 'xla conv noynnconv'
        continue
      def f(x, k, how=how):
        return conv(x, k, *how)
      fns = (lambda x, k, dy, f=f: f(x, k),
             lambda x, k, dy, f=f: jax.vjp(lambda k: f(x, k), k)[1](dy)[0],
             lambda x, k, dy, f=f: jax.vjp(lambda x: f(x, k), x)[1](dy)[0])
      res[impl] = tuple(
          _best(jax.jit(fn).lower(xj, kj, dyj).compile(compiler_options=opts), xj, kj, dyj,
                reps=reps) for fn in fns)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    kt = torch.from_numpy(k).permute(3, 2, 0, 1).contiguous()
    dyt = torch.from_numpy(dy).permute(0, 3, 1, 2).contiguous()

    def tbwd(dyt, xt, kt, mask):
      return torch.ops.aten.convolution_backward(dyt, xt, kt, None, [1, 1], [0, 0], [1, 1],
                                                 False, [0, 0], 1, mask)
    # functools.partial binds this shape's tensors (no closure over the loop's variables).
    for t in torch_threads:
      torch.set_num_threads(t)
      with torch.no_grad():
        res[f'torch {t} thread' + ('s' if t > 1 else '')] = (
            _torch_best(functools.partial(torch.nn.functional.conv2d, xt, kt), reps),
            _torch_best(functools.partial(tbwd, dyt, xt, kt, [False, True, False]), reps),
            _torch_best(functools.partial(tbwd, dyt, xt, kt, [True, False, False]), reps))
    for impl, ts in res.items():
      rows.append((name, uses, impl) + tuple(f'{t * 1e3:.2f} ({flops / t / 1e9:.0f})'
                                             for t in ts))
      totals[impl] += uses * sum(ts)
    if kh * kw_ > 1:
      totals['xla chunkdw noynnconv'] += uses * sum(res['xla conv noynnconv'])
  return rows, dict(totals)


# --------------------------------------------------------------------------- profile

def _classify(hlo: str) -> dict:
  """Entry-computation instruction name -> (category, library) from compiled HLO text."""
  comps, cur = {}, None
  for line in hlo.splitlines():
    m = re.match(r'^(?:ENTRY )?%(\S+) .*\{$', line)
    if m:
      cur = m.group(1)
      comps[cur] = []
    elif cur is not None:
      comps[cur].append(line)
  entry = next(name for name in comps if re.search(rf'ENTRY %{re.escape(name)} ', hlo))
  out = {}
  for line in comps[entry]:
    m = re.match(r'\s*(?:ROOT )?%(\S+) = (\S+) (\w[\w-]*)\(', line)
    if not m:
      continue
    name, _, opcode = m.groups()
    body = line
    called = re.search(r'calls=%(\S+?)[,\s]', line + ' ')
    if called and called.group(1) in comps:
      body += '\n'.join(comps[called.group(1)])
    lib = ('ynnpack' if '__ynn_fusion' in line else 'xnnpack' if 'xnn' in line else
           'onednn' if 'onednn' in line.lower() else 'xla')
    if 'convolution(' in body:
      win = re.search(r'window=\{size=(\d+)x(\d+)', body)
      big = win and int(win.group(1)) * int(win.group(2)) > 64
      kind = ('conv dW' if big else
              'conv dX' if 'transpose(jvp' in body else 'conv fwd')
    elif ' dot(' in body or 'dot(' in body.split('=', 1)[-1]:
      kind = 'dot bwd' if 'transpose(jvp' in body else 'dot fwd'
    elif opcode in ('parameter', 'tuple', 'get-tuple-element', 'bitcast', 'constant'):
      continue
    elif 'transpose(' in body or 'copy' in name:
      kind = 'transpose/copy'
    elif 'concatenate(' in body or 'slice(' in body or 'pad(' in body:
      kind = 'slice/concat/pad'
    else:
      kind = 'elementwise/reduce'
    out[name] = (kind, lib)
  return out


def profile_step(runner: JaxRunner, steps: int):
  """Per-category time of the train step's HLO ops, from a jax.profiler trace."""
  from jax.profiler import ProfileData
  kinds = _classify(runner.compiled_text())
  runner.run(1)
  d = tempfile.mkdtemp()
  jax.profiler.start_trace(d)
  wall = runner.run(steps)
  jax.profiler.stop_trace()
  pd = ProfileData.from_file(glob.glob(f'{d}/**/*.xplane.pb', recursive=True)[0])
  acc = collections.defaultdict(float)
  for plane in pd.planes:
    for line in plane.lines:
      for ev in line.events:
        if ev.name in kinds:
          acc[kinds[ev.name]] += ev.duration_ns * 1e-9 / steps
  return dict(acc), wall / steps


# --------------------------------------------------------------------------- main

def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='4 layers x 32 features, batch 16')
  parser.add_argument('--variant', default='',
                      help=f'comma-separated reformulations to time too: {", ".join(VARIANTS)}')
  parser.add_argument('--ops', action='store_true', help='per-convolution timing instead')
  parser.add_argument('--profile', action='store_true', help='per-op profile instead')
  parser.add_argument('--no_torch', action='store_true')
  parser.add_argument('--layers', type=int)
  parser.add_argument('--features', type=int)
  parser.add_argument('--kernel_size', type=int, default=3)
  parser.add_argument('--first_kernel', type=int, default=7)
  parser.add_argument('--output_features', type=int)
  parser.add_argument('--batch', type=int)
  parser.add_argument('--size', type=int, default=28)
  parser.add_argument('--rounds', type=int)
  parser.add_argument('--round_s', type=float, help='target seconds per timed round')
  parser.add_argument('--torch_threads', help='comma-separated thread counts to time torch '
                      'with; the first is the reference (default: the cores, and 1 too when '
                      'other processes load the machine, see the module docstring)')
  args = parser.parse_args()
  quick = dict(layers=4, features=32, output_features=32, batch=16, rounds=3, round_s=1.0)
  full = dict(layers=15, features=64, output_features=64, batch=32, rounds=5, round_s=4.0)
  for k, v in (quick if args.quick else full).items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  n_cpu = num_cores()
  if args.torch_threads is None:
    args.torch_threads = str(n_cpu) if n_cpu == 1 else f'{n_cpu},1'
  args.torch_threads = [int(t) for t in args.torch_threads.split(',')]
  variants = [v for v in args.variant.split(',') if v]
  for v in variants:
    try:
      parse_variant(v)
    except ValueError:
      parser.error(f'--variant {v!r}: choose from {", ".join(VARIANTS + tuple(XLA_OPTIONS))} '
                   'or formulation+option')

  kw = model_kwargs(args)
  b, s = args.batch, args.size
  load0 = common.loadavg()
  xla_flags = os.environ.get('XLA_FLAGS', '')
  title = (f'Gated PixelCNN train step, {args.layers} layers x {args.features} features, '
           f'k={args.kernel_size}, {s}x{s}, batch {b}; {common.machine()}'
           + (f'; XLA_FLAGS={xla_flags}' if xla_flags else ''))

  if args.ops:
    rows, totals = time_ops(kw, b, s, reps=3 if args.quick else 5,
                            torch_threads=args.torch_threads)
    print(title)
    print('ms (GFLOP/s), best of repeats')
    common.print_table(rows, ('convolution', 'per step', 'impl', 'forward', 'weight grad',
                              'input grad'))
    print('convolution time per train step (uses x (fwd + dW + dX)): '
          + ', '.join(f'{k} {v:.3f} s' for k, v in totals.items()))
    print(f'load average before {load0}, after {common.loadavg()}')
    common.emit({'benchmark': 'pixelcnn_conv_ops', 'per_step_conv_s':
                 {k: round(v, 4) for k, v in totals.items()}})
    return

  model = GatedPixelCNN(**kw)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 2, size=(b, s, s, 1)).astype(np.int32)}
  num_dims = s * s

  runners = {'jax': JaxRunner(model, batch, num_dims)}
  n_params = sum(x.size for x in jax.tree.leaves(runners['jax'].params))
  # Every reimplementation must be the model's function, on the model's parameters.
  small = {'image': batch['image'][:2]}
  want = model.apply({'params': runners['jax'].params}, small['image'])
  for v in variants:
    form, opts = parse_variant(v)
    v_model = model
    if form is not None:
      v_model = Reimplementation(model, kw, form)
      got = v_model.logits(runners['jax'].params, jnp.asarray(small['image']))
      err = float(jnp.max(jnp.abs(got - want)))
      assert err < 1e-4, f'variant {v} differs from GatedPixelCNN by {err}'
    runners[f'jax {v}'] = JaxRunner(v_model, batch, num_dims, compiler_options=opts)

  if args.profile:
    print(title)
    for name, r in runners.items():
      acc, step_s = profile_step(r, steps=2 if args.quick else 3)
      total = sum(acc.values())
      print(f'\n{name}: {step_s:.3f} s per step (wall, while profiling); traced HLO op time '
            f'{total:.3f} s per step (ops may overlap; an op descheduled by another process '
            'counts its waiting too)')
      if total < 0.5 * step_s:
        print('  Most of the step is untraced: XLA\'s own (Eigen) convolutions and dots emit '
              'no per-op trace events; see --ops for their times.')
      common.print_table(sorted(((k, lib, f'{t:.3f}', f'{100 * t / total:.0f}%')
                                 for (k, lib), t in acc.items()), key=lambda r: -float(r[2])),
                         ('HLO ops', 'library', 's/step', 'share'))
    print(f'\nload average before {load0}, after {common.loadavg()}')
    common.emit({'benchmark': 'pixelcnn_train_profile'})
    return

  step_flops = runners['jax'].flops()
  threads = args.torch_threads
  if not args.no_torch:
    from benchmarks import torch_gated_pixelcnn as tg
    err = None
    for t in threads:
      tr = TorchRunner(kw, runners['jax'].params, batch, runners['jax'].opt_cfg,
                       pixelcnn_mnist.get_config().train.ema_decay, threads=t)
      n_torch = tg.num_params(tr.model)
      assert n_torch == n_params, f'parameter counts differ: JAX {n_params}, torch {n_torch}'
      if err is None:
        err = tg.check_against_flax(model, jax.device_get(runners['jax'].params),
                                    tg.GatedPixelCNNTorch(**kw), (2, s, s, 1))
        jax_loss = float(model.apply({'params': runners['jax'].params}, small, method='loss')[0])
        torch_loss = tr.model.loss(tr.torch.from_numpy(small['image'])).item()
        assert abs(jax_loss - torch_loss) < 1e-4 * abs(jax_loss), (jax_loss, torch_loss)
      runners[torch_name(t, threads)] = tr

  cpu = common.CpuUsage()
  rates, steps, cpu_s = interleaved(runners, b, args.rounds, args.round_s)
  others = cpu.others_cores()
  load1 = common.loadavg()

  med = {k: statistics.median(v) for k, v in rates.items()}
  print(title)
  peak = common.matmul_peak_gflops(torch_threads=None if args.no_torch else threads[0])
  print(f'{n_params:,} parameters (JAX = torch); {step_flops / b / 1e9:.2f} GFLOP per image per '
        "train step (the step's convolutions and matmuls, counted from its jaxpr; the same "
        'network in both)'
        + ('' if args.no_torch else f'; torch logits match JAX to {err:.1e}'))
  print(f'{args.rounds} interleaved rounds of ~{args.round_s:g} s each; XLA sizes its thread '
        f'pool by the {n_cpu} cores this process may use')
  rows = [(k, f'{med[k]:.2f}', f'{min(v):.2f}-{max(v):.2f}', steps[k],
           f'{b / med[k]:.3f}', f'{statistics.median(cpu_s[k]):.3f}',
           f'{med[k] * step_flops / b / 1e9:.0f}')
          for k, v in rates.items()]
  common.print_table(rows, ('train step', 'images/s (median)', 'range', 'steps/round',
                            's/step', 'CPU s/step', 'GFLOP/s'))
  ref = None if args.no_torch else torch_name(threads[0], threads)
  ratio = med['jax'] / med[ref] if ref else None
  for t in ([] if args.no_torch else threads):
    print(f'jax / {torch_name(t, threads)} = {med["jax"] / med[torch_name(t, threads)]:.2f}')
  for v in variants:
    print(f'jax {v} / jax = {med[f"jax {v}"] / med["jax"]:.2f}')
  print(common.describe_peak(peak, threads[0] if ref else None))
  print(f'load average before {load0}, after {load1}; other processes used {others:.2f} of '
        f'{os.cpu_count()} cores during the timed rounds')
  result = {'benchmark': 'pixelcnn_throughput',
            'jax_images_per_s': round(med['jax'], 2),
            'torch_images_per_s': round(med[ref], 2) if ref else None,
            'ratio': round(ratio, 3) if ratio else None,
            'torch_threads': threads[0] if ref else None,
            'layers': args.layers, 'features': args.features, 'kernel_size': args.kernel_size,
            'batch': b, 'image_size': s, 'params': n_params, 'rounds': args.rounds,
            'xla_flags': xla_flags, 'loadavg_before': load0, 'loadavg_after': load1,
            'other_cores_busy': round(others, 2)}
  for t in ([] if args.no_torch else threads[1:]):
    result[f'torch_{t}thread_images_per_s'] = round(med[torch_name(t, threads)], 2)
  for v in variants:
    result[f'jax_{v.replace("+", "_")}_images_per_s'] = round(med[f'jax {v}'], 2)
  result['cpu_s_per_step'] = {k: round(statistics.median(v), 3) for k, v in cpu_s.items()}
  result['gflop_per_image'] = round(step_flops / b / 1e9, 4)
  result['matmul_peak_gflops'] = {k: round(v, 1) for k, v in peak.items()}
  common.emit(result)


def num_cores() -> int:
  """The cores this process may run on (XLA:CPU sizes its thread pool by them)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count()


def torch_name(t: int, threads) -> str:
  return 'torch' if t == threads[0] else f'torch {t} thread' + ('s' if t > 1 else '')


if __name__ == '__main__':
  main()
