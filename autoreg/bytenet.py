"""ByteNet decoder: Kalchbrenner, Espeholt, Simonyan, van den Oord, Graves & Kavukcuoglu,
"Neural Machine Translation in Linear Time", 2016, arXiv 1610.10099.

A character-level language model p(s) = prod_t p(s_{t+1} | s_<=t) (Sec. 2, the decoder
alone, as in the paper's Hutter Prize experiment, Sec. 5): character embeddings, a stack of
dilated causal ("masked", Sec. 3.4) 1-D convolutions whose dilation doubles from 1 to
2^(num_layers - 1) and repeats `num_stacks` times (Sec. 3.5: 1, 2, 4, 8, 16, kernel 3),
residual connections around every layer (Sec. 3.6), and a softmax over the vocabulary.

The blocks are WaveNet's (autoreg.causal_conv.GatedResidualStack): a gated unit
tanh . sigmoid with a 1x1 residual update, close to the paper's multiplicative-unit
variant (Sec. 3.6, Fig. 4 right) without its layer normalization and 1x1 bottleneck. As in
ByteNet there are no skip connections: the output layers (ReLU -> 1x1 -> ReLU -> 1x1) read
the last block's residual stream.

Output t (predicting s_{t+1}) depends on exactly the characters s_{t-R+1} .. s_t, with
R = 1 + num_stacks (kernel_size - 1) (2^num_layers - 1) (`receptive_field`; tested by
gradients). `sample` continues a prompt with the fast generation of Paine et al. 2016
(arXiv 1611.09482): per-layer ring buffers, one lax.scan step per character;
`sample_naive` re-runs the whole network per character and draws the same characters.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg import likelihood
from autoreg.causal_conv import GatedResidualStack, receptive_field


class ByteNet(nn.Module):
  """ByteNet decoder over character ids [B, T] in {0..vocab_size-1}.

  Attributes:
    vocab_size: characters (65 for Tiny Shakespeare).
    residual_channels: embedding size and channels of the residual stream (2d in the paper).
    gate_channels: channels of each gated unit.
    output_channels: channels of the hidden 1x1 output layer.
    kernel_size: kernel of the dilated convolutions (3 in the paper's decoder).
    num_layers: layers per stack, dilations 1, 2, ..., 2^(num_layers - 1) (5 in the paper).
    num_stacks: repeats of the dilation cycle (6 in the paper's language model).
    dropout_rate: dropout on every block's gated activation in training (0: none).
  """
  vocab_size: int = 65
  residual_channels: int = 128
  gate_channels: int = 128
  output_channels: int = 256
  kernel_size: int = 3
  num_layers: int = 5
  num_stacks: int = 2
  dropout_rate: float = 0.0

  @property
  def dilations(self) -> tuple[int, ...]:
    return tuple(2 ** i for i in range(self.num_layers)) * self.num_stacks

  @property
  def receptive_field(self) -> int:
    """R: the prediction of s_{t+1} depends on exactly s_{t-R+1} .. s_t."""
    return receptive_field(self.kernel_size, self.dilations)

  def setup(self):
    if min(self.num_layers, self.num_stacks, self.kernel_size) < 1:
      raise ValueError('ByteNet needs num_layers, num_stacks and kernel_size >= 1, got '
                       f'{self.num_layers}, {self.num_stacks}, {self.kernel_size}')
    self.embed = nn.Embed(self.vocab_size, self.residual_channels)
    self.stack = GatedResidualStack(self.dilations, self.residual_channels,
                                    self.gate_channels, 0, self.kernel_size,
                                    self.dropout_rate)
    self.hidden_out = nn.Dense(self.output_channels)
    self.logits_out = nn.Dense(self.vocab_size)

  def _head(self, h):
    return self.logits_out(nn.relu(self.hidden_out(nn.relu(h))))

  def __call__(self, ids, train: bool = False):
    """Logits [B, T, vocab_size]: position t's are for the character after ids[:, t].

    ids: int [B, T], or float embeddings [B, T, residual_channels] (so gradients with
    respect to the input can be taken).
    """
    h = ids if jnp.issubdtype(ids.dtype, jnp.floating) else self.embed(ids)
    h, _ = self.stack(h, train=train)
    return self._head(h)

  def log_prob(self, text, train: bool = False):
    """log p(text[:, 1:] | text[:, :1]) per example, in nats. text: int [B, T + 1]."""
    return likelihood.categorical_log_prob(self(text[:, :-1], train=train), text[:, 1:])

  def loss(self, batch, train: bool = True):
    """Objective: nats per character. Metrics per example: 'nll' (nats summed over the
    seq_len predicted characters) and 'num_dims' (seq_len), so bits/dim is bits/char."""
    text = batch['text']
    nll = -self.log_prob(text, train=train)
    seq_len = text.shape[1] - 1
    return nll.mean() / seq_len, {'nll': nll,
                                  'num_dims': jnp.full(nll.shape, seq_len, jnp.float32)}

  def _prompt(self, prompt_ids, length: int):
    prompt = jnp.asarray(prompt_ids, jnp.int32)
    if prompt.ndim == 1:
      prompt = prompt[None]
    if prompt.shape[1] < 1:
      raise ValueError('ByteNet samples continue a prompt of at least one character (it has '
                       'no start symbol); prompt with a newline for a fresh start.')
    return prompt, jnp.pad(prompt, ((0, 0), (0, length)))

  def sample(self, rng, prompt_ids, length: int, temperature: float = 1.0):
    """Continues prompts int [B, P] (or [P]) by `length` characters: [B, P + length].

    Fast generation: the prompt runs through the per-layer ring buffers one character at
    a time, then each new character costs one step of every layer. Character i (i >= P)
    is drawn with jax.random.fold_in(rng, i), as in `sample_naive`.
    """
    prompt, seq = self._prompt(prompt_ids, length)
    b, p = prompt.shape
    total = p + length
    if length < 1:
      return prompt

    def step(carry, t):
      tok, caches = carry
      h = self.embed(tok)[:, None]                          # [B, 1, R]
      new_caches = []
      for layer, cache in enumerate(caches):
        h, _, cache = self.stack.block_step(layer, cache, h, t)
        new_caches.append(cache)
      logits = self._head(h)[:, 0]
      draw = jax.random.categorical(jax.random.fold_in(rng, t + 1), logits / temperature)
      nxt = jnp.where(t + 1 < p, jax.lax.dynamic_index_in_dim(seq, t + 1, 1, False),
                      draw.astype(jnp.int32))
      return (nxt, new_caches), nxt

    carry = (seq[:, 0], self.stack.init_cache(b))
    _, rest = jax.lax.scan(step, carry, jnp.arange(total - 1, dtype=jnp.int32))
    return jnp.concatenate([seq[:, :1], rest.T], axis=1)

  def sample_naive(self, rng, prompt_ids, length: int, temperature: float = 1.0):
    """`sample` by re-running the whole network on the whole sequence per character."""
    prompt, seq = self._prompt(prompt_ids, length)
    p = prompt.shape[1]
    if length < 1:
      return prompt

    def body(t, seq):
      logits = jax.lax.dynamic_index_in_dim(self(seq[:, :-1]), t, 1, keepdims=False)
      draw = jax.random.categorical(jax.random.fold_in(rng, t + 1), logits / temperature)
      return seq.at[:, t + 1].set(draw.astype(jnp.int32))

    return jax.lax.fori_loop(p - 1, p + length - 1, body, seq)
