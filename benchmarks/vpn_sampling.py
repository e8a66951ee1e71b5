"""Naive vs cached sampling of a Video Pixel Network: 10 future frames given 10 context
frames of Moving MNIST, frame by frame, each frame's pixels by the gated PixelCNN
decoder's naive sampler (the whole decoder per pixel) or its cached one (Ramachandran et
al. 2017).

  python -m benchmarks.vpn_sampling --workdir=runs/vpn_mm     # a trained run's weights
  python -m benchmarks.vpn_sampling --quick                   # random weights, 8x8 frames

The frame size is the run's (config.data.frame_size); the model predicts --predict frames
after --context given ones whatever context_frames it was trained with (the ConvLSTM
runs over any number of frames). Context frames come from the fixed Moving MNIST test set
of the run's variant (random levels with --quick). Both samplers are compiled ahead of
time; the samples are checked to be identical. The last line is a JSON object.
"""
from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default=None, help='a trained VPN run')
  parser.add_argument('--quick', action='store_true', help='random weights, tiny model')
  parser.add_argument('--num_videos', type=int, default=2)
  parser.add_argument('--context', type=int, default=10)
  parser.add_argument('--predict', type=int, default=10)
  args = parser.parse_args()
  if args.quick == bool(args.workdir):
    parser.error('give --workdir=<a VPN run> or --quick')
  n, k, total = args.num_videos, args.context, args.context + args.predict
  if args.quick:
    from configs import vpn_moving_mnist  # pylint: disable=g-import-not-at-top
    from experiments.models import build_model  # pylint: disable=g-import-not-at-top
    c = vpn_moving_mnist.get_config('tiny')
    size = c.data.frame_size
    model = build_model('vpn', dict(c.model.to_dict(), context_frames=k))
    context = jax.random.randint(jax.random.key(0), (n, k, size, size, 1), 0, 256)
    variables = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, total, size, size, 1),
                                                                 jnp.int32))
    title = 'VPN (tiny config, random weights)'
  else:
    from experiments import datasets, input_pipeline  # pylint: disable=g-import-not-at-top
    from experiments.run import load_run  # pylint: disable=g-import-not-at-top
    run = load_run(args.workdir)
    c = run.config
    model = run.model.clone(context_frames=k)
    spec = input_pipeline.video_spec(dict(c.data, num_frames=total))
    size = spec.frame_size
    context = datasets.moving_mnist_source(
        'test', spec, indices=range(n), source=c.data.source,
        local_dir=c.data.local_dir).generate()[:, :k]
    variables = run.variables
    title = f'VPN {os.path.basename(os.path.normpath(args.workdir))} (step {run.step})'
  shape = (n, total, size, size, 1)
  context = jnp.asarray(context, jnp.int32)
  rng = jax.random.key(2)
  load0, usage = common.loadavg(), common.CpuUsage()

  def naive(v, r, ctx):
    return model.apply(v, r, shape, context=ctx, method='sample')

  def cached(v, r, ctx):
    return model.apply(v, r, shape, context=ctx, method='sample_cached')

  c_cached, t_cached, s_cached = common.compile_and_time(cached, variables, rng, context,
                                                         repeats=2)
  c_naive, t_naive, s_naive = common.compile_and_time(naive, variables, rng, context)
  same = bool(np.array_equal(np.asarray(s_naive), np.asarray(s_cached)))
  print(f'{title}: {n} videos, {args.predict} frames of {size}x{size} after {k} given, '
        f'{common.machine()}')
  common.print_table([('naive', f'{c_naive:.1f}', f'{t_naive:.2f}'),
                      ('cached', f'{c_cached:.1f}', f'{t_cached:.3f}')],
                     ('sampler', 'compile s', 'run s'))
  print(f'speed-up {t_naive / t_cached:.1f}x; identical samples: {same}')
  others = usage.others_cores()
  print(f'load average before {load0}, after {common.loadavg()}; other processes used '
        f'{others:.2f} cores during the run; XLA threads: all {os.cpu_count()} cores')
  common.emit({'benchmark': 'vpn_sampling', 'num_videos': n, 'frame_size': size,
               'context': k, 'predict': args.predict, 'naive_s': round(t_naive, 3),
               'cached_s': round(t_cached, 4), 'speedup': round(t_naive / t_cached, 1),
               'identical': same, 'load_before': load0, 'others_cores': round(others, 2)})


if __name__ == '__main__':
  main()
