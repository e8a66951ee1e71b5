"""Gated PixelCNN on CIFAR-10 (van den Oord et al. 2016, arXiv 1606.05328): RGB with the
R -> G -> B ordering inside each pixel and a 256-way softmax per sub-pixel. The paper
reports 3.03 bits/dim on the test set.

For GPU/TPU users (the 2-core CPU cannot train this in reasonable time):

  python -m experiments.main --config=configs/gated_pixelcnn_cifar10.py --workdir=runs/gc10

Size: 15 gated layers (the depth of PixelCNN's CIFAR-10 model, arXiv 1601.06759) of 384
features and a 1023-channel output layer (a multiple of the 3 colour groups). Check the
widths against the paper before a comparison run.
`:logistic` uses PixelCNN++'s discretized logistic mixture head (arXiv 1701.05517)
instead of the softmax; `:tiny` is for tests.
"""
from configs import common


def get_config(arg: str | None = None):
  c = common.base_config()
  c.model_name = 'gated_pixelcnn'
  c.model.num_levels = 256
  c.model.num_channels = 3
  c.model.features = 384            # a multiple of the 3 colour groups
  c.model.num_layers = 15
  c.model.first_kernel = 7
  c.model.kernel_size = 3
  c.model.output_features = 1023    # 3 groups of 341
  c.model.num_classes = 0

  c.data.name = 'cifar10'
  c.data.batch_size = 64
  c.data.eval_batch_size = 500

  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 2000
  c.train.num_steps = 300_000
  c.train.log_every = 200
  c.train.eval_every = 10_000
  c.train.checkpoint_every = 5000
  c.train.sample_every = 50_000
  c.train.num_samples = 16
  c.sample.sampler = 'cached'

  presets = (arg or '').split(',') if arg else []
  for p in presets:
    if p == 'logistic':
      c.model.output = 'logistic_mixture'
      c.model.num_mixtures = 10
    elif p == 'tiny':
      common.tiny_image_preset(c)
      c.model.features = 12
      c.model.output_features = 12
    else:
      raise ValueError(f'Unknown preset {p!r}; presets: tiny, logistic (combinable: '
                       'tiny,logistic).')
  return c
