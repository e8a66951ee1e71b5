"""Naive vs fast WaveNet generation (Paine et al. 2016, "Fast Wavenet Generation
Algorithm", arXiv 1611.09482).

  python -m benchmarks.wavenet_generation           # naive sampler timed on 32 samples
  python -m benchmarks.wavenet_generation --quick   # on 4 samples, no repeats: < 1 minute

Both generate 1 s of 8 kHz audio (8000 samples) for a batch of 4, with the model of
configs/wavenet_spoken_digit.py (2 stacks of dilations 1..512, 32 residual channels,
receptive field 2048 samples, speaker and digit conditioning) at random initialization:
speed does not depend on the weights.

  * fast: WaveNet.sample_fast, per-layer ring buffers, one lax.scan step per sample.
  * naive: WaveNet.sample, one forward pass over the whole 8000-sample sequence per
    generated sample. Every step costs the same, so it is timed on the first `--prefix`
    samples and extrapolated linearly to 8000 (the output says so); the prefix it draws is
    checked against the fast generator's first samples.

realtime_factor = seconds of audio generated per wall-clock second by the fast generator,
over the whole batch (its samples/s over 8000; > 1 is faster than real time); each of the
b sequences alone advances at realtime_factor / b of real time (also printed). The machine's load is
printed: on a shared CPU the figures move with it. The last line is a JSON object with naive_s,
fast_s, speedup and realtime_factor.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from configs import wavenet_spoken_digit
from experiments.models import build_model

SAMPLE_RATE = 8000


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--num_samples', type=int, default=SAMPLE_RATE)
  parser.add_argument('--prefix', type=int, default=None,
                      help='samples the naive sampler is timed on (default 32; --quick 4)')
  args = parser.parse_args()
  prefix = args.prefix or (4 if args.quick else 32)
  b, length = args.batch, args.num_samples
  config = wavenet_spoken_digit.get_config()
  model = build_model(config.model_name, config.model.to_dict())
  speaker = jnp.arange(b) % config.model.num_speakers
  label = jnp.arange(b) % config.model.num_classes
  params = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((b, 16), jnp.int32),
                                      speaker=speaker, label=label))()
  rng = jax.random.key(1)
  load0, usage = common.loadavg(), common.CpuUsage()

  def fast(p, r):
    return model.apply(p, r, (b, length), speaker=speaker, label=label,
                       method='sample_fast')
  def naive(p, r):
    return model.apply(p, r, (b, length), speaker=speaker, label=label,
                       stop=prefix, method='sample')
  c_fast, t_fast, s_fast = common.compile_and_time(fast, params, rng,
                                                   repeats=1 if args.quick else 2)
  c_naive, t_prefix, s_naive = common.compile_and_time(naive, params, rng)
  t_naive = t_prefix * length / prefix
  same = bool(np.array_equal(np.asarray(s_naive)[:, :prefix], np.asarray(s_fast)[:, :prefix]))
  audio_s = length / SAMPLE_RATE
  realtime = b * audio_s / t_fast

  print(f'WaveNet ({config.model.num_stacks} stacks x {config.model.num_layers} layers, '
        f'{config.model.residual_channels} residual channels, receptive field '
        f'{model.receptive_field}), {b} sequences of {length} samples '
        f'({audio_s:g} s at {SAMPLE_RATE} Hz), {common.machine()}')
  common.print_table(
      [('naive', f'{c_naive:.1f}', f'{t_prefix:.2f} for {prefix} samples',
        f'{t_naive:.0f} (extrapolated x{length / prefix:g})'),
       ('fast', f'{c_fast:.1f}', f'{t_fast:.2f}', f'{t_fast:.2f}')],
      ('sampler', 'compile s', 'run s', f'{length} samples s'))
  print(f'naive extrapolated linearly from its first {prefix} samples (each step is a full '
        f'forward pass over all {length} samples, so every step costs the same).')
  print(f'speed-up {t_naive / t_fast:.0f}x; fast generator {b * length / t_fast:.0f} '
        f'samples/s over the batch = {realtime:.2f}x real time ({realtime / b:.2f}x per '
        f'sequence); naive prefix identical to the fast samples: {same}')
  print(f'load average before {load0}, after {common.loadavg()}; other processes used '
        f'{usage.others_cores():.1f} cores')
  common.emit({'benchmark': 'wavenet_generation', 'batch': b, 'num_samples': length,
               'receptive_field': model.receptive_field, 'naive_prefix': prefix,
               'naive_extrapolated': True, 'naive_s': round(t_naive, 1),
               'fast_s': round(t_fast, 3), 'speedup': round(t_naive / t_fast, 1),
               'realtime_factor': round(realtime, 3),
               'realtime_factor_per_sequence': round(realtime / b, 3), 'identical': same})


if __name__ == '__main__':
  main()
