"""AIS against the importance-weighted (IWAE) estimate on the same test images of a trained
VAE, and BDMC on data simulated from it (Wu et al. 2017, arXiv 1611.04273, Table 1 and Sec.
5.3.1). One process: the IWAE estimate with k samples per image, then `--mode=ais`'s
experiments.ais_eval.ais_run (which appends its result to <workdir>/ais.jsonl).

  DGM_DATA_DIR=../shared/data taskset -c 1 python -m benchmarks.ais_vs_iwae \
      --config=configs/iwae_binarized_mnist.py:vae,k=1 --config.model.eval_num_samples=0 \
      --workdir=runs/vae_k1 --num_examples=1000 --iwae_k=5000 --chains=4 --steps=1000 \
      --leapfrog=10 --bdmc_examples=100

Both estimates are stochastic lower bounds on log p(x), so the higher one is the tighter.
The images are the first num_examples of the test split as both read them
(Run._test_examples: the fixed seeded binarization, in order).

Result (2026-12-03, one core of the 2-core AMD EPYC CPU, `taskset -c 1`; another job had
the other core): runs/vae_k1, the VAE trained by
`--config=configs/iwae_binarized_mnist.py:vae,k=1 --config.train.num_steps=10000
--config.model.eval_num_samples=0` (8.8 min; test ELBO -106.30), with the command above:
IWAE k = 5000: -101.956 +- 0.912 nats (103 s); AIS, 4 chains x 1,000 intermediate
distributions x 10 leapfrog steps: -101.909 +- 0.910 nats (623 s, acceptance 0.70, final
step size 0.14); per image AIS - IWAE = +0.047 +- 0.033 nats (AIS higher on 53% of the
images): the two agree, AIS marginally tighter. BDMC on 100 examples simulated from the
model, same settings: forward -119.602, reverse -119.209, gap 0.393 +- 0.106 nats (173 s
with `--mode=ais --ais_bdmc`). Wu et al.'s Table 1 (an IWAE on binarized MNIST): AIS with
1,000 distributions -85.679 against the IWAE bound with 10,000 samples -86.902.
"""
from __future__ import annotations

import math
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common

_CONFIG = config_flags.DEFINE_config_file('config', None, 'The run\'s config (with preset).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_N = flags.DEFINE_integer('num_examples', 1000, 'The first N test images.')
_K = flags.DEFINE_integer('iwae_k', 5000, 'Importance samples per image for the IWAE estimate.')
_CHAINS = flags.DEFINE_integer('chains', 4, 'AIS chains per image.')
_STEPS = flags.DEFINE_integer('steps', 1000, 'AIS intermediate distributions.')
_LEAPFROG = flags.DEFINE_integer('leapfrog', 10, 'Leapfrog steps per HMC trajectory.')
_BDMC = flags.DEFINE_integer('bdmc_examples', 100, 'Simulated examples for BDMC (0: none).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
flags.mark_flags_as_required(['config', 'workdir'])


def iwae_estimate(config, workdir: str, n: int, k: int, seed: int) -> dict:
  from experiments import train  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.data.eval_split = 'test'
  run = train._read_only_run(config, workdir, False, evaluate=True)  # pylint: disable=protected-access
  try:
    images, _ = run._test_examples(n)  # pylint: disable=protected-access
    model, variables = run.model, run.eval_variables
    chunk = int(model.eval_chunk_size)
    fn = jax.jit(lambda v, x, key: model.apply(v, x, key, k, method='log_likelihood'))
    t0, out = time.time(), []
    bs = 100
    for i in range(0, n, bs):
      x = images[i:i + bs]
      out.append(np.asarray(fn(variables, x, jax.random.fold_in(jax.random.key(seed), i)),
                            np.float64))
    values = np.concatenate(out)
    return {'per_example_log_px': values, 'num_examples': n, 'k': k, 'chunk': chunk,
            'log_px': float(values.mean()),
            'log_px_se': float(values.std(ddof=1) / math.sqrt(n)),
            'wall_s': round(time.time() - t0, 2), 'step': run.restored_step}
  finally:
    run.close()


def main(argv):
  del argv
  from experiments import ais_eval  # pylint: disable=g-import-not-at-top
  config, workdir = _CONFIG.value, _WORKDIR.value
  usage = common.CpuUsage()
  print(f'machine: {common.machine()}; load {common.loadavg()}')
  iwae = iwae_estimate(config, workdir, _N.value, _K.value, _SEED.value)
  print(f'IWAE k={_K.value}: {iwae["log_px"]:.3f} +- {iwae["log_px_se"]:.3f} nats '
        f'({iwae["wall_s"]} s)')
  result = ais_eval.ais_run(config, workdir, num_examples=_N.value, num_chains=_CHAINS.value,
                            num_steps=_STEPS.value, leapfrog_steps=_LEAPFROG.value,
                            seed=_SEED.value, split='test', bdmc=_BDMC.value > 0,
                            bdmc_examples=_BDMC.value or None, return_per_example=True)
  diff = np.asarray(result.pop('per_example_log_px')) - iwae.pop('per_example_log_px')
  paired = {'mean': float(diff.mean()), 'se': float(diff.std(ddof=1) / math.sqrt(len(diff))),
            'fraction_ais_higher': float((diff > 0).mean())}
  print(f'AIS {_CHAINS.value} chains x {_STEPS.value} steps x {_LEAPFROG.value} leapfrog: '
        f'{result["log_px"]:.3f} +- {result["log_px_se"]:.3f} nats ({result["ais_s"]} s, '
        f'acceptance {result["acceptance_rate"]:.3f})')
  if 'bdmc' in result:
    b = result['bdmc']
    print(f'BDMC on {b["num_examples"]} simulated: forward {b["forward"]:.3f}, reverse '
          f'{b["reverse"]:.3f}, gap {b["gap"]:.3f} +- {b["gap_se"]:.3f} ({b["wall_s"]} s)')
  print(f'AIS - IWAE per image: {paired["mean"]:.3f} +- {paired["se"]:.3f} nats; AIS higher '
        f'on {100 * paired["fraction_ais_higher"]:.1f}% of the images')
  common.emit({'iwae': iwae, 'ais': result, 'ais_minus_iwae': paired,
               'other_processes_cores': usage.others_cores(), 'load': common.loadavg()})


if __name__ == '__main__':
  app.run(main)
