"""WaveNet on the Free Spoken Digit Dataset, conditioned on the speaker and the digit
(van den Oord et al. 2016, arXiv 1609.03499; autoreg/wavenet.py).

8 kHz 16-bit recordings, mu-law companded to 256 levels (Eq. 2), 256-way softmax. Global
conditioning (Eq. 5) on the speaker (6) and the spoken digit (10), both entering every
gate. The default is sized for a CPU run: 1 stack of dilations 1..512, 32 residual and
gate channels, 64 skip channels, receptive field 1025 samples (0.13 s), trained on random
crops of 2048 samples (recordings are 1,148 to 18,262 samples, median 3,357; shorter
crops are zero-padded and the padding is masked out of the loss). `:large` is 2 stacks
(receptive field 2048) on 4096-sample crops. Evaluation on all 300 recordings of the test
split (takes 0-4), whole. bits/dim is bits per audio sample (total nats over total real
samples).

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/wavenet_spoken_digit.py --workdir=runs/wavenet_fsdd

Samples are WAV files (samples/step_N/speaker_S_digit_D_I.wav) for config.sample.speaker
and config.sample.digit (-1: one per digit), from the fast generator:

  python -m experiments.main --config=configs/wavenet_spoken_digit.py \
      --workdir=runs/wavenet_fsdd --mode=sample --config.sample.speaker=2 --config.sample.digit=7

Conditioning evidence (likelihood under each digit label):
  python -m benchmarks.wavenet_conditioning --workdir=runs/wavenet_fsdd
`:tiny` is a few-step run on 256-sample crops for tests.
Result (2026-11-22, 2-core CPU shared with the test suite and a benchmark, 31 min wall,
3,000 steps of 8 crops): test NLL 3.015 nats per sample, 4.3495 bits per sample over the
300 whole test recordings (total nats over total real samples). Conditioning evidence
(benchmarks.wavenet_conditioning, first 4,000 samples of each test recording): 3.049 nats
per sample with the true digit against 3.220 with a wrong one; classifying by likelihood
over the 10 labels is right for 90.7% of recordings (chance 10%).
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'wavenet'
  c.model.num_levels = 256
  c.model.residual_channels = 32
  c.model.gate_channels = 32
  c.model.skip_channels = 64
  c.model.output_channels = 128
  c.model.kernel_size = 2
  c.model.num_layers = 10          # dilations 1, 2, ..., 512
  c.model.num_stacks = 1
  c.model.input_kernel = 2
  c.model.num_speakers = 6         # datasets.get_info('spoken_digit').num_speakers
  c.model.num_classes = 10         # the spoken digit
  c.model.output = 'categorical'

  c.data.name = 'spoken_digit'
  c.data.crop_length = 2048        # receptive field 1025 + ~1000 scored with full context
  c.data.batch_size = 8
  c.data.eval_batch_size = 16
  c.data.eval_split = 'test'

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 200
  c.train.num_steps = 3000
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.num_samples = 4
  c.sample.sampler = 'cached'

  if arg == 'large':
    c.model.num_stacks = 2           # receptive field 2048
    c.data.crop_length = 4096
    c.train.num_steps = 20_000
  elif arg == 'tiny':
    c.model.residual_channels = 8
    c.model.gate_channels = 8
    c.model.skip_channels = 8
    c.model.output_channels = 16
    c.model.num_layers = 2         # dilations 1, 2: receptive field 5
    c.model.num_stacks = 1
    c.data.crop_length = 256
    c.data.batch_size = 8
    c.data.eval_batch_size = 16
    c.data.eval_split = 'test[:16]'
    c.optimizer.warmup_steps = 1
    c.train.num_steps = 3
    c.train.log_every = 1
    c.train.checkpoint_every = 3
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; presets: tiny, large.')
  return c
