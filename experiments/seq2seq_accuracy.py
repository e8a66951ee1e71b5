"""Exact-match accuracy of a trained seq2seq run by source length, greedy and beam search,
on the held-out strings of the training lengths ('test') and the longer ones ('test_long').

  python -m experiments.seq2seq_accuracy runs/reverse_tf runs/reverse_ss --beam=4

An output matches when every token of it equals the target's, end token and the padding
after it included (the trainer's exact_match). The last line printed is a JSON object.
"""
from __future__ import annotations

import argparse
import json

import jax
import numpy as np


def accuracy_by_length(model, variables, source, target, beam: int,
                       batch_size: int = 500) -> dict:
  """{'greedy': {length: accuracy}, 'beam': {...}, 'count': {length: n}} and overall."""
  greedy_fn = jax.jit(lambda v, s: model.apply(v, s, target.shape[1], method='greedy'))
  beam_fn = jax.jit(lambda v, s: model.apply(v, s, target.shape[1], beam,
                                             method='beam_search'))
  hits = {'greedy': [], 'beam': []}
  for i in range(0, len(source), batch_size):
    s, t = source[i:i + batch_size], target[i:i + batch_size]
    for name, fn in (('greedy', greedy_fn), ('beam', beam_fn)):
      hits[name].append(np.all(np.asarray(fn(variables, s)) == t, axis=1))
  lengths = (source > 0).sum(1)
  out = {'count': {}, 'greedy': {}, 'beam': {}}
  for name in ('greedy', 'beam'):
    h = np.concatenate(hits[name])
    out[name]['all'] = float(h.mean())
    for n in np.unique(lengths):
      out[name][int(n)] = float(h[lengths == n].mean())
      out['count'][int(n)] = int((lengths == n).sum())
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--beam', type=int, default=4)
  parser.add_argument('--splits', default='test,test_long')
  args = parser.parse_args()
  from experiments import datasets  # pylint: disable=g-import-not-at-top
  from experiments.run import load_run  # pylint: disable=g-import-not-at-top
  results = {}
  for workdir in args.workdirs:
    run = load_run(workdir)
    results[workdir] = {'step': run.step}
    for split in args.splits.split(','):
      a = datasets.load_split(run.config.data.name, split)
      r = accuracy_by_length(run.model, run.variables, a['source'], a['target'], args.beam)
      results[workdir][split] = r
      by = ', '.join(f'{n}: {r["greedy"][n]:.2f}/{r["beam"][n]:.2f}' for n in r['count'])
      print(f'{workdir} step {run.step} {split}: greedy {r["greedy"]["all"]:.4f}, beam '
            f'{args.beam} {r["beam"]["all"]:.4f}; by length (greedy/beam) {by}')
  print(json.dumps(results))


if __name__ == '__main__':
  main()
