"""Input pipelines: determinism, resume position, process sharding, exact evaluation."""
import numpy as np
import pytest

from configs import pixelcnn_digits, pixelcnn_mnist
from experiments import input_pipeline
from experiments.datasets import DataError


def _digits_cfg(**overrides):
  cfg = pixelcnn_digits.get_config('tiny').data
  cfg.unlock()
  cfg.update(overrides)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_same_seed_same_batches_other_seed_other_batches():
  a = _take(input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter, 3)
  b = _take(input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter, 3)
  c = _take(input_pipeline.create_datasets(_digits_cfg(), seed=1).train_iter, 3)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert not np.array_equal(a[0]['image'], c[0]['image'])


def test_epochs_are_reshuffled_and_cover_the_training_set():
  cfg = _digits_cfg(batch_size=100)
  it = input_pipeline.create_datasets(cfg, seed=0).train_iter
  epoch1 = np.concatenate([b['label'] for b in _take(it, 15)])   # 1500 examples
  epoch2 = np.concatenate([b['label'] for b in _take(it, 15)])
  assert np.bincount(epoch1).tolist() == np.bincount(epoch2).tolist()  # same examples
  assert not np.array_equal(epoch1, epoch2)                             # new order


def test_resume_from_saved_position_continues_exactly():
  full = _take(input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter, 8)
  it = input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter
  _take(it, 5)
  state = it.get_state()
  resumed = input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter
  resumed.set_state(state)
  for x, y in zip(_take(resumed, 3), full[5:], strict=True):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])


def test_processes_get_disjoint_halves_of_each_global_batch():
  cfg = _digits_cfg(batch_size=40)
  single_iter = input_pipeline.create_datasets(cfg, seed=0).train_iter
  single = np.concatenate([b['image'].reshape(20 * 2, -1) for b in _take(single_iter, 1)])
  p0 = next(input_pipeline.create_datasets(cfg, seed=0, process_index=0,
                                           process_count=2).train_iter)
  p1 = next(input_pipeline.create_datasets(cfg, seed=0, process_index=1,
                                           process_count=2).train_iter)
  assert p0['image'].shape[0] == p1['image'].shape[0] == 20
  both = {r.tobytes() for r in np.concatenate([p0['image'], p1['image']]).reshape(40, -1)}
  assert both == {r.tobytes() for r in single}


@pytest.mark.parametrize('process_count', [1, 3])
def test_evaluation_counts_every_example_exactly_once(process_count):
  cfg = _digits_cfg(batch_size=30, eval_batch_size=64 * process_count)
  seen = []
  for p in range(process_count):
    data = input_pipeline.create_datasets(cfg, seed=0, process_index=p, process_count=process_count)
    n_batches = 0
    for batch in data.eval_batches():
      n_batches += 1
      assert batch['image'].shape[0] == batch['example_mask'].shape[0] == 64
      seen.append(batch['image'][batch['example_mask']].reshape(-1, 64))
    per_process = -(-297 // process_count)   # ceil(297 / process_count)
    assert n_batches == -(-per_process // 64)
  seen = np.concatenate(seen)
  assert len(seen) == 297
  ref = input_pipeline.datasets.load_split('digits', 'test')['image'].reshape(-1, 64)
  assert sorted(r.tobytes() for r in seen) == sorted(r.tobytes() for r in ref)


def test_split_slices():
  assert input_pipeline.parse_split('test') == ('test', slice(None, None))
  assert input_pipeline.parse_split('test[:512]') == ('test', slice(None, 512))
  assert input_pipeline.parse_split('train[10:-5]') == ('train', slice(10, -5))
  with pytest.raises(ValueError, match='Bad split'):
    input_pipeline.parse_split('test[::2]')


def test_binarized_mnist_dynamic_train_fixed_eval(data_dir):
  cfg = pixelcnn_mnist.get_config('tiny').data
  cfg.unlock()
  cfg.update(local_dir=data_dir, source='local', batch_size=1000, eval_split='test[:256]')
  data = input_pipeline.create_datasets(cfg, seed=0)
  a, b = _take(data.train_iter, 2)
  assert set(np.unique(a['image'])) <= {0, 1}
  # mean of the dynamic binarization matches MNIST's mean intensity (0.1307)
  assert abs(a['image'].mean() - 0.1307) < 0.01
  # the same example in a later epoch gets a fresh draw; evaluation is always the same
  e1 = next(data.eval_batches())['image']
  e2 = next(input_pipeline.create_datasets(cfg, seed=5).eval_batches())['image']
  np.testing.assert_array_equal(e1, e2)
  assert set(np.unique(e1)) <= {0, 1}
  assert data.num_dims == 784


def test_dynamic_binarization_redraws_each_epoch(data_dir):
  cfg = pixelcnn_mnist.get_config('tiny').data
  cfg.unlock()
  cfg.update(local_dir=data_dir, source='local', train_split='train[:8]', batch_size=8,
             eval_split='test[:8]')
  it = input_pipeline.create_datasets(cfg, seed=0).train_iter
  epochs = [sorted(r.tobytes() for r in next(it)['image'].reshape(8, -1)) for _ in range(2)]
  assert epochs[0] != epochs[1]   # the same 8 images, binarized afresh


def test_unknown_dataset_is_a_clear_error():
  with pytest.raises(DataError, match='Unknown data set.*digits'):
    input_pipeline.create_datasets(_digits_cfg(name='mnits'), seed=0)


def test_missing_local_directory_fails_fast_naming_the_path(tmp_path):
  cfg = pixelcnn_mnist.get_config('tiny').data
  cfg.unlock()
  cfg.update(local_dir=str(tmp_path / 'nowhere'), source='local')
  with pytest.raises(DataError) as e:
    input_pipeline.create_datasets(cfg, seed=0)
  assert 'nowhere' in str(e.value) and 'DGM_DATA_DIR' in str(e.value)


class _CountingSource:
  """A grain source of 10,000 examples that records how many were read."""

  def __init__(self):
    self.reads = 0

  def __len__(self):
    return 10_000

  def __getitem__(self, i):
    self.reads += 1
    return {'x': np.full((3,), i, np.int32)}


@pytest.mark.parametrize('threads,batches', [(0, 0), (1, 4), (2, 3)])
def test_training_read_ahead_is_bounded_by_the_config_and_keeps_the_order(threads, batches):
  """config.data.prefetch_threads/prefetch_batches bound how far grain reads ahead (its
  defaults read 500 batches ahead), and the batches are the same whatever the read-ahead."""
  import time  # pylint: disable=g-import-not-at-top

  import ml_collections  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict({'prefetch_threads': threads, 'prefetch_batches': batches})
  source = _CountingSource()
  ds = input_pipeline._batched_stream(source, None, 0, 1, 2, 0, 1)  # pylint: disable=protected-access
  it = iter(ds.to_iter_dataset(input_pipeline.read_options(cfg)))
  got = _take(it, 3)
  time.sleep(0.5)   # time for the threads to fill their buffer
  # 3 batches taken, at most `batches` more ready and one more per thread in flight.
  assert source.reads <= 2 * (3 + batches + threads), source.reads
  reference = iter(input_pipeline._batched_stream(  # pylint: disable=protected-access
      _CountingSource(), None, 0, 1, 2, 0, 1).to_iter_dataset(
          input_pipeline.read_options(ml_collections.ConfigDict({'prefetch_threads': 0}))))
  for a, b in zip(got, _take(reference, 3), strict=True):
    np.testing.assert_array_equal(a['x'], b['x'])


def test_default_configs_read_a_few_batches_ahead():
  from configs import common  # pylint: disable=g-import-not-at-top
  options = input_pipeline.read_options(common.base_config().data)
  assert (options.num_threads, options.prefetch_buffer_size) == (1, 4)
