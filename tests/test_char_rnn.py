"""Character RNN language model: teacher forcing and scheduled sampling (Bengio et al.
2015): eps = 1 is teacher forcing exactly, eps = 0 feeds exactly the model's own draws, the
decays match the paper's formulas; causality by gradients; the trainer end to end."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg import likelihood
from autoreg.char_rnn import CharRNN, scheduled_sampling_eps


def _model(**kw):
  kw = {'vocab_size': 7, 'embed_dim': 5, 'hidden': 8, 'num_layers': 2, **kw}
  return CharRNN(**kw)


def _init(model, text):
  return model.init({'params': jax.random.key(1), 'sample': jax.random.key(2)},
                    {'text': text}, train=False, method='loss')


TEXT = jax.random.randint(jax.random.key(0), (3, 12), 0, 7)


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_eps_one_is_teacher_forcing_exactly(cell):
  tf = _model(cell=cell)
  ss = _model(cell=cell, ss_schedule='linear', ss_k=1.0, ss_c=0.0)     # eps = 1 always
  params = _init(tf, TEXT)
  rngs = {'sample': jax.random.key(3), 'dropout': jax.random.key(4)}
  l_tf, m_tf = tf.apply(params, {'text': TEXT}, train=True, method='loss', rngs=rngs, step=7)
  l_ss, m_ss = ss.apply(params, {'text': TEXT}, train=True, method='loss', rngs=rngs, step=7)
  assert float(l_tf) == float(l_ss)
  np.testing.assert_array_equal(m_tf['nll'], m_ss['nll'])
  # ... and equals the plain teacher-forced log-likelihood.
  np.testing.assert_array_equal(-m_tf['nll'], tf.apply(params, TEXT, method='log_prob'))


def test_eps_zero_feeds_exactly_the_models_own_draws():
  model = _model()
  params = _init(model, TEXT)
  rng = jax.random.key(9)
  logits, fed, _ = model.apply(params, TEXT[:, :-1], rng, 0.0, method='run')
  assert (fed[:, 0] == TEXT[:, 0]).all()           # the first input is always given
  # The draws, recomputed from run's keys: one per step, from the previous step's logits.
  _, k_steps = jax.random.split(rng)
  keys = jax.random.split(k_steps, TEXT.shape[1] - 1)
  for t in range(1, TEXT.shape[1] - 1):
    k_draw, _ = jax.random.split(keys[t - 1])
    np.testing.assert_array_equal(fed[:, t], jax.random.categorical(k_draw, logits[:, t - 1]))
  assert (fed[:, 1:] != TEXT[:, 1:-1]).any()
  # Teacher forcing on the fed tokens reproduces the logits: they are what was fed.
  again, _, _ = model.apply(params, fed, rng, 1.0, method='run')
  np.testing.assert_allclose(again, logits, rtol=1e-6, atol=1e-6)


def test_no_gradient_flows_through_the_draws():
  model = _model()
  params = _init(model, TEXT)

  def loss(p):
    logits, _, _ = model.apply(p, TEXT[:, :-1], jax.random.key(9), 0.0, method='run')
    return -likelihood.categorical_log_prob(logits, TEXT[:, 1:]).sum()
  grads = jax.grad(loss)(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_decays_match_the_papers_formulas():
  i = np.arange(0, 5000, 250)
  np.testing.assert_allclose(scheduled_sampling_eps('linear', i, 1.0, 1e-4, 0.3),
                             np.maximum(0.3, 1.0 - 1e-4 * i), rtol=1e-6)
  np.testing.assert_allclose(scheduled_sampling_eps('exponential', i, 0.999), 0.999 ** i,
                             rtol=1e-4)   # float32 powers
  np.testing.assert_allclose(scheduled_sampling_eps('inverse_sigmoid', i, 500.0),
                             500.0 / (500.0 + np.exp(i / 500.0)), rtol=1e-5)
  np.testing.assert_array_equal(scheduled_sampling_eps('none', i, 0.0), np.ones(len(i)))
  with pytest.raises(ValueError, match="schedule 'cosine'"):
    scheduled_sampling_eps('cosine', 0, 1.0)
  with pytest.raises(ValueError, match='ss_schedule=.sigmoid.'):
    _init(_model(ss_schedule='sigmoid'), TEXT)


def test_prediction_t_depends_on_characters_up_to_t_only():
  model = _model()
  params = _init(model, TEXT)
  emb = params['params']['step']['embed']['embedding']

  def out(e, t):
    p = jax.tree.map(lambda x: x, params)
    p['params']['step']['embed']['embedding'] = e
    return model.apply(p, TEXT[:1, :-1])[0, t].sum()
  del emb
  # Through the inputs: perturbing character s makes logits t change only for t >= s.
  base = model.apply(params, TEXT[:1, :-1])[0]
  for s in range(TEXT.shape[1] - 1):
    changed = TEXT[:1, :-1].at[0, s].set((TEXT[0, s] + 1) % 7)
    diff = np.abs(np.asarray(model.apply(params, changed)[0] - base)).max(-1)
    assert (diff[:s] == 0).all() and diff[s] > 0, (s, diff)


def test_sampling_continues_the_prompt():
  model = _model()
  params = _init(model, TEXT)
  out = model.apply(params, jax.random.key(5), jnp.array([1, 2, 3]), 10, temperature=0.7,
                    method='sample')
  assert out.shape == (1, 13) and (out[0, :3] == jnp.array([1, 2, 3])).all()
  assert int(out.max()) < 7 and int(out.min()) >= 0


@pytest.mark.parametrize('preset', ['tiny', 'tiny,gru,ss=inverse_sigmoid'])
def test_tiny_config_trains_and_writes_text_samples(tmp_path, preset):
  import configs.char_rnn_shakespeare as cfg  # pylint: disable=g-import-not-at-top
  from tests.conftest import shared_data_dir  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  root = shared_data_dir()
  if root is None:
    pytest.skip('no local data directory')
  c = cfg.get_config(preset)
  c.data.local_dir = root
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert result['step'] == 3 and 0 < result['bits_per_dim'] < 8
  text = (tmp_path / 'run' / 'samples' / 'step_3.txt').read_text()
  assert text.count('=== sample') == c.train.num_samples and 'ROMEO:' in text
