"""Moving MNIST (Srivastava, Mansimov & Salakhutdinov 2015, arXiv 1502.04681), generated
from the MNIST files as the original was.

Each sequence holds `num_digits` MNIST digits, each moving with a constant velocity and
bouncing off the edges of a `frame_size` square frame, for `num_frames` frames. As in the
authors' generator (the `BouncingMNISTDataHandler` of their released code):

  * a digit's top-left corner lives in the unit square, scaled by the free range
    frame_size - digit_size; it starts uniform in the square and moves by step_length
    (0.1) per frame in a direction theta uniform in [0, 2 pi), before every frame
    (the first frame is one step from the start);
  * at an edge (coordinate <= 0 or >= 1) the coordinate is clipped and that velocity
    component reversed: the digit bounces;
  * the corner in pixels is int(free range * coordinate); digits are pasted with an
    elementwise max, so overlapping strokes do not add up.

Frames are uint8 grey levels 0..255 (the MNIST levels), [num_frames, H, W, 1].

Each sequence is a pure function of (seed, index): its digits (drawn uniformly with
replacement from the split's digit images) and its trajectories come from
`np.random.default_rng([seed, index])`, so a training source of any length is random
access without storing it, and the test set is the same 10,000 sequences on every
machine. Training sequences use MNIST training digits, test sequences the test digits.

Smaller variants for a CPU keep the geometry: `digit_size` 14 in a 32x32 frame is the
standard 28-in-64 layout at half resolution (the digits are 2x2 block means of the MNIST
images), moving the same fraction of the free range per frame.
"""
from __future__ import annotations

import dataclasses

import numpy as np

MNIST_DIGIT_SIZE = 28
TRAIN_SEED = 1           # seed of the training sequences (grain shuffles their order)
TEST_SEED = 0            # seed of the fixed test set
TEST_SIZE = 10_000       # the test set of Srivastava et al. has 10,000 sequences
TRAIN_SIZE = 1_000_000   # training sequences (generated on access; practically infinite)


@dataclasses.dataclass(frozen=True)
class Spec:
  """The geometry of a Moving MNIST variant. The defaults are the standard data set."""
  frame_size: int = 64
  digit_size: int = 28
  num_digits: int = 2
  num_frames: int = 20
  step_length: float = 0.1

  def __post_init__(self):
    if self.digit_size < 1 or MNIST_DIGIT_SIZE % self.digit_size:
      raise ValueError(f'digit_size={self.digit_size} must divide the 28-pixel MNIST digits '
                       '(28, 14, 7, 4 or 2): digits are shrunk by block means.')
    if self.frame_size < self.digit_size:
      raise ValueError(f'frame_size={self.frame_size} is smaller than digit_size='
                       f'{self.digit_size}.')
    if self.num_digits < 1 or self.num_frames < 1:
      raise ValueError(f'num_digits={self.num_digits} and num_frames={self.num_frames} must '
                       'be >= 1.')

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (self.num_frames, self.frame_size, self.frame_size, 1)


def shrink_digits(images: np.ndarray, digit_size: int) -> np.ndarray:
  """uint8 [N, 28, 28] (or [N, 28, 28, 1]) MNIST digits as [N, s, s] block means, rounded."""
  images = np.asarray(images)
  if images.ndim == 4:
    images = images[..., 0]
  f = MNIST_DIGIT_SIZE // digit_size
  if f == 1:
    return images.astype(np.uint8)
  n = len(images)
  # Integer block sums, then one division: the same values as the float32 block means
  # (the sums are exact either way), 3x faster on the 60,000 training digits (1.0 -> 0.35 s).
  sums = images.reshape(n, digit_size, f, digit_size, f).sum(axis=(2, 4), dtype=np.uint32)
  return np.rint(sums / np.float64(f * f)).astype(np.uint8)


def trajectories(rng: np.random.Generator, spec: Spec) -> np.ndarray:
  """int [num_digits, num_frames, 2] top-left corners (row, column) in pixels."""
  pos, theta = _start(rng, spec)
  return _paths(pos[None], theta[None], spec)[0]


def _start(rng: np.random.Generator, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
  """A trajectory's random start: (y, x) in the unit square [D, 2] and directions [D]."""
  pos = rng.random((spec.num_digits, 2))
  theta = rng.random(spec.num_digits) * 2 * np.pi
  return pos, theta


def _paths(pos: np.ndarray, theta: np.ndarray, spec: Spec) -> np.ndarray:
  """int [N, D, T, 2] corners of N sequences' trajectories from starts pos [N, D, 2] and
  directions theta [N, D]; elementwise, so a sequence's path does not depend on N."""
  vel = np.stack([np.sin(theta), np.cos(theta)], axis=-1)
  out = np.empty((*pos.shape[:-1], spec.num_frames, 2))
  for i in range(spec.num_frames):
    pos = pos + vel * spec.step_length
    low, high = pos <= 0, pos >= 1
    vel = np.where(low | high, -vel, vel)
    pos = np.clip(pos, 0.0, 1.0)
    out[..., i, :] = pos
  return ((spec.frame_size - spec.digit_size) * out).astype(np.int64)


def render(digits: np.ndarray, corners: np.ndarray, spec: Spec) -> np.ndarray:
  """uint8 [num_frames, H, W, 1] frames of the digits [D, s, s] at corners [D, T, 2]."""
  return _render_many(digits[None], corners[None], spec)[0]


def _render_many(digits: np.ndarray, corners: np.ndarray, spec: Spec) -> np.ndarray:
  """uint8 [N, T, H, W, 1]: render() of N sequences at once, digits [N, D, s, s] at corners
  [N, D, T, 2], pasted with an elementwise max: one paste per digit slot over all N x T
  frames (a slot's windows lie in different frames, and the max is the same in any order)."""
  s, size = spec.digit_size, spec.frame_size
  n, t = len(digits), spec.num_frames
  frames = np.zeros((n, t, size, size), np.uint8)
  windows = np.lib.stride_tricks.sliding_window_view(frames, (s, s), axis=(2, 3),
                                                     writeable=True)
  seq = np.repeat(np.arange(n), t)
  frame = np.tile(np.arange(t), n)
  for d in range(spec.num_digits):
    y, x = corners[:, d, :, 0].ravel(), corners[:, d, :, 1].ravel()
    pasted = np.maximum(windows[seq, frame, y, x], np.repeat(digits[:, d], t, axis=0))
    windows[seq, frame, y, x] = pasted
  return frames[..., None]


def sequence(digits: np.ndarray, index: int, seed: int, spec: Spec) -> np.ndarray:
  """Sequence `index` of the source (seed, digits): uint8 [T, H, W, 1]."""
  which, pos, theta = _draws(len(digits), index, seed, spec)
  return render(digits[which], _paths(pos[None], theta[None], spec)[0], spec)


def _draws(num_images: int, index: int, seed: int, spec: Spec):
  """Sequence `index`'s random choices: its digits (indices [D] into the split's images),
  then its trajectories' start (_start)."""
  rng = np.random.default_rng([seed, index])
  which = rng.integers(0, num_images, spec.num_digits)
  return (which, *_start(rng, spec))


class Source:
  """A random-access source of Moving MNIST sequences (a grain data source): element i is
  {'video': sequence(digits, i, seed, spec)}, generated on access."""

  def __init__(self, mnist_images: np.ndarray, count: int, seed: int, spec: Spec,
               indices: range | None = None):
    """count: sequences in the whole split; indices (a range within it): the ones this
    source holds, in order (element k is sequence indices[k])."""
    self.digits = shrink_digits(mnist_images, spec.digit_size)
    self.count, self.seed, self.spec = int(count), int(seed), spec
    self.indices = range(self.count) if indices is None else indices
    if len(self.indices) and not (0 <= self.indices[0] < count and 0 <= self.indices[-1] < count):
      raise ValueError(f'indices {self.indices} fall outside the {count} sequences.')

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, k):
    return {'video': sequence(self.digits, self.indices[int(k)], self.seed, self.spec)}

  def generate(self, chunk: int = 1024) -> np.ndarray:
    """All of this source's sequences as one uint8 array [len, T, H, W, 1], the same as
    [self[k]['video'] for k in range(len(self))], rendered `chunk` sequences at a time
    (the 10,000 32x32 test sequences in 0.3-0.6 s instead of 2.2 s one by one, 2026-12-07)."""
    spec, d = self.spec, self.spec.num_digits
    out = np.empty((len(self), *spec.shape), np.uint8)
    for a in range(0, len(self), chunk):
      ks = range(a, min(a + chunk, len(self)))
      which = np.empty((len(ks), d), np.int64)
      pos, theta = np.empty((len(ks), d, 2)), np.empty((len(ks), d))
      for j, k in enumerate(ks):
        which[j], pos[j], theta[j] = _draws(len(self.digits), self.indices[k], self.seed, spec)
      out[a:a + len(ks)] = _render_many(self.digits[which], _paths(pos, theta, spec), spec)
    return out

  def __repr__(self):
    return (f'moving_mnist.Source({len(self)} of {self.count} sequences, seed {self.seed}, '
            f'{len(self.digits)} digits, {self.spec})')
