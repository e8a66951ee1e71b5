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
  from experiments import train  # pylint: disable=g-import-not-at-top
  from tests.conftest import shared_data_dir  # pylint: disable=g-import-not-at-top
  root = shared_data_dir()
  if root is None:
    pytest.skip('no local data directory')
  c = cfg.get_config(preset)
  c.data.local_dir = root
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert result['step'] == 3 and 0 < result['bits_per_dim'] < 8
  text = (tmp_path / 'run' / 'samples' / 'step_3.txt').read_text()
  assert text.count('=== sample') == c.train.num_samples and 'ROMEO:' in text


def test_text_streams_are_contiguous_per_row_and_resume_from_their_state():
  from experiments.input_pipeline import TextStreams  # pylint: disable=g-import-not-at-top
  ids = np.arange(103)
  streams = TextStreams(ids, batch_size=4, seq_len=5)     # 25 characters per stream: 4 windows
  batches = [next(streams) for _ in range(6)]
  for k in range(3):
    a, b = batches[k]['text'], batches[k + 1]['text']
    np.testing.assert_array_equal(a[:, -1], b[:, 0])        # the next window goes on
    np.testing.assert_array_equal(b[:, 0] - a[:, 0], 5)
  np.testing.assert_array_equal(batches[0]['text'][:, 0], [0, 25, 50, 75])
  assert [int(b['reset'][0]) for b in batches] == [1, 0, 0, 0, 1, 0]   # a new epoch
  state = streams.get_state()
  again = TextStreams(ids, batch_size=4, seq_len=5)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)['text'], next(streams)['text'])
  # Two processes take disjoint halves of the streams.
  halves = [next(TextStreams(ids, 4, 5, p, 2))['text'] for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), batches[0]['text'])


def test_carried_state_starts_the_next_window_and_resets():
  model = _model(carry_batch=3)
  text = TEXT[:, :7]
  variables = model.init({'params': jax.random.key(1), 'sample': jax.random.key(2)},
                         {'text': text}, train=False, method='loss')
  assert not any(np.asarray(v).any() for v in jax.tree.leaves(variables['carry']))
  rngs = {'sample': jax.random.key(3)}
  reset0 = {'text': text, 'reset': jnp.zeros(3, jnp.int32)}
  (_, m1), moved = model.apply(variables, reset0, train=True, method='loss', rngs=rngs,
                               mutable=['carry'])
  # The carry is the state after the window: equal to running the window from zero states.
  _, _, final = model.apply(variables, text[:, :-1], jax.random.key(0), method='run')
  for a, b in zip(jax.tree.leaves(moved['carry']), jax.tree.leaves(final), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  carried = {**variables, **moved}
  (_, m2), _ = model.apply(carried, reset0, train=True, method='loss', rngs=rngs,
                           mutable=['carry'])
  assert not np.allclose(m1['nll'], m2['nll'])            # the state changed the predictions
  # Where 'reset' is 1, the row starts from zeros again: the first window's numbers.
  (_, m3), _ = model.apply(carried, {'text': text, 'reset': jnp.array([1, 0, 1])}, train=True,
                           method='loss', rngs=rngs, mutable=['carry'])
  np.testing.assert_allclose(np.asarray(m3['nll'])[[0, 2]], np.asarray(m1['nll'])[[0, 2]],
                             rtol=1e-6)
  np.testing.assert_allclose(m3['nll'][1], m2['nll'][1], rtol=1e-6)


def test_killed_tbptt_run_resumes_bit_identically(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  import experiments  # pylint: disable=g-import-not-at-top
  from tests.conftest import REPO, shared_data_dir  # pylint: disable=g-import-not-at-top
  from tests.test_cli import _cli, _env  # pylint: disable=g-import-not-at-top
  root = shared_data_dir()
  if root is None:
    pytest.skip('no local data directory')
  args = ['--config=configs/char_rnn_shakespeare.py:tiny', '--config.train.num_steps=60',
          '--config.train.checkpoint_every=7', '--config.train.log_every=10',
          '--config.train.sample_at_end=False', '--config.train.eval_every=0']
  env = _env(DGM_DATA_DIR=root)
  ref = str(tmp_path / 'uninterrupted')
  r = _cli(*args, f'--workdir={ref}', env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  killed = str(tmp_path / 'killed')
  proc = subprocess.Popen([sys.executable, '-m', 'experiments.main', *args,
                           f'--workdir={killed}'], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt = os.path.join(killed, 'checkpoints')
  deadline = time.time() + 180
  while time.time() < deadline and proc.poll() is None:
    done = [d for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []
    if done and max(map(int, done)) >= 21:
      break
    time.sleep(0.05)
  assert proc.poll() is None, 'the run finished before it could be killed'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  r = _cli(*args, f'--workdir={killed}', env=env)
  assert r.returncode == 0 and 'Resumed from' in r.stderr, r.stderr[-3000:]
  a, b = experiments.load_run(ref), experiments.load_run(killed)
  for x, y in zip(jax.tree.leaves((a.raw_params, a.params, a.model_state)),
                  jax.tree.leaves((b.raw_params, b.params, b.model_state)), strict=True):
    np.testing.assert_array_equal(x, y)
  assert jax.tree.leaves(a.model_state['carry'])           # the carried state is checkpointed


def test_carried_state_needs_streams_of_its_batch_size():
  import configs.char_rnn_shakespeare as cfg  # pylint: disable=g-import-not-at-top
  from experiments import input_pipeline, validation  # pylint: disable=g-import-not-at-top
  from experiments.models import ConfigError, build_model  # pylint: disable=g-import-not-at-top
  c = cfg.get_config('tiny')
  def model(c):
    return build_model(c.model_name, c.model.to_dict())
  validation.check_model_data(c, model(c), input_pipeline.data_info(c.data))
  c.data.batch_size = 16
  with pytest.raises(ConfigError, match='carry_batch=8 must equal config.data.batch_size=16'):
    validation.check_model_data(c, model(c), input_pipeline.data_info(c.data))
  c.data.streams = False
  with pytest.raises(ConfigError, match='needs contiguous streams'):
    validation.check_model_data(c, model(c), input_pipeline.data_info(c.data))
