"""NICE on 8-bit MNIST (Dinh, Krueger & Bengio 2014, arXiv 1410.8516, Sec. 5.1),
flows/nice.py: the flat image dequantized to [0, 1), four additive couplings with
alternating even/odd partitions, each a ReLU MLP of 5 hidden layers of 1000 units, a
diagonal scaling layer and a standard logistic prior.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/nice_mnist.py --workdir=runs/nice_mnist

The paper trains with Adam (lr 1e-3) for up to 1500 epochs; we use Adam at 1e-3, batch
200 and a cosine schedule over 150,000 steps (500 epochs).
Published: a test log-likelihood of 1980.50 nats in the continuous [0, 1] space, which is
4.36 bits/dim of the 8-bit images. `:tiny` is for tests.
Measured (2026-11-22): --config.train.num_steps=6000 (20 epochs) on the 2-core CPU alone,
31 min at ~3.3 steps/s: 6.029 bits/dim on the 10,000 test images (EMA weights); the
training loss was still falling (6.32 bits/dim at step 4,000, 5.80 at 6,000).

Sweep, ours and not a paper table (NICE reports one model per dataset, Table 1, and compares
no depths): `sweep_depth`, the number of additive couplings (model.num_couplings) 3, 4, 6
and 8. Sec. 3.2 says at least three are needed for every dimension to influence every
other, and that the paper generally uses four. Not run here.

  python -m experiments.launch --config=configs/nice_mnist.py --sweep=depth \
      --root=sweeps --launcher=local
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'nice'
  c.model.image_shape = (28, 28, 1)
  c.model.num_couplings = 4
  c.model.hidden = (1000,) * 5

  c.data.name = 'mnist'
  c.data.batch_size = 200
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 500
  c.optimizer.grad_clip_norm = 100.0    # a guard against rare spikes only
  c.train.num_steps = 150_000
  c.train.log_every = 500
  c.train.eval_every = 15_000
  c.train.checkpoint_every = 5000
  c.train.num_samples = 64

  if arg == 'tiny':
    c.model.hidden = (16, 16)
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


def sweep_depth():
  """Ours, no paper table: couplings 3 (the fewest, Sec. 3.2), 4 (the paper's), 6 and 8."""
  for num_couplings in (3, 4, 6, 8):
    yield {'model.num_couplings': num_couplings}
