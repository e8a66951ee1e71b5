"""Batched, deterministic, checkpointable input pipelines built on grain.

`create_datasets(config.data, ...)` is the one call the trainer makes. Whole splits are
loaded into memory by `experiments.datasets` (the field notes measured grain over
ArrayRecord at ~100 us a record; in-memory MNIST shuffles an epoch in about a second).
grain then shuffles (a fresh permutation each epoch), applies per-example randomness
(dynamic binarization, random crops) seeded by the element's global index, shards by
process and batches. The training iterator's position is `get_state()`, which the
trainer stores in the checkpoint, so a resumed run sees exactly the batches it would have.

Evaluation iterates over the whole test split in order; the last batch is padded and a
'mask' field marks real examples, so every test example is counted exactly once.

Semi-supervised training (`data.num_labelled` > 0, e.g. M2 in latent/m2.py): a fixed,
seeded subset of num_labelled / num_classes training examples per class keeps its labels.
Each training batch is `batch_size` examples of the whole training set with 'labelled'
False, followed by `labelled_batch_size` examples of the labelled subset (its own
shuffled, repeated stream) with 'labelled' True. The two batched streams are zipped at the
MapDataset level, so batch i is a pure function of i: the combined iterator's state is one
position, checkpointed and restored like the single stream's.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator

import grain
import numpy as np

from experiments import datasets, moving_mnist
from experiments.datasets import DataError, DatasetInfo

# Evaluation uses this fixed binarization of the test set unless the config says otherwise.
DEFAULT_EVAL_BINARIZATION_SEED = 0


@dataclasses.dataclass
class Datasets:
  info: DatasetInfo
  train_iter: grain.DatasetIterator     # infinite; yields process-local batches (dicts)
  eval_split: str
  _eval_source: dict                    # process-local arrays of the evaluation split
  eval_batch_size: int                  # per process
  num_eval_examples: int                # in this process's shard

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """The whole evaluation split (this process's shard), in order, padded, with 'example_mask'."""
    n, bs = self.num_eval_examples, self.eval_batch_size
    for start in range(0, n, bs):
      stop = min(start + bs, n)
      batch = {k: v[start:stop] for k, v in self._eval_source.items()}
      mask = batch.pop('_valid')
      if stop - start < bs:
        pad = bs - (stop - start)
        batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in batch.items()}
        mask = np.concatenate([mask, np.zeros(pad, bool)])
      batch['example_mask'] = mask
      yield batch

  @property
  def example_shape(self) -> tuple:
    """Shape of one model input (image H, W, C; sequence length for text/audio)."""
    key = {'image': 'image', 'text': 'text', 'audio': 'audio', 'video': 'video',
           'transduction': 'source'}[self.info.kind]
    return tuple(self._eval_source[key].shape[1:])

  @property
  def num_dims(self) -> int:
    """Dimensions each example's NLL is spread over, for bits/dim (bits/char for text)."""
    if self.info.kind == 'text':
      return self.example_shape[0] - 1   # seq_len + 1 characters predict seq_len
    if self.info.kind == 'transduction':  # the models report each example's own count
      return int(self._eval_source['target'].shape[1])
    return int(np.prod(self.example_shape))


class _ArraySource:
  """A dict of equal-length arrays as a grain random-access source of dict elements."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self._arrays = arrays
    self._len = len(next(iter(arrays.values())))

  def __len__(self):
    return self._len

  def __getitem__(self, index):
    return {k: v[index] for k, v in self._arrays.items()}

  def __repr__(self):
    return f'_ArraySource({self._len} examples, keys={sorted(self._arrays)})'


def _binarize_fixed(images: np.ndarray, seed: int, max_level: int = 255) -> np.ndarray:
  """A fixed Bernoulli draw of every pixel's intensity, image / max_level (the evaluation
  binarization)."""
  rng = np.random.default_rng(seed)
  return (rng.random(images.shape, dtype=np.float32)
          < images / np.float32(max_level)).astype(np.uint8)


def _binarize_dynamic_with(max_level: int):
  def binarize(example, rng: np.random.Generator):
    img = example['image']
    example = dict(example)
    example['image'] = (rng.random(img.shape, dtype=np.float32)
                        < img / np.float32(max_level)).astype(np.uint8)
    return example
  return binarize


_binarize_dynamic = _binarize_dynamic_with(255)


def _text_windows(ids: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
  """Non-overlapping windows of seq_len + 1 characters (inputs and next-character targets)."""
  n = (len(ids) - 1) // seq_len
  idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
  return {'text': ids[idx].astype(np.int32)}


def _text_random_windows(ids: np.ndarray, seq_len: int):
  """Training windows at a random offset: record i starts at i * seq_len + u, u uniform in
  [0, seq_len), so every epoch sees differently aligned windows of the same text (as
  nanoGPT's random starting points do). Returns (arrays, transform)."""
  n = (len(ids) - 1) // seq_len - 1   # the last start must leave room for the largest u
  ids = np.asarray(ids, np.int32)

  def window(example, rng: np.random.Generator):
    start = int(example['start']) + int(rng.integers(0, seq_len))
    return {'text': ids[start:start + seq_len + 1]}
  return {'start': np.arange(n, dtype=np.int64) * seq_len}, window


def _random_crop(length: int):
  def crop(example, rng: np.random.Generator):
    audio, n = example['audio'], int(example['length'])
    out = dict(example)
    if n > length:
      start = int(rng.integers(0, n - length + 1))
      out['audio'] = audio[start:start + length]
      out['mask'] = np.ones(length, bool)
    else:
      out['audio'] = (audio[:length] if audio.shape[0] >= length
                      else np.pad(audio, (0, length - audio.shape[0])))
      out['mask'] = np.arange(length) < n
    out['length'] = np.int32(min(n, length))
    return out
  return crop


def parse_split(spec: str) -> tuple[str, slice]:
  """'test' -> ('test', all); 'test[:512]' or 'train[100:200]' -> a slice of the split."""
  m = re.fullmatch(r'(\w+)(?:\[(-?\d*):(-?\d*)\])?', spec)
  if not m:
    raise ValueError(f"Bad split {spec!r}: use a split name, optionally sliced: 'test[:512]'.")
  name, a, b = m.groups()
  return name, slice(int(a) if a else None, int(b) if b else None)


def _prepare_split(cfg, info: DatasetInfo, spec: str, train: bool) -> tuple[dict, Any]:
  """Loads a split and returns (arrays, per-example random transform or None)."""
  split, sl = parse_split(spec)
  field = 'train_split' if train else 'eval_split'
  if info.kind == 'video':
    return _video_split(cfg, split, sl, field, train), None
  arrays = datasets.load_split(cfg.name, split, source=cfg.source, local_dir=cfg.local_dir)
  total = len(next(iter(arrays.values())))
  if info.kind != 'text':   # text is sliced by windows, below
    arrays = {k: v[sl] for k, v in arrays.items()}
    if not len(next(iter(arrays.values()))):
      raise DataError(f'config.data.{field}={spec!r} selects no examples of the {total:,} '
                      f'in the {split!r} split of {cfg.name!r}. Select at least one: '
                      f"'{split}' or '{split}[:512]'.")
  transform = None
  if info.kind == 'image':
    arrays = {k: v for k, v in arrays.items() if k in ('image', 'label')}
    if info.num_levels == 2 and arrays['image'].max() > 1:
      # The grey levels of the data set itself (255 for MNIST, 16 for digits).
      max_level = datasets.get_info(datasets.source_name(cfg.name)).num_levels - 1
      if train:
        transform = _binarize_dynamic_with(max_level)
      else:
        seed = cfg.get('eval_binarization_seed', DEFAULT_EVAL_BINARIZATION_SEED)
        arrays = dict(arrays, image=_binarize_fixed(arrays['image'], seed, max_level))
  elif info.kind == 'text':
    if len(arrays['text']) < 2 * cfg.seq_len + 2:
      raise DataError(f'The {split!r} split of {cfg.name!r} has {total:,} characters, too few '
                      f'for windows of config.data.seq_len={cfg.seq_len}. Lower seq_len or '
                      'check the data file.')
    if train and cfg.get('random_offsets', False):
      arrays, transform = _text_random_windows(arrays['text'], cfg.seq_len)
      arrays = {k: v[sl] for k, v in arrays.items()}
    else:
      arrays = {k: v[sl] for k, v in _text_windows(arrays['text'], cfg.seq_len).items()}
    if not len(next(iter(arrays.values()))):
      raise DataError(f'config.data.{field}={spec!r} selects no windows of the '
                      f'{cfg.seq_len + 1}-character windows of the {split!r} split.')
  elif info.kind == 'audio':
    if train:
      transform = _random_crop(cfg.crop_length)
    else:
      arrays = dict(arrays,
                    mask=np.arange(arrays['audio'].shape[1])[None] < arrays['length'][:, None])
  return arrays, transform


VIDEO_FIELDS = ('frame_size', 'digit_size', 'num_digits', 'num_frames')


def video_spec(cfg) -> moving_mnist.Spec:
  """The Moving MNIST variant of a config's data section: the standard data set (64x64,
  two 28-pixel digits, 20 frames) unless data.frame_size, digit_size, num_digits or
  num_frames say otherwise."""
  try:
    return moving_mnist.Spec(**{k: cfg[k] for k in VIDEO_FIELDS if k in cfg})
  except ValueError as e:
    raise DataError(f'config.data: {e}') from None


def _video_split(cfg, split: str, sl: slice, field: str, train: bool):
  """Training: a random-access source generating sequences on access. Evaluation: the
  selected sequences generated into memory (10,000 standard sequences are 820 MB)."""
  spec = video_spec(cfg)
  count = moving_mnist.TRAIN_SIZE if split == 'train' else moving_mnist.TEST_SIZE
  indices = range(count)[sl]
  if not len(indices):
    raise DataError(f'config.data.{field}={cfg[field]!r} selects none of the {count:,} '
                    f"sequences of moving_mnist's {split!r} split. Select at least one: "
                    f"'{split}' or '{split}[:512]'.")
  source = datasets.moving_mnist_source(split, spec, indices=indices, source=cfg.source,
                                        local_dir=cfg.local_dir)
  return source if train else {'video': source.generate()}


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _eval_shard(arrays, process_index, process_count):
  """This process's strided shard, padded so every process runs the same number of batches.

  Padding rows repeat the last example and get mask False (see Datasets.eval_batches).
  """
  n_total = len(next(iter(arrays.values())))
  per_process = -(-n_total // process_count)
  shard = {k: v[process_index::process_count] for k, v in arrays.items()}
  n_real = len(next(iter(shard.values())))
  if n_real < per_process:
    shard = {k: np.concatenate([v, np.repeat(v[-1:], per_process - n_real, axis=0)])
             for k, v in shard.items()}
  shard['_valid'] = np.arange(per_process) < n_real
  return shard, per_process


def labelled_subset(labels: np.ndarray, num_labelled: int, num_classes: int,
                    seed: int) -> np.ndarray:
  """Indices of num_labelled // num_classes examples of each class, drawn without
  replacement by `seed` (the same seed gives the same subset), grouped by class."""
  if num_labelled % num_classes:
    raise ValueError(f'config.data.num_labelled={num_labelled} must be a multiple of the '
                     f'{num_classes} classes (the same number of labels per class).')
  per_class = num_labelled // num_classes
  rng = np.random.default_rng(seed)
  picked = []
  for c in range(num_classes):
    idx = np.flatnonzero(labels == c)
    if len(idx) < per_class:
      raise ValueError(f'config.data.num_labelled={num_labelled} asks for {per_class} '
                       f'examples of class {c}; the training split has {len(idx)}.')
    picked.append(np.sort(rng.choice(idx, per_class, replace=False)))
  return np.concatenate(picked)


def _batched_stream(arrays, transform, shuffle_seed: int, transform_seed: int,
                    batch_size: int, process_index: int, process_count: int):
  """An infinite MapDataset of this process's batches: reshuffled every epoch, the random
  transform seeded by each element's global index, sharded by process."""
  source = _ArraySource(arrays) if isinstance(arrays, dict) else arrays
  ds = grain.MapDataset.source(source).shuffle(seed=shuffle_seed).repeat()
  if transform is not None:
    ds = ds.random_map(transform, seed=transform_seed)
  ds = ds[process_index::process_count]
  return ds.batch(batch_size // process_count, drop_remainder=True)


def read_options(cfg) -> grain.ReadOptions:
  """The training iterator's read-ahead: config.data.prefetch_threads threads keeping up to
  prefetch_batches batches ready (configs/common.py says why not grain's defaults); 0
  threads reads each batch when it is asked for."""
  threads = cfg.get('prefetch_threads', 1)
  batches = cfg.get('prefetch_batches', 4) if threads else 0
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=batches)


def _concat_batches(pair):
  unlabelled, labelled = pair
  return {k: np.concatenate([unlabelled[k], labelled[k]]) for k in unlabelled}


def _semi_supervised_train_iter(cfg, info: DatasetInfo, arrays, transform, *, seed: int,
                                process_index: int, process_count: int,
                                device_multiple: int) -> grain.DatasetIterator:
  """Batches of batch_size unlabelled + labelled_batch_size labelled examples (see the
  module docstring)."""
  num_labelled = cfg.num_labelled
  lbs = cfg.get('labelled_batch_size', 0) or 0
  if info.num_classes < 2 or 'label' not in arrays:
    raise ValueError(f'config.data.num_labelled={num_labelled} needs a labelled data set; '
                     f'{info.name} has no labels.')
  if lbs <= 0 or lbs % (process_count * device_multiple):
    raise ValueError(f'config.data.labelled_batch_size={lbs} must be a positive multiple of '
                     f'the {process_count * device_multiple} devices (over '
                     f'{process_count} processes) the batch is sharded over.')
  n = len(arrays['label'])
  subset = labelled_subset(arrays['label'], num_labelled, info.num_classes,
                           cfg.get('labelled_seed', 0))
  unlabelled = dict(arrays, labelled=np.zeros(n, bool))
  labelled = {k: v[subset] for k, v in arrays.items()}
  labelled['labelled'] = np.ones(len(subset), bool)
  # The unlabelled stream is the label-free pipeline's stream (same seeds) plus the flag;
  # the labelled stream has seeds of its own, and is binarized afresh each draw too.
  u_stream = _batched_stream(unlabelled, transform, seed, seed + 1, cfg.batch_size,
                             process_index, process_count)
  l_stream = _batched_stream(labelled, transform, seed + 2, seed + 3, lbs,
                             process_index, process_count)
  # Both are practically infinite; zip needs equal lengths.
  length = min(len(u_stream), len(l_stream))
  ds = grain.experimental.ZipMapDataset(
      [u_stream[:length], l_stream[:length]]).map(_concat_batches)
  return iter(ds.to_iter_dataset(read_options(cfg)))


class TextStreams:
  """Training batches for truncated backpropagation through time: the split's characters
  cut into batch_size contiguous streams, batch k holding window k of every stream
  (seq_len + 1 characters; consecutive windows overlap by the one character that is the
  last target of one and the first input of the next), so a model can carry its recurrent
  state from one batch to the next. 'reset' is 1 on each stream's first window (the start
  of an epoch), where a carried state must start afresh. The position is the iterator's
  state, checkpointed with the run (get_state / set_state, as grain's iterators)."""

  def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, process_index: int = 0,
               process_count: int = 1):
    length = len(ids) // batch_size
    self.windows = (length - 1) // seq_len
    if self.windows < 1:
      raise DataError(f'{len(ids):,} characters cut into config.data.batch_size={batch_size} '
                      f'streams leave {length} characters per stream, too few for one window '
                      f'of config.data.seq_len={seq_len}. Lower the batch size or seq_len.')
    streams = np.asarray(ids[:length * batch_size], np.int32).reshape(batch_size, length)
    local = batch_size // process_count
    self._streams = streams[process_index * local:(process_index + 1) * local]
    self._seq_len = seq_len
    self._k = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    k = self._k % self.windows
    start = k * self._seq_len
    self._k += 1
    text = self._streams[:, start:start + self._seq_len + 1]
    return {'text': text, 'reset': np.full((len(text),), k == 0, np.int32)}

  def get_state(self) -> dict:
    return {'window': self._k}

  def set_state(self, state: dict) -> None:
    self._k = int(state['window'])


def data_info(cfg) -> DatasetInfo:
  """The description of the data a config's `data` section gives the model: the data
  set's, with 2 levels where data.binarize=True makes grey images binary."""
  if cfg.name not in datasets.NAMES:
    raise DataError(f'Unknown data set config.data.name={cfg.name!r}; choose one of '
                    f'{", ".join(datasets.NAMES)}.')
  info = datasets.get_info(cfg.name)
  if cfg.get('binarize', False) and info.num_levels != 2:
    if info.kind != 'image' or info.shape[-1] != 1:
      raise DataError(f'config.data.binarize=True needs grey (1-channel) images; '
                      f'{cfg.name!r} is {info.kind} data of shape {info.shape}.')
    # Each pixel a Bernoulli draw of its intensity: fresh every training epoch, fixed for
    # evaluation (as binarized_mnist, which is mnist with this on).
    info = dataclasses.replace(info, num_levels=2)
  if info.kind == 'video':
    info = dataclasses.replace(info, shape=video_spec(cfg).shape)
  return info


def create_datasets(cfg, *, seed: int, process_index: int = 0, process_count: int = 1,
                    eval_batch_multiple: int = 1) -> Datasets:
  """Train iterator and evaluation batches for a config's `data` section.

  cfg fields: name, source ('auto' | 'local' | 'tfds'), local_dir (None falls back to
  $DGM_DATA_DIR), batch_size (global), eval_batch_size (global), eval_split, and per kind:
  seq_len and random_offsets (text; training windows start at a random offset each epoch),
  crop_length (audio), eval_binarization_seed (binarized images), frame_size, digit_size,
  num_digits and num_frames (moving_mnist's variant, see video_spec); for semi-supervised
  training, num_labelled (0 or absent: off), labelled_batch_size and labelled_seed
  (default 0), which make each training batch batch_size + labelled_batch_size examples
  with a boolean 'labelled' field.
  The per-process evaluation batch is rounded up to a multiple of `eval_batch_multiple`
  (the local device count) so it shards evenly; padding is masked out.
  """
  if cfg.name not in datasets.NAMES:
    raise DataError(f'Unknown data set config.data.name={cfg.name!r}; choose one of '
                    f'{", ".join(datasets.NAMES)}.')
  info = data_info(cfg)
  if cfg.batch_size % process_count:
    raise ValueError(f'config.data.batch_size={cfg.batch_size} is not divisible by the '
                     f'{process_count} processes.')

  train_arrays, transform = _prepare_split(cfg, info, cfg.train_split, train=True)
  if cfg.get('streams', False):
    if info.kind != 'text':
      raise DataError(f'config.data.streams=True is for text; {cfg.name!r} is {info.kind} data.')
    split, sl = parse_split(cfg.train_split)
    ids = datasets.load_split(cfg.name, split, source=cfg.source,
                              local_dir=cfg.local_dir)['text'][sl]
    train_iter = TextStreams(ids, cfg.batch_size, cfg.seq_len, process_index, process_count)
  elif cfg.get('num_labelled', 0):
    train_iter = _semi_supervised_train_iter(
        cfg, info, train_arrays, transform, seed=seed, process_index=process_index,
        process_count=process_count, device_multiple=eval_batch_multiple)
  else:
    ds = _batched_stream(train_arrays, transform, seed, seed + 1, cfg.batch_size,
                         process_index, process_count)
    train_iter = iter(ds.to_iter_dataset(read_options(cfg)))

  eval_arrays, _ = _prepare_split(cfg, info, cfg.eval_split, train=False)
  eval_arrays, n_eval = _eval_shard(eval_arrays, process_index, process_count)
  return Datasets(info=info, train_iter=train_iter, eval_split=cfg.eval_split,
                  _eval_source=eval_arrays,
                  eval_batch_size=_round_up(_round_up(cfg.eval_batch_size, process_count)
                                            // process_count, eval_batch_multiple),
                  num_eval_examples=n_eval)
