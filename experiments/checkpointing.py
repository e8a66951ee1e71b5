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
import logging
import math
import os
import re
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from experiments.errors import UserError


def _not_read_only_notice(record) -> bool:
  # orbax says so each time a read-only manager opens (evaluation, load_run): no news.
  return not str(record.msg).startswith('Given directory is read only')


logging.getLogger('absl').addFilter(_not_read_only_notice)


class CheckpointError(UserError):
  """A checkpoint that cannot be restored into this config's train state."""


class OptimizerMismatchError(CheckpointError):
  """A sound checkpoint whose optimizer state has another structure than the config's
  optimizer (adam <-> adamw, clipping switched on or off)."""


class CorruptCheckpointError(CheckpointError):
  """A checkpoint whose files cannot be read."""


def _leaf_paths(tree) -> dict[str, tuple]:
  """'1/0/mu/a/kernel' -> shape for every leaf, container types aside (orbax's metadata
  spells optax's named tuples as lists and dicts)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {'/'.join(_key_name(k) for k in path): tuple(getattr(leaf, 'shape', ()))
          for path, leaf in flat}


_CORRUPT_SIGNS = ('Encountered error while reading', 'Error reading', 'DATA_LOSS', 'OUT_OF_RANGE',
                  'decode', 'Decode', 'corrupt', 'Corrupt', 'Expecting value', 'Unterminated',
                  'magic', 'checksum', 'No such file', 'not found', 'NOT_FOUND',
                  'INVALID_ARGUMENT', 'truncated', 'Unexpected end')


def _looks_corrupt(e: BaseException) -> bool:
  """Whether a restore failure is the checkpoint's files (unreadable, truncated, garbage)
  rather than the machine (out of memory, a network file system timing out)."""
  text, seen = '', e
  while seen is not None and len(text) < 200_000:
    text += f' {type(seen).__name__}: {seen}'
    seen = seen.__cause__ or seen.__context__
  if any(sign in text for sign in ('RESOURCE_EXHAUSTED', 'Out of memory', 'DEADLINE_EXCEEDED',
                                   'Too many open files', 'UNAVAILABLE')):
    return False
  return any(sign in text for sign in _CORRUPT_SIGNS) or isinstance(
      e, (ValueError, KeyError, FileNotFoundError))


def continue_schedule(opt_state, step):
  """A fresh optimizer state whose learning-rate schedule counts from `step` (optax's
  ScaleByScheduleState), so a reset optimizer keeps the run's schedule; Adam's own count
  stays 0, as its moments are zero."""
  def fix(node):
    if isinstance(node, optax.ScaleByScheduleState):
      return node._replace(count=jax.numpy.full((), int(step), node.count.dtype))
    if isinstance(node, tuple) and not hasattr(node, '_fields'):
      return tuple(fix(n) for n in node)
    if isinstance(node, list):
      return [fix(n) for n in node]
    if hasattr(node, '_fields'):
      return type(node)(*(fix(n) for n in node))
    return node
  return fix(opt_state)


def flat_parts(saved_paths, path: str) -> list[str]:
  """The saved leaf paths under `path`, in their (jax tree) order: what a flat moment
  vector (optax.flatten) at `path` concatenates from a per-array checkpoint."""
  return [p for p in saved_paths if p.startswith(path + '/')]


def flat_layout_plan(saved: dict[str, tuple], target: dict[str, tuple]
                     ) -> dict[str, list[str]] | None:
  """How a target optimizer state of flat moments (optax.flatten: one 1-D vector where
  the old layout had a tree shaped like the parameters) is made from a saved one of
  per-array moments: target leaf path -> the saved leaf paths it concatenates, in order
  ([the path itself] where the leaf is kept as it is). `saved` and `target` map leaf path -> shape,
  in jax's tree order (which flattens a moment tree in the parameters' own order, the order
  optax.flatten concatenates them in). None where `saved` is not that layout."""
  plan, used = {}, set()
  for path, shape in target.items():
    if path in saved and tuple(saved[path]) == tuple(shape):
      plan[path] = [path]
    else:
      parts = flat_parts(saved, path)
      size = sum(math.prod(saved[p]) for p in parts)
      if len(shape) != 1 or not parts or size != shape[0]:
        return None
      plan[path] = parts
    used.update(plan[path])
  return plan if used == set(saved) and len(used) == sum(map(len, plan.values())) else None


def apply_flat_layout(plan: dict[str, list[str]], saved_tree, target_tree):
  """`target_tree`'s structure filled from `saved_tree`'s leaves by `plan`, each leaf
  with the target leaf's dtype (and sharding, where the target has one)."""
  src = {'/'.join(_key_name(k) for k in path): leaf
         for path, leaf in jax.tree_util.tree_flatten_with_path(saved_tree)[0]}
  flat, treedef = jax.tree_util.tree_flatten_with_path(target_tree)
  leaves = []
  for path, leaf in flat:
    name = '/'.join(_key_name(k) for k in path)
    parts = plan[name]
    value = (jnp.asarray(src[name]) if parts == [name] else
             jnp.concatenate([jnp.ravel(jnp.asarray(src[p])) for p in parts]))
    value = value.astype(leaf.dtype)
    sharding = getattr(leaf, 'sharding', None)
    leaves.append(jax.device_put(value, sharding) if sharding is not None else value)
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _corrupt_detail(e: BaseException) -> str:
  """The array and file a TensorStore read error names, from the exception chain."""
  text, seen = '', e
  while seen is not None and len(text) < 100_000:
    text += f' {seen}'
    seen = seen.__cause__ or seen.__context__
  m = re.search(r'Error reading "([^"/]+)/?[^"]*" in OCDBT database at local file "([^"]+)"',
                text)
  if m:
    return f'the array {m.group(1)} in {m.group(2)} cannot be read'
  m = re.search(r"'path': '([^'/]+)/'", text)
  if m:
    return f'the array {m.group(1)} cannot be read'
  first = str(e).split('\n')[0][:300]
  return f'{type(e).__name__}: {first}'


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
  shapes = _leaf_paths(params)
  shapes.update({f'model_state/{k}': v
                 for k, v in _leaf_paths(_model_state(tree) or {}).items()})
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

  def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                             save_interval_steps=0)
    else:
      options = ocp.CheckpointManagerOptions(
          create=True,
          preservation_policy=ocp.checkpoint_managers.LatestN(keep),
          enable_async_checkpointing=True,
          cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=item_handlers())
    self._closed = False
    self.optimizer_was_reset = False
    self.optimizer_was_flattened = False

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, data_state: dict | None) -> None:
    args = {'state': ocp.args.StandardSave(state)}
    args['data'] = ocp.args.JsonSave(data_state or {})
    self._manager.save(step, args=ocp.args.Composite(**args))

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending writes and closes the manager; safe to call twice, and after an
    error (a failed write is logged here, its error was raised where it happened)."""
    if self._closed:
      return
    self._closed = True
    try:
      self._manager.wait_until_finished()
    finally:
      self._manager.close()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore(self, target_state, step: int | None = None, *, reset_optimizer: bool = False,
              optimizer_changes: str = '') -> tuple[Any, dict]:
    """Restores (state, data_state) into the structure and shapes of `target_state`.

    A model whose parameters differ from the checkpoint's raises CheckpointError; an
    optimizer state of another structure OptimizerMismatchError (unless reset_optimizer:
    then everything but the optimizer state is restored, and the optimizer starts afresh
    from the checkpoint's parameters); unreadable files CorruptCheckpointError.
    `optimizer_changes` (the changed config.optimizer fields) goes into the message.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'No checkpoint in {self.directory}.')
    step_dir = os.path.join(self.directory, str(step))
    try:
      saved = self._manager.item_metadata(step)['state']
      if saved is None:
        raise ValueError('no state metadata')
      saved_opt = _leaf_paths(saved['opt_state'])
    except Exception as e:  # orbax raises many types for unreadable metadata
      if not _looks_corrupt(e):
        raise CheckpointError(f'Checkpoint {step_dir} could not be read now ({type(e).__name__}: '
                              f'{str(e)[:300]}); it is left as it is. Rerun when the '
                              'problem is fixed.') from e
      raise CorruptCheckpointError(
          f'Checkpoint {step_dir}: its metadata cannot be read ({type(e).__name__}: '
          f'{str(e)[:300]})') from e
    self._check_shapes(saved, target_state, step_dir)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    target_opt = _leaf_paths(target_state.opt_state)
    opt_differs = saved_opt != target_opt
    # A checkpoint written before the optimizer state was flattened (its moments one array
    # per parameter): restore it as saved and concatenate the moments.
    flat_plan = flat_layout_plan(saved_opt, target_opt) if opt_differs else None
    self.optimizer_was_flattened = flat_plan is not None
    opt_differs = opt_differs and flat_plan is None
    # --reset_optimizer acts only where the structure changed: left in a launch script, it
    # does not zero the moments again at every later resume.
    reset_optimizer = reset_optimizer and opt_differs
    self.optimizer_was_reset = reset_optimizer
    if opt_differs and not reset_optimizer:
      changed = (f' The config changes:\n{optimizer_changes}' if optimizer_changes else
                 ' (adam <-> adamw, or gradient clipping switched on or off)')
      raise OptimizerMismatchError(
          f'Checkpoint {step_dir} is sound, but its optimizer state has another structure '
          f'than the optimizer this config builds.{changed}\nEither resume with the '
          "run's original optimizer settings (see config.json in the workdir), or pass "
          '--reset_optimizer to restore the parameters, EMA, step and data position and '
          'start the optimizer afresh (Adam moments zero; the learning-rate schedule '
          'continues at the checkpoint\'s step).')
    if reset_optimizer or flat_plan is not None:
      sharding = jax.tree.leaves(abstract.params)[0].sharding
      abstract = abstract.replace(opt_state=jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
          saved['opt_state']))
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
      if not _looks_corrupt(e):
        raise CheckpointError(f'Checkpoint {step_dir} could not be restored now '
                              f'({_corrupt_detail(e)}); it is left as it is. Rerun when the '
                              'problem is fixed.') from e
      raise CorruptCheckpointError(f'Checkpoint {step_dir}: {_corrupt_detail(e)}') from e
    state = restored['state']
    if legacy:
      state = target_state.replace(**state)
    if reset_optimizer:
      state = state.replace(opt_state=continue_schedule(target_state.opt_state, state.step))
    elif flat_plan is not None:
      state = state.replace(opt_state=apply_flat_layout(flat_plan, state.opt_state,
                                                        target_state.opt_state))
    return state, dict(restored['data'] or {})

  def restore_latest(self, target_state, move_aside: bool = True,
                     **kwargs) -> tuple[Any, dict, int, list[str]]:
    """Restores the newest checkpoint that restores. Newer corrupt ones are moved aside to
    `<workdir>/corrupt_checkpoints/<step>` (never deleted; left in place when not
    move_aside: evaluation writes nothing). Returns (state, data_state, step, notes on the
    corrupt ones). With none usable, nothing is moved and the CheckpointError lists each
    one's problem."""
    problems = []
    for step in reversed(self.all_steps()):
      try:
        state, data = self.restore(target_state, step, **kwargs)
      except CorruptCheckpointError as e:
        problems.append((step, str(e)))
        continue
      notes = [self._move_aside(s, why) if move_aside else
               f'{why}. Skipped (left in place); restored step {step}.' for s, why in problems]
      if move_aside and problems and jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        multihost_utils.sync_global_devices('corrupt checkpoints moved aside')
        self._manager.reload()
      return state, data, step, notes
    if not problems:
      raise CheckpointError(f'No checkpoint in {self.directory}.')
    raise CheckpointError(
        'No checkpoint in this workdir can be restored:\n' + '\n'.join(
            f'  {why}' for _, why in problems) + '\nNothing was moved or deleted. Start the '
        'run in a new --workdir (or copy a good checkpoint into this one).')

  def _move_aside(self, step: int, why: str) -> str:
    aside = os.path.join(os.path.dirname(self.directory), 'corrupt_checkpoints')
    if jax.process_index() != 0:   # one process moves; restore_latest waits for it
      return f'{why}. Process 0 moves it aside to {aside}/.'
    os.makedirs(aside, exist_ok=True)
    dest = os.path.join(aside, str(step))
    n = 1
    while os.path.exists(dest):
      dest, n = os.path.join(aside, f'{step}.{n}'), n + 1
    self._manager.wait_until_finished()
    shutil.move(os.path.join(self.directory, str(step)), dest)
    self._manager.reload()
    return f'{why}. It was moved aside to {dest} (kept, not deleted).'

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
    lines.append('The checkpoint is sound; the config builds another model. Run with the '
                 'config this workdir was trained with (config.json in the workdir), or '
                 'use a new --workdir.')
    raise CheckpointError('\n'.join(lines))
