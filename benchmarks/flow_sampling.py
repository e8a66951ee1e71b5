"""Sampling time of the invertible models: 64 images from NICE, Real NVP, Glow and MAF.

  python -m benchmarks.flow_sampling            # the configs' CPU-sized models and MAF
  python -m benchmarks.flow_sampling --paper    # also the papers' depths (slow on a CPU)
  python -m benchmarks.flow_sampling --quick    # the tiny presets: a smoke test

For each model: the compiled `sample` (64 images at temperature 1, one inverse pass of
the flow for NICE, Real NVP and Glow; D = 784 sequential MADE passes per MAF layer) and,
for comparison, the compiled density evaluation of 64 images (`log_prob`, one forward pass
for every model), each the best of `--repeats` runs after compilation. The models are
randomly initialized (Glow's actnorm from one random batch): the time does not depend on
the weights. The machine's load is printed: on a shared CPU the figures move with it. The
last line is one JSON object, model -> {sample_s, density_s, compile_s, params}.
"""
from __future__ import annotations

import argparse
import importlib

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments.models import build_model

# (label, config module, preset): the CPU-sized presets are the ones trained on this machine.
CPU_MODELS = [
    ('nice_mnist', 'nice_mnist', None),
    ('realnvp_mnist:cpu', 'realnvp_mnist', 'cpu'),
    ('glow_mnist:cpu', 'glow_mnist', 'cpu'),
    ('maf_mnist', 'maf_mnist', None),
]
PAPER_MODELS = [
    ('realnvp_mnist', 'realnvp_mnist', None),
    ('glow_mnist', 'glow_mnist', None),
]
TINY_MODELS = [(f'{name}:tiny', name, 'tiny')
               for name in ('nice_mnist', 'realnvp_mnist', 'glow_mnist', 'maf_mnist')]


def time_model(config_name: str, preset: str | None, n: int, repeats: int) -> dict:
  config = importlib.import_module(f'configs.{config_name}').get_config(preset)
  model = build_model(config.model_name, config.model.to_dict())
  shape = (n, *config.model.image_shape)
  images = jax.random.randint(jax.random.key(0), shape, 0, 256).astype(jnp.uint8)
  variables = jax.jit(lambda b: model.init(
      {'params': jax.random.key(1), 'sample': jax.random.key(2)}, b, train=False,
      method='loss'))({'image': images})
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))
  def sample(v, r):
    return model.apply(v, r, shape, method='sample')
  def density(v, x):
    return model.apply(v, x, method='log_prob')
  x = (images.astype(jnp.float32) + 0.5) / 256.0
  c_s, t_s, out = common.compile_and_time(sample, variables, jax.random.key(3), repeats=repeats)
  c_d, t_d, lp = common.compile_and_time(density, variables, x, repeats=repeats)
  assert out.shape == shape and bool(jnp.all(jnp.isfinite(lp))), 'non-finite output'
  return {'sample_s': round(t_s, 4), 'density_s': round(t_d, 4),
          'compile_s': round(c_s + c_d, 1), 'params': num_params}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='the tiny presets only')
  parser.add_argument('--paper', action='store_true', help="also the papers' depths")
  parser.add_argument('--num_images', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()
  models = TINY_MODELS if args.quick else CPU_MODELS + (PAPER_MODELS if args.paper else [])
  print(f'{common.machine()}; load average before: {common.loadavg()}')
  usage = common.CpuUsage()
  results, rows = {}, []
  for label, name, preset in models:
    r = time_model(name, preset, args.num_images, args.repeats)
    results[label] = r
    rows.append((label, f'{r["params"]:,}', f'{r["sample_s"]:.3f}', f'{r["density_s"]:.3f}',
                 f'{r["sample_s"] / r["density_s"]:.1f}', f'{r["compile_s"]:.0f}'))
  common.print_table(rows, ('model', 'params', f'sample {args.num_images} (s)',
                            f'density {args.num_images} (s)', 'ratio', 'compile (s)'))
  print(f'other processes used {usage.others_cores():.2f} cores during the run; '
        f'load average after: {common.loadavg()}')
  common.emit(results)


if __name__ == '__main__':
  main()
