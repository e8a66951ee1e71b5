"""Whole data-set splits loaded into memory as numpy arrays.

The data sets, and where each comes from:

- `digits`: scikit-learn's handwritten digits (UCI optdigits test set), 1,797 8x8 images
  with values 0..16, shipped inside scikit-learn (no download). Split here with a fixed
  permutation (seed 0): the first 1,500 examples are 'train', the last 297 'test'.
- `mnist`: LeCun, Cortes & Burges' handwritten digits, 60,000 train and 10,000 test 28x28
  grey images. Local files: the publisher's IDX files.
- `binarized_mnist`: the same MNIST files; the input pipeline binarizes them (a fresh
  Bernoulli draw per epoch for training, a fixed seeded draw of the test set for
  evaluation), so only `get_info(...).num_levels` (2) differs from `mnist`.
- `fashion_mnist`: Zalando's Fashion-MNIST, same format and sizes as MNIST.
- `cifar10`: Krizhevsky's CIFAR-10, 50,000 train and 10,000 test 32x32 colour images.
  Local files: the publisher's python-pickle batches (a trusted-source format: pickle runs
  code, so only point this at the publisher's files).
- `tiny_shakespeare`: Karpathy's char-rnn corpus, 1,115,394 ASCII characters, split 90/5/5
  into train/validation/test in file order, exactly as TFDS `tiny_shakespeare` does.
  Characters are encoded with the 65-character vocabulary of the whole file.
- `spoken_digit`: the Free Spoken Digit Dataset (Jakobovski et al.), mono 16-bit 8 kHz WAV
  recordings named `{digit}_{speaker}_{take}.wav`; takes 0-4 are 'test', the rest 'train'
  (the data set's own convention; TFDS ships it as a single 'train' split).
- `moving_mnist`: Srivastava et al.'s Moving MNIST (arXiv 1502.04681), generated here from
  the MNIST files (experiments/moving_mnist.py): two digits bouncing in a 64x64 frame for
  20 frames, uint8 'video' [N, 20, 64, 64, 1]. 'test' is a fixed seeded set of 10,000
  sequences of the MNIST test digits; 'train' sequences of the training digits are
  generated on access by the input pipeline (a practically infinite random-access
  source), which also makes the smaller variants of config.data (frame_size, digit_size,
  num_digits, num_frames). Reads the `mnist/` folder.
- `reverse_strings`, `sort_strings`: synthetic transduction tasks generated here, seeded
  (no files, no source): strings of lowercase letters, each of a length drawn uniformly,
  whose target is the string reversed, or its letters sorted. 'train' holds 100,000
  distinct strings of lengths 1-15 (a length drawn uniformly, then a new string of it:
  all 26 of length 1 and 676 of length 2 are in it); 'validation' (1,000) and 'test'
  (2,000) strings of the same lengths that are in no earlier split (so none of lengths
  1-2, and fewer of 3); 'test_long' 2,000 strings of lengths 16-20, longer than any
  training string. For sorting, a held-out string may still be a permutation of a training
  string, with the same target.
  Arrays 'source' [N, longest] and 'target' [N, longest + 1] (ending with the end id 2),
  padded with 0; ids as TRANSDUCTION_VOCAB.

Sources (`load_split(..., source=...)`):

- 'local': the publisher's files under `<local_dir>/<tfds name>/` (`binarized_mnist` reads
  `mnist/`), where `local_dir` is the argument or else `$DGM_DATA_DIR`.
- 'tfds': data already prepared by TensorFlow Datasets (`tfds build <name>`), read as a TFDS
  data source (ArrayRecord files) without TensorFlow. Nothing is ever downloaded from here.
  TFDS orders examples differently from the publisher's files. TFDS's `spoken_digit` builder
  needs TensorFlow installed even to read prepared data.
- 'auto': 'local' if `<local_dir>/<tfds name>/` exists, else 'tfds'.

`digits` and the generated tasks ignore the source. Every data problem raises `DataError` with a
message saying which file or directory is at fault and how to fix it. Loaded splits are cached for
the life of the process and returned as read-only arrays.
"""
from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import math
import os
import pickle
import re
import struct
import tarfile
import wave
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import moving_mnist
from experiments.errors import UserError

Arrays = dict[str, np.ndarray]

NAMES = ('digits', 'mnist', 'binarized_mnist', 'fashion_mnist', 'cifar10', 'tiny_shakespeare',
         'spoken_digit', 'reverse_strings', 'sort_strings', 'moving_mnist')
# Synthetic transduction tasks generated here (seeded, no files); see _generate_transduction.
GENERATED = ('reverse_strings', 'sort_strings')
# Token ids of the transduction tasks: 0 padding, 1 start, 2 end, then the letters.
TRANSDUCTION_VOCAB = ('<pad>', '<s>', '</s>') + tuple('abcdefghijklmnopqrstuvwxyz')
# split -> (number of strings, shortest, longest, seed). test_long's strings are all
# longer than any training string.
TRANSDUCTION_SPLITS = {'train': (100_000, 1, 15, 0), 'validation': (1_000, 1, 15, 1),
                       'test': (2_000, 1, 15, 2), 'test_long': (2_000, 16, 20, 3)}
SOURCES = ('auto', 'local', 'tfds')
DATA_DIR_ENV = 'DGM_DATA_DIR'

# The sorted characters of the whole Tiny Shakespeare file; a character's id is its index.
SHAKESPEARE_VOCAB = tuple("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# The FSDD v1.0.10 speakers, sorted; a speaker's id is its index (the same whichever source
# is used, although TFDS's older FSDD release lacks some of them).
SPOKEN_DIGIT_SPEAKERS = ('george', 'jackson', 'lucas', 'nicolas', 'theo', 'yweweler')

_DIGITS_TRAIN_SIZE = 1500
_SPOKEN_DIGIT_TEST_TAKES = 5   # takes 0..4 are the test split
_SPOKEN_DIGIT_RATE = 8000


class DataError(UserError):
  """A data set that is unknown, missing, corrupt or not prepared for the chosen source."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of a data set.

  Attributes:
    name: the data set's name (one of NAMES).
    kind: 'image', 'text', 'audio', 'transduction' or 'video'.
    shape: one example's shape: (H, W, C) for images, (T, H, W, C) for video; () for
      text and audio, whose
      examples are sequences (text is one long id sequence, audio padded + 'length').
    num_levels: discrete values per dimension: 256 for 8-bit images and for audio (which
      the model mu-law encodes to 256 levels), 2 for binarized_mnist, 17 for digits, the
      vocabulary size for text.
    num_classes: label classes (0 if unlabelled).
    splits: the split names load_split accepts.
    vocab: text only: the characters in id order.
    num_speakers: audio only: speaker ids run from 0 to num_speakers - 1.
    sample_rate: audio only: samples per second.
  """
  name: str
  kind: str
  shape: tuple
  num_levels: int
  num_classes: int
  splits: tuple
  vocab: tuple = ()
  num_speakers: int = 0
  sample_rate: int = 0


_INFOS = {
    'digits': DatasetInfo('digits', 'image', (8, 8, 1), 17, 10, ('train', 'test')),
    'mnist': DatasetInfo('mnist', 'image', (28, 28, 1), 256, 10, ('train', 'test')),
    'binarized_mnist': DatasetInfo('binarized_mnist', 'image', (28, 28, 1), 2, 10,
                                   ('train', 'test')),
    'fashion_mnist': DatasetInfo('fashion_mnist', 'image', (28, 28, 1), 256, 10,
                                 ('train', 'test')),
    'cifar10': DatasetInfo('cifar10', 'image', (32, 32, 3), 256, 10, ('train', 'test')),
    'tiny_shakespeare': DatasetInfo('tiny_shakespeare', 'text', (), len(SHAKESPEARE_VOCAB), 0,
                                    ('train', 'validation', 'test'), vocab=SHAKESPEARE_VOCAB),
    'spoken_digit': DatasetInfo('spoken_digit', 'audio', (), 256, 10, ('train', 'test'),
                                num_speakers=len(SPOKEN_DIGIT_SPEAKERS),
                                sample_rate=_SPOKEN_DIGIT_RATE),
}
_INFOS['moving_mnist'] = DatasetInfo('moving_mnist', 'video', (20, 64, 64, 1), 256, 0,
                                     ('train', 'test'))
for _name in GENERATED:
  _INFOS[_name] = DatasetInfo(_name, 'transduction', (), len(TRANSDUCTION_VOCAB), 0,
                              tuple(TRANSDUCTION_SPLITS), vocab=TRANSDUCTION_VOCAB)

# Files expected in <local_dir>/<folder>/, for error messages.
_LOCAL_FILES = {
    'mnist': 'train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, '
             't10k-labels-idx1-ubyte.gz (or the same files uncompressed)',
    'cifar10': 'cifar-10-batches-py/{data_batch_1..5, test_batch} (or those files directly), '
               'or the archive cifar-10-python.tar.gz',
    'tiny_shakespeare': 'input.txt',
    'spoken_digit': 'recordings/{digit}_{speaker}_{take}.wav (or the .wav files directly)',
}
_LOCAL_FILES['fashion_mnist'] = _LOCAL_FILES['mnist']

_CACHE: dict[tuple[str, str, str, str | None], Arrays] = {}


def get_info(name: str) -> DatasetInfo:
  """The DatasetInfo of a data set; DataError for an unknown name."""
  if name not in _INFOS:
    raise DataError(f'Unknown data set {name!r}; valid names: {", ".join(NAMES)}.')
  return _INFOS[name]


def resolve_local_dir(local_dir: str | None) -> str | None:
  """`local_dir` if given, else $DGM_DATA_DIR if set, else None."""
  resolved = local_dir or os.environ.get(DATA_DIR_ENV) or None
  return os.path.expanduser(resolved) if resolved else None


def load_split(name: str, split: str, *, source: str = 'auto', local_dir: str | None = None,
               tfds_data_dir: str | None = None) -> Arrays:
  """Loads a whole split into memory.

  Args:
    name: one of NAMES.
    split: one of get_info(name).splits.
    source: 'auto', 'local' or 'tfds' (see the module docstring); ignored for digits.
    local_dir: directory holding `<tfds name>/` folders; None falls back to $DGM_DATA_DIR.
    tfds_data_dir: TFDS data directory; None means TFDS's default ($TFDS_DATA_DIR or
      ~/tensorflow_datasets).

  Returns:
    Read-only arrays. Images: 'image' uint8 [N, H, W, C], 'label' int32 [N]. Text: 'text'
    int32 [num_chars] character ids (see DatasetInfo.vocab). Audio: 'audio' int16
    [N, max_len] zero-padded, 'length' int32 [N], 'label' int32 [N] (the digit),
    'speaker' int32 [N] (index into SPOKEN_DIGIT_SPEAKERS), 'take' int32 [N].

  Raises:
    DataError: unknown name, split or source; data missing, corrupt or not prepared.
  """
  info = get_info(name)
  if split not in info.splits:
    raise DataError(f'{name!r} has no split {split!r}; valid splits: {", ".join(info.splits)}.')
  if name == 'moving_mnist':
    if split == 'train':
      raise DataError("moving_mnist's 'train' split is generated on access (it has 1,000,000 "
                      'sequences); use datasets.moving_mnist_source or the input pipeline.')
    return {'video': moving_mnist_source(split, source=source, local_dir=local_dir).generate()}
  if source not in SOURCES:
    raise DataError(f'Unknown data source {source!r}; valid sources: {", ".join(SOURCES)}.')
  folder = _folder_name(name)
  if name == 'digits' or name in GENERATED:
    source, location = 'embedded', None
  else:
    root = resolve_local_dir(local_dir)
    if source == 'auto':
      source = 'local' if root and (Path(root) / folder).is_dir() else 'tfds'
    location = str(_local_folder(name, root).absolute()) if source == 'local' else tfds_data_dir

  key = (folder, split, source, location)
  if key not in _CACHE:
    if source == 'embedded':
      arrays = _load_digits(split) if name == 'digits' else _generate_transduction(name, split)
    elif source == 'local':
      arrays = _LOCAL_LOADERS[folder](Path(location), split)
    else:
      arrays = _load_tfds(name, split, tfds_data_dir)
    for array in arrays.values():
      array.flags.writeable = False
    _CACHE[key] = arrays
  return dict(_CACHE[key])


def moving_mnist_source(split: str, spec: moving_mnist.Spec | None = None, *,
                        indices: range | None = None, source: str = 'auto',
                        local_dir: str | None = None) -> moving_mnist.Source:
  """The Moving MNIST sequences of a split as a random-access source (see
  experiments/moving_mnist.py): 'train' has moving_mnist.TRAIN_SIZE sequences of the MNIST
  training digits, 'test' the fixed moving_mnist.TEST_SIZE of the test digits. `indices`
  (a range) selects some of them; spec None is the standard data set. The MNIST files are
  read as load_split('mnist') reads them."""
  if split not in ('train', 'test'):
    raise DataError(f"'moving_mnist' has no split {split!r}; valid splits: train, test.")
  digits = load_split('mnist', split, source=source, local_dir=local_dir)['image']
  count, seed = ((moving_mnist.TRAIN_SIZE, moving_mnist.TRAIN_SEED) if split == 'train'
                 else (moving_mnist.TEST_SIZE, moving_mnist.TEST_SEED))
  return moving_mnist.Source(digits, count, seed, spec or moving_mnist.Spec(), indices=indices)


def source_name(name: str) -> str:
  """The data set whose files `name` reads: binarized_mnist and moving_mnist read mnist."""
  return 'mnist' if name in ('binarized_mnist', 'moving_mnist') else name


def _folder_name(name: str) -> str:
  """The TFDS name, which is also the local folder's name."""
  return 'mnist' if name in ('binarized_mnist', 'moving_mnist') else name


def _local_dir_hint(name: str) -> str:
  folder = _folder_name(name)
  return (f'config.data.local_dir or the {DATA_DIR_ENV} environment variable to a directory '
          f'holding {folder}/ with {_LOCAL_FILES[folder]}')


def _fix_hint(name: str) -> str:
  return (f"Set {_local_dir_hint(name)}, or use config.data.source='tfds' on a machine with "
          'internet access.')


def _local_folder(name: str, root: str | None) -> Path:
  if root is None:
    raise DataError(f"source='local' for {name!r}, but no local data directory is configured "
                    f'(config.data.local_dir and {DATA_DIR_ENV} are unset). {_fix_hint(name)}')
  path = Path(root) / _folder_name(name)
  if not path.is_dir():
    raise DataError(f'No local copy of {name!r}: directory {path} does not exist. '
                    f'{_fix_hint(name)}')
  return path


def _missing_file(name: str, path: Path) -> DataError:
  return DataError(f'Missing data file {path} for {name!r}. {_fix_hint(name)}')


def _corrupt(path: Path | str, problem: str) -> DataError:
  return DataError(f'Data file {path} is corrupt or truncated ({problem}); delete it and '
                   're-download it.')


# ---------------------------------------------------------------------------------------
# digits (embedded in scikit-learn)


def _load_digits(split: str) -> Arrays:
  from sklearn.datasets import load_digits  # Imported here: slow, and needed only here.
  digits = load_digits()
  order = np.random.default_rng(0).permutation(len(digits.target))
  order = order[:_DIGITS_TRAIN_SIZE] if split == 'train' else order[_DIGITS_TRAIN_SIZE:]
  return {'image': digits.images[order, :, :, None].astype(np.uint8),
          'label': digits.target[order].astype(np.int32)}


# ---------------------------------------------------------------------------------------
# Synthetic transduction tasks


def _random_strings(count: int, shortest: int, longest: int, seed: int,
                    exclude: set[bytes] = frozenset()) -> list[np.ndarray]:
  """`count` distinct letter-id strings (ids 0-25), lengths uniform in [shortest, longest],
  none in `exclude`. Strings of a length whose every string is excluded are redrawn."""
  rng = np.random.default_rng(seed)
  out, seen = [], set(exclude)
  while len(out) < count:
    n = int(rng.integers(shortest, longest + 1))
    s = rng.integers(0, 26, n).astype(np.int8)
    key = s.tobytes()
    if key not in seen:
      seen.add(key)
      out.append(s)
  return out


def _generate_transduction(name: str, split: str) -> Arrays:
  count, shortest, longest, seed = TRANSDUCTION_SPLITS[split]
  exclude: set[bytes] = set()
  # Held out: validation has no training string, test no training or validation one.
  for other in {'validation': ['train'], 'test': ['train', 'validation']}.get(split, []):
    exclude |= {s.tobytes() for s in _random_strings(*TRANSDUCTION_SPLITS[other], exclude)}
  strings = _random_strings(count, shortest, longest, seed, exclude)
  source = np.zeros((count, longest), np.int32)
  target = np.zeros((count, longest + 1), np.int32)
  for i, s in enumerate(strings):
    out = s[::-1] if name == 'reverse_strings' else np.sort(s)
    source[i, :len(s)] = s.astype(np.int32) + 3
    target[i, :len(s)] = out.astype(np.int32) + 3
    target[i, len(s)] = 2      # the end id
  return {'source': source, 'target': target}


# ---------------------------------------------------------------------------------------
# Local files in the publishers' formats


def _load_idx_local(folder: Path, split: str) -> Arrays:
  """MNIST-format IDX files: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
  prefix = 'train' if split == 'train' else 't10k'
  images = _read_idx(_find_idx(folder, f'{prefix}-images-idx3-ubyte'), ndim=3)
  labels = _read_idx(_find_idx(folder, f'{prefix}-labels-idx1-ubyte'), ndim=1)
  if images.shape[1:] != (28, 28) or len(images) != len(labels):
    raise DataError(f'The IDX files in {folder} hold {images.shape} images and {labels.shape} '
                    'labels; expected [N, 28, 28] images and N labels. Re-download them.')
  return {'image': images[..., None], 'label': labels.astype(np.int32)}


def _find_idx(folder: Path, stem: str) -> Path:
  for path in (folder / f'{stem}.gz', folder / stem):
    if path.is_file():
      return path
  raise _missing_file(folder.name, folder / f'{stem}.gz')


def _read_idx(path: Path, ndim: int) -> np.ndarray:
  """Parses an unsigned-byte IDX file (magic 00 00 08 <ndim>, big-endian uint32 dims)."""
  if path.suffix == '.gz':
    try:
      with gzip.open(path, 'rb') as f:
        data = f.read()
    except (OSError, EOFError, zlib.error) as e:
      raise _corrupt(path, f'bad gzip data: {e}') from e
  else:
    data = path.read_bytes()
  magic = bytes([0, 0, 0x08, ndim])
  if data[:4] != magic:
    raise _corrupt(path, f'IDX magic number {data[:4].hex()}, expected {magic.hex()}')
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise _corrupt(path, f'{len(data)} bytes, shorter than the IDX header')
  dims = struct.unpack(f'>{ndim}I', data[4:header_size])
  expected_size = header_size + math.prod(dims)
  if len(data) != expected_size:
    raise _corrupt(path, f"{len(data)} bytes, but the header's shape {dims} needs "
                   f'{expected_size}')
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(dims)


_CIFAR10_BATCHES = {'train': tuple(f'data_batch_{i}' for i in range(1, 6)),
                    'test': ('test_batch',)}
_CIFAR10_ARCHIVE = 'cifar-10-python.tar.gz'
_CIFAR10_ARCHIVE_DIR = 'cifar-10-batches-py'


def _load_cifar10_local(folder: Path, split: str) -> Arrays:
  """CIFAR-10 python batches, extracted (in cifar-10-batches-py/ or directly) or archived."""
  names = _CIFAR10_BATCHES[split]
  for batch_dir in (folder / _CIFAR10_ARCHIVE_DIR, folder):
    if all((batch_dir / n).is_file() for n in names):
      batches = [_parse_cifar10_batch((batch_dir / n).read_bytes(), batch_dir / n) for n in names]
      break
  else:
    archive = folder / _CIFAR10_ARCHIVE
    if not archive.is_file():
      raise _missing_file('cifar10', folder / _CIFAR10_ARCHIVE_DIR / names[0])
    batches = [_parse_cifar10_batch(blob, f'{archive}:{member}')
               for member, blob in _read_tar_members(archive, names)]
  return {'image': np.concatenate([images for images, _ in batches]),
          'label': np.concatenate([labels for _, labels in batches])}


def _read_tar_members(archive: Path, names: Sequence[str]) -> list[tuple[str, bytes]]:
  try:
    with tarfile.open(archive, 'r:gz') as tar:
      members = []
      for name in names:
        member = f'{_CIFAR10_ARCHIVE_DIR}/{name}'
        f = tar.extractfile(member)
        if f is None:
          raise _corrupt(archive, f'{member} is not a regular file')
        members.append((member, f.read()))
      return members
  except KeyError as e:
    raise _corrupt(archive, f'member missing: {e}') from e
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
    raise _corrupt(archive, str(e)) from e


def _parse_cifar10_batch(blob: bytes, where: Path | str) -> tuple[np.ndarray, np.ndarray]:
  """One pickled batch {b'data': uint8 [n, 3072] (channel-major), b'labels': [n]} -> NHWC."""
  try:
    batch = pickle.loads(blob, encoding='bytes')
    data = np.asarray(batch[b'data'], np.uint8)
    labels = np.asarray(batch[b'labels'], np.int32)
  except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
    raise _corrupt(where, f'not a CIFAR-10 python batch: {e!r}') from e
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
    raise _corrupt(where, f'data {data.shape} and labels {labels.shape}, expected [n, 3072] '
                   'and [n]')
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_shakespeare_local(folder: Path, split: str) -> Arrays:
  path = folder / 'input.txt'
  if not path.is_file():
    raise _missing_file('tiny_shakespeare', path)
  try:
    text = path.read_bytes().decode('utf-8')
  except UnicodeDecodeError as e:
    raise _corrupt(path, f'not UTF-8 text: {e}') from e
  if not text:
    raise _corrupt(path, 'the file is empty (Tiny Shakespeare is 1,115,394 characters)')
  ids = _encode_text(text, path)
  return {'text': ids[_shakespeare_split_slices(len(ids))[split]]}


def _shakespeare_split_slices(num_chars: int) -> dict[str, slice]:
  """TFDS tiny_shakespeare's split of the file: 90% train, the rest halved (int() rounding)."""
  train_end = int(num_chars * 0.9)
  validation_end = train_end + int((num_chars - train_end) * 0.5)
  return {'train': slice(0, train_end), 'validation': slice(train_end, validation_end),
          'test': slice(validation_end, num_chars)}


_CHAR_IDS = np.full(256, -1, np.int32)
_CHAR_IDS[[ord(c) for c in SHAKESPEARE_VOCAB]] = np.arange(len(SHAKESPEARE_VOCAB))


def _encode_text(text: str, where: Path | str) -> np.ndarray:
  """Character ids (int32) of an ASCII text in SHAKESPEARE_VOCAB."""
  unknown = sorted(set(text) - set(SHAKESPEARE_VOCAB))
  if unknown:
    raise _corrupt(where, f'characters outside the Tiny Shakespeare vocabulary: {unknown[:10]}')
  return _CHAR_IDS[np.frombuffer(text.encode('ascii'), np.uint8)]


_FSDD_NAME = re.compile(r'(\d)_([a-z]+)_(\d+)\.wav')


def _load_spoken_digit_local(folder: Path, split: str) -> Arrays:
  wav_dir = folder / 'recordings' if (folder / 'recordings').is_dir() else folder
  paths = sorted(wav_dir.glob('*.wav'))
  if not paths:
    raise DataError(f'No .wav recordings in {wav_dir}. {_fix_hint("spoken_digit")}')
  return _spoken_digit_arrays([(p.name, _read_wav(p)) for p in paths
                               if _spoken_digit_split(p.name) == split], split, wav_dir)


def _read_wav(path: Path) -> np.ndarray:
  try:
    with wave.open(str(path), 'rb') as f:
      params = f.getparams()
      frames = f.readframes(params.nframes)
  except (wave.Error, EOFError) as e:
    raise _corrupt(path, f'bad WAV file: {e}') from e
  if (params.nchannels, params.sampwidth, params.framerate) != (1, 2, _SPOKEN_DIGIT_RATE):
    raise DataError(f'{path} is {params.nchannels}-channel {8 * params.sampwidth}-bit '
                    f'{params.framerate} Hz audio; Free Spoken Digit recordings are mono '
                    f'16-bit {_SPOKEN_DIGIT_RATE} Hz. Re-download the data set.')
  if len(frames) != 2 * params.nframes:
    raise _corrupt(path, f'{len(frames)} bytes of samples, header says {params.nframes} frames')
  return np.frombuffer(frames, '<i2').astype(np.int16)


def _parse_spoken_digit_name(filename: str) -> tuple[int, int, int]:
  """'{digit}_{speaker}_{take}.wav' -> (digit, speaker id, take)."""
  match = _FSDD_NAME.fullmatch(filename)
  if match is None or match[2] not in SPOKEN_DIGIT_SPEAKERS:
    raise DataError(f'Unexpected Free Spoken Digit file name {filename!r}: expected '
                    '{digit}_{speaker}_{take}.wav with a speaker in '
                    f'{SPOKEN_DIGIT_SPEAKERS}.')
  return int(match[1]), SPOKEN_DIGIT_SPEAKERS.index(match[2]), int(match[3])


def _spoken_digit_split(filename: str) -> str:
  return 'test' if _parse_spoken_digit_name(filename)[2] < _SPOKEN_DIGIT_TEST_TAKES else 'train'


def _spoken_digit_arrays(recordings: Sequence[tuple[str, np.ndarray]], split: str,
                         where: Path | str) -> Arrays:
  """(file name, int16 samples) pairs -> padded arrays, ordered by (digit, speaker, take)."""
  if not recordings:
    raise DataError(f'No Free Spoken Digit recordings of the {split!r} split in {where}. '
                    f'{_fix_hint("spoken_digit")}')
  keyed = sorted(((_parse_spoken_digit_name(name), audio) for name, audio in recordings),
                 key=lambda pair: pair[0])
  lengths = np.array([len(audio) for _, audio in keyed], np.int32)
  audio = np.zeros((len(keyed), lengths.max()), np.int16)
  for row, (_, samples) in zip(audio, keyed, strict=True):
    row[:len(samples)] = samples
  digit, speaker, take = np.ascontiguousarray(np.array([key for key, _ in keyed], np.int32).T)
  return {'audio': audio, 'length': lengths, 'label': digit, 'speaker': speaker, 'take': take}


_LOCAL_LOADERS: dict[str, Callable[[Path, str], Arrays]] = {
    'mnist': _load_idx_local,
    'fashion_mnist': _load_idx_local,
    'cifar10': _load_cifar10_local,
    'tiny_shakespeare': _load_shakespeare_local,
    'spoken_digit': _load_spoken_digit_local,
}


# ---------------------------------------------------------------------------------------
# TFDS (prepared data only)


def _load_tfds(name: str, split: str, data_dir: str | None) -> Arrays:
  import tensorflow_datasets as tfds  # Imported here: slow, and needed only here.
  tfds_name = _folder_name(name)
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except ModuleNotFoundError as e:   # TFDS re-raises it without the module's name
    if importlib.util.find_spec('tensorflow') is not None:
      raise
    raise DataError(f'TFDS cannot read {tfds_name!r} without TensorFlow (its builder imports '
                    "it): run `pip install 'dgm-jax[tf]'`, or use source='local' and set "
                    f'{_local_dir_hint(name)}.') from e
  if not builder.is_prepared():
    raise DataError(
        f'TFDS data set {tfds_name!r} is not prepared in {builder.data_dir}, and it is not '
        "downloaded from here. On a machine with internet access run `pip install 'dgm-jax[tf]'` "
        f'and `tfds build {tfds_name}` (with --data_dir if this run sets a TFDS data directory), '
        f"or use source='local' and set {_local_dir_hint(name)}.")
  # TFDS ships spoken_digit as one 'train' split; the take in each file name splits it.
  tfds_split = 'train' if tfds_name == 'spoken_digit' else split
  examples = list(builder.as_data_source(split=tfds_split))
  where = f'TFDS {tfds_name}[{tfds_split}] in {builder.data_dir}'
  if tfds_name == 'tiny_shakespeare':
    # One example per split: the split's whole text.
    return {'text': _encode_text(examples[0]['text'].decode('utf-8'), where)}
  if tfds_name == 'spoken_digit':
    recordings = [(ex['audio/filename'].decode('utf-8'), ex['audio']) for ex in examples]
    return _spoken_digit_arrays([(filename, audio.astype(np.int16))
                                 for filename, audio in recordings
                                 if _spoken_digit_split(filename) == split], split, where)
  return _image_arrays(examples, get_info(name).shape, where)


def _image_arrays(examples: Sequence[dict[str, Any]], shape: tuple, where: str) -> Arrays:
  images = np.stack([ex['image'] for ex in examples]).astype(np.uint8)
  if images.shape[1:] != shape:
    raise DataError(f'{where} holds images of shape {images.shape[1:]}, expected {shape}.')
  return {'image': images, 'label': np.array([ex['label'] for ex in examples], np.int32)}
