"""Sequence to sequence with attention: beam 1 is greedy, an exhaustive beam finds the
brute-force best hypothesis, source padding changes nothing, eps = 1 is teacher forcing."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from autoreg.seq2seq import EOS, PAD, Seq2Seq

SRC = jnp.array([[3, 4, 3, 0], [4, 4, 0, 0]])
TGT = jnp.array([[3, 4, 2], [4, 2, 0]])


def _setup(**kw):
  model = Seq2Seq(vocab_size=5, embed_dim=4, hidden=6, **kw)
  params = model.init({'params': jax.random.key(0)}, {'source': SRC, 'target': TGT},
                      train=False, method='loss')
  return model, jax.tree.map(lambda p: 3 * p, params)     # peaked: hypotheses differ


def test_beam_of_one_is_greedy_and_an_exhaustive_beam_is_the_brute_force_best():
  model, params = _setup()
  length = 3
  greedy = model.apply(params, SRC, length, method='greedy')
  np.testing.assert_array_equal(model.apply(params, SRC, length, 1, method='beam_search'),
                                greedy)
  cands = jnp.asarray(list(itertools.product(range(5), repeat=length)))
  best = []
  for i in range(len(SRC)):
    logp = model.apply(params, jnp.repeat(SRC[i:i + 1], len(cands), 0), cands,
                       method='decode_teacher_forced')
    picked = np.asarray(jnp.take_along_axis(logp, cands[..., None], -1)[..., 0])
    scores = []
    for c, p in zip(np.asarray(cands), picked):
      end = next((t for t in range(length) if c[t] in (EOS, PAD)), length - 1)
      valid = (c[end + 1:] == PAD).all()
      scores.append(p[:end + 1].sum() if valid else -np.inf)
    best.append(np.asarray(cands)[int(np.argmax(scores))])
  exhaustive = model.apply(params, SRC, length, 5 ** length, method='beam_search')
  np.testing.assert_array_equal(exhaustive, np.stack(best))


def test_source_padding_changes_nothing():
  model, params = _setup()
  more = jnp.pad(SRC, ((0, 0), (0, 3)))
  np.testing.assert_allclose(model.apply(params, SRC, TGT, method='log_prob'),
                             model.apply(params, more, TGT, method='log_prob'), rtol=1e-6)


def test_eps_one_is_teacher_forcing_and_eval_reports_exact_match():
  tf, params = _setup()
  ss, _ = _setup(ss_schedule='linear', ss_k=1.0)
  rngs = {'sample': jax.random.key(1)}
  batch = {'source': SRC, 'target': TGT}
  l_tf, _ = tf.apply(params, batch, train=True, method='loss', rngs=rngs, step=3)
  l_ss, _ = ss.apply(params, batch, train=True, method='loss', rngs=rngs, step=3)
  assert float(l_tf) == float(l_ss)
  _, metrics = tf.apply(params, batch, train=False, method='loss')
  greedy = tf.apply(params, SRC, TGT.shape[1], method='greedy')
  want = np.all((np.asarray(greedy) == np.asarray(TGT)) | (np.asarray(TGT) == PAD), axis=1)
  np.testing.assert_array_equal(metrics['exact_match'], want.astype(np.float32))
  np.testing.assert_array_equal(metrics['num_dims'], [3, 2])
