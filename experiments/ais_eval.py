"""`--mode=ais`: the log-likelihood of a trained decoder-based model by annealed importance
sampling (latent/ais.py; Wu, Burda, Salakhutdinov & Grosse 2017, arXiv 1611.04273), and
optionally its BDMC check on data simulated from the model.

  python -m experiments.main --config=configs/iwae_binarized_mnist.py:vae,k=1 \
      --workdir=runs/vae_k1 --mode=ais --ais_num_examples=1000 --ais_chains=16 \
      --ais_steps=1000 --ais_leapfrog=10 [--ais_bdmc]

A model takes part through two methods called with `model.apply(..., method=...)`:
`ais_latent_dim()` -> d, the size of z ~ N(0, I_d), and `decoder_log_prob(z, image,
obs_std=None)` -> log p(x | z) [B, C] for z [B, C, d] and images [B, H, W, C] as the batch
holds them. obs_std is the standard deviation of a Gaussian observation model for models
whose generator is deterministic (a GAN, Wu et al. Sec. 3); models with their own decoder
density (the VAE) take None, or a Gaussian VAE the same obs_std around its decoder mean to
be scored as the GAN is (Wu et al.'s comparison). BDMC also needs x ~ p(x | z): a model's
`decoder_sample(rng, z, obs_std=None)` -> images from that same observation model.

The run's latest checkpoint is read as evaluation reads it (the EMA parameters where the
config evaluates with them, and the non-parameter collections), nothing in the workdir is
changed, and one JSON line is appended to <workdir>/ais.jsonl: the mean log p(x) estimate in
nats over the first num_examples examples of the split, its standard error over examples,
the settings, the acceptance rate and the wall time; with bdmc, the forward (lower) and
reverse (upper) bounds on simulated data and their gap.
"""
from __future__ import annotations

import json
import math
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from autoreg import likelihood
from experiments import train
from experiments import workdir as workdir_lib
from experiments.errors import UserError
from experiments.models import build_model
from latent import ais as ais_lib

RESULTS_NAME = 'ais.jsonl'
METHODS = ('ais_latent_dim', 'decoder_log_prob')
# Chains per compiled batch when the batch size is not given: enough rows to keep the
# matrix multiplications efficient, small enough for any decoder's activations.
ROWS_PER_BATCH = 4096


class AISError(UserError, ValueError):
  """A model AIS cannot score, or settings out of range."""


def _check_settings(num_examples, num_chains, num_steps, leapfrog_steps, obs_std,
                    batch_size, bdmc_examples):
  for name, v in (('--ais_num_examples', num_examples), ('--ais_chains', num_chains),
                  ('--ais_steps', num_steps), ('--ais_leapfrog', leapfrog_steps)):
    if int(v) != v or v < 1:
      raise AISError(f'{name}={v} must be a positive integer.')
  if obs_std is not None and not (np.isfinite(obs_std) and obs_std > 0):
    raise AISError(f'--ais_obs_std={obs_std} must be > 0 (or unset for a model with its own '
                   'decoder density).')
  if batch_size is not None and batch_size < 1:
    raise AISError(f'--ais_batch_size={batch_size} must be >= 1 (0: chosen from the chains).')
  if bdmc_examples is not None and bdmc_examples < 1:
    raise AISError(f'--ais_bdmc_examples={bdmc_examples} must be >= 1.')


def check_model(model) -> int:
  """d of the model's z ~ N(0, I_d), or an AISError naming what the model lacks."""
  missing = [m for m in METHODS if not hasattr(model, m)]
  if missing:
    raise AISError(f'{type(model).__name__} has no {" or ".join(missing)} method: AIS scores '
                   'models whose generator is z ~ N(0, I), x ~ p(x | z) through '
                   'ais_latent_dim() and decoder_log_prob(z, image, obs_std) (the VAE, the '
                   'GAN). Use --mode=eval for this model.')
  return int(model.apply({}, method='ais_latent_dim'))


def _simulator(model):
  """f(module, rng, z [N, d], obs_std) -> images x ~ p(x | z) [N, H, W, C], for BDMC."""
  # The VAE's is its decoder's own sampler (the one VAE.sample ends with) given z, or with
  # obs_std the fixed-variance Gaussian it is then scored with; the GAN's and VAE-GAN's the
  # Gaussian observation model around the generated image.
  if hasattr(model, 'decoder_sample'):
    return lambda m, rng, z, obs_std: m.decoder_sample(rng, z, obs_std=obs_std)
  raise AISError(f'--ais_bdmc simulates x ~ p(x | z) with the model\'s decoder_sample(rng, z, '
                 f'obs_std) method, which {type(model).__name__} lacks.')


def _batched(images: np.ndarray, batch_size: int):
  """Batches of exactly batch_size (the last padded with copies of its last example) and
  the number of real examples in each, so one compiled program serves them all."""
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    yield chunk, n


def _summary(values: np.ndarray) -> tuple[float, float]:
  """Mean and its standard error over examples."""
  se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float('nan')
  return float(values.mean()), se


def _run_batches(fn, variables, batches, key, label: str) -> dict[str, np.ndarray]:
  """fn(variables, *batch_arrays, key) -> AISResult over each batch; results concatenated
  and cut to the real examples."""
  out: dict[str, list] = {'log_px': [], 'acceptance_rate': [], 'step_size': []}
  t0, done = time.time(), 0
  for i, (arrays, n) in enumerate(batches):
    res = jax.device_get(fn(variables, *arrays, jax.random.fold_in(key, i)))
    for k in out:
      out[k].append(np.asarray(getattr(res, k), np.float64)[:n])
    done += n
    so_far = np.concatenate(out['log_px'])
    logging.info('%s: %d examples, mean log p(x) %.3f nats, acceptance %.3f, %.1f s', label,
                 done, so_far.mean(), np.concatenate(out['acceptance_rate']).mean(),
                 time.time() - t0)
  return {k: np.concatenate(v) for k, v in out.items()}


def ais_run(config: ml_collections.ConfigDict, workdir: str, *, num_examples: int = 1000,
            num_chains: int = 16, num_steps: int = 1000, leapfrog_steps: int = 10,
            obs_std: float | None = None, seed: int = 0, split: str | None = 'test',
            bdmc: bool = False, bdmc_examples: int | None = None,
            batch_size: int | None = None, init_step_size: float = 0.01,
            schedule: str = 'sigmoid', allow_config_change: bool = False,
            return_per_example: bool = False) -> dict:
  """AIS log p(x) of the first num_examples examples of `split` (None: the config's
  evaluation split) under the latest checkpoint in `workdir`; appends the result to
  <workdir>/ais.jsonl and returns it. With bdmc, also forward and reverse AIS on
  bdmc_examples (default min(num_examples, 100)) examples simulated from the model.
  return_per_example adds 'per_example_log_px' (a list) to the returned dict, not to the
  JSON line."""
  t_start = time.time()
  batch_size = batch_size or None
  _check_settings(num_examples, num_chains, num_steps, leapfrog_steps, obs_std, batch_size,
                  bdmc_examples)
  if schedule not in ais_lib.SCHEDULES:
    raise AISError(f'AIS schedule={schedule!r}; choose one of {ais_lib.SCHEDULES}.')
  # The model's fitness is checked before anything is loaded: the cheapest error first.
  latent_dim = check_model(build_model(config.model_name, config.model.to_dict()))
  if bdmc:
    _simulator(build_model(config.model_name, config.model.to_dict()))
  if split and split != config.data.eval_split:
    config = config.copy_and_resolve_references()
    config.data.eval_split = split
  # pylint: disable-next=protected-access
  run = train._read_only_run(config, workdir, allow_config_change, evaluate=True)
  try:
    model, variables = run.model, run.eval_variables
    images, _ = run._test_examples(num_examples)  # pylint: disable=protected-access
    if len(images) < num_examples:
      raise AISError(f'--ais_num_examples={num_examples}: the split '
                     f'{config.data.eval_split!r} has only {len(images)} examples.')
    bs = int(batch_size or max(1, min(num_examples, ROWS_PER_BATCH // num_chains)))
    settings = dict(num_chains=num_chains, num_steps=num_steps,
                    leapfrog_steps=leapfrog_steps, init_step_size=init_step_size,
                    schedule=schedule)

    def log_likelihood(variables, deq_key):
      # One dequantization key per batch: every call scores the same dequantized images.
      return lambda z, x: model.apply(variables, z, x, obs_std=obs_std,
                                      rngs={'sample': deq_key}, method='decoder_log_prob')

    @jax.jit
    def forward(variables, x, key):
      k_ais, k_deq = jax.random.split(key)
      return ais_lib.ais(log_likelihood(variables, k_deq), x, k_ais, latent_dim=latent_dim,
                         **settings)

    key = jax.random.key(seed)
    t_ais = time.time()
    fwd = _run_batches(forward, variables, (((x,), n) for x, n in _batched(images, bs)),
                       jax.random.fold_in(key, 0), 'AIS')
    ais_s = time.time() - t_ais
    mean, se = _summary(fwd['log_px'])
    if not np.isfinite(mean):
      raise AISError(f'AIS gave a non-finite log p(x) ({mean}): the decoder density is '
                     'not finite at some images (for a Gaussian observation model, a larger '
                     '--ais_obs_std).')
    result = {
        'time': time.strftime('%Y-%m-%dT%H:%M:%S'), 'step': run.restored_step,
        'model_name': config.model_name, 'split': config.data.eval_split,
        'num_examples': int(num_examples), 'log_px': mean, 'log_px_se': se, 'nll': -mean,
        'bits_per_dim': float(likelihood.bits_per_dim(-mean, run.data.num_dims)),
        **settings, 'target_accept': 0.65, 'obs_std': obs_std, 'seed': seed,
        'batch_size': bs, 'acceptance_rate': float(fwd['acceptance_rate'].mean()),
        'final_step_size': float(fwd['step_size'].mean()), 'ais_s': round(ais_s, 2),
    }
    if bdmc:
      result['bdmc'] = _bdmc(model, variables, log_likelihood, latent_dim, settings,
                             obs_std, bdmc_examples or min(num_examples, 100), bs,
                             jax.random.fold_in(key, 1))
    result['wall_s'] = round(time.time() - t_start, 2)
  finally:
    run.close()
  if jax.process_index() == 0:
    workdir_lib.append_json_line(os.path.join(workdir, RESULTS_NAME), json.dumps(result))
  if return_per_example:
    result = {**result, 'per_example_log_px': fwd['log_px'].tolist()}
  return result


def _bdmc(model, variables, log_likelihood, latent_dim, settings, obs_std, n, bs, key):
  """Forward and reverse AIS on n examples simulated from the model: z* ~ N(0, I),
  x ~ p(x | z*); z* is an exact posterior sample of its x, so reverse AIS from it is a
  stochastic upper bound and the gap bounds the forward estimate's error on this data."""
  t0 = time.time()
  k_z, k_x, k_ais = jax.random.split(key, 3)
  z_star = jax.random.normal(k_z, (n, latent_dim))
  simulate = _simulator(model)
  x_sim = jax.device_get(jax.jit(lambda v, z: model.apply(
      v, method=lambda m: simulate(m, k_x, z, obs_std)))(variables, z_star))
  z_star = np.asarray(z_star)
  bs = min(bs, n)   # no padding beyond the simulated examples

  @jax.jit
  def forward(variables, x, z, key):
    del z
    k_ais, k_deq = jax.random.split(key)
    return ais_lib.ais(log_likelihood(variables, k_deq), x, k_ais, latent_dim=latent_dim,
                       **settings)

  @jax.jit
  def reverse(variables, x, z, key):
    # The same dequantization key per batch index as forward: both bound one density.
    _, k_deq = jax.random.split(key)
    return ais_lib.reverse_ais(log_likelihood(variables, k_deq), x, z,
                               jax.random.fold_in(key, 1), **settings)

  def batches():
    for (x, n_real), (z, _) in zip(_batched(x_sim, bs), _batched(z_star, bs), strict=True):
      yield (x, z), n_real

  lower = _run_batches(forward, variables, batches(), k_ais, 'BDMC forward')
  upper = _run_batches(reverse, variables, batches(), k_ais, 'BDMC reverse')
  lo, lo_se = _summary(lower['log_px'])
  hi, hi_se = _summary(upper['log_px'])
  gap, gap_se = _summary(upper['log_px'] - lower['log_px'])
  return {'num_examples': int(n), 'forward': lo, 'forward_se': lo_se, 'reverse': hi,
          'reverse_se': hi_se, 'gap': gap, 'gap_se': gap_se,
          'acceptance_rate_forward': float(lower['acceptance_rate'].mean()),
          'acceptance_rate_reverse': float(upper['acceptance_rate'].mean()),
          'wall_s': round(time.time() - t0, 2)}
