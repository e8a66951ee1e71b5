"""The one training loop: `train_and_evaluate(config, workdir)`, plus eval and sample modes.

Every model goes through the same interface (CONVENTIONS.md): the trainer builds
`Model(**config.model)` and calls `model.apply(..., batch, train=..., method='loss')`, which
returns `(objective, metrics)`; per-example metrics are arrays of shape [batch] and 'nll'
(nats per example) is turned into bits/dim by `autoreg.likelihood`, over the data's
dimensions or, where examples differ in length, over a per-example 'num_dims' metric. Models that
can generate have `sample(rng, shape)`.

Data parallelism is `jax.jit` over a 1-D `Mesh` whose axis 'data' shards the batch; the
train state is replicated. Per-step randomness is `fold_in(rng, step)`, the data position is
checkpointed, and XLA on CPU is deterministic, so a resumed run is bit-identical to an
uninterrupted one.

Variables other than 'params' that `init` returns (batch-norm running averages in
'batch_stats', fixed constants such as an LU 1x1 convolution's permutation in 'constants')
live in `TrainState.model_state` and go to every apply: the train step lets the model update
'batch_stats' (`mutable=['batch_stats']`), evaluation and sampling use them read-only, with
the EMA parameters where those are evaluated. Models without such collections have an empty
model_state and run exactly as before.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

import flax
import flax.traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from autoreg import likelihood
from experiments import audio, host_prng, images, input_pipeline, latent_pictures, validation, video
from experiments import workdir as workdir_lib
from experiments.checkpointing import Checkpointer, CheckpointError
from experiments.errors import UserError, WorkdirError
from experiments.models import build_model
from experiments.writers import MetricWriter


class NaNLossError(UserError, FloatingPointError):
  """The training loss stopped being finite."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array   # raw uint32 key data, so the checkpoint holds plain arrays
  # Every non-'params' collection of `init` (e.g. 'batch_stats', 'constants'); {} for most.
  model_state: Any = flax.struct.field(default_factory=dict)


def model_variables(params, model_state) -> dict:
  """The variables dict for `model.apply`: params plus any non-parameter collections."""
  return {'params': params, **(model_state or {})}


# --------------------------------------------------------------------------- optimizer

SCHEDULES = ('constant', 'cosine', 'piecewise')
OPTIMIZER_KEYS = ('name', 'learning_rate', 'warmup_steps', 'schedule', 'final_fraction', 'b1',
                  'b2', 'eps', 'weight_decay', 'grad_clip_norm', 'boundaries', 'factors')


def _piecewise_pieces(cfg) -> tuple[list[int], list[float]]:
  """config.optimizer.boundaries and .factors, checked: piece i runs from boundaries[i-1]
  (step 0 for i = 0) up to, not including, boundaries[i] at learning_rate * factors[i]."""
  boundaries, factors = tuple(cfg.get('boundaries') or ()), tuple(cfg.get('factors') or ())
  if len(factors) != len(boundaries) + 1:
    raise ValueError(f"schedule='piecewise' needs one more config.optimizer.factors entry "
                     f'than boundaries (one learning-rate factor per piece); got '
                     f'{len(boundaries)} boundaries {boundaries} and {len(factors)} factors.')
  if any(b != int(b) for b in boundaries) or any(
      b <= a for a, b in zip((0,) + boundaries, boundaries, strict=False)):
    raise ValueError(f'config.optimizer.boundaries must be increasing positive integer steps, '
                     f'got {boundaries}.')
  if not all(np.isfinite(f) and f > 0 for f in factors):
    raise ValueError(f'config.optimizer.factors must be positive, got {factors}.')
  return [int(b) for b in boundaries], [float(f) for f in factors]


def create_learning_rate_schedule(cfg, num_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then 'constant', 'cosine' decay to final_fraction * lr, or
  'piecewise' constant: learning_rate * factors[i] on piece i of config.optimizer.boundaries
  (absolute steps; the warmup, which must end by the first boundary, ramps to the first
  piece's rate). The IWAE paper's stages: configs.common.iwae_stage_schedule."""
  unknown = sorted(set(cfg.keys()) - set(OPTIMIZER_KEYS)) if hasattr(cfg, 'keys') else []
  if unknown:
    raise ValueError(f'Unknown config.optimizer key(s) {unknown}; the trainer reads '
                     f'{", ".join(OPTIMIZER_KEYS)}.')
  lr, warmup = cfg.learning_rate, cfg.warmup_steps
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f'config.optimizer.schedule must be one of {SCHEDULES}, got '
                     f'{cfg.schedule!r}')
  if cfg.schedule != 'piecewise' and (cfg.get('boundaries') or cfg.get('factors')):
    raise ValueError(f"config.optimizer.boundaries and .factors belong to schedule="
                     f"'piecewise'; the schedule is {cfg.schedule!r}. Set "
                     f"--config.optimizer.schedule=piecewise or clear them.")
  if cfg.schedule == 'piecewise':
    boundaries, factors = _piecewise_pieces(cfg)
    if boundaries and warmup > boundaries[0]:
      raise ValueError(f'config.optimizer.warmup_steps={warmup} must end by the first '
                       f'piecewise boundary, step {boundaries[0]}.')
    # Constant pieces ignore the step offset join_schedules gives them, so the boundaries
    # stay absolute steps with or without a warmup in front.
    pieces = [optax.constant_schedule(lr * f) for f in factors]
    if warmup > 0:
      pieces, boundaries = [optax.linear_schedule(0.0, lr * factors[0], warmup)] + pieces, [
          warmup] + boundaries
    return optax.join_schedules(pieces, boundaries) if boundaries else pieces[0]
  if cfg.schedule == 'constant':
    decay = optax.constant_schedule(lr)
  else:
    decay = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup), alpha=cfg.final_fraction)
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def create_optimizer(cfg, num_steps: int, schedule: optax.Schedule | None = None):
  """(optimizer, schedule) from config.optimizer; `schedule` overrides the config's (a
  player's schedule in its own update count)."""
  schedule = schedule or create_learning_rate_schedule(cfg, num_steps)
  if cfg.name == 'adam':
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == 'adamw':
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  elif cfg.name == 'rmsprop':
    # The squared-gradient average decays with b2 (optax's decay); eps as configured.
    opt = optax.rmsprop(schedule, decay=cfg.b2, eps=cfg.eps)
  else:
    raise ValueError(f"config.optimizer.name must be 'adam', 'adamw' or 'rmsprop', got "
                     f'{cfg.name!r}')
  if cfg.grad_clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
  # One flat vector for the whole optimizer (optax.flatten): the clipping norm, Adam's
  # moments and the update are a few kernels over all parameters instead of several per
  # parameter array (issue 18, 2-core CPU: the train step's HLO 8,881 -> 5,974 lines for
  # Real NVP `:cpu`, 8,750 -> 3,791 for the VPN, whose compile fell 8.1 -> 6.7 s, medians
  # of 3; steps the same or up to 15% faster). The optimizer state holds the moments as
  # 1-D vectors (in jax.tree order of the parameters); checkpoints of the per-array layout
  # are converted on restore (Checkpointer.restore).
  return optax.flatten(opt), schedule


# --------------------------------------------------------------------------- players
# Models of several players (GAN: generator and discriminator; VAE-GAN: encoder, decoder and
# discriminator) declare `players()`, the top-level parameter subtrees, and `update_phases()`,
# the ordered (phase, players) updates of one train step. Each player gets its own instance of
# the configured optimizer: one Adam over all of them would move a player whose gradient is
# zero in a phase (its moments still decay into an update), and the two players' updates
# would share bias-correction counts. optax.multi_transform keys transformations by label, but
# every call updates every label's state, so a phase that must leave one player's optimizer
# untouched needs this small wrapper instead.


def model_players(model) -> tuple[str, ...] | None:
  return tuple(model.players()) if hasattr(model, 'players') else None


def model_phases(model) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
  if not hasattr(model, 'update_phases'):
    return None
  return tuple((name, tuple(players)) for name, players in model.update_phases())


def player_updates_per_step(model) -> dict[str, int]:
  """How many times each player is updated in one train step (its optimizer's count runs
  that much faster than the step)."""
  counts = {p: 0 for p in model_players(model)}
  for _, players in model_phases(model):
    for p in players:
      counts[p] += 1
  return counts


def per_player_optimizer(txs: dict) -> optax.GradientTransformationExtraArgs:
  """An optimizer per top-level parameter subtree (player). update(..., players=names)
  moves only those players' parameters and optimizer states; the others get zero updates
  and keep their states exactly."""

  def init(params):
    if set(params) != set(txs):
      raise ValueError(f'The model declares players {sorted(txs)}, but its parameters have '
                       f'the top-level subtrees {sorted(params)}.')
    return {p: tx.init(params[p]) for p, tx in txs.items()}

  def update(grads, state, params=None, *, players=None, **extra):
    del extra
    players = tuple(txs) if players is None else players
    updates, new_state = {}, {}
    for p, tx in txs.items():
      if p in players:
        updates[p], new_state[p] = tx.update(grads[p], state[p],
                                             None if params is None else params[p])
      else:
        updates[p] = jax.tree.map(jnp.zeros_like, grads[p])
        new_state[p] = state[p]
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init, update)


def create_model_optimizer(cfg, num_steps: int, model):
  """create_optimizer, or for a multi-player model one optimizer per player, each on the
  configured schedule read in train steps (a player updated k times per step sees
  schedule(count // k))."""
  tx, schedule = create_optimizer(cfg, num_steps)
  if model_players(model) is None:
    return tx, schedule
  counts = player_updates_per_step(model)
  txs = {}
  for p, k in counts.items():
    if k == 0:
      raise ValueError(f'{type(model).__name__}.update_phases() never updates player {p!r}.')
    player_schedule = schedule if k == 1 else (lambda count, k=k: schedule(count // k))
    txs[p] = create_optimizer(cfg, num_steps, player_schedule)[0]
  return per_player_optimizer(txs), schedule


def phase_rngs(rng, index: int) -> dict:
  """The rngs of phase `index` of a multi-phase train step (each phase draws fresh noise,
  as each of Algorithm 1's steps samples a new minibatch of z)."""
  k_sample, k_dropout = jax.random.split(jax.random.fold_in(rng, index))
  return {'sample': k_sample, 'dropout': k_dropout}


# --------------------------------------------------------------------------- devices

def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all (or the given) devices; axis 'data' shards the batch."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def to_global_batch(batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's local batch into one global array sharded over 'data'."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


# --------------------------------------------------------------------------- state and steps

def init_train_state(model, tx, example_batch: dict, seed: int, mesh: Mesh) -> TrainState:
  """Initializes parameters from one batch, replicated over the mesh."""

  def init(batch):
    key = jax.random.key(seed)
    k_params, k_sample, k_train = jax.random.split(key, 3)
    variables = model.init({'params': k_params, 'sample': k_sample, 'dropout': k_sample},
                           batch, train=False, method='loss')
    params = variables['params']
    model_state = {k: v for k, v in variables.items() if k != 'params'}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      ema_params=params, rng=jax.random.key_data(k_train),
                      model_state=model_state)

  batch = {k: jnp.asarray(v) for k, v in example_batch.items()}
  # On CPU the init's random bits are hashed on the host (experiments/host_prng.py): the
  # same values, without XLA compiling a threefry loop per parameter. The host rule only
  # takes programs lowered for one device (every user's default run); on several it keeps
  # jax's lowering itself, since a callback on one device while the others wait in the
  # init's collectives (Glow's data-dependent actnorm) makes XLA:CPU abort at its 40 s
  # rendezvous timeout.
  with host_prng.threefry_on_host(enabled=_on_cpu(mesh)):
    lowered = jax.jit(init, out_shardings=replicated(mesh)).lower(batch)
  return lowered.compile(init_compiler_options(mesh))(batch)


# The init runs once, so on CPU its compile dominates: XLA's backend level 1 compiles it in
# 0.6x the time (2026-12-05, 2 CPUs, quiet; setup default -> level 1: realnvp_mnist 6.06 ->
# 4.62 s, glow_mnist:cpu 4.12 -> 2.79 s, gated_pixelcnn_mnist 3.74 -> 3.18 s). Level 0
# compiled faster still but ran Real NVP's init 2.7x slower (1.48 -> 4.08 s), a net loss.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 1}


def init_compiler_options(mesh: Mesh) -> dict | None:
  """XLA options for the one-off init: INIT_COMPILER_OPTIONS on CPU meshes, defaults elsewhere."""
  return dict(INIT_COMPILER_OPTIONS) if _on_cpu(mesh) else None


def _batch_metrics(metrics: dict, num_dims: int) -> dict:
  """Batch means; bits/dim from 'nll' over the data's dimensions, or over the model's own
  per-example count 'num_dims' (variable-length audio and text)."""
  out = {k: jnp.mean(v) for k, v in metrics.items()}
  if 'nll' in out:
    dims = out.pop('num_dims') if 'num_dims' in out else num_dims
    out['bits_per_dim'] = likelihood.bits_per_dim(out['nll'], dims)
  return out


def _takes_step(model) -> bool:
  import inspect  # pylint: disable=g-import-not-at-top
  loss = getattr(type(model), 'loss', None)   # benchmarks' stand-ins apply() without one
  return loss is not None and 'step' in inspect.signature(loss).parameters


def make_train_step(model, tx, schedule, *, ema_decay: float, num_dims: int, mesh: Mesh):
  """train_step(state, batch) -> (state, metrics), jitted once, donating the old state."""
  return jax.jit(_train_step_fn(model, tx, schedule, ema_decay=ema_decay, num_dims=num_dims),
                 in_shardings=(replicated(mesh), batch_sharded(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0,
                 compiler_options=compiler_options(mesh))


# --------------------------------------------------------------------------- metric windows
# The loop keeps each step's metrics on the device, summed over the steps since the last
# log line (a "window"), and fetches them only when it logs, checkpoints, evaluates or
# samples: a host fetch every step makes the host wait for every step to finish before it
# dispatches the next one, and an accelerator idles behind Python (big_vision fetches only
# when it logs). The window also keeps the first non-finite step and its metrics, so the
# run still stops naming the step that broke, before any checkpoint of a later step.


def empty_window(metric_shapes: dict) -> dict:
  """A window with no steps: zero sums of each (scalar) metric, no non-finite step."""
  # Distinct buffers for every leaf: the window is donated, and one buffer donated twice
  # crashes the step.
  return {'sums': {k: jnp.zeros((), jnp.float32) for k in metric_shapes},
          'count': jnp.zeros((), jnp.int32), 'bad_step': jnp.full((), -1, jnp.int32),
          'bad': {k: jnp.zeros((), jnp.float32) for k in metric_shapes}}


def add_to_window(window: dict, metrics: dict, step) -> dict:
  """The window with one more step's metrics; the first step whose metrics are not all
  finite is kept in 'bad_step' (its metrics in 'bad')."""
  metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
  finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
  first = (window['bad_step'] < 0) & ~finite
  return {'sums': {k: window['sums'][k] + metrics[k] for k in window['sums']},
          'count': window['count'] + 1,
          'bad_step': jnp.where(first, jnp.asarray(step, jnp.int32), window['bad_step']),
          'bad': {k: jnp.where(first, metrics[k], window['bad'][k]) for k in window['bad']}}


def window_means(fetched: dict) -> dict[str, float]:
  """The mean of each metric over a fetched (host) window's steps."""
  n = max(int(fetched['count']), 1)
  return {k: float(v) / n for k, v in fetched['sums'].items()}


class WindowTrainStep:
  """window_step(state, batch, window) -> (state, window): the train step with its metrics
  added to the on-device window (add_to_window), jitted once, donating state and window.
  `init_window(state, batch)` gives the empty window of this step's metrics."""

  def __init__(self, model, tx, schedule, *, ema_decay: float, num_dims: int, mesh: Mesh):
    self._fn = _train_step_fn(model, tx, schedule, ema_decay=ema_decay, num_dims=num_dims)
    self._mesh = mesh

    def window_step(state, batch, window):
      new_state, metrics = self._fn(state, batch)
      return new_state, add_to_window(window, metrics, state.step + 1)

    self._step = jax.jit(
        window_step, in_shardings=(replicated(mesh), batch_sharded(mesh), replicated(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=(0, 2),
        compiler_options=compiler_options(mesh))

  def init_window(self, state, batch) -> dict:
    metrics = jax.eval_shape(self._fn, state, batch)[1]
    return jax.device_put(empty_window(metrics), replicated(self._mesh))

  def __call__(self, state, batch, window):
    return self._step(state, batch, window)


def _norm(tree):
  """The global norm of a tree, over its concatenated leaves: XLA finds the same
  concatenation in optax.flatten's update and computes it once, where optax.tree.norm
  would reduce every leaf on its own."""
  leaves = [jnp.ravel(x) for x in jax.tree.leaves(tree)]
  return jnp.linalg.norm(jnp.concatenate(leaves)) if leaves else jnp.zeros(())


def _train_step_fn(model, tx, schedule, *, ema_decay: float, num_dims: int):
  """The pure train step: (state, batch) -> (state, per-step metric means)."""

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    k_sample, k_dropout = jax.random.split(rng)
    rngs = {'sample': k_sample, 'dropout': k_dropout}
    model_state = state.model_state
    # Batch norm trains on batch statistics and moves its running averages; a recurrent
    # model carries its state from one batch to the next ('carry': truncated BPTT); NVIL's
    # running averages of its learning signal move ('running').
    mutable = [c for c in ('batch_stats', 'carry', 'running') if c in model_state] or False

    # Models whose objective depends on the training step (scheduled sampling's decay)
    # take it as loss(..., step=).
    extra = {'step': state.step} if _takes_step(model) else {}
    phases = model_phases(model)

    def loss_fn(params, model_state, rngs, phase_kw):
      out = model.apply(model_variables(params, model_state), batch, train=True, rngs=rngs,
                        method='loss', mutable=mutable, **extra, **phase_kw)
      (objective, metrics), moved = out if mutable else (out, {})
      return objective, (metrics, moved)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if phases is None:
      (objective, (metrics, moved)), grads = grad_fn(state.params, model_state, rngs, {})
      model_state = {**model_state, **moved}
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      norms = {}
    else:
      # Several players: each phase's loss moves its players only, the next phase sees
      # the updated parameters (Goodfellow et al. 2014, Algorithm 1).
      params, opt_state, objective, metrics, norms = state.params, state.opt_state, 0.0, {}, {}
      all_grads, all_updates = [], []
      for i, (phase, players) in enumerate(phases):
        (obj, (m, moved)), grads = grad_fn(params, model_state, phase_rngs(rng, i),
                                           {'phase': phase})
        model_state = {**model_state, **moved}
        updates, opt_state = tx.update(grads, opt_state, params, players=players)
        params = optax.apply_updates(params, updates)
        objective = objective + obj
        metrics.update(m)
        for p in players:
          norms[f'grad_norm_{p}'] = optax.tree.norm(grads[p])
        all_grads.append({p: grads[p] for p in players})
        all_updates.append({p: updates[p] for p in players})
      grads, updates = all_grads, all_updates
    # Averaging warms up like TF's ExponentialMovingAverage(num_updates=step), so short
    # runs are not evaluated with parameters still close to their initialization.
    t = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    out = _batch_metrics(metrics, num_dims)
    # A non-finite update (not only a non-finite loss) must stop the run before the
    # broken parameters reach a checkpoint.
    out.update(loss=objective, grad_norm=_norm(grads), update_norm=_norm(updates),
               learning_rate=schedule(state.step), **norms)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema, model_state=model_state)
    return new_state, out

  return train_step


# XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default; its weight-gradient
# convolutions ran 2-3x slower than XLA's own emitters here, and the gated PixelCNN train
# step got 1.46x faster without them (benchmarks/pixelcnn_throughput.py, --variant
# noynnconv). Matmuls and reductions stay with YNNPACK.
CPU_COMPILER_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type':
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


def compiler_options(mesh: Mesh) -> dict | None:
  """CPU_COMPILER_OPTIONS on CPU meshes; None (XLA's defaults) on GPU and TPU."""
  return CPU_COMPILER_OPTIONS if _on_cpu(mesh) else None


def _on_cpu(mesh: Mesh) -> bool:
  return mesh.devices.flat[0].platform == 'cpu'


def make_eval_step(model, mesh: Mesh, seed: int):
  """eval_step(params, batch, model_state) -> sums over real examples of each per-example
  metric; model_state (non-parameter collections, often {}) is used read-only."""

  def eval_step(params, batch, model_state, index=0):
    batch = dict(batch)
    weight = batch.pop('example_mask').astype(jnp.float32)
    # The batch index in the key: each block of test examples gets its own dequantization
    # noise and importance samples, and the same ones in every run.
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0x5EED), index)
    _, metrics = model.apply(model_variables(params, model_state), batch, train=False,
                             rngs={'sample': rng, 'dropout': rng}, method='loss')
    sums = {}
    for k, v in metrics.items():
      v = jnp.asarray(v, jnp.float32)
      sums[k] = jnp.sum(v * weight) if v.ndim else v * jnp.sum(weight)
    sums['count'] = jnp.sum(weight)
    return sums

  return jax.jit(eval_step,
                 in_shardings=(replicated(mesh), batch_sharded(mesh), replicated(mesh),
                               replicated(mesh)),
                 out_shardings=replicated(mesh), compiler_options=compiler_options(mesh))


def _reset_batch_stats(batch_stats):
  """Running statistics as at initialization: bias-corrected ones (with a 'count', the
  flow bijectors') restart their count, so the first recomputed batch replaces them; plain
  flax BatchNorm ones (mean, var) go back to (0, 1)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(batch_stats))
  has_count = {path[:-1] for path in flat if path[-1] == 'count'}
  out = {}
  for path, v in flat.items():
    if path[-1] == 'count':
      out[path] = jnp.zeros_like(v)
    elif path[:-1] not in has_count and path[-1] == 'var':
      out[path] = jnp.ones_like(v)
    elif path[:-1] not in has_count and path[-1] == 'mean':
      out[path] = jnp.zeros_like(v)
    else:
      out[path] = v
  return flax.traverse_util.unflatten_dict(out)


def make_batch_stats_step(model, mesh: Mesh, seed: int):
  """step(params, model_state, batch, index) -> model_state with the running statistics
  moved by one training batch run through `params` (train mode, no parameter update)."""

  def step(params, model_state, batch, index):
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0xBA7C), index)
    _, moved = model.apply(model_variables(params, model_state), batch, train=True,
                           rngs={'sample': rng, 'dropout': rng}, method='loss',
                           mutable=['batch_stats'])
    return {**model_state, **moved}

  return jax.jit(step, in_shardings=(replicated(mesh), replicated(mesh), batch_sharded(mesh),
                                     replicated(mesh)),
                 out_shardings=replicated(mesh), compiler_options=compiler_options(mesh))


def recompute_batch_stats(stats_step, params, model_state, data: input_pipeline.Datasets,
                          mesh: Mesh, num_batches: int) -> dict:
  """Batch-norm running statistics gathered afresh for `params` (Real NVP, MAF evaluated
  with EMA weights: the trained running averages belong to the raw weights). The batches
  come from the training iterator, whose position is put back afterwards, so a resumed
  run sees the same data as an uninterrupted one."""
  if num_batches < 1:
    raise ValueError(f'config.train.batch_stats_batches={num_batches} must be >= 1 to '
                     "recompute batch statistics (or set config.train.eval_batch_stats='current').")
  position = data.train_iter.get_state()
  state = {**model_state, 'batch_stats': _reset_batch_stats(model_state['batch_stats'])}
  try:
    for index in range(num_batches):
      batch = to_global_batch(next(data.train_iter), mesh)
      state = stats_step(params, state, batch, jnp.asarray(index, jnp.int32))
  finally:
    data.train_iter.set_state(position)
  return state


def evaluate(eval_step, params, data: input_pipeline.Datasets, mesh: Mesh,
             model_state=None) -> dict:
  """Metrics averaged over every example of the evaluation split; nll in nats/example."""
  totals: dict[str, float] = {}
  model_state = model_state or {}
  for index, batch in enumerate(data.eval_batches()):
    sums = jax.device_get(eval_step(params, to_global_batch(batch, mesh), model_state,
                                    jnp.asarray(index, jnp.int32)))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  count = totals.pop('count')
  out = {k: v / count for k, v in totals.items()}
  if 'nll' in out:
    # Total nats over total dimensions: exact for variable-length examples too.
    dims = out.pop('num_dims') if 'num_dims' in out else data.num_dims
    out['bits_per_dim'] = float(likelihood.bits_per_dim(out['nll'], dims))
  out['num_examples'] = int(count)
  return out


# --------------------------------------------------------------------------- the run

def _format_time(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def _check_finite(metrics: dict, step: int, ckpt: Checkpointer) -> None:
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  if bad:
    ckpt.wait()
    last = ckpt.latest_step()
    kept = (f'The last good checkpoint (step {last}) in {ckpt.directory} is kept; rerunning '
            'resumes from it.' if last is not None else 'No checkpoint had been written yet.')
    raise NaNLossError(
        f'Training stopped at step {step}: {", ".join(f"{k}={v}" for k, v in bad.items())}. '
        f'{kept} Try a lower --config.optimizer.learning_rate (it may change on resume), '
        'or check the data for bad values. Gradient clipping '
        '(--config.optimizer.grad_clip_norm) may change its threshold on resume; switching '
        'it on or off changes the optimizer state and needs --reset_optimizer.')


def _check_window(fetched: dict, ckpt: Checkpointer) -> None:
  """Stops the run if any step of a fetched window was not finite, naming the first."""
  if int(fetched['bad_step']) >= 0:
    _check_finite({k: float(v) for k, v in fetched['bad'].items()}, int(fetched['bad_step']),
                  ckpt)


def sampler_method(model, sampler: str) -> str:
  """The model method a config.sample.sampler names: 'auto' is the cached sampler where the
  model has one (it draws exactly what the naive one draws, in a fraction of the time),
  else the naive one."""
  if sampler not in ('auto', 'naive', 'cached'):
    raise ValueError(f"config.sample.sampler must be 'auto', 'naive' or 'cached', got "
                     f'{sampler!r}.')
  if sampler == 'auto':
    cached = hasattr(model, 'sample_cached') and getattr(model, 'has_cached_sampler', True)
    sampler = 'cached' if cached else 'naive'
  method = {'naive': 'sample', 'cached': 'sample_cached'}[sampler]
  if not hasattr(model, method):
    raise ValueError(f'config.sample.sampler={sampler!r}: {type(model).__name__} '
                     f"has no {method} method; use 'auto' or 'naive'.")
  return method


class Run:
  """What every mode needs: data, model, mesh, state (restored if the workdir has one)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, restore: bool,
               read_only: bool = False, reset_optimizer: bool = False,
               optimizer_changes: str = '', restore_data: bool = True):
    """restore: resume from the newest checkpoint that restores (newer corrupt ones are
    moved aside); read_only (eval and sample modes): write nothing to the workdir, and
    need a checkpoint. reset_optimizer: restore all but the optimizer state, which starts
    afresh. restore_data=False: the data position starts afresh (another data config)."""
    validation.validate_config(config)
    self.config, self.workdir, self.read_only = config, workdir, read_only
    # Sample mode writes into a folder of its own, so no picture training wrote (or an
    # earlier sample run wrote) is replaced.
    self.samples_dir = os.path.join(workdir, 'samples')
    if read_only:
      self.samples_dir = os.path.join(
          workdir, 'samples', 'sample_mode_' + time.strftime('%Y%m%d-%H%M%S'))
      n = 1
      while os.path.exists(self.samples_dir + ('' if n == 1 else f'_{n}')):
        n += 1
      self.samples_dir += '' if n == 1 else f'_{n}'
    self.ckpt = None
    self.restored_step = None
    checkpoints = os.path.join(workdir, 'checkpoints')
    if read_only and not (os.path.isdir(checkpoints) and any(
        name.isdigit() for name in os.listdir(checkpoints))):
      raise CheckpointError(f'No checkpoint in {os.path.abspath(checkpoints)}: train first '
                            '(--mode=train), or check --workdir.')
    self.model = build_model(config.model_name, config.model.to_dict())
    validation.check_model_data(config, self.model, input_pipeline.data_info(config.data))
    self.data = input_pipeline.create_datasets(
        config.data, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), eval_batch_multiple=jax.local_device_count())
    self.mesh = make_mesh()
    n_dev = self.mesh.devices.size
    if config.data.batch_size % n_dev:
      raise ValueError(f'config.data.batch_size={config.data.batch_size} must be a multiple of '
                       f'the {n_dev} devices it is sharded over.')
    self.tx, self.schedule = create_model_optimizer(config.optimizer, config.train.num_steps,
                                                    self.model)
    example = next(iter(self.data.eval_batches()))
    example.pop('example_mask')
    n_init = config.train.get('init_examples', 0)   # validated: an int >= 0
    if n_init:
      example = {k: v[:n_init] for k, v in example.items()}
    self.state = init_train_state(self.model, self.tx, example, config.seed, self.mesh)
    self._samplers: dict = {}
    self._stats_step = None
    self._eval_state, self._eval_state_step = None, None
    self.ckpt = Checkpointer(workdir, keep=config.train.keep_checkpoints, read_only=read_only)
    try:
      if restore and self.ckpt.latest_step() is not None:
        self._restore(reset_optimizer, optimizer_changes, restore_data)
    except BaseException:
      self.close()   # so orbax's threads stop before the error is reported
      raise
    self.eval_step = make_eval_step(self.model, self.mesh, config.seed)

  def _restore(self, reset_optimizer: bool, optimizer_changes: str, restore_data: bool):
    self.state, data_state, step, notes = self.ckpt.restore_latest(
        self.state, move_aside=not self.read_only, reset_optimizer=reset_optimizer,
        optimizer_changes=optimizer_changes)
    for note in notes:
      logging.warning('%s', note)
    if self.ckpt.optimizer_was_flattened:
      logging.info("Checkpoint %d's optimizer state has one moment array per parameter (the "
                   'layout before optax.flatten); its moments were concatenated into the '
                   "flat layout, values unchanged.", step)
    if self.ckpt.optimizer_was_reset:
      logging.warning('The optimizer starts afresh from the parameters of checkpoint %d '
                      '(--reset_optimizer).', step)
    elif reset_optimizer:
      logging.warning("--reset_optimizer: checkpoint %d's optimizer state fits the config's "
                      'optimizer, so it is restored, not reset.', step)
    self.state = jax.device_put(self.state, replicated(self.mesh))
    if data_state.get('iterator') and restore_data:
      self.data.train_iter.set_state(data_state['iterator'])
    elif not restore_data:
      logging.warning('The data config changed: the training data starts from the '
                      'beginning of its order, not from the checkpoint\'s position.')
    self.restored_step = int(self.state.step)

  def close(self) -> None:
    """Waits for checkpoint writes and closes the manager (also after an error)."""
    if self.ckpt is not None:
      self.ckpt.close()
      self.ckpt = None

  @property
  def eval_params(self):
    return self.state.ema_params if self.config.train.eval_with_ema else self.state.params

  @property
  def eval_model_state(self) -> dict:
    """The non-parameter collections that go with eval_params. Batch-norm statistics
    gathered in training belong to the raw weights; with EMA weights and
    train.eval_batch_stats='recompute' they are gathered afresh for the EMA weights over
    train.batch_stats_batches training batches (once per step)."""
    ms = self.state.model_state
    tc = self.config.train
    mode = tc.get('eval_batch_stats', 'current')
    if mode not in ('recompute', 'current'):
      raise ValueError(f"config.train.eval_batch_stats must be 'recompute' or 'current', got "
                       f'{mode!r}.')
    if 'batch_stats' not in ms or not tc.eval_with_ema or mode == 'current':
      return ms
    step = int(self.state.step)
    if self._eval_state_step != step:
      if self._stats_step is None:
        self._stats_step = make_batch_stats_step(self.model, self.mesh, self.config.seed)
      self._eval_state = recompute_batch_stats(
          self._stats_step, self.eval_params, ms, self.data, self.mesh,
          tc.get('batch_stats_batches', 100))
      self._eval_state_step = step
    return self._eval_state

  @property
  def eval_variables(self) -> dict:
    """{'params': eval_params, **eval_model_state}: the EMA (or current) parameters with
    their non-parameter collections, for any apply outside the train step."""
    return model_variables(self.eval_params, self.eval_model_state)

  def evaluate(self) -> dict:
    return evaluate(self.eval_step, self.eval_params, self.data, self.mesh,
                    self.eval_model_state)

  def _sample(self, rng, shape, sampler: str | None = None, **kwargs):
    """Samples with the configured sampler (see sampler_method) and temperature."""
    sc = self.config.sample
    method = sampler_method(self.model, sampler or sc.sampler)
    # One compiled sampler per (method, shape), reused by every sample_every step.
    key = (method, tuple(shape))
    if key not in self._samplers:
      # With the train and eval steps' XLA options: on CPU the naive PixelCNN sampled 2.15x
      # faster, Real NVP 1.17x, the paper-width Glow 1.05x, the small Glow :cpu 0.75x
      # (benchmarks/sampler_options.py, benchmarks/flow_throughput.py --sample).
      self._samplers[key] = jax.jit(lambda variables, rng, kw: self.model.apply(
          variables, rng, shape, temperature=sc.temperature, method=method, **kw),
          compiler_options=compiler_options(self.mesh))
    return jax.device_get(self._samplers[key](self.eval_variables, rng, kwargs))

  def write_samples(self, step: int, writer: MetricWriter | None = None) -> str | None:
    """Writes samples a person opens: a PNG grid (one row per class for class-conditional
    image models), WAV files for audio, a text file for text. Returns the path."""
    writer_of_kind = {'audio': self._write_audio, 'text': self._write_text,
                      'transduction': self._write_transductions, 'video': self._write_video}
    if self.data.info.kind in writer_of_kind:
      return writer_of_kind[self.data.info.kind](step)
    if not hasattr(self.model, 'sample'):
      return None
    n = self.config.train.num_samples
    rng = jax.random.fold_in(jax.random.key(self.config.seed), step + 1)
    kwargs, ncols = {}, None
    num_classes = getattr(self.model, 'num_classes', 0)
    if num_classes:
      per_class = max(1, n // num_classes)
      kwargs['label'] = jnp.repeat(jnp.arange(num_classes), per_class)
      n, ncols = num_classes * per_class, per_class
    samples = self._sample(rng, (n, *self.data.example_shape), **kwargs)
    path = os.path.join(self.samples_dir, f'step_{step}.png')
    if jax.process_index() == 0:
      grid = images.save_grid(path, samples, self.data.info.num_levels, ncols=ncols)
      if writer is not None:
        writer.write_image(step, 'samples', grid)
    return path

  def _write_video(self, step: int) -> str:
    """samples/step_N/sequence_I.{png,gif}: for the first num_samples evaluation
    sequences, the ground truth and config.sample.num_completions samples of the predicted
    frames given the context frames (experiments/video.py)."""
    batch = next(iter(self.data.eval_batches()))
    n = max(1, min(self.config.train.num_samples, int(batch['example_mask'].sum())))
    truth = np.asarray(batch['video'][:n])
    k = self.model.context_frames
    rng = jax.random.fold_in(jax.random.key(self.config.seed), step + 1)
    draws = max(1, self.config.sample.get('num_completions', 1))
    samples = np.stack([self._sample(jax.random.fold_in(rng, s), truth.shape,
                                     context=jnp.asarray(truth[:, :k]))
                        for s in range(draws)]).astype(np.uint8)
    directory = os.path.join(self.samples_dir, f'step_{step}')
    if jax.process_index() == 0:
      video.write_video_samples(directory, truth, samples, k)
    return directory

  def _write_audio(self, step: int) -> str:
    """WAV files (16-bit, the data's sample rate) for the configured speaker and digits:
    samples/step_N/speaker_S_digit_D_I.wav. config.sample.digit = -1 gives one per digit."""
    sc, info = self.config.sample, self.data.info
    digits = list(range(info.num_classes)) if sc.digit < 0 else [sc.digit]
    if not 0 <= sc.speaker < max(info.num_speakers, 1):
      raise ValueError(f'config.sample.speaker={sc.speaker} is not one of the '
                       f'{info.num_speakers} speakers (0-{info.num_speakers - 1}).')
    per = 1 if sc.digit < 0 else self.config.train.num_samples
    labels = jnp.repeat(jnp.asarray(digits), per)
    kwargs = {}
    if getattr(self.model, 'num_classes', 0):
      kwargs['label'] = labels
    if getattr(self.model, 'num_speakers', 0):
      kwargs['speaker'] = jnp.full(labels.shape, sc.speaker)
    length = int(round(sc.seconds * info.sample_rate))
    rng = jax.random.fold_in(jax.random.key(self.config.seed), step + 1)
    codes = self._sample(rng, (len(labels), length), **kwargs)
    waves = np.asarray(self.model.decode_audio(jnp.asarray(codes)))
    directory = os.path.join(self.samples_dir, f'step_{step}')
    if jax.process_index() == 0:
      os.makedirs(directory, exist_ok=True)
      for i, (d, w) in enumerate(zip(np.asarray(labels), waves, strict=True)):
        audio.write_wav(os.path.join(directory, f'speaker_{sc.speaker}_digit_{d}_{i}.wav'),
                        w, info.sample_rate)
    return directory

  def _write_text(self, step: int) -> str:
    """samples/step_N.txt: num_samples continuations of config.sample.prompt."""
    sc, info = self.config.sample, self.data.info
    index = {ch: i for i, ch in enumerate(info.vocab)}
    unknown = sorted({ch for ch in sc.prompt if ch not in index})
    if unknown or not sc.prompt:
      raise ValueError(f'config.sample.prompt={sc.prompt!r} must be non-empty and use only '
                       f'characters of the data set (not {unknown}).')
    n = self.config.train.num_samples
    prompt = jnp.tile(jnp.asarray([index[ch] for ch in sc.prompt], jnp.int32), (n, 1))
    rng = jax.random.fold_in(jax.random.key(self.config.seed), step + 1)
    fn = jax.jit(lambda variables, rng, prompt: self.model.apply(
        variables, rng, prompt, sc.length, temperature=sc.temperature, method='sample'))
    ids = np.asarray(jax.device_get(fn(self.eval_variables, rng, prompt)))
    texts = [''.join(info.vocab[i] for i in row) for row in ids]
    path = os.path.join(self.samples_dir, f'step_{step}.txt')
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        for i, t in enumerate(texts):
          f.write(f'=== sample {i} (temperature {sc.temperature}) ===\n{t}\n\n')
    return path

  def _write_transductions(self, step: int) -> str:
    """samples/step_N.txt: num_samples evaluation sources, their targets, and the greedy
    and beam-search outputs, each marked right or wrong."""
    info, n = self.data.info, self.config.train.num_samples
    batch = next(iter(self.data.eval_batches()))
    source, target = batch['source'][:n], batch['target'][:n]
    beam = max(1, getattr(self.model, 'eval_beam', 1))
    fn = jax.jit(lambda variables, source: (
        self.model.apply(variables, source, target.shape[1], method='greedy'),
        self.model.apply(variables, source, target.shape[1], beam, method='beam_search')))
    greedy, beamed = map(np.asarray, jax.device_get(fn(self.eval_variables, source)))

    def letters(ids):
      return ''.join(info.vocab[i] for i in ids if i > 2) or '(empty)'

    def text(ids):
      return letters(ids) + ('' if 2 in list(ids) else ' (no end)')

    def verdict(out, expected):
      return 'right' if np.array_equal(out, expected) else 'WRONG'

    path = os.path.join(self.samples_dir, f'step_{step}.txt')
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        f.write(f'# {self.config.data.name} at step {step}, split {self.data.eval_split}\n')
        for s, t, g, b in zip(source, target, greedy, beamed, strict=True):
          f.write(f'source  {letters(s)}\ntarget  {text(t)}\n'
                  f'greedy  {text(g)}  [{verdict(g, t)}]\n'
                  f'beam {beam}  {text(b)}  [{verdict(b, t)}]\n\n')
    return path

  # -- Pictures of latent-variable models (experiments/latent_pictures.py) -----------------

  def _test_examples(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Up to n real (unpadded) examples of the evaluation split: images and labels (None
    where the data has no labels)."""
    xs, ys, count = [], [], 0
    for batch in self.data.eval_batches():
      mask = np.asarray(batch['example_mask'], bool)
      xs.append(np.asarray(batch['image'])[mask])
      if 'label' in batch:
        ys.append(np.asarray(batch['label'])[mask])
      count += int(mask.sum())
      if count >= n:
        break
    return (np.concatenate(xs)[:n] if xs else np.zeros((0,)),
            np.concatenate(ys)[:n] if ys else None)

  def write_latent_pictures(self, step: int, writer: MetricWriter | None = None) -> list[str]:
    """For models with encode/decode on image data: reconstructions, decoder-mean samples,
    the 2-D manifold, the test set's encodings by label, interpolations and (M2) analogies,
    as samples/<picture>_step_N.png (experiments/latent_pictures.py). Returns the paths;
    other models get none."""
    if self.data.info.kind != 'image' or latent_pictures.protocol(self.model) is None:
      return []
    x, y = self._test_examples(latent_pictures.MAX_SCATTER_POINTS)
    rng = jax.random.fold_in(jax.random.key(self.config.seed), step + 3)
    return latent_pictures.write_latent_pictures(
        self.model, self.eval_variables, x, y, rng, self.samples_dir, step,
        num_levels=self.data.info.num_levels, num_samples=self.config.train.num_samples,
        temperature=self.config.sample.temperature, write=jax.process_index() == 0,
        writer=writer)

  def write_completions(self, step: int) -> str | None:
    """The PixelRNN paper's occlusion completions: the top `completion_rows` rows of test
    images are given, the rest sampled. Writes samples/completions_step_N.png with one
    column per test image: the original, the occluded input, then the completions."""
    sc = self.config.sample
    if self.data.info.kind != 'image':
      raise ValueError('Completion needs an image data set.')
    batch = next(iter(self.data.eval_batches()))
    n = min(sc.num_images, int(batch['example_mask'].sum()))
    originals = jnp.asarray(batch['image'][:n], jnp.int32)
    h, w, c = originals.shape[1:]
    rows = sc.completion_rows
    if not 0 < rows < h:
      raise ValueError(f'config.sample.completion_rows={rows} must be between 1 and {h - 1}.')
    occluded = originals.at[:, rows:].set(0)
    kwargs = {'init': jnp.tile(occluded, (sc.num_completions, 1, 1, 1)),
              'start': rows * w * c}
    if getattr(self.model, 'num_classes', 0):
      kwargs['label'] = jnp.tile(jnp.asarray(batch['label'][:n]), sc.num_completions)
    rng = jax.random.fold_in(jax.random.key(self.config.seed), step + 2)
    # The naive sampler continues from a given prefix (init/start); the cached one always
    # starts from an empty image.
    completions = self._sample(rng, (n * sc.num_completions, h, w, c), sampler='naive',
                               **kwargs)
    grid = np.concatenate([np.asarray(originals), np.asarray(occluded), completions])
    path = os.path.join(self.samples_dir, f'completions_step_{step}.png')
    if jax.process_index() == 0:
      images.save_grid(path, grid, self.data.info.num_levels, ncols=n)
    return path


def _due(step: int, every: int, num_steps: int) -> bool:
  """Whether a `*_every` action runs at `step`: every `every` steps (0: never) and at the end."""
  return (every > 0 and step % every == 0) or step == num_steps


def _os_error(e: BaseException) -> OSError | None:
  """The OSError behind `e`, if any: one in its chain, or the one TensorStore names in the
  ValueError orbax raises for a failed background write (os_error_code='28': ENOSPC)."""
  chain, seen = [], e
  while seen is not None and len(chain) < 20:
    chain.append(seen)
    seen = seen.__cause__ or seen.__context__
  for x in chain:
    if isinstance(x, OSError) and x.errno is not None:
      return x
  text = ' '.join(str(x) for x in chain)
  m = re.search(r"os_error_code='(\d+)'", text)
  if not m:
    return None
  path = re.search(r'local file "([^"]+)"', text)
  code = int(m.group(1))
  return OSError(code, os.strerror(code), path.group(1) if path else None)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False,
                       reset_optimizer: bool = False) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint), evaluates and samples.

  Before anything is written the config is validated, the workdir checked and locked
  (one trainer per workdir), and a resume's config compared with the run's own
  (experiments/workdir.py): fields that change what the checkpoints mean refuse to
  change unless allow_config_change. reset_optimizer restores everything but the
  optimizer state, which starts afresh (the way to change the optimizer's structure).
  """
  validation.validate_config(config)
  lead = jax.process_index() == 0
  created = workdir_lib.prepare(workdir)
  lock = workdir_lib.RunLock(workdir)
  locked = None
  if lead:
    try:
      lock.acquire()
    except WorkdirError as e:
      locked = e
  if jax.process_count() > 1:   # every process stops if process 0 could not lock
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    ok = multihost_utils.broadcast_one_to_all(np.int32(locked is None))
    if not int(ok) and locked is None:
      locked = WorkdirError(f'Process 0 could not lock {lock.path}: another trainer is using '
                            'this workdir.')
  if locked is not None:
    raise locked
  run, writer, finished = None, None, False
  try:
    changes, frozen = workdir_lib.check_resume(workdir, config,
                                               allow_change=allow_config_change, mode='train')
    optimizer_changes = workdir_lib.format_changes(
        {k: v for k, v in changes.items() if k.startswith('optimizer.')})
    data_changed = any(k.startswith('data.') or k == 'seed' for k in frozen)
    run = Run(config, workdir, restore=True, reset_optimizer=reset_optimizer,
              optimizer_changes=optimizer_changes, restore_data=not data_changed)
    step = int(run.state.step)
    if lead:
      workdir_lib.record_start(workdir, config, step, changes,
                               fresh=run.restored_step is None,
                               reset_optimizer=run.ckpt.optimizer_was_reset)
      dropped = workdir_lib.truncate_metrics(workdir, step)
      if dropped:
        logging.info('metrics.jsonl: dropped %d rows past step %d (redone by this run).',
                     dropped, step)
    if changes and run.restored_step is not None:
      logging.warning('Resuming at step %d with a changed config (recorded in %s):\n%s', step,
                      workdir_lib.HISTORY_NAME, workdir_lib.format_changes(changes))
    # TensorBoard drops the events of the steps this run redoes.
    writer = MetricWriter(workdir, enabled=lead, purge_step=step + 1)
    result = _train_loop(run, writer, config)
    finished = True
    return result
  except Exception as e:
    os_error = _os_error(e)
    if os_error is None or isinstance(e, UserError):
      raise
    kept = ''
    try:   # from the directory: orbax's own view may be broken by the failed write
      last = workdir_lib.latest_checkpoint_step(workdir)
      kept = (f' The last complete checkpoint is step {last}.' if last is not None else '')
    except OSError:
      pass
    raise WorkdirError(workdir_lib.describe_os_error(
        os_error, f' (--workdir={workdir})') + kept) from e
  finally:
    try:
      if run is not None:
        run.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.error('Closing the checkpoint manager: %s: %s', type(e).__name__, e)
    try:
      if writer is not None:
        writer.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.error('Closing the metric writer: %s: %s', type(e).__name__, e)
    lock.release()
    if created and not finished:
      workdir_lib.remove_if_empty(workdir)


def _train_loop(run: 'Run', writer: MetricWriter, config) -> dict:
  tc = config.train
  num_steps = tc.num_steps
  train_step = WindowTrainStep(run.model, run.tx, run.schedule, ema_decay=tc.ema_decay,
                               num_dims=run.data.num_dims, mesh=run.mesh)
  n_params = sum(x.size for x in jax.tree.leaves(run.state.params))
  step = int(run.state.step)
  if run.restored_step is not None:
    logging.info('Resumed from %s at step %d.', run.ckpt.directory, step)
  logging.info('%s with %s parameters on %d device(s); %s examples of %s; %d steps.',
               config.model_name, f'{n_params:,}', len(jax.devices()),
               run.data.example_shape, config.data.name, num_steps)
  if jax.process_count() > 1:
    logging.info('Process %d of %d loads %d of each %d-example batch.', jax.process_index(),
                 jax.process_count(), config.data.batch_size // jax.process_count(),
                 config.data.batch_size)

  window = None
  t_log, step_log = time.time(), step
  result: dict = {}
  while step < num_steps:
    batch = to_global_batch(next(run.data.train_iter), run.mesh)
    if window is None:
      window = train_step.init_window(run.state, batch)
    # Dispatched, not waited for: the host goes on to the next batch while the step runs.
    run.state, window = train_step(run.state, batch, window)
    step += 1
    log_due = _due(step, tc.log_every, num_steps)
    checkpoint_due = _due(step, tc.checkpoint_every, num_steps)
    eval_due = _due(step, tc.eval_every, num_steps)
    sample_due = (tc.sample_every and step % tc.sample_every == 0) or (
        step == num_steps and tc.sample_at_end)
    if not (log_due or checkpoint_due or eval_due or sample_due):
      continue
    # The state is about to be logged, saved, evaluated or sampled: every step since the
    # last fetch must have been finite.
    fetched = jax.device_get(window)
    _check_window(fetched, run.ckpt)

    if log_due:
      now = time.time()
      steps_per_s = (step - step_log) / max(now - t_log, 1e-9)
      means = window_means(fetched)
      means['steps_per_s'] = steps_per_s
      writer.write_scalars(step, means, prefix='train/')
      bpd = f" | {means['bits_per_dim']:.4f} bits/dim" if 'bits_per_dim' in means else ''
      game = ''
      if 'd_loss' in means:
        game = (f" | d_loss {means['d_loss']:.3f} g_loss {means.get('g_loss', float('nan')):.3f}"
                f" | D acc real {means.get('d_real_acc', float('nan')):.2f} "
                f"fake {means.get('d_fake_acc', float('nan')):.2f}")
      logging.info('step %d/%d | loss %.4f%s%s | %.2f steps/s | %s left', step, num_steps,
                   means['loss'], bpd, game, steps_per_s,
                   _format_time((num_steps - step) / max(steps_per_s, 1e-9)))
      # A collapsed or diverged game is still a run: it is named, and training goes on.
      for warning in (run.model.health(means) if hasattr(run.model, 'health') else []):
        logging.warning('step %d: %s', step, warning)
      window, t_log, step_log = None, now, step

    if checkpoint_due:
      # A device-side copy: the next step donates (overwrites) the state buffers while
      # orbax may still be writing them in the background.
      snapshot = jax.tree.map(jnp.copy, run.state)
      run.ckpt.save(step, snapshot, {'iterator': run.data.train_iter.get_state()})

    if eval_due:
      result = run.evaluate()
      writer.write_scalars(step, result, prefix='eval/')
      logging.info('eval at step %d on %s (%d examples): %s', step, run.data.eval_split,
                   result['num_examples'], _format_metrics(result))

    if sample_due:
      path = run.write_samples(step, writer)
      if path:
        logging.info('samples at step %d: %s', step, path)
      for p in run.write_latent_pictures(step, writer):
        logging.info('latent picture at step %d: %s', step, p)
    writer.flush()

  if not result:  # the run was already complete: report on the final state
    result = run.evaluate()
  run.ckpt.wait()
  return {'step': step, **result}


def _format_metrics(m: dict) -> str:
  return ', '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in m.items())


def _read_only_run(config, workdir: str, allow_config_change: bool,
                   evaluate: bool) -> 'Run':
  """The Run of eval and sample modes: nothing is written, and the config must agree with
  the run's own in what its checkpoints mean."""
  validation.validate_config(config)
  if not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} does not exist (or is not a directory): train '
                       'first (--mode=train), or check the path.')
  mode = 'evaluate' if evaluate else 'sample'
  _, frozen = workdir_lib.check_resume(workdir, config, allow_change=allow_config_change,
                                       mode=mode)
  return Run(config, workdir, restore=True, read_only=True,
             restore_data=not any(k.startswith('data.') for k in frozen))


def evaluate_run(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  run = _read_only_run(config, workdir, allow_config_change, evaluate=True)
  try:
    return {'step': run.restored_step, **run.evaluate()}
  finally:
    run.close()


def sample_run(config, workdir: str, *, allow_config_change: bool = False) -> str | None:
  run = _read_only_run(config, workdir, allow_config_change, evaluate=False)
  try:
    if config.sample.completion_rows:
      return run.write_completions(run.restored_step)
    path = run.write_samples(run.restored_step)
    for p in run.write_latent_pictures(run.restored_step):
      logging.info('latent picture: %s', p)
    return path
  finally:
    run.close()
