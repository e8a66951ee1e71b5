"""One validation pass over a config before anything is written or loaded.

`validate_config(config)` checks every field the trainer reads: its type and range (counts
and sizes positive, a learning rate > 0, `train.*_every >= 0` with 0 meaning "only at the
end"), names unknown keys with the closest valid ones, and reports every problem in one
`ConfigError`. `check_model_data(config, model, info)` checks, once the data set's
description is known, that the model's output distribution fits the data: the kind (image,
audio, text), levels per dimension, channels and image shape, and the labels a conditional
model needs, each named with the config fields to change.
"""
from __future__ import annotations

import difflib
import math
import numbers
import re
from typing import Any

from experiments.models import ConfigError

# Keys the trainer reads, by section; `model` is checked against the model's own fields
# (experiments.models.build_model).
TOP_KEYS = ('seed', 'distributed', 'model_name', 'model', 'data', 'optimizer', 'train', 'sample')
DATA_KEYS = ('name', 'source', 'local_dir', 'train_split', 'eval_split', 'batch_size',
             'eval_batch_size', 'binarize', 'eval_binarization_seed', 'seq_len',
             'random_offsets', 'streams', 'crop_length', 'num_labelled', 'labelled_batch_size',
             'labelled_seed', 'frame_size', 'digit_size', 'num_digits', 'num_frames',
             'prefetch_threads', 'prefetch_batches')
TRAIN_KEYS = ('num_steps', 'log_every', 'eval_every', 'checkpoint_every', 'sample_every',
              'num_samples', 'sample_at_end', 'keep_checkpoints', 'ema_decay', 'eval_with_ema',
              'eval_batch_stats', 'batch_stats_batches', 'init_examples')
SAMPLE_KEYS = ('sampler', 'temperature', 'completion_rows', 'num_images', 'num_completions',
               'speaker', 'digit', 'seconds', 'prompt', 'length')


def all_keys(config, prefix: str = '') -> list[str]:
  """Every leaf key of a (nested) config, dotted: 'optimizer.learning_rate'."""
  out = []
  for k, v in config.items():
    if hasattr(v, 'items'):
      out.extend(all_keys(v, f'{prefix}{k}.'))
    out.append(f'{prefix}{k}')
  return out


def suggest(name: str, candidates) -> str:
  """' Did you mean config.a.b?' for the closest valid keys: by spelling, and within the
  same section by initials or a prefix ('optimizer.lr' -> 'optimizer.learning_rate')."""
  candidates = list(candidates)
  section, _, last = name.rpartition('.')
  prefix = f'{section}.' if section else ''
  siblings = [c for c in candidates if c.rpartition('.')[0] == section]
  close = []
  for c in siblings:
    tail = c.rpartition('.')[2]
    initials = ''.join(w[0] for w in tail.split('_') if w)
    if last == initials or (len(last) >= 2 and tail.startswith(last)) or (
        len(last) >= 3 and last in tail):
      close.append(c)
  close += [prefix + t for t in difflib.get_close_matches(
      last, [c.rpartition('.')[2] for c in siblings], n=2, cutoff=0.7)
            if not close]
  close += [c for c in difflib.get_close_matches(name, candidates, n=2, cutoff=0.75)
            if c != section and not close]
  close = list(dict.fromkeys(close))[:3]
  if not close:
    return ''
  return ' Did you mean ' + ' or '.join(f'config.{c}' for c in close) + '?'


class _Problems:
  def __init__(self, config):
    self.config, self.lines = config, []

  def get(self, path: str):
    node = self.config
    for part in path.split('.'):
      if not hasattr(node, 'keys') or part not in node.keys():
        return _MISSING
      node = node[part]
    return node

  def add(self, path: str, value, need: str) -> None:
    self.lines.append(f'config.{path}={value!r}: {need}.')

  def int_(self, path: str, minimum: int | None = None, zero_means: str = '') -> None:
    v = self.get(path)
    if v is _MISSING:
      return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
      self.add(path, v, 'must be an integer')
    elif minimum is not None and v < minimum:
      need = f'must be >= {minimum}' + (f' (0: {zero_means})' if zero_means else '')
      self.add(path, v, need)

  def float_(self, path: str, low: float | None = None, high: float | None = None, *,
             low_open: bool = False, high_open: bool = False) -> None:
    v = self.get(path)
    if v is _MISSING:
      return
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
      self.add(path, v, 'must be a finite number')
      return
    bad = ((low is not None and (v <= low if low_open else v < low))
           or (high is not None and (v >= high if high_open else v > high)))
    if bad:
      lo = '' if low is None else f'{low} {"<" if low_open else "<="} '
      hi = '' if high is None else f' {"<" if high_open else "<="} {high}'
      self.add(path, v, f'must satisfy {lo}value{hi}')

  def choice(self, path: str, choices) -> None:
    v = self.get(path)
    if v is not _MISSING and v not in choices:
      self.add(path, v, f'must be one of {", ".join(map(repr, choices))}')

  def bool_(self, path: str) -> None:
    v = self.get(path)
    if v is not _MISSING and not isinstance(v, bool):
      self.add(path, v, 'must be True or False')

  def unknown(self, section: str, known) -> None:
    node = self.get(section) if section else self.config
    if node is _MISSING or not hasattr(node, 'keys'):
      return
    prefix = f'{section}.' if section else ''
    valid = [prefix + k for k in known]
    for k in node.keys():
      if k not in known:
        self.lines.append(f'Unknown key config.{prefix}{k}.{suggest(prefix + k, valid)} '
                          f'The trainer reads: {", ".join(known)}.')


_MISSING = object()


def validate_config(config) -> None:
  """Raises one ConfigError listing every problem of `config`; returns None if it is sound."""
  from experiments.train import OPTIMIZER_KEYS, SCHEDULES  # pylint: disable=g-import-not-at-top
  p = _Problems(config)
  p.unknown('', TOP_KEYS)
  for section, known in (('data', DATA_KEYS), ('optimizer', OPTIMIZER_KEYS),
                         ('train', TRAIN_KEYS), ('sample', SAMPLE_KEYS)):
    if p.get(section) is _MISSING:
      p.lines.append(f'config.{section} is missing; a config starts from '
                     'configs.common.base_config().')
    p.unknown(section, known)
  p.int_('seed')
  if not isinstance(p.get('model_name'), str) or not p.get('model_name'):
    p.add('model_name', p.get('model_name'), 'must name a model (experiments/models.py)')
  # data
  if not isinstance(p.get('data.name'), str) or not p.get('data.name'):
    p.add('data.name', p.get('data.name'), 'must name a data set')
  p.int_('data.batch_size', 1)
  p.int_('data.eval_batch_size', 1)
  p.choice('data.source', ('auto', 'local', 'tfds'))
  for split in ('data.train_split', 'data.eval_split'):
    v = p.get(split)
    if v is not _MISSING and (not isinstance(v, str) or not v):
      p.add(split, v, "must be a split name, optionally sliced: 'test' or 'test[:512]'")
  p.bool_('data.binarize')
  p.bool_('data.streams')
  p.int_('data.seq_len', 1)
  p.int_('data.crop_length', 1)
  for field in ('frame_size', 'digit_size', 'num_digits', 'num_frames'):
    p.int_(f'data.{field}', 1)
  p.int_('data.num_labelled', 0)
  p.int_('data.prefetch_threads', 0)
  p.int_('data.prefetch_batches', 0)
  threads, batches = p.get('data.prefetch_threads'), p.get('data.prefetch_batches')
  if (isinstance(threads, int) and isinstance(batches, int) and threads > 0
      and batches < threads):
    p.add('data.prefetch_batches', batches,
          f'must be at least data.prefetch_threads={threads} (each thread reads one batch '
          'ahead; fewer would leave threads idle), or set data.prefetch_threads=0 for no '
          'read-ahead')
  p.int_('data.labelled_batch_size', 0)
  # optimizer
  p.choice('optimizer.name', ('adam', 'adamw', 'rmsprop'))
  p.choice('optimizer.schedule', SCHEDULES)
  p.float_('optimizer.learning_rate', 0.0, low_open=True)
  p.int_('optimizer.warmup_steps', 0)
  p.float_('optimizer.final_fraction', 0.0, 1.0)
  p.float_('optimizer.b1', 0.0, 1.0, high_open=True)
  p.float_('optimizer.b2', 0.0, 1.0, high_open=True)
  p.float_('optimizer.eps', 0.0)
  p.float_('optimizer.weight_decay', 0.0)
  p.float_('optimizer.grad_clip_norm', 0.0)   # 0: no clipping
  # train
  p.int_('train.num_steps', 1)
  for every in ('log_every', 'eval_every', 'checkpoint_every', 'sample_every'):
    p.int_(f'train.{every}', 0, zero_means='only at the end')
  p.int_('train.num_samples', 1)
  p.int_('train.keep_checkpoints', 1)
  p.int_('train.batch_stats_batches', 1)
  p.int_('train.init_examples', 0, zero_means='the whole first evaluation batch')
  p.float_('train.ema_decay', 0.0, 1.0, high_open=True)
  p.bool_('train.eval_with_ema')
  p.bool_('train.sample_at_end')
  p.choice('train.eval_batch_stats', ('recompute', 'current'))
  # sample
  p.choice('sample.sampler', ('auto', 'naive', 'cached'))
  p.float_('sample.temperature', 0.0)   # 0: the mode (flows' prior mean)
  p.int_('sample.completion_rows', 0)
  p.int_('sample.num_images', 1)
  p.int_('sample.num_completions', 1)
  p.int_('sample.length', 1)
  p.float_('sample.seconds', 0.0, low_open=True)
  _model_sizes(p)
  # Scheduled sampling (autoreg.char_rnn.SCHEDULES; char_rnn and seq2seq).
  p.choice('model.ss_schedule', ('none', 'linear', 'exponential', 'inverse_sigmoid'))
  _ss_decay(p)
  if p.lines:
    head = ('The config has a problem:' if len(p.lines) == 1 else
            f'The config has {len(p.lines)} problems:')
    raise ConfigError('\n'.join([head] + [f'  {line}' for line in p.lines]))


def _ss_decay(p: _Problems) -> None:
  """A scheduled-sampling schedule whose parameters never decay eps (such as the defaults
  left by --config.model.ss_schedule=... without the preset that sets them)."""
  name, k, c = p.get('model.ss_schedule'), p.get('model.ss_k'), p.get('model.ss_c')
  if name in (_MISSING, 'none') or not all(isinstance(x, numbers.Real) for x in (k, c)):
    return
  fix = (f"; the preset ss={name} sets the decay from the run's steps "
         '(configs.common.set_ss_decay), or set config.model.ss_k and ss_c')
  if name == 'linear' and (c <= 0 or not 0 < k <= 1):
    p.add('model.ss_k', k, f'with ss_c={c} must give a falling eps = max(ss_min, ss_k - '
          f'ss_c i) (0 < ss_k <= 1 and ss_c > 0){fix}')
  elif name == 'exponential' and not 0 < k < 1:
    p.add('model.ss_k', k, f'must satisfy 0 < value < 1 for eps = ss_k^i to decay{fix}')
  elif name == 'inverse_sigmoid' and k < 1:
    p.add('model.ss_k', k, f'must be >= 1 for eps = k / (k + exp(i / k)) (Bengio et al. '
          f'2015){fix}')


# Integer model fields that are sizes or counts: >= 1 (others, such as num_classes or
# iaf_steps, may be 0 and must be >= 0).
_SIZE_FIELD = re.compile(r'(^|_)(features|hidden|dim|dims|channels|kernel|layers|stacks|'
                         r'blocks|levels|mixtures|size|steps_per|chunk_size)$|^num_(layers|'
                         r'levels|stacks|blocks|mixtures|channels|scales|steps|flows|units)$')


def _model_sizes(p: _Problems) -> None:
  model = p.get('model')
  if model is _MISSING or not hasattr(model, 'items'):
    return
  for key, v in model.items():
    path = f'model.{key}'
    values = v if isinstance(v, (tuple, list)) else [v]
    flat = []
    for x in values:
      flat.extend(x if isinstance(x, (tuple, list)) else [x])
    ints = [x for x in flat if isinstance(x, numbers.Integral) and not isinstance(x, bool)]
    if not ints:
      continue
    minimum = 1 if _SIZE_FIELD.search(key) else 0
    if any(x < minimum for x in ints):
      p.add(path, v, f'must be >= {minimum}' + (' (a size or count)' if minimum else ''))


# --------------------------------------------------------------------------- model vs data

def model_expects(name: str, model) -> dict[str, Any]:
  """What a registered model's output distribution needs of its data: kind, levels (and
  whether they must match exactly), channels, image shape, labels, with the config fields
  that set each. An unregistered model is not checked ({})."""
  def g(field, default=None):
    return getattr(model, field, default)
  if name in ('pixelcnn', 'gated_pixelcnn', 'pixelrnn'):
    head = 'discretized logistic mixture' if g('output') == 'logistic_mixture' else 'categorical'
    return dict(kind='image', levels=g('num_levels'), levels_field='model.num_levels',
                head=f'a {head} head over {g("num_levels")} levels',
                channels=g('num_channels'), channels_field='model.num_channels',
                num_classes=g('num_classes', 0))
  if name == 'wavenet':
    return dict(kind='audio', levels=g('num_levels'), levels_field='model.num_levels',
                head=f'a categorical head over {g("num_levels")} mu-law levels',
                num_classes=g('num_classes', 0), num_speakers=g('num_speakers', 0))
  if name in ('bytenet', 'char_rnn'):
    return dict(kind='text', levels=g('vocab_size'), levels_field='model.vocab_size',
                head=f'a softmax over {g("vocab_size")} characters')
  if name == 'vpn':
    return dict(kind='video', levels=256, levels_field='model_name', exact=True,
                head=(f"a {g('output')!r} decoder over 8-bit grey frames "
                      f"(config.model.output={g('output')!r})"),
                channels=1, channels_field='model_name')
  if name == 'seq2seq':
    return dict(kind='transduction', levels=g('vocab_size'), levels_field='model.vocab_size',
                head=f'a softmax over {g("vocab_size")} tokens')
  if name in ('vae', 'pixelvae'):
    if name == 'vae':
      head = (f"a {g('likelihood')!r} decoder over {g('num_levels')} levels "
              f"(config.model.likelihood={g('likelihood')!r}, num_levels={g('num_levels')})")
    else:
      head = f'a decoder over {g("num_levels")} levels'
    return dict(kind='image', levels=g('num_levels'), levels_field='model.num_levels',
                head=head, shape=tuple(g('image_shape')), shape_field='model.image_shape')
  if name in ('sbn', 'darn', 'gumbel_vae'):
    return dict(kind='image', levels=2, levels_field='model_name', exact=True,
                head='a Bernoulli decoder (binary images)', shape=tuple(g('image_shape')),
                shape_field='model.image_shape')
  if name == 'm2':
    return dict(kind='image', levels=2, levels_field='model_name', exact=True,
                head='a Bernoulli decoder (binary images)', shape=tuple(g('image_shape')),
                shape_field='model.image_shape', num_classes=g('num_classes'),
                classes_exact=True)
  if name in ('gan', 'vaegan'):
    return dict(kind='image', levels=g('num_levels'), levels_field='model.num_levels',
                exact=True, head=f'images on {g("num_levels")} levels scaled to [-1, 1]',
                shape=tuple(g('image_shape')), shape_field='model.image_shape')
  if name in ('nice', 'realnvp', 'glow', 'maf'):
    return dict(kind='image', levels=256, levels_field='model_name', exact=True,
                head='a flow on 8-bit images dequantized as (x + u) / 256',
                shape=tuple(g('image_shape')), shape_field='model.image_shape')
  return {}


def _data_fix(kind: str) -> str:
  from experiments import datasets  # pylint: disable=g-import-not-at-top
  names = [n for n in datasets.NAMES if datasets.get_info(n).kind == kind]
  return f'config.data.name (the {kind} data sets: {", ".join(names)})'


def check_model_data(config, model, info) -> None:
  """Raises a ConfigError naming both sides where the model cannot model the data."""
  e = model_expects(config.model_name, model)
  if not e:
    return
  m, d = f'config.model_name={config.model_name!r}', f'config.data.name={config.data.name!r}'
  if config.data.get('binarize', False):
    d += ' with data.binarize=True'
  problems = []
  if e['kind'] != info.kind:
    raise ConfigError(f'{m} models {e["kind"]} data, but {d} is {info.kind} data. Change '
                      f'{_data_fix(e["kind"])} or config.model_name.')
  levels, exact = e.get('levels'), e.get('exact', False)
  if info.kind == 'audio':
    levels = None   # WaveNet mu-law encodes the raw waveform to its own num_levels
  if levels is not None and (levels != info.num_levels if exact else levels < info.num_levels):
    fix = [f'config.{e["levels_field"]}={info.num_levels}'] if e['levels_field'] != 'model_name' \
        else []
    if info.kind == 'image' and levels == 2 and info.num_levels > 2:
      fix.append('config.data.binarize=True (binary images from this grey data set)')
      if config.model_name == 'vae':
        fix = ["config.model.likelihood='logistic' with config.model.num_levels=256"] + fix[1:]
    elif info.kind == 'image' and info.num_levels == 2 and levels > 2:
      fix.append("a grey-level data set (config.data.name='mnist' without binarize)")
    problems.append(f'{m} has {e["head"]}, but {d} has {info.num_levels} levels per '
                    f'{"pixel value" if info.kind == "image" else "step"}'
                    + (' (a model with fewer levels than the data cannot give its values '
                       'a probability)' if not exact else '')
                    + f'. Set {" or ".join(fix) if fix else "another config.data.name"}.')
  if info.kind == 'image':
    shape = e.get('shape')
    channels = e.get('channels')
    if shape is not None and tuple(shape) != tuple(info.shape):
      problems.append(f'{m} has config.{e["shape_field"]}={tuple(shape)}, but the images of '
                      f'{d} are {tuple(info.shape)}. Set --config.{e["shape_field"]}='
                      f'"{tuple(info.shape)}".')
    elif channels is not None and channels != info.shape[-1]:
      problems.append(f'{m} models {channels}-channel images (config.{e["channels_field"]}='
                      f'{channels}), but the images of {d} have {info.shape[-1]} '
                      f'channel(s). Set --config.{e["channels_field"]}={info.shape[-1]}.')
  if info.kind == 'video':
    k = getattr(model, 'context_frames', None)
    if k is not None and not k < info.shape[0]:
      problems.append(f'config.model.context_frames={k} leaves no frame to predict in the '
                      f'{info.shape[0]}-frame videos of {d}. Set --config.model.context_frames '
                      f'below {info.shape[0]} or raise config.data.num_frames.')
  classes = e.get('num_classes', 0)
  if classes and (classes != info.num_classes if e.get('classes_exact') else
                  classes > info.num_classes):
    problems.append(f'{m} conditions on config.model.num_classes={classes} classes, but {d} '
                    f'has {info.num_classes or "no"} label classes. Set '
                    f'--config.model.num_classes={info.num_classes}.')
  speakers = e.get('num_speakers', 0)
  if speakers and speakers > info.num_speakers:
    problems.append(f'{m} conditions on config.model.num_speakers={speakers}, but {d} has '
                    f'{info.num_speakers}. Set --config.model.num_speakers='
                    f'{info.num_speakers}.')
  prompt = config.sample.get('prompt', '') if 'sample' in config else ''
  if info.kind == 'text' and hasattr(model, 'sample'):
    outside = sorted({ch for ch in prompt if ch not in info.vocab})
    if outside or not prompt:
      problems.append(
          f'config.sample.prompt={prompt!r}, the text the samples continue, '
          + (f'has characters outside the vocabulary of {d}: {outside} (its '
             f'{len(info.vocab)} characters: {"".join(info.vocab)!r}). Use only those.'
             if outside else 'is empty. Give at least one character.'))
  carry = getattr(model, 'carry_batch', 0)
  if carry and not config.data.get('streams', False):
    problems.append(f'config.model.carry_batch={carry} carries the recurrent state from one '
                    'training window to the next, which needs contiguous streams: set '
                    '--config.data.streams=True (or carry_batch=0).')
  elif carry and carry != config.data.batch_size:
    problems.append(f'config.model.carry_batch={carry} must equal config.data.batch_size='
                    f'{config.data.batch_size} (one carried state per stream).')
  if problems:
    raise ConfigError('The model does not fit the data:\n' + '\n'.join(
        f'  {p}' for p in problems))
