"""Free-running quality of a character language model's samples, judged by no model.

Teacher-forced nats/char cannot show what scheduled sampling (Bengio et al. 2015) is meant
to fix: at generation time the model reads its own draws, and an early mistake can derail
what follows (exposure bias). This scores long samples the model writes freely, against
the data itself, with two statistics that need no learned judge (a judge model would
favour whichever of the compared models it resembles):

- **word rate**: the fraction of the sampled words (maximal runs of letters and
  apostrophes, lowercased) that occur as words in the training split. Errors that
  compound under free running turn into non-words; held-out real text scores near 1.
- **n-gram JS**: the Jensen-Shannon divergence (bits, 0 to 1) between the character
  n-gram distributions (n = 4 by default) of the samples and of the training split:
  whether the samples' local statistics are the data's, not only some valid words.

Both are also given for as much held-out validation text (the text that follows each
prompt), the level a perfect model approaches: the finite sample keeps its JS above 0.
Samples continue prompts cut from the validation split at seeded positions.

  python -m experiments.free_running runs/char_lstm_tf runs/char_lstm_ss \
      --num_samples=64 --length=500 --temperature=1.0

The last line printed is a JSON object with every figure.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
  """Lowercased runs of letters and apostrophes, apostrophes stripped at the ends."""
  out = [w.strip("'") for w in _WORD.findall(text.lower())]
  return [w for w in out if w]


def word_rate(text: str, vocabulary: set[str]) -> float:
  """The fraction of text's words that are in `vocabulary` (nan without words)."""
  ws = words(text)
  return sum(w in vocabulary for w in ws) / len(ws) if ws else float('nan')


def ngram_counts(text: str, n: int) -> collections.Counter:
  return collections.Counter(text[i:i + n] for i in range(len(text) - n + 1))


def js_divergence(p: collections.Counter, q: collections.Counter) -> float:
  """Jensen-Shannon divergence in bits between two count tables (0: equal, 1: disjoint)."""
  tp, tq = sum(p.values()), sum(q.values())
  total = 0.0
  for key in set(p) | set(q):
    a, b = p.get(key, 0) / tp, q.get(key, 0) / tq
    m = 0.5 * (a + b)
    if a:
      total += 0.5 * a * math.log2(a / m)
    if b:
      total += 0.5 * b * math.log2(b / m)
  return total


def score(texts: list[str], vocabulary: set[str], reference: collections.Counter,
          n: int) -> dict:
  """Word rate and n-gram JS of a set of texts, each text's n-grams counted on its own."""
  counts = collections.Counter()
  for t in texts:
    counts.update(ngram_counts(t, n))
  ws = [w for t in texts for w in words(t)]
  return {'word_rate': sum(w in vocabulary for w in ws) / len(ws) if ws else float('nan'),
          f'js_{n}gram_bits': js_divergence(counts, reference), 'num_words': len(ws)}


def evaluate_run(run, args) -> dict:
  """The scores of one loaded run's samples, and of as much real validation text."""
  from experiments import datasets, input_pipeline  # pylint: disable=g-import-not-at-top
  data = run.config.data
  info = input_pipeline.data_info(data)

  def load(split):
    return datasets.load_split(data.name, split, source=data.source,
                               local_dir=data.local_dir)['text']

  def decode(ids):
    return ''.join(info.vocab[i] for i in ids)

  train_text, valid = decode(load('train')), np.asarray(load('validation'))
  vocabulary = set(words(train_text))
  reference = ngram_counts(train_text, args.n)
  rng = np.random.default_rng(args.seed)
  # Prompts whose following validation text is as long as a sample (the reference).
  starts = rng.integers(0, len(valid) - args.prompt_length - args.length, args.num_samples)
  prompts = np.stack([valid[s:s + args.prompt_length] for s in starts]).astype(np.int32)
  fn = jax.jit(lambda v, key, p: run.model.apply(
      v, key, p, args.length, temperature=args.temperature, method='sample'))
  ids = np.asarray(fn(run.variables, jax.random.key(args.seed), jnp.asarray(prompts)))
  texts = [decode(row[args.prompt_length:]) for row in ids]
  out = score(texts, vocabulary, reference, args.n)
  # The ceiling: as much real validation text, cut where the samples' prompts end.
  real = [decode(valid[s + args.prompt_length:s + args.prompt_length + args.length])
          for s in starts]
  out['validation_text'] = score(real, vocabulary, reference, args.n)
  out.update(step=run.step, temperature=args.temperature, num_samples=args.num_samples,
             length=args.length, example=texts[0][:300])
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--num_samples', type=int, default=64)
  parser.add_argument('--length', type=int, default=500)
  parser.add_argument('--prompt_length', type=int, default=50)
  parser.add_argument('--temperature', type=float, default=1.0)
  parser.add_argument('--n', type=int, default=4)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()

  from experiments.run import load_run  # pylint: disable=g-import-not-at-top

  results = {}
  for workdir in args.workdirs:
    run = load_run(workdir)
    out = evaluate_run(run, args)
    results[workdir] = out
    print(f'{workdir} (step {run.step}): word rate {out["word_rate"]:.4f} '
          f'(validation text {out["validation_text"]["word_rate"]:.4f}), '
          f'JS {args.n}-gram {out[f"js_{args.n}gram_bits"]:.4f} bits '
          f'(validation text {out["validation_text"][f"js_{args.n}gram_bits"]:.4f}), '
          f'{out["num_words"]} words')
  print(json.dumps(results))


if __name__ == '__main__':
  main()
