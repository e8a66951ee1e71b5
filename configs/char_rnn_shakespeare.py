"""A character-level LSTM language model on Tiny Shakespeare (the char-rnn setting; TFDS's
splits of input.txt, as configs/bytenet_shakespeare.py): embeddings, 2 layers of 512 LSTM
units, dropout 0.2 between them, windows of 256 characters, teacher forcing; `ss=...`
trains with scheduled sampling (Bengio et al. 2015, arXiv 1506.03099) instead.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/char_rnn_shakespeare.py --workdir=runs/char_lstm

Truncated BPTT with carried state: the training split is cut into batch_size contiguous
streams (config.data.streams), each row of a batch reads the next window of its own
stream, and the final LSTM state of one window (gradient stopped) starts the next; the
state is part of the checkpoint, so a killed run resumes bit-identically (tested).
Evaluation is teacher forced: nats (and bits) per character over the whole validation
split, each window from a zero state.

Results (2026-12-02, one core of the 2-core CPU each, the two side by side, `taskset`):
`steps=1800`: validation 1.409 nats (2.033 bits) per character, test 1.533 nats (2.212
bits), 64.7 min; `steps=1800,ss=inverse_sigmoid`: validation 1.964, test 2.041 nats, 66.7
min. ByteNet here: 1.460 / 1.659; nanoGPT's char baseline ~1.47 (its own split).

Presets (comma-separated, any order): gru (GRU cells), layers=N (1-3), steps=N (training
steps), ss=linear|exponential|inverse_sigmoid (the decays of Sec. 2.4, their k and c set
by common.set_ss_decay so eps falls from 1 to 0.25 over the run's steps), windows (independent
windows from zero states instead of carried streams), tiny.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'char_rnn'
  c.model.vocab_size = 65
  c.model.embed_dim = 64
  c.model.hidden = 512
  c.model.num_layers = 2
  c.model.cell = 'lstm'
  c.model.dropout_rate = 0.2
  c.model.ss_schedule = 'none'
  c.model.ss_k = 1.0
  c.model.ss_c = 0.0
  c.model.ss_min = 0.0

  c.data.name = 'tiny_shakespeare'
  c.data.seq_len = 256
  c.data.streams = True            # contiguous streams; the model carries its state
  c.data.batch_size = 32
  c.data.eval_batch_size = 64
  c.data.eval_split = 'validation'

  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 100
  c.train.num_steps = 5000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.train.num_samples = 4

  for t in [t for t in (arg or '').split(',') if t]:
    if t == 'gru':
      c.model.cell = 'gru'
    elif t.startswith('layers='):
      c.model.num_layers = int(t.split('=')[1])
    elif t.startswith('ss='):
      c.model.ss_schedule = t.split('=')[1]
    elif t.startswith('steps='):
      c.train.num_steps = int(t.split('=')[1])
    elif t == 'tiny':
      c.model.embed_dim = 8
      c.model.hidden = 16
      c.model.num_layers = 2
      c.data.seq_len = 32
      c.data.batch_size = 8
      c.data.eval_batch_size = 256
      c.data.eval_split = 'validation[:256]'
      c.sample.length = 40
      c.optimizer.warmup_steps = 1
      c.train.num_steps = 3
      c.train.log_every = 1
      c.train.checkpoint_every = 3
    elif t == 'windows':             # independent windows at random offsets, zero states
      c.data.streams = False
      c.data.random_offsets = True
    else:
      raise ValueError(f'Unknown preset token {t!r} for char_rnn_shakespeare; presets: gru, '
                       'layers=N, steps=N, ss=linear|exponential|inverse_sigmoid, windows, tiny.')
  c.model.carry_batch = c.data.batch_size if c.data.streams else 0
  common.set_ss_decay(c, eps_end=0.25)
  return c

