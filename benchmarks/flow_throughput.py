"""Glow and Real NVP train steps (and Glow sampling): JAX (the project's jitted step) vs
PyTorch eager.

  python -m benchmarks.flow_throughput --model glow      # 3 levels x 8 steps, width 512
  python -m benchmarks.flow_throughput --model realnvp   # 2 scales, 64 features, 8 blocks
  python -m benchmarks.flow_throughput --model glow --sample   # also 64 samples
  python -m benchmarks.flow_throughput --model glow --quick    # tiny sizes: a smoke test
  python -m benchmarks.flow_throughput --model realnvp --variant save_all_residuals

Sizes (issue 18's rows): Glow (flows/glow.py: affine coupling, LU 1x1 convolutions,
learned top) with 3 levels of 8 steps, 512 hidden channels, 32x32x1 images, batch 16;
Real NVP (flows/realnvp.py: batch-normalized ResNet couplings, batch-norm bijectors, logit
preprocessing) with 2 scales, 64 features, 8 residual blocks, 32x32x1, batch 64. --levels,
--steps, --width, --scales, --features, --blocks, --size and --batch change them.

JAX runs `experiments.train.make_train_step` on a 1-device mesh (benchmarks/
pixelcnn_throughput.py's JaxRunner) with the glow_mnist or realnvp_mnist config's optimizer
(Adam, warmup + cosine, global-norm clipping at 100) and EMA: dequantization noise,
forward, backward, clipping, Adam, EMA and metrics, fetched every step as the training loop
does, compiled with the trainer's CPU_COMPILER_OPTIONS. PyTorch runs the same network
(benchmarks/torch_flows.py; the same parameter count and the same log-densities from the
same parameters, asserted, and for Glow the same decoded images) with fresh dequantization
noise, clipping, Adam and EMA, and reads the loss every step.

--sample times 64 samples at temperature 1 from the same Glow: the compiled
`Glow.sample` with XLA's default options and with CPU_COMPILER_OPTIONS, and the PyTorch
model's inverse pass under torch.no_grad().

Threads: XLA:CPU uses every core the process may use; PyTorch runs with
torch.set_num_threads(that many) (--torch_threads adds rows, e.g. 2,1). After warm-up the
timed rounds alternate (JAX, torch, JAX, ...), so all see the same load; the table gives
medians of the rounds, this process's CPU seconds per step, and the load (/proc/loadavg and
the cores other processes used meanwhile). Run it on a quiet machine. The last line is a
JSON object.

FLOPs: the train step's convolutions and matmuls (forward, both gradients, the scans'
bodies times their lengths) are counted from its jaxpr (benchmarks.common.matmul_flops),
so each row also gives the GFLOP/s it sustained, next to this machine's float32 matmul
rate (a 2048 x 2048 matmul in XLA and in torch, measured after the rounds): how far each
side is from what the cores can do, the model FLOP utilization of issue 18.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from benchmarks import common
from benchmarks.pixelcnn_throughput import JaxRunner, interleaved
from configs import glow_mnist, realnvp_mnist
from experiments import train
from flows.glow import Glow
from flows.realnvp import RealNVP


class TorchFlowRunner:
  """The train step in PyTorch eager: loss, backward, clipping, Adam, EMA, loss.item()."""

  def __init__(self, model, images: np.ndarray, opt_cfg, ema_decay: float, threads: int):
    import torch
    self.torch, self.model, self.threads = torch, model, threads
    self.model.train()
    self.params = list(model.parameters())
    self.ema = [p.detach().clone() for p in self.params]
    self.opt = torch.optim.Adam(self.params, lr=opt_cfg.learning_rate,
                                betas=(opt_cfg.b1, opt_cfg.b2), eps=opt_cfg.eps)
    self.clip, self.ema_decay = opt_cfg.grad_clip_norm, ema_decay
    self.x = torch.from_numpy(images)

  def run(self, n: int) -> float:
    torch = self.torch
    torch.set_num_threads(self.threads)
    t0 = time.perf_counter()
    for _ in range(n):
      self.opt.zero_grad(set_to_none=True)
      loss = self.model.loss(self.x)
      loss.backward()
      if self.clip:
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
      self.opt.step()
      with torch.no_grad():
        torch._foreach_lerp_(self.ema, self.params, 1.0 - self.ema_decay)
      loss.item()
    return time.perf_counter() - t0


def build(args):
  """(Flax model, torch model, config, check function) for --model at the given sizes."""
  from benchmarks import torch_flows as tf
  shape = (args.size, args.size, 1)
  if args.model == 'glow':
    cfg = glow_mnist.get_config()
    flax_model = Glow(image_shape=shape, num_levels=args.levels, num_steps=args.steps,
                      hidden_features=args.width)
    torch_model = tf.GlowTorch(shape, args.levels, args.steps, args.width)
    return flax_model, torch_model, cfg, tf.check_glow
  cfg = realnvp_mnist.get_config()
  flax_model = RealNVP(image_shape=shape, num_scales=args.scales, features=args.features,
                       num_blocks=args.blocks)
  torch_model = tf.RealNVPTorch(shape, args.scales, args.features, args.blocks)
  return flax_model, torch_model, cfg, tf.check_realnvp


# Real NVP's train step as it was before a change, timed in the same rounds as today's.
VARIANTS = {
    'save_all_residuals': 'the scanned residual blocks save every intermediate for the '
                          'backward pass (checkpoint_policies.everything_saveable), as '
                          'before their remat saving only the convolution outputs',
    'unroll_couplings': 'RealNVP(unroll_couplings=True): each coupling group unrolled',
}


def variant_runner(variant: str, flax_model, images, cfg) -> JaxRunner:
  """A JaxRunner (the same parameters: the same seed) of a VARIANTS entry, compiled."""
  from flows import realnvp
  batch = {'image': images}
  if variant == 'unroll_couplings':
    runner = JaxRunner(flax_model.clone(unroll_couplings=True), batch, flax_model.num_dims,
                       config=cfg)
    runner.run(1)
    return runner
  saved = realnvp._BLOCK_REMAT_POLICY  # pylint: disable=protected-access
  realnvp._BLOCK_REMAT_POLICY = jax.checkpoint_policies.everything_saveable  # pylint: disable=protected-access
  try:
    runner = JaxRunner(flax_model, batch, flax_model.num_dims, config=cfg)
    runner.run(1)     # traced (and compiled) while the policy is in effect
  finally:
    realnvp._BLOCK_REMAT_POLICY = saved  # pylint: disable=protected-access
  return runner


def describe(args) -> str:
  if args.model == 'glow':
    return (f'Glow {args.levels} levels x {args.steps} steps, width {args.width}, '
            f'{args.size}x{args.size}x1, batch {args.batch}')
  return (f'Real NVP {args.scales} scales, {args.features} features, {args.blocks} blocks, '
          f'{args.size}x{args.size}x1, batch {args.batch}')


def time_sampling(flax_model, variables, torch_model, n: int, rounds: int, threads: int):
  """Medians over alternating rounds of 64 samples: JAX default options, JAX with
  CPU_COMPILER_OPTIONS, torch no_grad."""
  import torch
  shape = (n, *flax_model.image_shape)

  def sample(v, r):
    return flax_model.apply(v, r, shape, method='sample')

  lowered = jax.jit(sample).lower(variables, jax.random.key(3))
  fns, compile_s = {}, {}
  for name, opts in (('jax', None), ('jax + CPU_COMPILER_OPTIONS', train.CPU_COMPILER_OPTIONS)):
    t0 = time.perf_counter()
    compiled = lowered.compile(compiler_options=opts) if opts else lowered.compile()
    compile_s[name] = time.perf_counter() - t0
    fns[name] = lambda c=compiled: jax.block_until_ready(c(variables, jax.random.key(3)))

  def torch_sample():
    torch.set_num_threads(threads)
    with torch.no_grad():
      torch_model.sample(n)
  fns[f'torch, {threads} threads'] = torch_sample
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(t) for name, t in times.items()}, compile_s


def main() -> None:
  n_cpu = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', choices=('glow', 'realnvp'), default='glow')
  parser.add_argument('--quick', action='store_true', help='tiny sizes, few rounds')
  parser.add_argument('--sample', action='store_true', help='also time 64 Glow samples')
  parser.add_argument('--levels', type=int, default=3)
  parser.add_argument('--steps', type=int, default=8)
  parser.add_argument('--width', type=int, default=512)
  parser.add_argument('--scales', type=int, default=2)
  parser.add_argument('--features', type=int, default=64)
  parser.add_argument('--blocks', type=int, default=8)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--batch', type=int, default=None, help='Glow 16, Real NVP 64')
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--round_s', type=float, default=6.0, help='seconds per timed round')
  parser.add_argument('--variant', action='append', default=[], choices=VARIANTS,
                      help='add a JAX row (Real NVP; repeatable): ' + '; '.join(
                          f'{k}: {v}' for k, v in VARIANTS.items()))
  parser.add_argument('--torch_threads', default=None,
                      help=f'comma-separated torch thread counts (default {n_cpu})')
  args = parser.parse_args()
  if args.quick:
    args.levels, args.steps, args.width = 2, 2, 16
    args.features, args.blocks, args.size = 8, 1, 8
    args.rounds, args.round_s = 2, 0.3
  if args.batch is None:
    args.batch = 16 if args.model == 'glow' else 64
  threads = [int(t) for t in (args.torch_threads or str(n_cpu)).split(',')]
  if args.sample and args.model != 'glow':
    parser.error('--sample times Glow only')
  if args.variant and args.model != 'realnvp':
    parser.error('--variant is for Real NVP')

  import torch

  from benchmarks import torch_flows as tf
  torch.manual_seed(0)
  load0, usage = common.loadavg(), common.CpuUsage()
  print(f'{describe(args)}; {common.machine()}; torch {torch.__version__}; '
        f'XLA threads: {n_cpu} cores; load before: {load0}', flush=True)

  flax_model, torch_model, cfg, check = build(args)
  images = np.random.default_rng(0).integers(
      0, 256, size=(args.batch, args.size, args.size, 1)).astype(np.uint8)
  jax_runner = JaxRunner(flax_model, {'image': images}, flax_model.num_dims, config=cfg)
  variables = {'params': jax.device_get(jax_runner.state.params),
               **jax.device_get(jax_runner.state.model_state)}
  diffs = check(flax_model, variables, torch_model)
  n_jax = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))
  n_torch = tf.num_params(torch_model)
  assert n_jax == n_torch, f'parameter counts differ: JAX {n_jax}, torch {n_torch}'
  print(f'parameters: {n_jax:,} in both; torch vs Flax, largest differences: '
        + ', '.join(f'{k} {v:.2e}' for k, v in diffs.items()), flush=True)

  runners = {'jax': jax_runner}
  for v in args.variant:
    runners[f'jax {v}'] = variant_runner(v, flax_model, images, cfg)
  for t in threads:
    # Each thread count trains its own copy from the same parameters.
    _, tm, _, _ = build(args)
    check(flax_model, variables, tm)
    runners[f'torch, {t} thread' + ('s' if t > 1 else '')] = TorchFlowRunner(
        tm, images.astype(np.float32), cfg.optimizer, cfg.train.ema_decay, t)
  step_flops = jax_runner.flops()
  print(f'{step_flops / args.batch / 1e9:.2f} GFLOP per image per train step (its '
        'convolutions and matmuls, counted from the jaxpr; the same network in both)', flush=True)
  rates, steps, cpu = interleaved(runners, args.batch, args.rounds, args.round_s)
  med = {name: statistics.median(r) for name, r in rates.items()}
  ref = f'torch, {threads[0]} thread' + ('s' if threads[0] > 1 else '')
  rows = [(name, f'{med[name]:.2f}', steps[name], f'{statistics.median(cpu[name]):.3f}',
           f'{med[name] * step_flops / args.batch / 1e9:.0f}',
           f'{med["jax"] / med[name]:.2f}' if name != 'jax' else '')
          for name in runners]
  common.print_table(rows, ('train step', 'images/s', 'steps/round', 'cpu s/step', 'GFLOP/s',
                            'jax / this'))
  peak = common.matmul_peak_gflops(torch_threads=threads[0])
  print(common.describe_peak(peak, threads[0]))
  result = {'benchmark': 'flow_throughput', 'model': args.model, 'setup': describe(args),
            'params': n_jax, 'jax_images_per_s': round(med['jax'], 3),
            'torch_images_per_s': round(med[ref], 3),
            'ratio': round(med['jax'] / med[ref], 3),
            'rounds': args.rounds, 'torch_threads': threads[0],
            'gflop_per_image': round(step_flops / args.batch / 1e9, 4),
            'matmul_peak_gflops': {k: round(v, 1) for k, v in peak.items()}}
  if args.variant:
    result['variants_images_per_s'] = {v: round(med[f'jax {v}'], 3) for v in args.variant}
  if args.sample:
    n = 8 if args.quick else 64
    times, compile_s = time_sampling(flax_model, variables, torch_model, n,
                                     rounds=3 if args.quick else 7, threads=threads[0])
    tname = f'torch, {threads[0]} threads'
    common.print_table(
        [(name, f'{t:.3f}', f'{compile_s[name]:.1f}' if name in compile_s else '',
          f'{times[tname] / t:.2f}') for name, t in times.items()],
        (f'{n} samples', 'median s', 'compile s', 'torch s / this'))
    result['sample_s'] = {k: round(v, 4) for k, v in times.items()}
  others = usage.others_cores()
  print(f'load after: {common.loadavg()}; other processes used {others:.2f} cores '
        'during the run')
  result |= {'load_before': load0, 'others_cores': round(others, 2)}
  common.emit(result)


if __name__ == '__main__':
  main()
