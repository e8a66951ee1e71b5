"""Does a digit-conditioned WaveNet use its conditioning? Likelihood under every digit label.

  python -m benchmarks.wavenet_conditioning --workdir=runs/wavenet_fsdd
  python -m benchmarks.wavenet_conditioning --workdir=runs/wavenet_fsdd --quick  # 20 recordings
  python -m benchmarks.wavenet_conditioning --workdir=... --num_recordings=50 --max_samples=2000

For each recording of the run's evaluation split (config.data.eval_split unless --split is
given; the data directory is the saved config's data.local_dir, else $DGM_DATA_DIR, unless
--data_dir is given) the run's WaveNet (EMA parameters, latest checkpoint) scores the
mu-law codes under each of its num_classes digit labels, the speaker kept at its true
value. Every recording is truncated to its first --max_samples real samples to bound the
CPU time; the first receptive-field samples are scored with a zero (silence) history, as
in training. --num_recordings takes that many recordings evenly spaced through the split
(the split is ordered by digit, so they cover the digits evenly), not its first ones.

Printed: mean NLL per sample (total nats over total scored samples, and in bits) under
the true label and under the wrong labels (averaged over the num_classes - 1 wrong
labels); the fraction of recordings whose true-label NLL is below every wrong label's;
the accuracy of classifying each recording by argmax over labels of its likelihood
(uniform prior; chance is 1 / num_classes); a table per true digit and the confusion
matrix. A model that makes no use of its label scores all labels about the same (a gap
near 0 bits) and classifies at about chance.

All recordings x all labels go through one jax.jit-compiled function, vmapped over the
labels, over batches of recordings padded (and masked) to a few fixed lengths. The last
line is a JSON object with nll_true_nats, nll_wrong_nats, bits_true, bits_wrong, accuracy,
num_recordings and max_samples.
"""
from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from autoreg.wavenet import mu_law_encode
from benchmarks import common
from experiments import datasets, input_pipeline
from experiments import run as run_lib

LENGTH_BUCKET = 1024    # padded batch lengths are multiples of this (fewer compilations)


def make_scorer(model):
  """jit(params, audio int16 [B, T], mask bool [B, T], speaker int [B] or None) -> NLL in
  nats summed over each recording's masked samples, [B, num_classes], one column per label."""
  if not getattr(model, 'num_classes', 0):
    raise ValueError('This model is not conditioned on a class label (num_classes=0): '
                     'there is no conditioning to test.')
  if getattr(model, 'local_channels', 0):
    raise ValueError('Models with local conditioning are not supported here.')
  labels = jnp.arange(model.num_classes)

  def score(params, audio, mask, speaker):
    codes = mu_law_encode(audio, model.num_levels)

    def one_label(label):
      lp = model.apply({'params': params}, codes, speaker=speaker,
                       label=jnp.full(codes.shape[:1], label), mask=mask, method='log_prob')
      return -lp

    return jax.vmap(one_label, out_axes=1)(labels)

  return jax.jit(score)


def label_nll(model, params, audio, lengths, speakers=None, *, max_samples: int,
              batch_size: int = 8, scorer=None) -> tuple[np.ndarray, np.ndarray]:
  """NLL of each recording under each label.

  audio: int16 [N, T] zero-padded; lengths: int [N] real samples; speakers: int [N] (used
  when the model is speaker-conditioned). Each recording is scored on its first
  min(length, max_samples) samples. Returns (nats per scored sample [N, num_classes],
  samples scored [N]).
  """
  audio, lengths = np.asarray(audio), np.asarray(lengths)
  n = len(audio)
  scored = np.minimum(lengths, max_samples).astype(np.int64)
  if n == 0 or scored.min() < 1:
    raise ValueError('Every recording needs at least one sample to score.')
  use_speaker = bool(getattr(model, 'num_speakers', 0))
  if use_speaker and speakers is None:
    raise ValueError('This model is speaker-conditioned: pass the speakers.')
  scorer = scorer or make_scorer(model)
  totals = np.zeros((n, model.num_classes), np.float64)
  order = np.argsort(scored, kind='stable')   # similar lengths share a padded batch
  for start in range(0, n, batch_size):
    idx = order[start:start + batch_size]
    idx = np.concatenate([idx, np.repeat(idx[-1:], batch_size - len(idx))])   # pad rows
    t = min(max_samples, -(-int(scored[idx].max()) // LENGTH_BUCKET) * LENGTH_BUCKET)
    batch = np.zeros((batch_size, t), np.int16)
    width = min(t, audio.shape[1])
    batch[:, :width] = audio[idx, :width]
    mask = np.arange(t)[None] < scored[idx, None]
    spk = jnp.asarray(np.asarray(speakers)[idx], jnp.int32) if use_speaker else None
    out = np.asarray(jax.device_get(scorer(params, batch, mask, spk)), np.float64)
    real = min(batch_size, n - start)
    totals[idx[:real]] = out[:real]
  return totals / scored[:, None], scored


def summarize(nll: np.ndarray, scored: np.ndarray, true: np.ndarray) -> dict:
  """Aggregates of label_nll's output against the true labels [N]."""
  n, k = nll.shape
  true = np.asarray(true)
  totals = nll * scored[:, None]                     # nats per recording, per label
  wrong = np.ones((n, k), bool)
  wrong[np.arange(n), true] = False
  true_nats = totals[np.arange(n), true]
  nll_true = true_nats.sum() / scored.sum()
  # Each wrong label's total over total samples, averaged over the k - 1 wrong labels.
  nll_wrong = (totals * wrong).sum() / (k - 1) / scored.sum()
  best_wrong = np.where(wrong, nll, np.inf).min(axis=1)
  pred = nll.argmin(axis=1)                          # argmax likelihood, uniform prior
  confusion = np.zeros((k, k), np.int64)
  np.add.at(confusion, (true, pred), 1)
  rank = (nll < nll[np.arange(n), true][:, None]).sum(axis=1)   # 0 = true label is best
  return {'nll_true_nats': float(nll_true), 'nll_wrong_nats': float(nll_wrong),
          'bits_true': float(nll_true / math.log(2)), 'bits_wrong': float(nll_wrong / math.log(2)),
          'fraction_true_best': float((nll[np.arange(n), true] < best_wrong).mean()),
          'accuracy': float((pred == true).mean()), 'mean_true_rank': float(rank.mean()),
          'confusion': confusion, 'pred': pred, 'num_recordings': n,
          'num_samples': int(scored.sum())}


def load_recordings(config, split: str | None = None, data_dir: str | None = None,
                    num_recordings: int | None = None) -> tuple[dict, str]:
  """The run's evaluation split (or `split`) as arrays; num_recordings evenly spaced ones.

  Returns (arrays, a description of the recordings taken).
  """
  cfg = config.data
  spec = split or cfg.eval_split
  name, sl = input_pipeline.parse_split(spec)
  arrays = datasets.load_split(cfg.name, name, source=cfg.get('source', 'auto'),
                               local_dir=data_dir or cfg.get('local_dir'))
  arrays = {k: v[sl] for k, v in arrays.items()}
  total = len(arrays['audio'])
  if num_recordings and num_recordings < total:
    idx = np.unique(np.round(np.linspace(0, total - 1, num_recordings)).astype(int))
    arrays = {k: v[idx] for k, v in arrays.items()}
    return arrays, f'{spec} ({len(idx)} of its {total}, evenly spaced)'
  return arrays, f'{spec} (all {total})'


def _per_digit_rows(s: dict, nll: np.ndarray, scored: np.ndarray, true: np.ndarray):
  rows = []
  ln2 = math.log(2)
  k = nll.shape[1]
  for d in range(k):
    sel = true == d
    if not sel.any():
      continue
    tot = nll[sel] * scored[sel, None]
    n_samp = scored[sel].sum()
    b_true = tot[:, d].sum() / n_samp / ln2
    b_wrong = np.delete(tot, d, axis=1).sum() / (k - 1) / n_samp / ln2
    row = s['confusion'][d].copy()
    row[d] = -1
    top = int(row.argmax())
    rows.append((d, int(sel.sum()), f'{(s["pred"][sel] == d).mean():.2f}', f'{b_true:.4f}',
                 f'{b_wrong:.4f}', f'{b_wrong - b_true:+.4f}',
                 f'{top} ({row[top]})' if row[top] > 0 else '-'))
  return rows


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='a digit-conditioned WaveNet run')
  parser.add_argument('--max_samples', type=int, default=None,
                      help='score each recording on its first this many samples '
                           '(default 4000; --quick 2000)')
  parser.add_argument('--num_recordings', type=int, default=None,
                      help='evenly spaced recordings of the split (default all; --quick 20)')
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--batch_size', type=int, default=8, help='recordings per call')
  parser.add_argument('--split', default=None, help='default: the config\'s data.eval_split')
  parser.add_argument('--data_dir', default=None,
                      help='default: the config\'s data.local_dir, else $DGM_DATA_DIR')
  parser.add_argument('--step', type=int, default=None, help='checkpoint (default latest)')
  args = parser.parse_args(argv)
  max_samples = args.max_samples or (2000 if args.quick else 4000)
  num_recordings = args.num_recordings or (20 if args.quick else None)
  if max_samples < 1:
    raise SystemExit('--max_samples must be >= 1.')

  run = run_lib.load_run(args.workdir, step=args.step)
  model = run.model
  if run.config.model_name != 'wavenet':
    raise SystemExit(f'{args.workdir} is a {run.config.model_name} run; this script scores '
                     'WaveNet audio models.')
  if not getattr(model, 'num_classes', 0):
    raise SystemExit(f'{args.workdir}: the WaveNet has num_classes=0 (no digit '
                     'conditioning), so there is no conditioning to test. Train with '
                     'config.model.num_classes=10 (configs/wavenet_spoken_digit.py).')
  split = args.split or run.config.data.eval_split
  arrays, taken = load_recordings(run.config, split, args.data_dir, num_recordings)
  true = arrays['label'].astype(np.int64)
  k = model.num_classes
  if true.max() >= k:
    raise SystemExit(f'The data has label {true.max()}, but the model has {k} classes.')

  load0, usage = common.loadavg(), common.CpuUsage()
  t0 = time.perf_counter()
  nll, scored = label_nll(model, run.params, arrays['audio'], arrays['length'],
                          arrays['speaker'], max_samples=max_samples,
                          batch_size=args.batch_size)
  seconds = time.perf_counter() - t0
  s = summarize(nll, scored, true)
  truncated = int((arrays['length'] > max_samples).sum())

  print(f'WaveNet run {args.workdir} at step {run.step} (EMA parameters): '
        f'{model.num_stacks} stacks x {model.num_layers} layers, {model.residual_channels} '
        f'residual channels, receptive field {model.receptive_field}, {k} digit labels'
        f'{", speaker-conditioned (true speaker kept)" if model.num_speakers else ""}')
  print(f'{s["num_recordings"]} recordings of {run.config.data.name} {taken}, each '
        f'truncated to its first '
        f'{max_samples} samples ({truncated} were longer); {s["num_samples"]} samples '
        f'scored under each of the {k} labels in {seconds:.1f} s (compilation included), '
        f'{common.machine()}')
  ln2 = math.log(2)
  gap = s['nll_wrong_nats'] - s['nll_true_nats']
  common.print_table(
      [('true', f'{s["nll_true_nats"]:.5f}', f'{s["bits_true"]:.5f}'),
       ('wrong (mean of 9)' if k == 10 else f'wrong (mean of {k - 1})',
        f'{s["nll_wrong_nats"]:.5f}', f'{s["bits_wrong"]:.5f}'),
       ('wrong - true', f'{gap:+.5f}', f'{gap / ln2:+.5f}')],
      ('label', 'NLL nats/sample', 'bits/sample'))
  print(f'true label better than every wrong label: {s["fraction_true_best"]:.3f} of '
        f'recordings; argmax-likelihood accuracy {s["accuracy"]:.3f} (chance {1 / k:.3f}); '
        f'mean rank of the true label {s["mean_true_rank"]:.2f} (0 best, chance '
        f'{(k - 1) / 2:.1f})')
  print('Per true digit (bits/sample; "most confused" is the most frequent wrong prediction):')
  common.print_table(_per_digit_rows(s, nll, scored, true),
                     ('digit', 'n', 'acc', 'bits true', 'bits wrong', 'gap', 'most confused'))
  print('Confusion matrix (rows: true digit, columns: predicted):')
  common.print_table([(d, *s['confusion'][d]) for d in np.unique(true)],
                     ('true\\pred', *range(k)))
  if len(np.unique(true)) < k:
    print(f'WARNING: only digits {sorted(set(true.tolist()))} occur in these recordings, so '
          'the accuracy says little; use --split=test (the whole test split) and '
          '--num_recordings, which spaces the recordings over all digits.')
  print(f'load average before {load0}, after {common.loadavg()}; other processes used '
        f'{usage.others_cores():.1f} cores')
  result = {'benchmark': 'wavenet_conditioning', 'workdir': args.workdir, 'step': run.step,
            'split': split,
            'nll_true_nats': round(s['nll_true_nats'], 6),
            'nll_wrong_nats': round(s['nll_wrong_nats'], 6),
            'bits_true': round(s['bits_true'], 6), 'bits_wrong': round(s['bits_wrong'], 6),
            'fraction_true_best': round(s['fraction_true_best'], 4),
            'accuracy': round(s['accuracy'], 4), 'chance': round(1 / k, 4),
            'num_recordings': s['num_recordings'], 'max_samples': max_samples,
            'num_samples': s['num_samples'], 'seconds': round(seconds, 2)}
  common.emit(result)
  return result


if __name__ == '__main__':
  main()
