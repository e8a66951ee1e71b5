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

Sweep `layers`: the rows of the paper's Table 2 (MNIST, unconditional; average test
log-likelihood in logit space, nats) that this model expresses, as the authors' code
(run_experiments.py, experiments.py) trains them: MADE -1380.8 (one Gaussian MADE of
2 x 1024, no batch norm, Adam at 1e-3: num_layers=1, batch_norm=False), MAF (5) -1300.5 and
MAF (10) -1313.1 (batch norm, Adam at 1e-4). Not expressible here: MADE MoG (-1038.5) and
MAF MoG (5) (-1100.3) need mixture-of-Gaussians conditionals, which flows/maf.py does not
have; Real NVP (5) (-1323.2) and (10) (-1370.7) are the paper's flat, fully connected
Real NVP (tanh scale and ReLU shift MLPs), not the convolutional multi-scale model of
flows/realnvp.py; the conditional column needs a class-conditional MAF, and MAFModel takes
no label. Our evaluation reports bits/dim of the 8-bit images, not the paper's logit-space
nats. Not run here.

  python -m experiments.launch --config=configs/maf_mnist.py --sweep=layers \
      --root=sweeps --launcher=local
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


def sweep_layers():
  """MAF Table 2 (MNIST, unconditional): the MADE, MAF (5) and MAF (10) rows."""
  # MADE: the code's GaussianMade, one MADE without batch norm, at a_made = 1e-3.
  yield {'model.num_layers': 1, 'model.batch_norm': False, 'optimizer.learning_rate': 1e-3}
  for num_layers in (5, 10):   # MAF (5), MAF (10): batch norm, a_flow = 1e-4
    yield {'model.num_layers': num_layers, 'model.batch_norm': True,
           'optimizer.learning_rate': 1e-4}
