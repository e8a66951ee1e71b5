"""Character LSTM language-model training throughput: JAX (autoreg.char_rnn.CharRNN, flax
OptimizedLSTMCell under nn.scan) against the same model in PyTorch (nn.Embedding,
nn.LSTM, nn.Linear), CPU, same sizes, same initial weights, same loss asserted.

  python -m benchmarks.char_lstm_throughput                 # 2 x 512 LSTM, batch 32 x 256
  python -m benchmarks.char_lstm_throughput --quick         # 1 x 128, batch 8 x 64
  taskset -c 1 python -m benchmarks.char_lstm_throughput --torch_threads 1   # one core

A train step is forward, backward and an Adam update on one batch of random characters
(teacher forcing). Both sides are warmed up; then timed rounds alternate JAX, PyTorch, ...
so they see the same load, and the table gives the median characters/s of each. Also the
JAX sampler's speed (characters/s generated, batch of 4). The last line is a JSON object.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autoreg import likelihood
from autoreg.char_rnn import CharRNN
from benchmarks import common


def torch_model(torch, params, vocab, embed, hidden, layers):
  """The PyTorch twin, with the JAX model's weights (gates i, f, g, o in both)."""
  nn = torch.nn

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(vocab, embed)
      self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
      self.out = nn.Linear(hidden, vocab)

    def forward(self, ids):
      h, _ = self.lstm(self.embed(ids))
      return self.out(h)

  net = Net()
  p = jax.tree.map(np.asarray, params['params']['step'])
  def t(a):
    return torch.tensor(np.ascontiguousarray(a))
  with torch.no_grad():
    net.embed.weight.copy_(t(p['embed']['embedding']))
    for layer in range(layers):
      cell = p[f'lstm_{layer}']
      w_ih = np.concatenate([cell[f'i{g}']['kernel'].T for g in 'ifgo'])
      w_hh = np.concatenate([cell[f'h{g}']['kernel'].T for g in 'ifgo'])
      b_hh = np.concatenate([cell[f'h{g}']['bias'] for g in 'ifgo'])
      getattr(net.lstm, f'weight_ih_l{layer}').copy_(t(w_ih))
      getattr(net.lstm, f'weight_hh_l{layer}').copy_(t(w_hh))
      getattr(net.lstm, f'bias_hh_l{layer}').copy_(t(b_hh))
      getattr(net.lstm, f'bias_ih_l{layer}').zero_()
    net.out.weight.copy_(t(p['logits']['kernel'].T))
    net.out.bias.copy_(t(p['logits']['bias']))
  return net


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=3, help='train steps per timed round')
  parser.add_argument('--torch_threads', type=int, default=0, help='0: all cores')
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  vocab, embed = 65, 64
  hidden, layers, batch, seq = (128, 1, 8, 64) if args.quick else (512, 2, 32, 256)
  model = CharRNN(vocab_size=vocab, embed_dim=embed, hidden=hidden, num_layers=layers)
  text = np.random.default_rng(0).integers(0, vocab, (batch, seq + 1)).astype(np.int32)
  params = jax.jit(lambda: model.init({'params': jax.random.key(0)}, {'text': text},
                                      train=False, method='loss'))()
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  def loss_fn(p, text):
    logits = model.apply(p, text[:, :-1])
    return -likelihood.categorical_log_prob(logits, text[:, 1:]).mean() / seq

  @jax.jit
  def step(p, o, text):
    loss, g = jax.value_and_grad(loss_fn)(p, text)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  net = torch_model(torch, params, vocab, embed, hidden, layers)
  topt = torch.optim.Adam(net.parameters(), lr=1e-3)
  ttext = torch.tensor(text, dtype=torch.long)

  def torch_step():
    topt.zero_grad()
    logits = net(ttext[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ttext[:, 1:].reshape(-1))
    loss.backward()
    topt.step()
    return float(loss)

  jtext = jnp.asarray(text)
  jax_loss0 = float(loss_fn(params, jtext))
  torch_loss0 = torch_step()
  assert abs(jax_loss0 - torch_loss0) < 1e-4 * max(1.0, abs(jax_loss0)), (jax_loss0, torch_loss0)
  p, o = params, opt_state
  p, o, _ = step(p, o, jtext)
  jax.block_until_ready(p)
  load0, usage = common.loadavg(), common.CpuUsage()
  rates = {'jax': [], 'torch': []}
  for _ in range(args.rounds):
    t = time.perf_counter()
    for _ in range(args.steps):
      p, o, loss = step(p, o, jtext)
    jax.block_until_ready(loss)
    rates['jax'].append(args.steps * batch * seq / (time.perf_counter() - t))
    t = time.perf_counter()
    for _ in range(args.steps):
      torch_step()
    rates['torch'].append(args.steps * batch * seq / (time.perf_counter() - t))
  others = usage.others_cores()
  med = {k: statistics.median(v) for k, v in rates.items()}

  # Sampling speed: a prompt of 16 characters continued by 256, batch 4.
  prompt = jnp.asarray(text[:4, :16])
  sample = jax.jit(lambda p, r: model.apply(p, r, prompt, 256, method='sample'))
  jax.block_until_ready(sample(p, jax.random.key(1)))
  t = time.perf_counter()
  jax.block_until_ready(sample(p, jax.random.key(2)))
  sample_rate = 4 * 256 / (time.perf_counter() - t)

  threads = args.torch_threads or torch.get_num_threads()
  print(f'char LSTM {layers} x {hidden}, embedding {embed}, batch {batch} x {seq} characters, '
        f'{common.machine()}; initial loss jax {jax_loss0:.6f}, torch {torch_loss0:.6f}')
  common.print_table([('jax', f'{med["jax"]:,.0f}'), (f'torch ({threads} threads)',
                                                       f'{med["torch"]:,.0f}')],
                     ('train step', 'characters/s (median)'))
  print(f'ratio jax / torch {med["jax"] / med["torch"]:.2f}; sampling {sample_rate:,.0f} '
        'characters/s (batch 4)')
  print(f'load average before {load0}, after {common.loadavg()}; other processes used '
        f'{others:.2f} cores; XLA threads: all {common.os.cpu_count()} cores')
  common.emit({'benchmark': 'char_lstm_throughput', 'hidden': hidden, 'layers': layers,
               'batch': batch, 'seq_len': seq, 'jax_chars_per_s': round(med['jax']),
               'torch_chars_per_s': round(med['torch']), 'torch_threads': threads,
               'ratio': round(med['jax'] / med['torch'], 3),
               'sample_chars_per_s': round(sample_rate), 'load_before': load0,
               'others_cores': round(others, 2)})


if __name__ == '__main__':
  main()
