"""MAF on 8-bit MNIST (Papamakarios, Pavlakou & Murray 2017, arXiv 1705.07057),
flows/maf.py: the flat image dequantized and mapped to logit space (lambda = 1e-6, its
Jacobian in the likelihood), MAF (5): five MADEs of two hidden layers of 1024 ReLU units
(the authors' code, github gpapamak/maf run_experiments.py, [1024] * 2 for MNIST) with
reversed orderings between layers, batch normalization after every MADE, the last
included (its ml/models/mafs.py), and a standard normal base; 17,311,040 parameters
(counted by initializing the model).

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/maf_mnist.py --workdir=runs/maf_mnist

Adam at 1e-4, batch 96 (the code: batch 100, a penalty (1e-6 / 2) * sum w^2 over all
parameters, and early stopping on the validation loss with patience 30; here no penalty
and a cosine schedule over 100,000 steps). Batch norm is evaluated with running averages
(recomputed for the EMA weights, train.eval_batch_stats) where the code uses the whole
training set's statistics. Density evaluation is one pass per layer; each sample needs
5 x 784 sequential MADE passes. Published: about 1.89 bits/pixel for MAF (5) on MNIST.
`:tiny` is for tests.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'maf'
  c.model.image_shape = (28, 28, 1)
  c.model.num_layers = 5
  c.model.hidden_sizes = (1024, 1024)
  c.model.batch_norm = True
  c.model.alpha = 1e-6

  c.data.name = 'mnist'
  c.data.batch_size = 96      # a multiple of 8 devices; the paper uses 100
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 500
  c.optimizer.grad_clip_norm = 100.0    # a guard against rare spikes only
  c.train.num_steps = 100_000
  c.train.log_every = 500
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 5000
  c.train.num_samples = 64

  if arg == 'tiny':
    c.model.num_layers = 2
    c.model.hidden_sizes = (32, 32)
    c.data.batch_size = 16
    c.data.eval_batch_size = 128
    c.data.eval_split = 'test[:256]'
    c.optimizer.warmup_steps = 1
    c.train.num_steps = 3
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.checkpoint_every = 3
    c.train.num_samples = 4
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny.')
  return c
