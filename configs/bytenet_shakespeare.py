"""ByteNet decoder as a character language model on Tiny Shakespeare (Kalchbrenner et al.
2016, arXiv 1610.10099; autoreg/bytenet.py).

65-character vocabulary; non-overlapping windows of seq_len + 1 = 257 characters, the
first 256 predicting the next 256; evaluated on the whole validation split (5% of the
text). 3 stacks of kernel-3 dilated
causal convolutions with dilations 1, 2, 4, 8, 16 (the paper's decoder cycle; it uses 6
stacks for Hutter Prize Wikipedia), 128 channels: receptive field 187 characters.
bits/dim is bits per character.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/bytenet_shakespeare.py --workdir=runs/bytenet_shakespeare

1.78M parameters. Regularization: dropout 0.15 on every block's gated activation and
training windows at a random offset each epoch (the text is only 1M characters; without
them a 900-step run already fit the training windows 0.17 nats better than validation).
`:tiny` is a few-step run for tests. Samples (samples/step_N.txt) continue
config.sample.prompt with config.sample.temperature.

Results (2026-11-22, 2-core CPU):
- This config, `--workdir=runs/bytenet_full`: stopped by hand at step ~1,250 of 5,000 after
  43 min wall, because the machine was shared with four other jobs (0.4-0.9 steps/s against
  ~1.9 alone); the step-1,000 checkpoint (EMA parameters) gives validation 1.586 nats
  (2.287 bits) per character, test 1.712 nats (2.469 bits) (`--mode=eval
  --config.data.eval_split=test`).
- Without dropout and random offsets, `--config.train.num_steps=900` (8 min wall, alone):
  validation 1.610 nats (2.323 bits), test 1.731 nats (2.498 bits).
- This config to the end, on one H100 (`device` tool; the same command from a clean export
  of the repo): 5,000 steps at ~140 steps/s, about 40 s of training: validation 1.460 nats
  (2.107 bits) per character, test 1.659 nats (2.394 bits).
nanoGPT's character-level Shakespeare baseline is about 1.47 nats on validation: the full
5,000-step run reaches it (1.460), the CPU runs cut short do not. The 5,000 steps on 2 quiet
CPU cores would take about 45 min at 1.9 steps/s; that run has not been made.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'bytenet'
  c.model.vocab_size = 65          # datasets.get_info('tiny_shakespeare').vocab
  c.model.residual_channels = 128
  c.model.gate_channels = 128
  c.model.output_channels = 256
  c.model.kernel_size = 3
  c.model.num_layers = 5           # dilations 1, 2, 4, 8, 16
  c.model.num_stacks = 3
  c.model.dropout_rate = 0.15      # on each gated activation, training only

  c.data.name = 'tiny_shakespeare'
  c.data.seq_len = 256
  c.data.random_offsets = True     # training windows start at a random offset each epoch
  c.data.batch_size = 16
  c.data.eval_batch_size = 64
  c.data.eval_split = 'validation'

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 200
  c.train.num_steps = 5000
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.train.num_samples = 4

  if arg == 'tiny':
    c.model.residual_channels = 16
    c.model.gate_channels = 16
    c.model.output_channels = 32
    c.model.num_layers = 3
    c.model.num_stacks = 1
    c.data.seq_len = 32
    c.data.batch_size = 8
    c.data.eval_batch_size = 256
    c.data.eval_split = 'validation[:256]'
    c.sample.length = 50
    c.optimizer.warmup_steps = 1
    c.train.num_steps = 3
    c.train.log_every = 1
    c.train.checkpoint_every = 3
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny.')
  return c
