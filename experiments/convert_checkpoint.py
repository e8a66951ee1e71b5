"""Converts a run trained before a model's parameter layout changed (repeated blocks built
as separate modules, then scanned with `nn.scan`, issue 18) into a new workdir that the
current code resumes, evaluates and samples.

  python -m experiments.convert_checkpoint --workdir=runs/old --out=runs/old_scanned

The model's module provides `unrolled_to_scanned(variables) -> variables`, which maps a
dict of collections ({'params': ..., 'batch_stats': ..., 'constants': ...}) in the old
layout to the new one (and works on {'params': tree} alone). It is applied to the
parameters, the EMA parameters, every optimizer-state subtree shaped like the parameters
(Adam's moments, concatenated into one vector each where the current optimizer keeps them
flat) and the non-parameter collections; scalars (step, counts, RNG) and the data position
are copied. The result must fill the current model's train state exactly
(every leaf, every shape), else nothing is written. The old workdir is only read; the new
one gets its config, history, metrics and samples copied and the converted latest
checkpoint at the same step. A workdir already in the current layout is refused.
"""
from __future__ import annotations

import importlib
import os
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags

from experiments import workdir as workdir_lib
from experiments.checkpointing import Checkpointer, _key_name, flat_parts, item_handlers
from experiments.errors import UserError
from experiments.models import MODELS


class ConversionError(UserError):
  """A checkpoint that cannot be converted to the current layout."""


def converter(model_name: str):
  """The model's `unrolled_to_scanned`, or None where its layout never changed."""
  module = importlib.import_module(MODELS[model_name].split(':')[0])
  return getattr(module, 'unrolled_to_scanned', None)


def _flat(tree, prefix: str = '') -> dict[str, np.ndarray]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {prefix + '/'.join(_key_name(k) for k in path): leaf for path, leaf in flat}


def _is_params_like(node, params_keys: set[str]) -> bool:
  return isinstance(node, dict) and set(_flat(node)) == params_keys


def convert_state(old: dict, convert) -> dict:
  """The old raw state (orbax's nested dicts) with every parameter-shaped subtree and the
  model state converted."""
  params_keys = set(_flat(old['params']))

  def walk(node):
    if _is_params_like(node, params_keys):
      return convert({'params': node})['params']
    if isinstance(node, dict):
      return {k: walk(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
      return type(node)(walk(v) for v in node)
    return node

  out = dict(old)
  out['params'] = convert({'params': old['params']})['params']
  out['ema_params'] = convert({'params': old['ema_params']})['params']
  out['opt_state'] = walk(old['opt_state'])
  if old.get('model_state'):
    out['model_state'] = {k: v for k, v in convert(dict(old['model_state'])).items()
                          if k != 'params'}
  return out


def fill(target, converted: dict):
  """`target` (a TrainState) with every leaf taken from `converted` by path."""
  src = _flat(converted)
  flat, treedef = jax.tree_util.tree_flatten_with_path(target)
  leaves, missing, wrong = [], [], []
  for path, leaf in flat:
    name = '/'.join(_key_name(k) for k in path)
    # Flat optimizer moments (optax.flatten) from the old run's per-array ones, in the
    # parameters' tree order (the order of `src`, which follows the old tree).
    parts = flat_parts(src, name) if name not in src else []
    if parts and len(leaf.shape) == 1:
      value = np.concatenate([np.ravel(src[p]) for p in parts])
    elif name not in src:
      missing.append(name)
      continue
    else:
      value = np.asarray(src[name])
    if value.shape != tuple(leaf.shape):
      wrong.append(f'{name}: converted {value.shape}, model {tuple(leaf.shape)}')
    leaves.append(value.astype(leaf.dtype))
  if missing or wrong:
    raise ConversionError('The converted checkpoint does not fill the current model:\n' +
                          '\n'.join([f'  missing {m}' for m in missing[:8]] +
                                    [f'  {w}' for w in wrong[:8]]))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def convert_workdir(workdir: str, out: str) -> int:
  """Writes `out` from `workdir`; returns the converted step."""
  from experiments import train  # pylint: disable=g-import-not-at-top
  if os.path.exists(out):
    raise ConversionError(f'--out={out} exists; give a new directory (nothing was written).')
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise ConversionError(f'{config_path} not found: {workdir} is not a run directory.')
  history = workdir_lib.read_history(workdir)
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
  with ocp.CheckpointManager(directory, item_handlers=item_handlers(),
                             options=ocp.CheckpointManagerOptions(
                                 read_only=True, create=False,
                                 save_interval_steps=0)) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise ConversionError(f'No checkpoint in {directory}.')
    config = ml_collections.ConfigDict(workdir_lib.config_for_step(history, step))
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
  convert = converter(config.model_name)
  if convert is None:
    raise ConversionError(f'{config.model_name!r} has no unrolled_to_scanned: its layout '
                          'never changed, and the run resumes as it is.')
  old = jax.tree.map(np.asarray, dict(restored['state']))
  with tempfile.TemporaryDirectory() as tmp:
    fresh = train.Run(config, os.path.join(tmp, 'run'), restore=False)
    try:
      target = fresh.state
      if set(_flat(old['params'])) == set(_flat(jax.device_get(target.params))):
        raise ConversionError(f'{workdir} is already in the current layout: resume it as '
                              'it is.')
      state = fill(target, convert_state(old, convert))
    finally:
      fresh.close()
  os.makedirs(out)
  for name in os.listdir(workdir):
    if name in ('checkpoints', 'corrupt_checkpoints', workdir_lib.LOCK_NAME):
      continue
    src = os.path.join(workdir, name)
    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(out, name))
  ckpt = Checkpointer(out)
  try:
    ckpt.save(step, state, dict(restored['data'] or {}))
  finally:
    ckpt.close()
  return step


_WORKDIR = flags.DEFINE_string('workdir', None, 'The run to convert (only read).')
_OUT = flags.DEFINE_string('out', None, 'The new workdir to write.')


def main(argv):
  del argv
  try:
    step = convert_workdir(_WORKDIR.value, _OUT.value)
  except UserError as e:
    raise SystemExit(f'{type(e).__name__}: {e}') from None
  print(f'{_OUT.value}: checkpoint {step} converted from {_WORKDIR.value}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'out'])
  app.run(main)
