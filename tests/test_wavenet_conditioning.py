"""benchmarks/wavenet_conditioning.py: NLL of each recording under every digit label."""
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg.wavenet import WaveNet
from benchmarks import wavenet_conditioning as wc

KEYS = ('nll_true_nats', 'nll_wrong_nats', 'bits_true', 'bits_wrong', 'accuracy',
        'num_recordings', 'max_samples')


def test_summarize_counts_wins_accuracy_and_confusion():
  # 3 recordings, 3 labels; true labels 0, 1, 2. Row 0: true best; row 1: label 0 best;
  # row 2: tie between the true label and label 0 (argmin picks 0; not "better than every").
  nll = np.array([[1.0, 2.0, 3.0],
                  [1.0, 2.0, 3.0],
                  [2.0, 4.0, 2.0]])
  scored = np.array([10, 10, 20])
  s = wc.summarize(nll, scored, np.array([0, 1, 2]))
  assert s['accuracy'] == pytest.approx(1 / 3)
  assert s['fraction_true_best'] == pytest.approx(1 / 3)
  assert s['confusion'].tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]
  # totals: true 10 + 20 + 40 = 70 nats over 40 samples; wrong: (20+30 + 10+30 + 40+80) / 2.
  assert s['nll_true_nats'] == pytest.approx(70 / 40)
  assert s['nll_wrong_nats'] == pytest.approx(210 / 2 / 40)
  assert s['bits_true'] == pytest.approx(70 / 40 / math.log(2))


def test_a_model_without_labels_is_refused():
  with pytest.raises(ValueError, match='num_classes=0'):
    wc.make_scorer(WaveNet(num_layers=1, num_stacks=1))


def test_script_on_a_tiny_digit_conditioned_run(tmp_path, data_dir, capsys):
  if not os.path.isdir(os.path.join(data_dir, 'spoken_digit')):
    pytest.skip('spoken_digit/ not in the data directory.')
  from configs import wavenet_spoken_digit
  from experiments import run as run_lib
  from experiments import train
  c = wavenet_spoken_digit.get_config('tiny')
  c.data.local_dir = data_dir
  c.data.eval_split = 'test[:2]'       # keep the trainer's own evaluation short
  c.data.eval_batch_size = 8
  c.train.num_steps = 1
  c.train.checkpoint_every = 1
  c.train.sample_at_end = False
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(c, workdir)

  # The whole test split, 10 evenly spaced recordings: one of each digit.
  result = wc.main([f'--workdir={workdir}', '--split=test', '--num_recordings=10',
                    '--max_samples=200', '--batch_size=4'])
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert json.loads(last) == result
  assert set(KEYS) <= set(result)
  assert result['num_recordings'] == 10 and result['max_samples'] == 200
  assert result['num_samples'] == 10 * 200          # every test recording is longer
  assert 0.0 <= result['accuracy'] <= 1.0
  for key in ('nll_true_nats', 'nll_wrong_nats', 'bits_true', 'bits_wrong'):
    assert math.isfinite(result[key]) and result[key] > 0
  # a barely trained model over 256 mu-law levels: about 8 bits per sample either way
  assert 6.0 < result['bits_true'] < 9.0 and 6.0 < result['bits_wrong'] < 9.0

  # The core function against the model's own loss, label by label, on recordings of
  # different lengths (one shorter than max_samples, so masking and padding matter).
  run = run_lib.load_run(workdir)
  arrays, _ = wc.load_recordings(run.config, 'test', None, 3)
  lengths = np.array([150, 300, 300])
  audio = np.where(np.arange(arrays['audio'].shape[1]) < lengths[:, None], arrays['audio'], 0)
  nll, scored = wc.label_nll(run.model, run.params, audio, lengths, arrays['speaker'],
                             max_samples=256, batch_size=2)
  assert scored.tolist() == [150, 256, 256] and nll.shape == (3, 10)
  batch = {'audio': jnp.asarray(audio[:, :256]),
           'mask': jnp.arange(256)[None] < jnp.asarray(scored)[:, None],
           'speaker': jnp.asarray(arrays['speaker'])}
  loss = jax.jit(lambda p, b: run.model.apply({'params': p}, b, method='loss')[1]['nll'])
  for label in range(10):
    expected = loss(run.params, dict(batch, label=jnp.full((3,), label)))
    np.testing.assert_allclose(nll[:, label] * scored, expected, rtol=1e-5)

  # A run whose model has no digit conditioning is refused with a clear message.
  plain = str(tmp_path / 'plain')
  shutil.copytree(workdir, plain)
  with open(os.path.join(plain, 'config.json')) as f:
    config = json.load(f)
  config['model']['num_classes'] = 0
  with open(os.path.join(plain, 'config.json'), 'w') as f:
    json.dump(config, f)
  # load_run reads the config of each checkpoint from the history: the same edit there.
  history = os.path.join(plain, 'config_history.jsonl')
  with open(history) as f:
    entries = [json.loads(line) for line in f]
  for e in entries:
    e['config']['model']['num_classes'] = 0
  with open(history, 'w') as f:
    f.writelines(json.dumps(e) + '\n' for e in entries)
  with pytest.raises(SystemExit, match='num_classes=0'):
    wc.main([f'--workdir={plain}'])
