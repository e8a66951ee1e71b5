"""Character-level RNN language models (the char-rnn setting), with teacher forcing and
scheduled sampling (Bengio, Vinyals, Jaitly & Shazeer, NeurIPS 2015, arXiv 1506.03099).

p(s) = prod_t p(s_{t+1} | s_<=t): character embeddings, 1-3 layers of flax's LSTMCell or
GRUCell (OptimizedLSTMCell: the same LSTM with its gate matrices fused; dropout between layers), a
softmax over the vocabulary. The recurrence is one `nn.scan` over time of a step module that holds
all the parameters, so teacher forcing, scheduled sampling and generation share them.

Scheduled sampling: at step t a coin with probability eps feeds the true previous
character, otherwise a character drawn from the model's own prediction at t - 1 (no
gradient through the draw). eps = 1 is teacher forcing exactly; eps = 0 feeds only the
model's draws (free running). The decay of eps over training steps i (Sec. 2.4 of the
paper): 'linear' eps_i = max(eps_min, k - c i), 'exponential' eps_i = k^i (k < 1),
'inverse_sigmoid' eps_i = k / (k + exp(i / k)) (k >= 1); 'none' keeps eps = 1.
Evaluation is always teacher forced.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg import likelihood

CELLS = ('lstm', 'gru')
SCHEDULES = ('none', 'linear', 'exponential', 'inverse_sigmoid')


def scheduled_sampling_eps(schedule: str, step, k: float, c: float = 0.0,
                           eps_min: float = 0.0):
  """The probability of feeding the true previous character at training step `step`."""
  i = jnp.asarray(step, jnp.float32)
  if schedule == 'none':
    return jnp.ones_like(i)
  if schedule == 'linear':
    return jnp.maximum(eps_min, k - c * i)
  if schedule == 'exponential':
    return jnp.asarray(k, jnp.float32) ** i
  if schedule == 'inverse_sigmoid':
    return k / (k + jnp.exp(i / k))
  raise ValueError(f'Unknown scheduled-sampling schedule {schedule!r}; choose one of '
                   f'{SCHEDULES}.')


class _Step(nn.Module):
  """One character: choose the input (true or drawn), embed, the cells, the logits, a draw."""
  vocab_size: int
  embed_dim: int
  hidden: int
  num_layers: int
  cell: str
  dropout_rate: float

  @nn.compact
  def __call__(self, carry, xs, eps, temperature, train):
    states, drawn = carry
    true_prev, coin, key_data = xs
    key = jax.random.wrap_key_data(key_data[0])
    token = jnp.where(coin < eps, true_prev, drawn)
    h = nn.Embed(self.vocab_size, self.embed_dim, name='embed')(token)
    k_draw, k_drop = jax.random.split(key)
    new_states = []
    for layer in range(self.num_layers):
      cell = (nn.OptimizedLSTMCell(self.hidden, name=f'lstm_{layer}') if self.cell == 'lstm' else
              nn.GRUCell(self.hidden, name=f'gru_{layer}'))
      state, h = cell(states[layer], h)
      new_states.append(state)
      if self.dropout_rate > 0 and layer < self.num_layers - 1:
        keep = jax.random.bernoulli(jax.random.fold_in(k_drop, layer), 1 - self.dropout_rate,
                                    h.shape)
        h = jnp.where(train, jnp.where(keep, h / (1 - self.dropout_rate), 0.0), h)
    logits = nn.Dense(self.vocab_size, name='logits')(h)
    draw = jax.random.categorical(k_draw, jax.lax.stop_gradient(logits) / temperature)
    return (new_states, draw.astype(jnp.int32)), (logits, token)


class CharRNN(nn.Module):
  """An RNN language model over character ids [B, T] in {0..vocab_size-1}.

  Attributes:
    vocab_size: characters (65 for Tiny Shakespeare).
    embed_dim: embedding size.
    hidden: units per layer.
    num_layers: 1-3 recurrent layers.
    cell: 'lstm' or 'gru' (flax.linen.LSTMCell, GRUCell).
    dropout_rate: dropout between layers, in training.
    ss_schedule: scheduled sampling's decay ('none': teacher forcing), with ss_k, ss_c,
      ss_min as in `scheduled_sampling_eps`.
    carry_batch: > 0: truncated BPTT with carried state, for training batches of this
      (global) size from contiguous streams (config.data.streams): the final state of one
      window (gradient stopped) starts the next, zeroed where the batch's 'reset' is 1. The
      state is the 'carry' collection, part of the run's checkpoint. Evaluation windows
      start from zero states.
  """
  vocab_size: int = 65
  embed_dim: int = 64
  hidden: int = 256
  num_layers: int = 2
  cell: str = 'lstm'
  dropout_rate: float = 0.0
  ss_schedule: str = 'none'
  ss_k: float = 1.0
  ss_c: float = 0.0
  ss_min: float = 0.0
  carry_batch: int = 0

  def setup(self):
    if self.cell not in CELLS:
      raise ValueError(f'CharRNN cell={self.cell!r}; choose one of {CELLS}.')
    if not 1 <= self.num_layers <= 3:
      raise ValueError(f'CharRNN num_layers={self.num_layers}: use 1 to 3 layers.')
    if self.ss_schedule not in SCHEDULES:
      raise ValueError(f'Unknown scheduled-sampling schedule ss_schedule='
                       f'{self.ss_schedule!r}; choose one of {SCHEDULES}.')
    self.step = nn.scan(_Step, variable_broadcast='params', split_rngs={'params': False},
                        in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast),
                        out_axes=1)(self.vocab_size, self.embed_dim, self.hidden,
                                    self.num_layers, self.cell, self.dropout_rate)
    if self.carry_batch:
      self.carried = self.variable('carry', 'states',
                                   lambda: self.initial_states(self.carry_batch))

  def initial_states(self, batch: int):
    zeros = jnp.zeros((batch, self.hidden), jnp.float32)
    return [(zeros, zeros) if self.cell == 'lstm' else zeros for _ in range(self.num_layers)]

  def run(self, inputs, rng, eps=1.0, temperature=1.0, train=False, states=None):
    """Runs the recurrence over inputs int [B, T] (the true previous characters).
    Returns (logits [B, T, V], the tokens fed [B, T], the final states)."""
    b, t = inputs.shape
    states = self.initial_states(b) if states is None else states
    k_coin, k_steps = jax.random.split(rng)
    coins = jax.random.uniform(k_coin, (b, t))
    # One key per step (shared by the batch), as raw key data scanned along axis 1.
    keys = jax.random.key_data(jax.random.split(k_steps, t))
    keys = jnp.broadcast_to(keys[None], (b,) + keys.shape)
    (states, _), (logits, fed) = self.step(
        (states, inputs[:, 0]), (inputs, coins, keys), jnp.float32(eps),
        jnp.float32(temperature), jnp.asarray(train))
    return logits, fed, states

  def __call__(self, ids, train: bool = False):
    """Teacher-forced logits [B, T, V]: position t's are for the character after ids[:, t]."""
    logits, _, _ = self.run(ids, jax.random.key(0), 1.0, train=train)
    return logits

  def log_prob(self, text):
    """Teacher-forced log p(text[:, 1:] | text[:, :1]) per example, in nats."""
    return likelihood.categorical_log_prob(self(text[:, :-1]), text[:, 1:])

  def loss(self, batch, train: bool = True, step=None):
    """Nats per character. In training with a schedule, the inputs follow scheduled
    sampling at eps(step) (the trainer passes its step); evaluation is teacher forced."""
    text = batch['text']
    eps = 1.0
    if train and self.ss_schedule != 'none':
      eps = scheduled_sampling_eps(self.ss_schedule, 0 if step is None else step, self.ss_k,
                                   self.ss_c, self.ss_min)
    rng = self.make_rng('sample') if self.has_rng('sample') else jax.random.key(0)
    states = None
    if self.carry_batch and train:
      if text.shape[0] != self.carry_batch:
        raise ValueError(f'CharRNN carry_batch={self.carry_batch}, but the training batch '
                         f'has {text.shape[0]} streams; set config.model.carry_batch to '
                         'config.data.batch_size.')
      keep = 1.0 - batch.get('reset', jnp.zeros(text.shape[:1])).astype(jnp.float32)
      states = jax.tree.map(lambda v: jax.lax.stop_gradient(v) * keep[:, None],
                            self.carried.value)
    logits, _, final = self.run(text[:, :-1], rng, eps, train=train, states=states)
    if states is not None and self.is_mutable_collection('carry'):
      self.carried.value = jax.tree.map(jax.lax.stop_gradient, final)
    nll = -likelihood.categorical_log_prob(logits, text[:, 1:])
    seq_len = text.shape[1] - 1
    return nll.mean() / seq_len, {'nll': nll, 'ss_eps': jnp.full(nll.shape, eps),
                                  'num_dims': jnp.full(nll.shape, seq_len, jnp.float32)}

  def sample(self, rng, prompt_ids, length: int, temperature: float = 1.0):
    """Continues prompts int [B, P] (or [P]) by `length` characters: [B, P + length]. The
    prompt is read teacher forced, then each drawn character is fed back (eps = 0)."""
    prompt = jnp.asarray(prompt_ids, jnp.int32)
    prompt = prompt[None] if prompt.ndim == 1 else prompt
    if length < 1:
      return prompt
    k_prompt, k_gen = jax.random.split(rng)
    logits, _, states = self.run(prompt, k_prompt, 1.0, temperature)
    first = jax.random.categorical(jax.random.fold_in(k_gen, 0), logits[:, -1] / temperature)
    b = prompt.shape[0]
    # Free running: every fed token is the previous draw (the `inputs` are placeholders
    # that the coin, eps = 0, never picks; the first one is the draw above).
    inputs = jnp.zeros((b, length), jnp.int32).at[:, 0].set(first.astype(jnp.int32))
    _, fed, _ = self.run(inputs, jax.random.fold_in(k_gen, 1), 0.0, temperature,
                         states=states)
    return jnp.concatenate([prompt, fed], axis=1)
