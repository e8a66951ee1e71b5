"""M2 (latent/m2.py) and the semi-supervised input pipeline: the exact marginalization over
classes, Jensen's bound, which terms reach the classifier, the labelled subset, combined
batches and their resume, and a tiny end-to-end run on MNIST."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import m2_mnist, pixelcnn_digits
from experiments import input_pipeline, train
from latent.m2 import M2
from tests.conftest import random_params

K, B, D = 4, 6, 3


def _model(alpha=0.1):
  return M2(image_shape=(4, 4, 1), num_classes=K, latent_dim=D, hidden_dims=(8,), alpha=alpha)


def _batch(labelled=None, seed=0):
  rng = np.random.default_rng(seed)
  batch = {'image': jnp.asarray(rng.integers(0, 2, (B, 4, 4, 1)), jnp.uint8),
           'label': jnp.asarray(rng.integers(0, K, B), jnp.int32)}
  if labelled is not None:
    batch['labelled'] = jnp.asarray(labelled, bool)
  return batch


@pytest.fixture(scope='module')
def params():
  return random_params(_model(), _batch(), method='loss')['params']


def _loss(model, params, batch, key=1):
  return model.apply({'params': params}, batch, rngs={'sample': jax.random.key(key)},
                     method='loss')


def test_unlabelled_bound_is_the_class_by_class_sum_and_below_log_sum_exp(params):
  model, image = _model(), _batch()['image']
  eps = jax.random.normal(jax.random.key(3), (K, B, D))
  neg_u, logits, neg_l_all = model.apply({'params': params}, image, eps,
                                         method='unlabelled_bound')
  q = jax.nn.softmax(logits)
  brute = 0.0
  for k in range(K):   # -L(x, y=k) with class k's noise, one class at a time
    neg_l_k = model.apply({'params': params}, image, jnp.full((B,), k), eps[k],
                          method='labelled_bound')[0]
    np.testing.assert_allclose(neg_l_all[k], neg_l_k, rtol=1e-5)
    brute = brute + q[:, k] * neg_l_k + q[:, k] * jnp.log(q[:, k])
  np.testing.assert_allclose(neg_u, brute, rtol=1e-5)
  # Jensen: U(x) <= log sum_y exp L(x, y), strictly unless q(y|x) is the model's posterior.
  log_sum_exp = jax.nn.logsumexp(-neg_l_all, axis=0)
  assert np.all(-neg_u < log_sum_exp)
  # ... with equality at q = softmax_y L(x, y).
  post = jax.nn.softmax(-neg_l_all, axis=0)
  np.testing.assert_allclose(jnp.sum(post * (-neg_l_all - jnp.log(post)), 0), log_sum_exp,
                             rtol=1e-5)


def test_objective_is_the_unlabelled_bound_without_labels_and_adds_alpha_ce_with(params):
  objective, m = _loss(_model(), params, _batch(labelled=[False] * B))
  np.testing.assert_allclose(objective, m['nll'].mean(), rtol=1e-6)
  assert np.all(m['class_nll'] == 0.0)
  # Evaluation batches carry no 'labelled' field: the same bound, and every label scored.
  objective_eval, m_eval = _loss(_model(), params, _batch())
  np.testing.assert_allclose(objective_eval, objective, rtol=1e-6)
  assert np.all(m_eval['class_nll'] > 0)
  err = np.asarray(jnp.argmax(_model().apply({'params': params}, _batch()['image'],
                                             method='classify'), -1) != _batch()['label'])
  np.testing.assert_array_equal(m_eval['error'], err.astype(np.float32))
  # All labelled: objective(alpha) - objective(0) = alpha * mean(-log q(y|x)).
  lab = _batch(labelled=[True] * B)
  o0, _ = _loss(_model(0.0), params, lab)
  o5, m5 = _loss(_model(5.0), params, lab)
  np.testing.assert_allclose(o5 - o0, 5.0 * m5['class_nll'].mean(), rtol=1e-5)


def _grads(model, params, batch):
  return jax.grad(lambda p: _loss(model, p, batch)[0])(params)


def _close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)


def test_classifier_learns_from_labels_only_where_labelled(params):
  unlab = _batch(labelled=[False] * B)
  g0, g100 = _grads(_model(0.0), params, unlab), _grads(_model(100.0), params, unlab)
  _close(g0, g100)   # no labelled example: alpha has nothing to weigh
  assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(g0['classifier']))   # through U
  # Labels of unlabelled examples reach neither the objective nor any gradient.
  relabelled = dict(unlab, label=(unlab['label'] + 1) % K)
  _close(_grads(_model(1.0), params, relabelled), _grads(_model(1.0), params, unlab))

  lab = _batch(labelled=[True] * B)
  g = {a: _grads(_model(a), params, lab) for a in (0.0, 1.0, 2.0)}
  # The labelled bound L(x, y) does not involve q(y|x): only the alpha term reaches it ...
  assert all(np.all(x == 0) for x in jax.tree.leaves(g[0.0]['classifier']))
  _close(jax.tree.map(lambda x: 2 * x, g[1.0]['classifier']), g[2.0]['classifier'])
  # ... and the alpha term reaches nothing else.
  for name in ('encoder', 'decoder'):
    _close(g[0.0][name], g[2.0][name])


def test_sample_decode_encode(params):
  model = _model()
  x = model.apply({'params': params}, jax.random.key(0), (2 * K, 4, 4, 1),
                  label=jnp.repeat(jnp.arange(K), 2), method='sample')
  assert x.dtype == jnp.int32 and set(np.unique(x)) <= {0, 1}
  x = model.apply({'params': params}, jax.random.key(0), (5, 4, 4, 1), method='sample')
  z = model.apply({'params': params}, x, jnp.zeros(5, jnp.int32), method='encode')
  mean = model.apply({'params': params}, z, jnp.zeros(5, jnp.int32), method='decode')
  assert z.shape == (5, D) and mean.shape == (5, 4, 4, 1)
  assert np.all((mean >= 0) & (mean <= 1))


# --------------------------------------------------------------------------- the pipeline

def _digits_cfg(**overrides):
  cfg = pixelcnn_digits.get_config('tiny').data
  cfg.unlock()
  cfg.update(dict(batch_size=16, num_labelled=100, labelled_batch_size=20), **overrides)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _rows(images):
  return [r.tobytes() for r in images.reshape(len(images), -1)]


def test_labelled_subset_has_exactly_n_per_class_and_depends_on_the_seed():
  labels = input_pipeline.datasets.load_split('digits', 'train')['label']
  idx = input_pipeline.labelled_subset(labels, 100, 10, seed=0)
  assert len(set(idx.tolist())) == 100
  assert np.bincount(labels[idx], minlength=10).tolist() == [10] * 10
  np.testing.assert_array_equal(idx, input_pipeline.labelled_subset(labels, 100, 10, seed=0))
  assert set(idx.tolist()) != set(input_pipeline.labelled_subset(labels, 100, 10, 1).tolist())
  with pytest.raises(ValueError, match='multiple of the 10 classes'):
    input_pipeline.labelled_subset(labels, 105, 10, seed=0)


def test_batches_append_labelled_subset_examples_to_the_plain_stream():
  arrays = input_pipeline.datasets.load_split('digits', 'train')
  subset = input_pipeline.labelled_subset(arrays['label'], 100, 10, seed=0)
  subset_rows = set(_rows(arrays['image'][subset]))
  batches = _take(input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter, 5)
  plain = _take(input_pipeline.create_datasets(_digits_cfg(num_labelled=0), seed=0).train_iter, 5)
  seen = []
  for b, p in zip(batches, plain, strict=True):
    assert b['image'].shape[0] == b['label'].shape[0] == 36
    np.testing.assert_array_equal(b['labelled'], [False] * 16 + [True] * 20)
    # The unlabelled part is exactly the label-free pipeline's batch.
    np.testing.assert_array_equal(b['image'][:16], p['image'])
    np.testing.assert_array_equal(b['label'][:16], p['label'])
    assert set(_rows(b['image'][16:])) <= subset_rows
    seen += _rows(b['image'][16:])
  assert set(seen) == subset_rows   # five batches of 20: one shuffled epoch of the subset


def test_combined_iterator_resumes_exactly_and_shards_by_process():
  full = _take(input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter, 8)
  it = input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter
  _take(it, 5)
  resumed = input_pipeline.create_datasets(_digits_cfg(), seed=0).train_iter
  resumed.set_state(it.get_state())
  for x, y in zip(_take(resumed, 3), full[5:], strict=True):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  parts = [next(input_pipeline.create_datasets(_digits_cfg(), seed=0, process_index=p,
                                               process_count=2).train_iter) for p in (0, 1)]
  for part in parts:
    np.testing.assert_array_equal(part['labelled'], [False] * 8 + [True] * 10)
  both = np.concatenate([part['image'] for part in parts])
  assert sorted(_rows(both)) == sorted(_rows(full[0]['image']))


def test_bad_semi_supervised_configs_are_clear_errors():
  with pytest.raises(ValueError, match='labelled_batch_size'):
    input_pipeline.create_datasets(_digits_cfg(labelled_batch_size=0), seed=0)
  with pytest.raises(ValueError, match='labelled_batch_size=20'):
    input_pipeline.create_datasets(_digits_cfg(), seed=0, eval_batch_multiple=8)


def test_both_streams_are_binarized_afresh(data_dir):
  cfg = m2_mnist.get_config('tiny').data
  cfg.unlock()
  cfg.update(local_dir=data_dir, source='local', num_labelled=10, labelled_batch_size=10)
  it = input_pipeline.create_datasets(cfg, seed=0).train_iter
  a, b = _take(it, 2)
  for batch in (a, b):
    assert set(np.unique(batch['image'])) <= {0, 1}
  # each batch holds the 10 labelled images (one per class) in some order, drawn afresh
  lab_a, lab_b = (x['image'][16:][np.argsort(x['label'][16:])] for x in (a, b))
  np.testing.assert_array_equal(np.sort(a['label'][16:]), np.arange(10))
  assert not np.array_equal(lab_a, lab_b)
  assert (lab_a != lab_b).mean() < 0.1   # the same digits, other pixel draws


def test_tiny_m2_trains_evaluates_samples_and_resumes(tmp_path, data_dir):
  c = m2_mnist.get_config('tiny')
  c.data.local_dir = data_dir
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(c, workdir)
  assert result['step'] == 10 and result['num_examples'] == 256
  assert 0.0 <= result['error'] <= 1.0 and result['class_nll'] > 0
  assert np.isfinite(result['nll']) and result['nll'] > 0
  assert os.path.exists(os.path.join(workdir, 'samples', 'step_10.png'))
  # The checkpoint holds the combined iterator's position: a restored run continues with
  # batch 11 of a fresh pipeline.
  run = train.Run(c, workdir, restore=True)
  fresh = input_pipeline.create_datasets(c.data, seed=c.seed).train_iter
  expected = _take(fresh, 11)[-1]
  got = next(run.data.train_iter)
  run.ckpt.close()
  for k in expected:
    np.testing.assert_array_equal(got[k], expected[k])
