"""Notebook access to a finished (or running) run: `experiments.load_run(workdir)`.

  run = experiments.load_run('runs/digits')
  samples = run.model.apply({'params': run.params}, jax.random.key(0), (16, 8, 8, 1),
                            method='sample')
  log_p = run.model.apply({'params': run.params}, images, method='log_prob')

Models with non-parameter collections (batch-norm statistics, an LU 1x1 convolution's
constants) need them in every apply: `run.variables` is {'params': run.params,
**run.model_state}, and works for every model.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from experiments import workdir as workdir_lib
from experiments.checkpointing import CheckpointError, item_handlers
from experiments.models import build_model
from experiments.train import model_variables


@dataclasses.dataclass
class LoadedRun:
  config: ml_collections.ConfigDict
  model: nn.Module
  params: Any            # the EMA parameters (what evaluation and sampling use)
  raw_params: Any        # the optimizer's current parameters
  step: int
  workdir: str
  model_state: Any = dataclasses.field(default_factory=dict)   # non-'params' collections
  # Every start of training (config_history.jsonl): start_step, time, changes, config.
  config_history: list = dataclasses.field(default_factory=list)

  @property
  def variables(self) -> dict:
    """What `model.apply` takes: the EMA parameters and the non-parameter collections."""
    return model_variables(self.params, self.model_state)


def load_run(workdir: str, step: int | None = None) -> LoadedRun:
  """Loads the latest (or given) checkpoint's parameters from `workdir`, with the config
  that trained up to it: the run's config history says which config wrote each
  checkpoint (a resume may change the learning rate, the steps, ...)."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise FileNotFoundError(f'{config_path} not found: {workdir} is not a run directory '
                            '(train one with python -m experiments.main --workdir=...).')
  history = workdir_lib.read_history(workdir)
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  if not os.path.isdir(directory):
    raise CheckpointError(f'No checkpoint in {directory}.')
  with ocp.CheckpointManager(directory, item_handlers=item_handlers(),
                             options=ocp.CheckpointManagerOptions(
                                 read_only=True, create=False,
                                 save_interval_steps=0)) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'No checkpoint in {directory}.')
    # The config that wrote this checkpoint, from the run's history.
    config = ml_collections.ConfigDict(workdir_lib.config_for_step(history, step))
    model = build_model(config.model_name, config.model.to_dict())
    try:
      # The target comes from the checkpoint's own metadata (nested dicts: only the
      # parameter trees are needed here), placed on this process's first device, so a run
      # saved on 8 devices or a TPU pod loads in a 1-CPU notebook.
      meta = mngr.item_metadata(step)['state']
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), dict(meta))
      state = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))['state']
    except Exception as e:
      raise CheckpointError(f'Checkpoint {directory}/{step} could not be restored '
                            f'({type(e).__name__}: {e}).') from e
  def to_jnp(t):
    return jax.tree.map(jnp.asarray, t)
  return LoadedRun(config=config, model=model, params=to_jnp(state['ema_params']),
                   raw_params=to_jnp(state['params']), step=step, workdir=workdir,
                   model_state=to_jnp(dict(state.get('model_state') or {})),
                   config_history=history)
