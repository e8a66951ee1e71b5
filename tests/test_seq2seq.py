"""Sequence to sequence with attention: beam 1 is greedy, an exhaustive beam finds the
brute-force best hypothesis, source padding changes nothing, eps = 1 is teacher forcing."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from autoreg.seq2seq import BOS, EOS, PAD, Seq2Seq

SRC = jnp.array([[3, 4, 3, 0], [4, 4, 0, 0]])
TGT = jnp.array([[3, 4, 2], [4, 2, 0]])


def _setup(**kw):
  model = Seq2Seq(vocab_size=5, embed_dim=4, hidden=6, **kw)
  params = model.init({'params': jax.random.key(0)}, {'source': SRC, 'target': TGT},
                      train=False, method='loss')
  return model, jax.tree.map(lambda p: 3 * p, params)     # peaked: hypotheses differ


def _greedy_by_hand(model, params, source, length):
  """Greedy decoding written independently: rescore the prefix teacher forced, append the
  argmax output token (not padding or BOS), pad after EOS."""
  out = np.zeros((len(source), length), np.int64)
  for i in range(len(source)):
    prefix = []
    for t in range(length):
      tgt = jnp.asarray([prefix + [PAD] * (length - t)])
      logp = np.asarray(model.apply(params, source[i:i + 1], tgt,
                                    method='decode_teacher_forced'))[0, t].copy()
      logp[[PAD, BOS]] = -np.inf
      prefix.append(int(np.argmax(logp)))
      if prefix[-1] == EOS:
        break
    out[i, :len(prefix)] = prefix
  return out


def test_greedy_is_the_argmax_chain_and_an_exhaustive_beam_is_the_brute_force_best():
  model, params = _setup()
  length = 3
  greedy = model.apply(params, SRC, length, method='greedy')
  np.testing.assert_array_equal(greedy, _greedy_by_hand(model, params, SRC, length))
  np.testing.assert_array_equal(model.apply(params, SRC, length, 1, method='beam_search'),
                                greedy)
  cands = jnp.asarray(list(itertools.product(range(5), repeat=length)))
  best = []
  for i in range(len(SRC)):
    logp = model.apply(params, jnp.repeat(SRC[i:i + 1], len(cands), 0), cands,
                       method='decode_teacher_forced')
    picked = np.asarray(jnp.take_along_axis(logp, cands[..., None], -1)[..., 0])
    scores = []
    for c, p in zip(np.asarray(cands), picked, strict=True):
      # A hypothesis: output tokens (no padding, no BOS) up to the first EOS, then padding;
      # unfinished at the length limit is allowed (as the beam keeps it).
      end = next((t for t in range(length) if c[t] == EOS), length - 1)
      valid = (c[end + 1:] == PAD).all() and not np.isin(c[:end + 1], (PAD, BOS)).any()
      scores.append(p[:end + 1].sum() if valid else -np.inf)
    best.append(np.asarray(cands)[int(np.argmax(scores))])
  exhaustive = model.apply(params, SRC, length, 5 ** length, method='beam_search')
  np.testing.assert_array_equal(exhaustive, np.stack(best))
  assert not np.isin(np.asarray(exhaustive)[:, 0], (PAD, BOS)).any()


def test_source_padding_changes_nothing():
  model, params = _setup()
  more = jnp.pad(SRC, ((0, 0), (0, 3)))
  np.testing.assert_allclose(model.apply(params, SRC, TGT, method='log_prob'),
                             model.apply(params, more, TGT, method='log_prob'), rtol=1e-6)


def test_eps_one_is_teacher_forcing():
  tf, params = _setup()
  ss, _ = _setup(ss_schedule='linear', ss_k=1.0)
  rngs = {'sample': jax.random.key(1)}
  batch = {'source': SRC, 'target': TGT}
  l_tf, _ = tf.apply(params, batch, train=True, method='loss', rngs=rngs, step=3)
  l_ss, _ = ss.apply(params, batch, train=True, method='loss', rngs=rngs, step=3)
  assert float(l_tf) == float(l_ss)


def test_exact_match_is_the_whole_output_end_token_and_padding_included():
  model, params = _setup()
  greedy = np.asarray(model.apply(params, SRC, 4, method='greedy'))
  beam = np.asarray(model.apply(params, SRC, 4, model.eval_beam, method='beam_search'))
  # Targets the greedy decodings match, then spoilt ones.
  target = greedy.copy()
  ends = (target == EOS).any(1)
  _, m = model.apply(params, {'source': SRC, 'target': jnp.asarray(target)}, train=False,
                     method='loss')
  np.testing.assert_array_equal(m['exact_match'], np.ones(len(SRC)))
  np.testing.assert_array_equal(m['beam_exact_match'],
                                np.all(beam == target, 1).astype(np.float32))
  np.testing.assert_array_equal(m['num_dims'], (target != PAD).sum(1))
  assert ends.all(), 'the fixture decodes to EOS within 4 tokens'
  first = target.copy()
  first[:, 0] = np.where(first[:, 0] == 3, 4, 3)           # another first token
  after = target.copy()
  k = (target == EOS).argmax(1)
  after[np.arange(len(SRC)), np.minimum(k + 1, 3)] = 3     # a token after the EOS
  for spoilt in (first, after):
    _, m = model.apply(params, {'source': SRC, 'target': jnp.asarray(spoilt)}, train=False,
                       method='loss')
    np.testing.assert_array_equal(m['exact_match'], np.zeros(len(SRC)))


def test_eps_zero_feeds_only_the_models_draws():
  """With eps = 0 every input after BOS is the model's own draw, so the true target
  tokens cannot change any log-probability (only the target's length, here fixed)."""
  model, params = _setup()
  other = jnp.array([[4, 3, 2], [3, 3, 0]])
  rng = jax.random.key(5)
  a = model.apply(params, SRC, TGT, 0.0, rng, method='decode_teacher_forced')
  b = model.apply(params, SRC, other, 0.0, rng, method='decode_teacher_forced')
  np.testing.assert_array_equal(a, b)
  tf = model.apply(params, SRC, TGT, 1.0, rng, method='decode_teacher_forced')
  assert not np.allclose(a[:, 1:], tf[:, 1:])


def test_generated_tasks_are_seeded_held_out_and_longer():
  from experiments import datasets  # pylint: disable=g-import-not-at-top
  train = datasets.load_split('reverse_strings', 'train')
  seen = {tuple(r[r > 0]) for r in train['source']}
  lengths = {}
  for split in ('validation', 'test', 'test_long'):
    a = datasets.load_split('reverse_strings', split)
    s = datasets.load_split('sort_strings', split)
    np.testing.assert_array_equal(a['source'], s['source'])      # the same strings
    n = (a['source'] > 0).sum(1)
    lengths[split] = (n.min(), n.max())
    for src, tgt, srt, k in zip(a['source'], a['target'], s['target'], n, strict=True):
      assert tuple(src[src > 0]) not in seen                       # held out
      np.testing.assert_array_equal(tgt[:k], src[:k][::-1])
      np.testing.assert_array_equal(srt[:k], np.sort(src[:k]))
      assert tgt[k] == EOS and (tgt[k + 1:] == PAD).all() and (src[k:] == PAD).all()
  assert lengths['test'][1] == (train['source'] > 0).sum(1).max() == 15
  assert lengths['test_long'] == (16, 20)
  before = datasets.load_split('reverse_strings', 'test')['source']
  datasets._CACHE.clear()                                           # regenerated: the same
  np.testing.assert_array_equal(datasets.load_split('reverse_strings', 'test')['source'],
                                before)


def test_tiny_config_trains_evaluates_longer_strings_and_writes_decodings(tmp_path):
  import configs.seq2seq_reverse as cfg  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  c = cfg.get_config('tiny,ss=linear')
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(c, workdir)
  assert result['step'] == 3 and 0 <= result['exact_match'] <= 1
  assert 0 <= result['beam_exact_match'] <= 1 and result['ss_eps'] == 1.0   # eval: forced
  text = (tmp_path / 'run' / 'samples' / 'step_3.txt').read_text()
  assert text.count('\nsource  ') == c.train.num_samples and 'beam 2  ' in text
  # The by-length script agrees with the trainer's evaluation.
  from experiments import datasets, seq2seq_accuracy  # pylint: disable=g-import-not-at-top
  from experiments import run as run_lib
  loaded = run_lib.load_run(workdir)
  val = datasets.load_split('reverse_strings', 'validation')
  by = seq2seq_accuracy.accuracy_by_length(loaded.model, loaded.variables, val['source'][:64],
                                           val['target'][:64], beam=2)
  assert by['greedy']['all'] == result['exact_match']
  assert by['beam']['all'] == result['beam_exact_match']
  assert sum(by['count'].values()) == 64
  c.data.eval_split = 'test_long[:32]'
  long = train.evaluate_run(c, workdir)
  assert long['num_examples'] == 32 and 'beam_exact_match' in long
