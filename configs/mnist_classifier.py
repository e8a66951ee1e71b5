"""The MNIST classifier whose features score generated digits (quality/classifier.py;
experiments/sample_quality.py): a LeNet-style net (two 5x5 convolutions of 32 and 64
channels with 2x2 max-pooling, 128 dense units, dropout 0.5) trained on 8-bit MNIST, each
training example replaced with probability 1/2 by a Bernoulli binarization of itself, so
it classifies the binary and the 8-bit images the project's models generate.

  DGM_DATA_DIR=../shared/data taskset -c 1 python -m experiments.main \
      --config=configs/mnist_classifier.py --workdir=runs/mnist_classifier

Evaluation reports 'error' on the grey test images and 'error_binarized' on one Bernoulli
draw of each (the 10,000 test images).

Result (2026-12-03, one core of the 2-core CPU, `taskset -c 1`; the machine ran other
training jobs and test suites beside it, load average 5-7): 2,500 steps of batch 128 (5.3
passes) in 14.7 min at 1.45-4.0 steps/s (a 200-step probe on a less busy core ran 5
steps/s, about 8.5 min for this run), 15.3 min wall with the evaluation; 184,586
parameters; EMA weights. Test error on the 10,000 grey test images 0.68% (xent 0.021
nats), on one Bernoulli binarization of them 0.95% (xent 0.029), and on the fixed seeded
binarization the binarized-MNIST models are evaluated on (eval_binarization_seed 0; via
experiments/sample_quality.py) 0.99%.

Presets: `tiny`, a few steps of a narrow net for the test suite.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'mnist_classifier'
  c.model.num_classes = 10
  c.model.channels = (32, 64)
  c.model.kernel_size = 5
  c.model.hidden = 128
  c.model.dropout_rate = 0.5
  c.model.num_levels = 256
  c.model.binarize_prob = 0.5

  c.data.name = 'mnist'
  c.data.batch_size = 128
  c.data.eval_batch_size = 1000

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.final_fraction = 0.01
  c.train.num_steps = 2500
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_at_end = False
  c.train.ema_decay = 0.998

  if arg == 'tiny':
    c.model.channels = (4, 8)
    c.model.hidden = 16
    c.data.batch_size = 16
    c.data.eval_batch_size = 128
    c.data.eval_split = 'test[:256]'
    c.optimizer.warmup_steps = 2
    c.train.num_steps = 10
    c.train.log_every = 5
    c.train.checkpoint_every = 10
  elif arg:
    raise ValueError(f'Unknown preset {arg!r} for mnist_classifier; presets: tiny.')
  return c
