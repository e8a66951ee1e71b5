"""A LeNet-style MNIST classifier whose features score generated digits.

The architecture follows LeCun, Bottou, Bengio & Haffner 1998 ("Gradient-based learning
applied to document recognition", LeNet-5) in the form most deep-learning frameworks ship
as their MNIST example: two 5x5 'VALID' convolutions (32 and 64 channels, ReLU), each
followed by 2x2 max-pooling, a dense penultimate layer (128 ReLU units) and a linear
10-way head, with dropout (Srivastava et al. 2014) on the penultimate features while
training. The penultimate features play the role Inception-v3's pool3 features play in
FID (Heusel et al. 2017, arXiv 1706.08500), and the softmax the role of Inception's class
probabilities in the Inception Score (Salimans et al. 2016, arXiv 1606.03498); see
quality/metrics.py.

The project's generative models produce two kinds of MNIST images: binary ones (0/1,
binarized MNIST) and 8-bit ones (0..255). The classifier sees both while training: each
training example is, with probability `binarize_prob` (1/2), a fresh Bernoulli draw of
its pixels (pixel / 255 the probability of a 1), the binarization the binarized-MNIST
models are trained and tested on, and otherwise the grey image. Every input is on [0, 1]:
`loss` scales the batch's integer images by 1 / (num_levels - 1); `features` and
`logits` take [0, 1] floats, which is what experiments/sample_quality.py gives them (a
binary image as is, an 8-bit one divided by 255).

Trainer interface (experiments/train.py): `loss(batch, train)` -> (objective, metrics),
metrics per example: 'xent' (cross-entropy in nats) and 'error' (0/1) on the input the
step saw (the mixed grey/binary input while training, the grey test image in evaluation);
in evaluation also 'xent_binarized' and 'error_binarized' on one Bernoulli draw of each
test image. There is deliberately no 'nll' metric: the trainer would turn it into
bits/dim of the image, which a classifier does not have.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MNISTClassifier(nn.Module):
  """Conv(5x5, f_1) -> pool -> Conv(5x5, f_2) -> pool -> Dense(hidden) -> Dense(classes).

  Attributes:
    num_classes: output classes (10 digits).
    channels: channels of the convolutions.
    kernel_size: their spatial size (5, as LeNet).
    hidden: units of the penultimate layer, the feature dimension of `features`.
    dropout_rate: dropout on the penultimate features while training.
    num_levels: levels of the integer images `loss` receives (256 for 8-bit MNIST);
      pixel / (num_levels - 1) is the input.
    binarize_prob: probability that a training example is replaced by a Bernoulli draw
      of its pixels.
  """
  num_classes: int = 10
  channels: Sequence[int] = (32, 64)
  kernel_size: int = 5
  hidden: int = 128
  dropout_rate: float = 0.5
  num_levels: int = 256
  binarize_prob: float = 0.5

  def setup(self):
    k = (self.kernel_size, self.kernel_size)
    self.convs = [nn.Conv(f, k, padding='VALID', name=f'conv_{i}')
                  for i, f in enumerate(self.channels)]
    self.dense = nn.Dense(self.hidden, name='dense')
    self.head = nn.Dense(self.num_classes, name='head')
    self.dropout = nn.Dropout(self.dropout_rate)

  def features_of(self, image):
    """The penultimate features (after the ReLU) of [N, H, W, C] images on [0, 1]."""
    x = jnp.asarray(image, jnp.float32)
    for conv in self.convs:
      x = nn.max_pool(nn.relu(conv(x)), (2, 2), strides=(2, 2))
    return nn.relu(self.dense(x.reshape(x.shape[0], -1)))

  def features(self, image):
    """Penultimate-layer features [N, hidden] of images on [0, 1] (no dropout)."""
    return self.features_of(image)

  def logits(self, image):
    """Class logits [N, num_classes] of images on [0, 1] (no dropout)."""
    return self.head(self.features_of(image))

  def features_and_logits(self, image):
    """Both of the above from one forward pass."""
    h = self.features_of(image)
    return h, self.head(h)

  def unit_images(self, image):
    """The batch's integer images in {0..num_levels-1} as floats on [0, 1]."""
    return jnp.asarray(image, jnp.float32) / (self.num_levels - 1)

  def _xent_and_error(self, logits, label):
    xent = -jnp.take_along_axis(jax.nn.log_softmax(logits), label[:, None], axis=-1)[:, 0]
    error = (jnp.argmax(logits, -1) != label).astype(jnp.float32)
    return xent, error

  def loss(self, batch, train: bool = True):
    """Mean cross-entropy, and per-example metrics (module docstring). The 'sample' rng
    draws the binarizations; 'dropout' the dropout masks."""
    if 'label' not in batch:
      raise ValueError("mnist_classifier trains on labelled images: the batch has no "
                       "'label' (config.data.name='mnist' gives 8-bit MNIST with labels).")
    label = jnp.asarray(batch['label'], jnp.int32)
    x = self.unit_images(batch['image'])
    k_pixels, k_choice = jax.random.split(self.make_rng('sample'))
    binary = (jax.random.uniform(k_pixels, x.shape) < x).astype(jnp.float32)
    if train:
      use = jax.random.uniform(k_choice, (x.shape[0],) + (1,) * (x.ndim - 1)) < (
          self.binarize_prob)
      x = jnp.where(use, binary, x)
      h = self.dropout(self.features_of(x), deterministic=False)
      xent, error = self._xent_and_error(self.head(h), label)
      return jnp.mean(xent), {'xent': xent, 'error': error}
    xent, error = self._xent_and_error(self.logits(x), label)
    xent_b, error_b = self._xent_and_error(self.logits(binary), label)
    return jnp.mean(xent), {'xent': xent, 'error': error, 'xent_binarized': xent_b,
                            'error_binarized': error_b}
