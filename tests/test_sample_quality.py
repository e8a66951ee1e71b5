"""Sample quality (quality/metrics.py, quality/classifier.py, experiments/sample_quality.py):
the Frechet distance against references computed other ways, the Inception Score's and
the class histogram's extremes, the classifier's metrics, and --mode=sample_quality end
to end with its misuse cases."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sample_quality
from quality import metrics
from quality.classifier import MNISTClassifier
from tests.test_cli import _cli, _env
from tests.test_misuse import _snapshot, _user_error

# --------------------------------------------------------------------------- Frechet distance


def _features(seed, n=400, f=5, shift=0.0, scale=1.0):
  rng = np.random.default_rng(seed)
  mix = rng.standard_normal((f, f))
  return shift + scale * rng.standard_normal((n, f)) @ mix


def test_frechet_distance_matches_scipy_sqrtm():
  linalg = pytest.importorskip('scipy.linalg')
  a, b = _features(0), _features(1, shift=0.7, scale=1.6)
  mu1, s1 = metrics.fit_gaussian(a)
  mu2, s2 = metrics.fit_gaussian(b)
  root = linalg.sqrtm(s1 @ s2)
  ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real
  assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
  # fit_gaussian is numpy's unbiased covariance.
  np.testing.assert_allclose(s1, np.cov(a, rowvar=False), rtol=1e-12)


def test_frechet_distance_closed_forms():
  # Diagonal (commuting) covariances: sum (sqrt(a) - sqrt(b))^2 + ||mu1 - mu2||^2.
  va, vb = np.array([1.0, 4.0, 0.25, 9.0]), np.array([2.0, 1.0, 0.25, 16.0])
  mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
  assert metrics.frechet_distance(mu1, np.diag(va), mu2, np.diag(vb)) == pytest.approx(
      expected, rel=1e-12)
  # 2x2 by hand: the eigenvalues l1, l2 of S1 S2 are real and positive, and
  # Tr((S1 S2)^{1/2}) = sqrt(l1) + sqrt(l2) = sqrt(tr(S1 S2) + 2 sqrt(det(S1 S2))).
  s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
  s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
  p = s1 @ s2
  tr_root = np.sqrt(np.trace(p) + 2 * np.sqrt(np.linalg.det(p)))
  assert metrics.trace_sqrt_product(s1, s2) == pytest.approx(tr_root, rel=1e-12)
  z = np.zeros(2)
  assert metrics.frechet_distance(z, s1, z, s2) == pytest.approx(
      np.trace(s1) + np.trace(s2) - 2 * tr_root, rel=1e-12)


def test_frechet_distance_zero_symmetric_and_rotation_invariant():
  a, b = _features(2), _features(3, shift=0.3, scale=0.8)
  assert metrics.frechet_distance_of_features(a, a) == pytest.approx(0.0, abs=1e-9)
  d = metrics.frechet_distance_of_features(a, b)
  assert d > 0.1
  assert metrics.frechet_distance_of_features(b, a) == pytest.approx(d, rel=1e-9)
  q, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((5, 5)))
  assert metrics.frechet_distance_of_features(a @ q, b @ q) == pytest.approx(d, rel=1e-9)
  # Rank-deficient covariances (fewer samples than features, as with ReLU features that
  # never fire) stay finite and non-negative.
  c, e = _features(5, n=4, f=8), _features(6, n=4, f=8)
  assert np.isfinite(metrics.frechet_distance_of_features(c, e))
  assert metrics.frechet_distance_of_features(c, c) == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- IS and histogram


def test_inception_score_extremes():
  k = 7
  onehot = np.eye(k)[np.arange(10 * k * 3) % k]     # every chunk covers every class evenly
  mean, std = metrics.inception_score(onehot)
  assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
  constant = np.tile(np.array([0.1, 0.6, 0.3]), (50, 1))   # the same prediction everywhere
  assert metrics.inception_score(constant)[0] == pytest.approx(1.0, rel=1e-12)
  assert metrics.inception_score(np.eye(4)[np.zeros(40, int)])[0] == pytest.approx(1.0)
  # A soft case against the formula written out: one chunk.
  p = np.random.default_rng(0).dirichlet(np.ones(5), size=30)
  py = p.mean(0)
  expected = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1)))
  assert metrics.inception_score(p, num_splits=1)[0] == pytest.approx(expected, rel=1e-12)


def test_class_histogram_counts_coverage_and_kl():
  labels = np.array([0] * 50 + [1] * 30 + [2] * 19 + [3] * 1)
  probs = np.eye(5)[labels] * 0.6 + 0.08              # argmax is the label
  h = metrics.class_histogram(probs, min_fraction=0.05)
  assert h['counts'] == [50, 30, 19, 1, 0]
  assert h['classes_covered'] == 3
  q = np.array([50, 30, 19, 1]) / 100
  assert h['kl_from_uniform'] == pytest.approx(np.sum(q * np.log(q * 5)), rel=1e-12)
  assert metrics.class_histogram(np.eye(4)[np.arange(40) % 4])['kl_from_uniform'] == 0.0
  single = metrics.class_histogram(np.eye(4)[np.zeros(40, int)])
  assert single['kl_from_uniform'] == pytest.approx(np.log(4)) and single['classes_covered'] == 1


# --------------------------------------------------------------------------- the classifier


def _tiny_classifier(**kwargs):
  return MNISTClassifier(channels=(3, 4), hidden=8, **kwargs)


def _batch(seed=0, n=6, binary=False):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8)
  if binary:
    image = (image > 127).astype(np.uint8) * 255
  return {'image': jnp.asarray(image), 'label': jnp.asarray(rng.integers(0, 10, n), jnp.int32)}


def test_classifier_loss_metrics():
  model = _tiny_classifier()
  batch = _batch()
  key = jax.random.key(0)
  rngs = {'params': key, 'sample': key, 'dropout': key}
  variables = model.init(rngs, batch, train=False, method='loss')
  objective, m = model.apply(variables, batch, train=False, rngs=rngs, method='loss')
  assert set(m) == {'xent', 'error', 'xent_binarized', 'error_binarized'}   # no 'nll'
  logits = model.apply(variables, batch['image'] / 255.0, method='logits')
  label = np.asarray(batch['label'])
  log_p = np.asarray(jax.nn.log_softmax(logits))
  np.testing.assert_allclose(m['xent'], -log_p[np.arange(6), label], rtol=1e-5)
  np.testing.assert_array_equal(m['error'], np.argmax(log_p, 1) != label)
  assert objective == pytest.approx(float(np.mean(m['xent'])), rel=1e-6)
  feats = model.apply(variables, batch['image'] / 255.0, method='features')
  assert feats.shape == (6, 8) and np.all(np.asarray(feats) >= 0)
  _, mt = model.apply(variables, batch, train=True, rngs=rngs, method='loss')
  assert set(mt) == {'xent', 'error'} and mt['xent'].shape == (6,)
  # Without dropout or binarization, training sees the grey image as evaluation does.
  plain = _tiny_classifier(dropout_rate=0.0, binarize_prob=0.0)
  _, mp = plain.apply(variables, batch, train=True, rngs=rngs, method='loss')
  np.testing.assert_allclose(mp['xent'], m['xent'], rtol=1e-6)
  # Always binarizing a grey image changes the input; an image already in {0, 255} is
  # its own binarization.
  always = _tiny_classifier(dropout_rate=0.0, binarize_prob=1.0)
  _, ma = always.apply(variables, batch, train=True, rngs=rngs, method='loss')
  assert not np.allclose(ma['xent'], m['xent'])
  binary = _batch(binary=True)
  _, mb = always.apply(variables, binary, train=True, rngs=rngs, method='loss')
  _, me = plain.apply(variables, binary, train=False, rngs=rngs, method='loss')
  np.testing.assert_allclose(mb['xent'], me['xent'], rtol=1e-6)
  np.testing.assert_allclose(me['xent_binarized'], me['xent'], rtol=1e-6)


def test_classifier_features_extractor_pads_batches_and_scales_levels():
  model = _tiny_classifier()
  key = jax.random.key(0)
  variables = model.init({'params': key, 'sample': key}, _batch(), train=False, method='loss')
  images = np.random.default_rng(1).random((7, 28, 28, 1)).astype(np.float32)
  extractor = metrics.ClassifierFeatures(model, variables, batch_size=3)
  assert isinstance(extractor, metrics.FeatureExtractor)
  feats, probs = extractor.features_and_probs(images)
  np.testing.assert_allclose(feats, model.apply(variables, images, method='features'),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
  assert probs.dtype == np.float64 and probs.shape == (7, 10)
  np.testing.assert_array_equal(sample_quality.to_unit(np.array([0, 1]), 2), [0.0, 1.0])
  np.testing.assert_allclose(sample_quality.to_unit(np.array([0, 51, 255]), 256),
                             [0.0, 0.2, 1.0], rtol=1e-6)


# --------------------------------------------------------------------------- the command line

CLASSIFIER = '--config=configs/mnist_classifier.py:tiny'
VAE = '--config=configs/iwae_binarized_mnist.py:tiny'


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  from tests.conftest import shared_data_dir
  data_dir = shared_data_dir()
  if data_dir is None:
    pytest.skip('MNIST files not found: set DGM_DATA_DIR to a directory holding mnist/.')
  env = _env(DGM_DATA_DIR=data_dir)
  base = tmp_path_factory.mktemp('quality')
  classifier, vae = str(base / 'classifier'), str(base / 'vae')
  r = _cli(CLASSIFIER, f'--workdir={classifier}', '--config.train.num_steps=4', env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  r = _cli(VAE, f'--workdir={vae}', '--config.train.num_steps=2',
           '--config.train.sample_at_end=False', env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  return {'env': env, 'classifier': classifier, 'vae': vae, 'base': base}


def test_sample_quality_mode_end_to_end(runs):
  vae = runs['vae']
  r = _cli(VAE, f'--workdir={vae}', '--mode=sample_quality',
           f'--classifier_workdir={runs["classifier"]}', '--quality_num_samples=120',
           env=runs['env'])
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(r.stdout.strip().splitlines()[-1])
  assert result['num_samples'] == 120 and result['num_reference'] == 256
  assert result['floor_train_num'] == 120 and result['step'] == 2
  assert result['num_levels'] == 2 and result['classifier_step'] == 4
  assert result['classifier_workdir'] == os.path.abspath(runs['classifier'])
  for key in ('fid_mnist_classifier', 'fid_mnist_classifier_floor_train',
              'fid_mnist_classifier_floor_test_halves'):
    assert np.isfinite(result[key]) and result[key] >= 0, key
  for key in ('is_mnist_classifier', 'reference_is_mnist_classifier'):
    assert 1.0 <= result[key] <= 10.0, key
  assert sum(result['class_counts']) == 120 and len(result['class_counts']) == 10
  assert sum(result['reference_class_counts']) == 256
  assert 1 <= result['classes_covered'] <= 10
  assert 0.0 <= result['classifier_error_on_reference'] <= 1.0
  lines = open(os.path.join(vae, 'sample_quality.jsonl')).read().splitlines()
  assert [json.loads(line) for line in lines] == [result]


def test_sample_quality_misuse_is_one_line_and_exit_2(runs):
  env, vae, classifier = runs['env'], runs['vae'], runs['classifier']
  before = _snapshot(vae)
  common = [VAE, f'--workdir={vae}', '--mode=sample_quality', '--quality_num_samples=8']
  _user_error(_cli(*common, env=env), '--classifier_workdir', 'configs/mnist_classifier.py')
  empty = str(runs['base'] / 'empty')
  os.makedirs(empty)
  _user_error(_cli(*common, f'--classifier_workdir={empty}', env=env), 'no classifier checkpoint',
              'train it first')
  _user_error(_cli(*common, f'--classifier_workdir={vae}', env=env), "'vae' run",
              'not a classifier')
  assert _snapshot(vae) == before
  _user_error(_cli(CLASSIFIER, f'--workdir={classifier}', '--mode=sample_quality',
                   f'--classifier_workdir={classifier}', env=env),
              "config.model_name='mnist_classifier'", 'cannot sample')
  _user_error(_cli('--config=configs/pixelcnn_digits.py:tiny',
                   f'--workdir={runs["base"] / "digits"}', '--mode=sample_quality',
                   f'--classifier_workdir={classifier}', env=env),
              '28x28x1', "config.data.name='digits'", '(8, 8, 1)')
  assert not os.path.exists(runs['base'] / 'digits')
