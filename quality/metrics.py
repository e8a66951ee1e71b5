"""Sample-quality metrics on a classifier's features and class probabilities.

- Frechet distance (FID when the features are Inception-v3's pool3; Heusel, Ramsauer,
  Unterthiner, Nessler & Hochreiter 2017, arXiv 1706.08500, Sec. 3): the 2-Wasserstein
  distance squared between two Gaussians fitted to feature sets,

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).

  Tr((S_1 S_2)^{1/2}) is computed from the eigenvalues of A = S_1^{1/2} S_2 S_1^{1/2},
  which is symmetric positive semi-definite and has the same eigenvalues as S_1 S_2
  (similar matrices where S_1 is invertible, and by continuity otherwise): one `eigh` of
  S_1 for its square root, one of A, in float64, with rounding's small negative
  eigenvalues set to 0. This avoids scipy.linalg.sqrtm's general (Schur) square root of a
  non-symmetric product and the complex parts it returns.
- Inception Score (Salimans, Goodfellow, Zaremba, Cheung, Radford & Chen 2016, arXiv
  1606.03498, Sec. 4): exp(E_x KL(p(y | x) || p(y))), p(y) the mean of p(y | x) over the
  samples, computed on 10 equal chunks of the samples and reported as the chunks' mean and
  standard deviation, as the authors' code does. It lies in [1, K]: 1 when every sample
  gets the same prediction, K when the predictions are confident and spread evenly over
  the K classes.
- Class histogram: the argmax prediction counted per class, the classes that hold at
  least `min_fraction` of the samples, and KL(histogram || uniform) in nats (0 for
  perfectly balanced samples, log K when they all fall in one class).

The feature extractor is pluggable: anything with `features(images) -> [N, F]` and
`class_probs(images) -> [N, K]` (the `FeatureExtractor` protocol). `ClassifierFeatures`
wraps a Flax classifier with `features` and `logits` methods (quality/classifier.py,
loaded from a checkpoint by experiments/sample_quality.py). An Inception-v3 network, where
its weights are available, drops in as another implementation (pool3 features and its
1008-way softmax); none is implemented here, so the numbers this project reports are
distances in its MNIST classifier's feature space, comparable with each other and not with
published Inception FIDs.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

# --------------------------------------------------------------------------- Gaussians


def fit_gaussian(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean [F] and unbiased covariance [F, F] of features [N, F], in float64."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f'fit_gaussian needs features [N, F] with N >= 2, got shape {x.shape}.')
  mu = x.mean(axis=0)
  d = x - mu
  return mu, d.T @ d / (x.shape[0] - 1)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  """The symmetric square root of a symmetric PSD matrix (negative rounding clipped)."""
  w, v = np.linalg.eigh(0.5 * (s + s.T))
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2) -> float:
  """Tr((S_1 S_2)^{1/2}) for symmetric PSD S_1, S_2, via the eigenvalues of
  S_1^{1/2} S_2 S_1^{1/2} (module docstring)."""
  s1 = np.asarray(sigma1, np.float64)
  s2 = np.asarray(sigma2, np.float64)
  r = _psd_sqrt(s1)
  a = r @ s2 @ r
  w = np.linalg.eigvalsh(0.5 * (a + a.T))
  return float(np.sum(np.sqrt(np.clip(w, 0.0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}) in float64; >= 0 (a rounding
  error below 0 is returned as 0)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
    raise ValueError(f'frechet_distance: means {mu1.shape}, {mu2.shape} and covariances '
                     f'{s1.shape}, {s2.shape} do not fit together.')
  diff = mu1 - mu2
  d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
  return max(d, 0.0)


def frechet_distance_of_features(features1, features2) -> float:
  """The Frechet distance between Gaussians fitted to two feature sets [N_1, F], [N_2, F]."""
  return frechet_distance(*fit_gaussian(features1), *fit_gaussian(features2))


# --------------------------------------------------------------------------- class probabilities


def _check_probs(probs) -> np.ndarray:
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or p.shape[0] < 1:
    raise ValueError(f'Class probabilities must be [N, K] with N >= 1, got shape {p.shape}.')
  return p


def inception_score(probs, num_splits: int = 10) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))) on each of `num_splits` equal chunks of p(y|x) [N, K]
  (fewer where N < num_splits), as (mean, std) over the chunks; 0 log 0 = 0."""
  p = _check_probs(probs)
  scores = []
  for chunk in np.array_split(p, max(1, min(num_splits, len(p)))):
    py = chunk.mean(axis=0, keepdims=True)
    safe = np.where(chunk > 0, chunk, 1.0)
    kl = np.sum(np.where(chunk > 0, chunk * (np.log(safe) - np.log(np.where(
        chunk > 0, py, 1.0))), 0.0), axis=1)
    scores.append(float(np.exp(kl.mean())))
  return float(np.mean(scores)), float(np.std(scores))


def class_histogram(probs, min_fraction: float = 0.01) -> dict:
  """The argmax predictions of p(y|x) [N, K] counted per class: 'counts' (K ints),
  'classes_covered' (classes with >= min_fraction of the N predictions) and
  'kl_from_uniform' (nats; 0 for a balanced histogram, log K for a single class)."""
  p = _check_probs(probs)
  n, k = p.shape
  counts = np.bincount(np.argmax(p, axis=1), minlength=k)
  q = counts / n
  kl = float(np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0) * k), 0.0)))
  return {'counts': [int(c) for c in counts],
          'classes_covered': int(np.sum(counts >= min_fraction * n)),
          'min_fraction': float(min_fraction),
          'kl_from_uniform': kl}


# --------------------------------------------------------------------------- feature extractors


@runtime_checkable
class FeatureExtractor(Protocol):
  """What the metrics need of a network: images [N, H, W, C] on [0, 1] in, features
  [N, F] (FID) and class probabilities [N, K] (Inception Score, histogram) out. An
  Inception-v3 (pool3 features, its softmax) fits this protocol where its weights are
  available; this project ships its MNIST classifier (ClassifierFeatures)."""

  name: str

  def features(self, images) -> np.ndarray:
    ...

  def class_probs(self, images) -> np.ndarray:
    ...


class ClassifierFeatures:
  """A Flax classifier with `features(image)` and `logits(image)` methods (such as
  quality.classifier.MNISTClassifier) and its variables, as a FeatureExtractor. Images go
  through in fixed-size batches (the last one padded), so one program is compiled."""

  def __init__(self, model, variables, *, name: str = 'mnist_classifier',
               batch_size: int = 500):
    self.model, self.variables, self.name = model, variables, name
    self.batch_size = int(batch_size)
    self._fn = jax.jit(lambda v, x: model.apply(v, x, method='features_and_logits')
                       if hasattr(model, 'features_and_logits') else
                       (model.apply(v, x, method='features'), model.apply(v, x, method='logits')))

  def features_and_probs(self, images) -> tuple[np.ndarray, np.ndarray]:
    """Features [N, F] and softmax probabilities [N, K] (float64) from one pass."""
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or len(x) == 0:
      raise ValueError(f'Images must be [N, H, W, C] with N >= 1, got shape {x.shape}.')
    feats, probs = [], []
    bs = self.batch_size
    for start in range(0, len(x), bs):
      chunk = x[start:start + bs]
      n = len(chunk)
      if n < bs:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, axis=0)])
      h, logits = self._fn(self.variables, jnp.asarray(chunk))
      feats.append(np.asarray(h, np.float64)[:n])
      z = np.asarray(logits, np.float64)[:n]
      z = np.exp(z - z.max(axis=1, keepdims=True))
      probs.append(z / z.sum(axis=1, keepdims=True))
    return np.concatenate(feats), np.concatenate(probs)

  def features(self, images) -> np.ndarray:
    return self.features_and_probs(images)[0]

  def class_probs(self, images) -> np.ndarray:
    return self.features_and_probs(images)[1]


def features_and_probs(extractor: FeatureExtractor, images) -> tuple[np.ndarray, np.ndarray]:
  """Both outputs of any FeatureExtractor, in one pass where it offers one."""
  if hasattr(extractor, 'features_and_probs'):
    return extractor.features_and_probs(images)
  return (np.asarray(extractor.features(images), np.float64),
          np.asarray(extractor.class_probs(images), np.float64))
