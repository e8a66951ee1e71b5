"""PixelRNN on CIFAR-10 (van den Oord et al. 2016, arXiv 1601.06759, Table 5: Row LSTM
3.07, Diagonal BiLSTM 3.00 bits/dim, both 12 layers of h = 128 with a 256-way softmax per
sub-pixel, R -> G -> B). For an accelerator: there is no CIFAR-10 on the CPU machines here,
and no run of these configs has been made yet.

  DGM_DATA_DIR=/path/to/data python -m experiments.main \
      --config=configs/pixelrnn_cifar10.py:row --workdir=runs/pixelrnn_cifar_row

Presets: `row` (Row LSTM) or the default Diagonal BiLSTM; `tiny` for the tests. Ours, not
the paper's: the output layer width (1024, as the PixelCNN's CIFAR model; not checked against
a PixelRNN source), Adam at 1e-3 with batch 16, and the Diagonal BiLSTM's full_context=True
(see autoreg/pixelrnn.py; False is the paper's construction).
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'pixelrnn'
  c.model.num_levels = 256
  c.model.num_channels = 3
  c.model.architecture = 'diagonal_bilstm'
  c.model.hidden = 128
  c.model.num_layers = 12
  c.model.first_kernel = 7
  c.model.row_kernel = 3
  c.model.output_features = 1024

  c.data.name = 'cifar10'
  c.data.batch_size = 16
  c.data.eval_batch_size = 100
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 500
  c.train.num_steps = 200000
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.num_samples = 16

  for t in [t for t in (arg or '').split(',') if t]:
    if t == 'row':
      c.model.architecture = 'row_lstm'
    elif t == 'tiny':
      c.model.hidden = 6
      c.model.num_layers = 1
      c.model.first_kernel = 3
      c.model.output_features = 12
      c.data.batch_size = 8
      c.data.eval_split = 'test[:16]'
      c.train.num_steps = 4
      c.train.log_every = 2
      c.train.checkpoint_every = 2
      c.train.num_samples = 2
    else:
      raise ValueError(f'Unknown preset token {t!r} for pixelrnn_cifar10; presets: row, tiny.')
  return c
