"""Tests for experiments.datasets: real local data where present, synthetic files otherwise."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from experiments import datasets
from experiments.datasets import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('DGM_DATA_DIR') or REPO_ROOT.parent / 'shared' / 'data')


def shared_folder(name: str) -> Path:
  """The real data set's folder, or skip the test when it isn't on this machine."""
  folder = SHARED_DATA / name
  if not folder.is_dir():
    pytest.skip(f'no local copy of {name} at {folder}')
  return folder


def idx_bytes(array: np.ndarray) -> bytes:
  """An unsigned-byte IDX file holding `array`."""
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f'>{array.ndim}I', *array.shape)
  return header + array.astype(np.uint8).tobytes()


# --- digits -------------------------------------------------------------------------------


def test_digits_splits_match_seeded_permutation():
  from sklearn.datasets import load_digits
  train = datasets.load_split('digits', 'train')
  test = datasets.load_split('digits', 'test')
  assert train['image'].shape == (1500, 8, 8, 1) and test['image'].shape == (297, 8, 8, 1)
  assert train['image'].dtype == np.uint8 and train['label'].dtype == np.int32
  both = np.concatenate([train['image'], test['image']])
  assert both.min() == 0 and both.max() == 16 == datasets.get_info('digits').num_levels - 1

  digits = load_digits()
  order = np.random.default_rng(0).permutation(1797)
  np.testing.assert_array_equal(train['image'][..., 0], digits.images[order[:1500]])
  np.testing.assert_array_equal(test['label'], digits.target[order[1500:]])


def test_digits_ignore_source_and_results_are_cached_read_only():
  first = datasets.load_split('digits', 'test', source='tfds')
  second = datasets.load_split('digits', 'test', source='local')
  assert first['image'] is second['image']
  with pytest.raises(ValueError):
    first['image'][0, 0, 0, 0] = 1


# --- real local data ----------------------------------------------------------------------


def test_mnist_local():
  shared_folder('mnist')
  train = datasets.load_split('mnist', 'train', source='local', local_dir=str(SHARED_DATA))
  test = datasets.load_split('mnist', 'test', source='local', local_dir=str(SHARED_DATA))
  assert train['image'].shape == (60000, 28, 28, 1) and test['image'].shape == (10000, 28, 28, 1)
  assert train['image'].dtype == np.uint8 and test['label'].dtype == np.int32
  assert set(np.unique(train['label'])) == set(range(10))
  assert test['image'].mean() == pytest.approx(0.1325 * 255, abs=0.05)
  assert test['label'][:5].tolist() == [7, 2, 1, 0, 4]

  binarized = datasets.load_split('binarized_mnist', 'test', local_dir=str(SHARED_DATA))
  assert binarized['image'] is test['image']   # same files, same cache entry; 'auto' -> local
  assert datasets.get_info('binarized_mnist').num_levels == 2


def test_tiny_shakespeare_local_matches_tfds_split_rule():
  path = shared_folder('tiny_shakespeare') / 'input.txt'
  text = path.read_text()
  splits = {s: datasets.load_split('tiny_shakespeare', s, local_dir=str(SHARED_DATA))['text']
            for s in ('train', 'validation', 'test')}
  # TFDS tiny_shakespeare's _split_generators, verbatim.
  i = int(len(text) * 0.9)
  train_text, rest = text[:i], text[i:]
  i = int(len(rest) * 0.5)
  expected = {'train': train_text, 'validation': rest[:i], 'test': rest[i:]}

  info = datasets.get_info('tiny_shakespeare')
  assert info.vocab == tuple(sorted(set(text))) and info.num_levels == 65
  assert sum(len(ids) for ids in splits.values()) == len(text) == 1_115_394
  for name, ids in splits.items():
    assert ids.dtype == np.int32
    assert ''.join(np.array(info.vocab)[ids]) == expected[name]


def test_spoken_digit_local():
  shared_folder('spoken_digit')
  train = datasets.load_split('spoken_digit', 'train', local_dir=str(SHARED_DATA))
  test = datasets.load_split('spoken_digit', 'test', local_dir=str(SHARED_DATA))
  assert len(train['label']) == 2700 and len(test['label']) == 300
  assert set(test['take']) == set(range(5)) and train['take'].min() == 5
  assert set(np.concatenate([train['speaker'], test['speaker']])) == set(range(6))
  assert set(test['label']) == set(range(10))
  for split in (train, test):
    assert split['audio'].dtype == np.int16 and split['length'].min() > 0
    assert split['audio'].shape == (len(split['label']), split['length'].max())
    # Zero padding past each recording's end.
    longest, shortest = split['length'].argmax(), split['length'].argmin()
    assert not split['audio'][shortest, split['length'][shortest]:].any()
    assert split['audio'][longest].any()
  info = datasets.get_info('spoken_digit')
  assert (info.kind, info.sample_rate, info.num_speakers, info.num_classes) == (
      'audio', 8000, 6, 10)


# --- synthetic local files ----------------------------------------------------------------


def write_cifar10(folder: Path, layout: str) -> None:
  """A tiny CIFAR-10 in the publisher's pickle format; image 0 of each batch has one known
  pixel: (row 2, column 5, channel 1) = 200."""
  blobs = {}
  for i, name in enumerate([f'data_batch_{k}' for k in range(1, 6)] + ['test_batch']):
    data = np.zeros((2, 3072), np.uint8)
    data[0, 1 * 1024 + 2 * 32 + 5] = 200
    blobs[name] = pickle.dumps({b'data': data, b'labels': [i, 9 - i]})
  if layout == 'archive':
    folder.mkdir(parents=True)
    with tarfile.open(folder / 'cifar-10-python.tar.gz', 'w:gz') as tar:
      for name, blob in blobs.items():
        member = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
        member.size = len(blob)
        tar.addfile(member, io.BytesIO(blob))
    return
  batch_dir = folder / 'cifar-10-batches-py' if layout == 'extracted' else folder
  batch_dir.mkdir(parents=True)
  for name, blob in blobs.items():
    (batch_dir / name).write_bytes(blob)


@pytest.mark.parametrize('layout', ['extracted', 'flat', 'archive'])
def test_cifar10_local_is_nhwc(tmp_path, layout):
  write_cifar10(tmp_path / 'cifar10', layout)
  train = datasets.load_split('cifar10', 'train', source='local', local_dir=str(tmp_path))
  test = datasets.load_split('cifar10', 'test', source='local', local_dir=str(tmp_path))
  assert train['image'].shape == (10, 32, 32, 3) and test['image'].shape == (2, 32, 32, 3)
  assert train['label'].tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
  image = test['image'][0]
  assert image[2, 5, 1] == 200 and image.sum() == 200


def test_idx_uncompressed_files_are_read(tmp_path):
  folder = tmp_path / 'fashion_mnist'
  folder.mkdir()
  images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
  (folder / 't10k-images-idx3-ubyte').write_bytes(idx_bytes(images))
  (folder / 't10k-labels-idx1-ubyte').write_bytes(idx_bytes(np.array([3, 1, 4])))
  test = datasets.load_split('fashion_mnist', 'test', local_dir=str(tmp_path))
  np.testing.assert_array_equal(test['image'][..., 0], images)
  assert test['label'].tolist() == [3, 1, 4]


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> None:
  with wave.open(str(path), 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(samples.astype('<i2').tobytes())


def test_spoken_digit_synthetic_wavs(tmp_path):
  folder = tmp_path / 'spoken_digit'   # .wav files directly in the folder, no recordings/
  folder.mkdir()
  write_wav(folder / '7_theo_3.wav', np.array([1, -2, 3]))
  write_wav(folder / '2_jackson_0.wav', np.array([-32768, 32767]))
  write_wav(folder / '2_jackson_12.wav', np.arange(10))
  test = datasets.load_split('spoken_digit', 'test', local_dir=str(tmp_path))
  # Ordered by (digit, speaker, take); speaker ids index the sorted FSDD speaker list.
  assert test['label'].tolist() == [2, 7] and test['take'].tolist() == [0, 3]
  assert test['speaker'].tolist() == [datasets.SPOKEN_DIGIT_SPEAKERS.index(s)
                                      for s in ('jackson', 'theo')]
  assert test['length'].tolist() == [2, 3]
  np.testing.assert_array_equal(test['audio'], [[-32768, 32767, 0], [1, -2, 3]])
  train = datasets.load_split('spoken_digit', 'train', local_dir=str(tmp_path))
  np.testing.assert_array_equal(train['audio'], [np.arange(10)])


def test_spoken_digit_wrong_sample_rate(tmp_path):
  (tmp_path / 'spoken_digit').mkdir()
  write_wav(tmp_path / 'spoken_digit' / '1_theo_1.wav', np.arange(4), rate=16000)
  with pytest.raises(DataError, match='1_theo_1.wav.*16000 Hz'):
    datasets.load_split('spoken_digit', 'test', local_dir=str(tmp_path))


# --- errors -------------------------------------------------------------------------------


def test_unknown_name_and_split():
  with pytest.raises(DataError, match='mnist.*spoken_digit'):
    datasets.get_info('imagenet')
  with pytest.raises(DataError, match='binarized_mnist'):
    datasets.load_split('mnist_binary', 'train')
  with pytest.raises(DataError, match='validation'):
    datasets.load_split('mnist', 'validation')


def test_missing_local_dir(tmp_path, monkeypatch):
  with pytest.raises(DataError) as error:
    datasets.load_split('mnist', 'train', source='local', local_dir=str(tmp_path / 'nowhere'))
  message = str(error.value)
  assert str(tmp_path / 'nowhere' / 'mnist') in message and 'DGM_DATA_DIR' in message
  assert 'train-images-idx3-ubyte.gz' in message

  monkeypatch.delenv('DGM_DATA_DIR', raising=False)
  with pytest.raises(DataError, match='DGM_DATA_DIR'):
    datasets.load_split('tiny_shakespeare', 'train', source='local')


def test_missing_local_file_names_it(tmp_path):
  (tmp_path / 'mnist').mkdir()
  with pytest.raises(DataError, match='t10k-images-idx3-ubyte.gz'):
    datasets.load_split('mnist', 'test', source='local', local_dir=str(tmp_path))


@pytest.mark.parametrize('contents, problem', [
    (b'definitely not gzip' + bytes(range(256)), 'bad gzip'),
    (gzip.compress(idx_bytes(np.zeros((100, 28, 28)))[:5000], mtime=0), 'needs'),  # truncated
    (gzip.compress(idx_bytes(np.zeros(100)), mtime=0), 'magic number'),           # labels as images
], ids=['not-gzip', 'truncated', 'labels-as-images'])
# mtime=0 and the ids: gzip.compress stamps the current second into its header, and pytest-xdist
# refuses to run when its workers collect parameters (hence test ids) that differ (CI, stop 27).
def test_corrupt_idx_file(tmp_path, contents, problem):
  folder = tmp_path / 'mnist'
  folder.mkdir()
  path = folder / 'train-images-idx3-ubyte.gz'
  path.write_bytes(contents)
  (folder / 'train-labels-idx1-ubyte.gz').write_bytes(gzip.compress(idx_bytes(np.zeros(100))))
  with pytest.raises(DataError, match=problem) as error:
    datasets.load_split('mnist', 'train', source='local', local_dir=str(tmp_path))
  assert str(path) in str(error.value) and 're-download' in str(error.value)


@pytest.mark.parametrize('name', ['mnist', 'cifar10', 'tiny_shakespeare', 'spoken_digit'])
def test_tfds_not_prepared_fails_fast(tmp_path, name):
  start = time.monotonic()
  with pytest.raises(DataError, match='not prepared|without TensorFlow'):
    # 'auto' with no local copy falls back to TFDS.
    datasets.load_split(name, 'train', local_dir=str(tmp_path), tfds_data_dir=str(tmp_path))
  assert time.monotonic() - start < 10


# --- TFDS: tiny data sets prepared here with TFDS's own builders ----------------------------


def prepare_fake_tfds(name: str, data_dir: Path, splits: dict[str, list]) -> None:
  """Writes `splits` ({split: [example dicts]}) as the registered TFDS data set `name`."""
  import tensorflow_datasets as tfds

  class Fake(tfds.builder_cls(name), skip_registration=True):

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(examples) for split, examples in splits.items()}

    def _generate_examples(self, examples):
      yield from enumerate(examples)

  Fake.name = name
  Fake(data_dir=str(data_dir), file_format='array_record').download_and_prepare()


def png(image: np.ndarray) -> io.BytesIO:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0]).save(buffer, format='PNG')
  buffer.seek(0)
  return buffer


def test_tfds_images(tmp_path):
  def examples(n):
    return [{'image': png(np.full((28, 28, 1), 10 * i, np.uint8)), 'label': i} for i in range(n)]
  prepare_fake_tfds('mnist', tmp_path, {'train': examples(5), 'test': examples(3)})
  test = datasets.load_split('binarized_mnist', 'test', source='tfds',
                             tfds_data_dir=str(tmp_path))
  assert test['image'].shape == (3, 28, 28, 1) and test['image'].dtype == np.uint8
  assert sorted(test['label'].tolist()) == [0, 1, 2]
  np.testing.assert_array_equal(test['image'][:, 0, 0, 0], 10 * test['label'])


def test_tfds_text(tmp_path):
  texts = {'train': 'First Citizen:\nSpeak.', 'validation': 'All:\n', 'test': 'Speak, speak!'}
  prepare_fake_tfds('tiny_shakespeare', tmp_path, {s: [{'text': t}] for s, t in texts.items()})
  vocab = np.array(datasets.get_info('tiny_shakespeare').vocab)
  for split, text in texts.items():
    ids = datasets.load_split('tiny_shakespeare', split, source='tfds',
                              tfds_data_dir=str(tmp_path))['text']
    assert ''.join(vocab[ids]) == text
