"""Sequence to sequence with attention: an LSTM encoder and an LSTM decoder with Luong et
al.'s global "general" attention and input feeding (Luong, Pham & Manning, EMNLP 2015,
arXiv 1508.04025, Sec. 3.1 and 3.3).

p(y | x) = prod_t p(y_t | y_<t, x). The encoder reads the source (padding masked: the
final state is the state after each sequence's last real token, `nn.RNN(seq_lengths=)`);
at step t the decoder LSTM reads [embed(y_{t-1}); h~_{t-1}] (input feeding), scores every
source state with h_t^T W_a h_s (padding excluded), and emits h~_t = tanh(W_c [c_t; h_t])
and a softmax over the vocabulary. Ids: 0 padding, 1 start (BOS), 2 end (EOS).

Training is teacher forced, or with scheduled sampling (autoreg.char_rnn's decays: the
true previous token with probability eps, else the model's own draw). Decoding: greedy, and
beam search (log-probabilities summed, finished hypotheses kept); beam 1 is greedy. Outputs
are never padding or BOS (neither is drawn or decoded); a hypothesis ends with EOS.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

PAD, BOS, EOS = 0, 1, 2


class _DecoderStep(nn.Module):
  vocab_size: int
  embed_dim: int
  hidden: int

  @nn.compact
  def __call__(self, carry, token, enc, enc_mask):
    """carry (LSTM state, h~_{t-1}), token [N] -> (carry, log-probabilities [N, V])."""
    state, feed = carry
    x = jnp.concatenate([nn.Embed(self.vocab_size, self.embed_dim, name='embed')(token), feed],
                        -1)
    state, h = nn.OptimizedLSTMCell(self.hidden, name='lstm')(state, x)
    score = jnp.einsum('nh,nsh->ns', nn.Dense(self.hidden, use_bias=False, name='w_a')(h), enc)
    score = jnp.where(enc_mask, score, -1e9)
    context = jnp.einsum('ns,nsh->nh', jax.nn.softmax(score, -1), enc)
    att = jnp.tanh(nn.Dense(self.hidden, use_bias=False, name='w_c')(
        jnp.concatenate([context, h], -1)))
    logits = nn.Dense(self.vocab_size, name='out')(att)
    return (state, att), jax.nn.log_softmax(logits)


class Seq2Seq(nn.Module):
  """Encoder-decoder over token ids: source [B, S] and target [B, T] padded with 0; the
  target ends with EOS. Attributes: vocab_size (incl. the 3 special ids), embed_dim,
  hidden; ss_schedule, ss_k, ss_c, ss_min as in autoreg.char_rnn; eval_beam: evaluation
  also reports the exact match of beam search with this beam (0 or 1: greedy only)."""
  vocab_size: int
  embed_dim: int = 32
  hidden: int = 64
  ss_schedule: str = 'none'
  ss_k: float = 1.0
  ss_c: float = 0.0
  ss_min: float = 0.0
  eval_beam: int = 4

  def setup(self):
    from autoreg.char_rnn import SCHEDULES  # pylint: disable=g-import-not-at-top
    if self.ss_schedule not in SCHEDULES:
      raise ValueError(f'Unknown scheduled-sampling schedule ss_schedule='
                       f'{self.ss_schedule!r}; choose one of {SCHEDULES}.')
    self.src_embed = nn.Embed(self.vocab_size, self.embed_dim)
    self.encoder = nn.RNN(nn.OptimizedLSTMCell(self.hidden), return_carry=True)
    self.step = _DecoderStep(self.vocab_size, self.embed_dim, self.hidden)

  def encode(self, source):
    lengths = jnp.sum(source != PAD, axis=1)
    state, enc = self.encoder(self.src_embed(source), seq_lengths=lengths)
    return state, enc, source != PAD

  def _start(self, state, n):
    return (state, jnp.zeros((n, self.hidden), jnp.float32))

  def decode_teacher_forced(self, source, target, eps=1.0, rng=None):
    """Log-probabilities [B, T, V] of each target token; with eps < 1 and an rng, each
    input after BOS is the true previous token with probability eps, else the model's draw
    at the previous step (no gradient through the draw). One nn.scan over time."""
    state, enc, mask = self.encode(source)
    b, t = target.shape
    inputs = jnp.concatenate([jnp.full((b, 1), BOS, target.dtype), target[:, :-1]], 1)
    rng = jax.random.key(0) if rng is None else rng
    coins = jax.random.uniform(rng, (t, b)).at[0].set(-1.0)    # BOS is always fed
    keys = jax.random.key_data(jax.random.split(jax.random.fold_in(rng, 1), t))
    not_output = jnp.zeros((self.vocab_size,)).at[PAD].set(-1e9).at[BOS].set(-1e9)

    def body(step, carry, xs, enc, mask, eps):
      dec, drawn = carry
      true_prev, coin, key = xs
      token = jnp.where(coin < eps, true_prev, drawn)
      dec, logp = step(dec, token, enc, mask)
      # The model's own token: padding and BOS are never outputs, so never drawn.
      draw = jax.random.categorical(jax.random.wrap_key_data(key),
                                    jax.lax.stop_gradient(logp) + not_output
                                    ).astype(token.dtype)
      return (dec, draw), logp

    scan = nn.scan(body, variable_broadcast='params', split_rngs={'params': False},
                   in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), out_axes=1)
    _, logp = scan(self.step, (self._start(state, b), inputs[:, 0]),
                   (inputs.T, coins, keys), enc, mask, jnp.float32(eps))
    return logp

  def log_prob(self, source, target):
    """log p(target | source) per example (padding after EOS excluded), in nats."""
    logp = self.decode_teacher_forced(source, target)
    picked = jnp.take_along_axis(logp, target[..., None], -1)[..., 0]
    return jnp.sum(jnp.where(target != PAD, picked, 0.0), axis=1)

  def loss(self, batch, train: bool = True, step=None):
    from autoreg.char_rnn import scheduled_sampling_eps  # pylint: disable=g-import-not-at-top
    source, target = batch['source'], batch['target']
    eps = 1.0
    if train and self.ss_schedule != 'none':
      eps = scheduled_sampling_eps(self.ss_schedule, 0 if step is None else step, self.ss_k,
                                   self.ss_c, self.ss_min)
    rng = self.make_rng('sample') if self.has_rng('sample') else None
    logp = self.decode_teacher_forced(source, target, eps, rng)
    picked = jnp.take_along_axis(logp, target[..., None], -1)[..., 0]
    real = target != PAD
    nll = -jnp.sum(jnp.where(real, picked, 0.0), axis=1)
    n = jnp.sum(real, axis=1).astype(jnp.float32)
    metrics = {'nll': nll, 'num_dims': n, 'ss_eps': jnp.full(nll.shape, eps)}
    if not train:     # decoded to the target's width: right tokens, EOS in place, then padding
      def match(out):
        return jnp.all(out == target, axis=1).astype(jnp.float32)
      metrics['exact_match'] = match(self.greedy(source, target.shape[1]))
      if self.eval_beam > 1:
        metrics['beam_exact_match'] = match(
            self.beam_search(source, target.shape[1], self.eval_beam))
    return jnp.sum(nll) / jnp.sum(n), metrics

  def greedy(self, source, max_len: int):
    """The most likely token at each step: [B, max_len], padded with 0 after EOS."""
    return self.beam_search(source, max_len, beam=1)

  def beam_search(self, source, max_len: int, beam: int = 4):
    """The highest-scoring hypothesis (sum of log-probabilities; a finished one keeps its
    score) of a beam of `beam`: [B, max_len], padded with 0 after EOS. One nn.scan over
    the max_len steps."""
    state, enc, mask = self.encode(source)
    b, v = source.shape[0], self.vocab_size
    def rep(x):
      return jnp.repeat(x, beam, axis=0)
    carry = jax.tree.map(rep, self._start(state, b))
    enc, mask = rep(enc), rep(mask)
    # Only the first beam is live at the start, so the k copies do not repeat one another.
    scores = jnp.tile(jnp.asarray([0.0] + [-1e9] * (beam - 1)), (b, 1))       # [B, K]
    seqs = jnp.zeros((b, beam, max_len), jnp.int32)
    done = jnp.zeros((b, beam), bool)
    token = jnp.full((b * beam,), BOS, jnp.int32)
    # A finished hypothesis continues only with padding, at no cost; a live one with any
    # output token (not padding, not BOS), and it finishes with EOS only.
    pad_only = jnp.full((v,), -1e9).at[PAD].set(0.0)
    not_output = jnp.zeros((v,)).at[PAD].set(-1e9).at[BOS].set(-1e9)

    def body(step, loop, t, enc, mask):
      carry, scores, seqs, done, token = loop
      carry, logp = step(carry, token, enc, mask)
      logp = jnp.where(done[..., None], pad_only, logp.reshape(b, beam, v) + not_output)
      total = (scores[..., None] + logp).reshape(b, beam * v)
      scores, flat = jax.lax.top_k(total, beam)
      parent, token2 = flat // v, (flat % v).astype(jnp.int32)
      seqs = jnp.take_along_axis(seqs, parent[..., None], 1)
      seqs = jax.lax.dynamic_update_slice_in_dim(seqs, token2[..., None], t, axis=2)
      done = jnp.take_along_axis(done, parent, 1) | (token2 == EOS)
      index = (jnp.arange(b)[:, None] * beam + parent).reshape(-1)
      carry = jax.tree.map(lambda x: x[index], carry)
      return (carry, scores, seqs, done, token2.reshape(-1)), None

    scan = nn.scan(body, variable_broadcast='params', split_rngs={'params': False},
                   in_axes=(0, nn.broadcast, nn.broadcast), length=max_len)
    (_, _, seqs, _, _), _ = scan(self.step, (carry, scores, seqs, done, token),
                                 jnp.arange(max_len), enc, mask)
    return seqs[:, 0]
