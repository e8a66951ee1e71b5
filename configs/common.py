"""Defaults shared by every experiment config; each config file overrides what it needs."""
from __future__ import annotations

import math

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.distributed = False     # True: jax.distributed.initialize() (multi-host TPU/GPU pods)

  c.model_name = ''
  c.model = ml_collections.ConfigDict()

  c.data = ml_collections.ConfigDict()
  c.data.name = ''
  c.data.source = 'auto'    # 'auto': local files if a local dir is set, else TFDS
  c.data.local_dir = config_dict.placeholder(str)   # None -> $DGM_DATA_DIR
  c.data.train_split = 'train'
  c.data.eval_split = 'test'
  c.data.batch_size = 64        # global, across all devices and processes
  c.data.eval_batch_size = 256
  # True: grey images become binary, each pixel a Bernoulli draw of its intensity (fresh
  # each training epoch, fixed for evaluation), for the binary models (Bernoulli VAE, M2,
  # 2-level PixelCNN) on any grey data set; binarized_mnist is mnist with this on.
  c.data.binarize = False
  # Read-ahead of the training batches (grain's ReadOptions): prefetch_threads background
  # threads keep up to prefetch_batches batches ready. grain's own defaults (16 threads,
  # 500 elements) are for remote storage; on in-memory data they rendered the paper-size
  # Moving MNIST 500 batches ahead (1.6 GB in the first 20 s, every core busy while XLA
  # compiled). 0 threads: each batch is made when the loop asks for it, on the main thread.
  # Raise the threads where a slow transform must keep up with a fast accelerator (the
  # paper-size Moving MNIST renders a 64-video batch in ~25 ms on one core: 27 batches/s
  # with 1 thread, 44 made on demand, 2026-12-07). Neither changes the data order.
  c.data.prefetch_threads = 1
  c.data.prefetch_batches = 4

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'     # 'adam', 'adamw' or 'rmsprop' (decay b2, eps)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.schedule = 'cosine'  # 'constant', 'cosine' or 'piecewise'
  c.optimizer.final_fraction = 0.1
  # schedule='piecewise': piece i runs until step boundaries[i] at learning_rate * factors[i]
  # (one more factor than boundaries); iwae_stage_schedule below gives the IWAE paper's.
  c.optimizer.boundaries = ()
  c.optimizer.factors = ()
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.train.log_every = 50
  c.train.eval_every = 0          # 0: only at the end (so for each *_every)
  c.train.checkpoint_every = 500
  c.train.sample_every = 0
  c.train.num_samples = 64
  c.train.sample_at_end = True
  c.train.keep_checkpoints = 3
  c.train.ema_decay = 0.999
  c.train.eval_with_ema = True
  # With EMA weights, batch-norm running statistics ('batch_stats': Real NVP, MAF) are
  # gathered afresh for the EMA weights over this many training batches before each
  # evaluation and sample ('recompute'), or used as trained with the raw weights ('current').
  c.train.eval_batch_stats = 'recompute'
  c.train.batch_stats_batches = 100
  # The parameters are initialized on the first this-many examples of the first evaluation
  # batch (all of it if smaller). Only data-dependent initializations see the values (Glow's
  # actnorm takes their per-channel statistics; the released code's n_batch_init is 256);
  # fewer examples make the start-up's init pass cheaper (the paper-size Glow's on 500
  # MNIST images cost more than three train steps).
  c.train.init_examples = 256

  c.sample = ml_collections.ConfigDict()
  # 'auto': the model's cached sampler where it has one (equal to the naive sampler draw for
  # draw, tested), else 'naive' (the full network per sub-pixel); or name one of the two.
  c.sample.sampler = 'auto'
  c.sample.temperature = 1.0
  c.sample.completion_rows = 0     # > 0: --mode=sample completes test images from this many rows
  c.sample.num_images = 8          # test images to complete
  c.sample.num_completions = 3     # completions per test image
  c.sample.speaker = 0             # audio: the speaker id to condition on
  c.sample.digit = -1              # audio: the digit; -1 gives one sample per digit
  c.sample.seconds = 1.0           # audio: length of each sample
  c.sample.prompt = 'ROMEO:'       # text: the prompt each sample continues
  c.sample.length = 300            # text: characters generated after the prompt
  return c


def tiny_image_preset(c: ml_collections.ConfigDict) -> None:
  """A model and run small enough for the test suite (seconds on 2 CPU cores)."""
  c.model.features = 16 if c.model.num_channels == 1 else 12
  c.model.num_layers = 2
  c.model.first_kernel = 3
  c.model.output_features = 16 if c.model.num_channels == 1 else 12
  c.data.batch_size = 16
  c.data.eval_split = 'test[:256]'
  c.optimizer.warmup_steps = 5
  c.train.num_steps = 10
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.num_samples = 4


def iwae_stage_schedule(num_examples: int, batch_size: int, num_stages: int = 8) -> dict:
  """The learning-rate stages of Burda, Grosse & Salakhutdinov 2016 (arXiv 1509.00519,
  Sec. 5): stage i = 0..num_stages-1 runs 3^i passes over the training set at
  1e-3 * 10^(-i/7), sum_i 3^i = (3^8 - 1) / 2 = 3,280 passes for the paper's 8 stages.

  A pass is num_examples // batch_size steps, as the authors' code (train.py) counts
  minibatches. Returns the config.optimizer fields for schedule='piecewise', relative to
  learning_rate = 1e-3 (boundaries: the step where each stage after the first starts;
  factors: 10^(-i/7)), and num_steps, the step count of all stages.
  """
  if num_examples < batch_size or batch_size < 1 or num_stages < 1:
    raise ValueError(f'iwae_stage_schedule needs 1 <= batch_size <= num_examples and '
                     f'num_stages >= 1, got {num_examples}, {batch_size}, {num_stages}.')
  steps_per_pass = num_examples // batch_size
  ends = [steps_per_pass * (3 ** (i + 1) - 1) // 2 for i in range(num_stages)]
  return dict(schedule='piecewise', learning_rate=1e-3, boundaries=tuple(ends[:-1]),
              factors=tuple(10.0 ** (-i / 7) for i in range(num_stages)), num_steps=ends[-1])


def set_ss_decay(c, eps_end: float = 0.25) -> None:
  """Scheduled sampling (Bengio et al. 2015, Sec. 2.4): k, c and eps_min of
  config.model.ss_schedule such that eps falls from 1 to eps_end over the run.

  Over config.train.num_steps = n: 'linear' eps_i = max(eps_end, 1 - (1 - eps_end) i / n);
  'exponential' k = eps_end^(1/n); 'inverse_sigmoid' the k >= 1 with k / (k + exp(n / k))
  = eps_end (bisection; eps starts at k / (k + 1), near 1). Call it again after changing
  num_steps on the command line, or set ss_k/ss_c/ss_min directly.
  """
  n = float(c.train.num_steps)
  m = c.model
  schedules = ('none', 'linear', 'exponential', 'inverse_sigmoid')
  if m.ss_schedule not in schedules:
    raise ValueError(f'Unknown scheduled-sampling schedule {m.ss_schedule!r} (preset ss=...); '
                     f'choose one of {", ".join(schedules[1:])}.')
  if m.ss_schedule == 'linear':
    m.ss_k, m.ss_c, m.ss_min = 1.0, (1.0 - eps_end) / n, eps_end
  elif m.ss_schedule == 'exponential':
    m.ss_k, m.ss_c, m.ss_min = eps_end ** (1.0 / n), 0.0, 0.0
  elif m.ss_schedule == 'inverse_sigmoid':
    lo, hi = 1.0, n                     # eps(n) grows with k
    for _ in range(200):
      k = 0.5 * (lo + hi)
      if k / (k + math.exp(min(n / k, 700.0))) < eps_end:
        lo = k
      else:
        hi = k
    m.ss_k, m.ss_c, m.ss_min = 0.5 * (lo + hi), 0.0, 0.0
