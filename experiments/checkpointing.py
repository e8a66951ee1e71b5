"""The run's whole state in one orbax checkpoint per step, in `<workdir>/checkpoints`.

Items: 'state' (step, params, optimizer state, EMA parameters, RNG, and the model's
non-parameter collections, `model_state`: batch-norm statistics, fixed constants) and 'data'
(the grain iterator's position, as JSON). Checkpoints written before `model_state` existed
restore into a state whose model_state is empty. Saves are asynchronous; orbax writes each step to a
temporary directory and renames it when complete, so a run killed mid-save leaves the
previous step intact and a restart never sees half a checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(Exception):
  """A checkpoint that cannot be restored into this config's train state."""


def _key_name(k) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _param_shapes(tree) -> dict[str, tuple]:
  """'a/b/kernel' -> shape for the model parameters of a state or its checkpoint metadata,
  and 'model_state/batch_stats/.../mean' -> shape for its non-parameter collections.

  Only these are compared: the optimizer's state follows the parameters' shapes, and its
  container types (named tuples) are spelled differently in orbax's metadata.
  """
  params = tree.params if hasattr(tree, 'params') else tree['params']
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  shapes = {'/'.join(_key_name(k) for k in path): tuple(getattr(leaf, 'shape', ()))
            for path, leaf in flat}
  flat, _ = jax.tree_util.tree_flatten_with_path(_model_state(tree) or {})
  shapes.update({'model_state/' + '/'.join(_key_name(k) for k in path):
                 tuple(getattr(leaf, 'shape', ())) for path, leaf in flat})
  return shapes


def _model_state(tree):
  """The `model_state` of a state or of checkpoint metadata; None where there is none."""
  if hasattr(tree, 'model_state'):
    return tree.model_state
  try:
    return tree['model_state'] if 'model_state' in tree else None
  except TypeError:
    return None


def item_handlers() -> dict:
  """Handlers named up front, so metadata can be read before anything is saved."""
  return {'state': ocp.StandardCheckpointHandler(), 'data': ocp.JsonCheckpointHandler()}


class Checkpointer:
  """Thin wrapper over ocp.CheckpointManager with clear errors on bad checkpoints."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    options = ocp.CheckpointManagerOptions(
        create=True,
        preservation_policy=ocp.checkpoint_managers.LatestN(keep),
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=item_handlers())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict | None) -> None:
    args = {'state': ocp.args.StandardSave(state)}
    args['data'] = ocp.args.JsonSave(data_state or {})
    self._manager.save(step, args=ocp.args.Composite(**args))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def restore(self, target_state, step: int | None = None) -> tuple[Any, dict]:
    """Restores (state, data_state) into the structure and shapes of `target_state`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'No checkpoint in {self.directory}.')
    step_dir = os.path.join(self.directory, str(step))
    fix = (f'Delete {step_dir} to resume from the checkpoint before it, or start the run '
           'in a new --workdir.')
    try:
      saved = self._manager.item_metadata(step)['state']
    except Exception as e:  # orbax raises many types for unreadable metadata
      raise CheckpointError(f'Checkpoint {step_dir} is unreadable or corrupt ({type(e).__name__}: '
                            f'{e}). {fix}') from e
    if saved is None:
      raise CheckpointError(f'Checkpoint {step_dir} has no readable state metadata. {fix}')
    self._check_shapes(saved, target_state, step_dir)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    # A checkpoint from before model_state existed, for a model without such collections:
    # restore every other field and keep the (empty) model_state of the target.
    legacy = (dataclasses.is_dataclass(abstract) and hasattr(abstract, 'model_state')
              and _model_state(saved) is None and not jax.tree.leaves(abstract.model_state))
    if legacy:
      abstract = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)
                  if f.name != 'model_state'}
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    except Exception as e:
      raise CheckpointError(f'Checkpoint {step_dir} could not be restored ({type(e).__name__}: '
                            f'{e}). It may be corrupt or from another model. {fix}') from e
    state = restored['state']
    if legacy:
      state = target_state.replace(**state)
    return state, dict(restored['data'] or {})

  @staticmethod
  def _check_shapes(saved_meta, target_state, step_dir: str) -> None:
    saved = _param_shapes(saved_meta)
    wanted = _param_shapes(target_state)
    missing = sorted(set(wanted) - set(saved))
    extra = sorted(set(saved) - set(wanted))
    differ = [(k, saved[k], wanted[k]) for k in sorted(set(saved) & set(wanted))
              if saved[k] != wanted[k]]
    if not (missing or extra or differ):
      return
    lines = [f'The checkpoint {step_dir} does not match the model this config builds:']
    for k, a, b in differ[:5]:
      lines.append(f'  {k}: checkpoint shape {a}, config shape {b}')
    if missing:
      lines.append(f'  in the config but not the checkpoint: {", ".join(missing[:5])}')
    if extra:
      lines.append(f'  in the checkpoint but not the config: {", ".join(extra[:5])}')
    lines.append('Run with the config this workdir was trained with (saved as '
                 'config.json in the workdir), or use a new --workdir.')
    raise CheckpointError('\n'.join(lines))
