"""Sample quality of a trained image model, for models with or without a likelihood:
`--mode=sample_quality`.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/iwae_binarized_mnist.py --workdir=runs/vae \
      --mode=sample_quality --classifier_workdir=runs/mnist_classifier \
      [--quality_num_samples=10000]

The generative run is opened read-only, as `--mode=sample` opens it (the same config
check, the EMA parameters, the configured sampler and temperature), and `num_samples`
samples are drawn in jitted batches (class-conditional models get balanced labels,
0, 1, ..., K-1, 0, ...). Every model family's `sample` returns integer images in
{0..L-1}, L the data's levels (2 for binarized MNIST; 256 for 8-bit MNIST: PixelCNN,
VAE, flows, GAN), which become the classifier's [0, 1] input as x / (L - 1), exactly as
the sample-grid writer renders them.

The reference is the run's own evaluation split under its own data config (for binarized
MNIST the fixed seeded binarization its evaluation uses). The classifier
(quality/classifier.py, trained by configs/mnist_classifier.py) gives features and class
probabilities of both, and quality/metrics.py the numbers:

- fid_<extractor>: the Frechet distance between Gaussians fitted to the samples' and the
  reference's penultimate features. It is a distance in this MNIST classifier's feature
  space, not Inception FID (hence the name, fid_mnist_classifier).
- fid_<extractor>_floor_train: the same distance for as many real training images
  (processed as the evaluation split is; a binarization seeded by the evaluation seed + 1)
  as there are samples: what a perfect model would score at this sample size (FID is
  biased upwards at finite N). fid_<extractor>_floor_test_halves: the evaluation split's
  even against its odd examples.
- is_<extractor> (and _std over 10 chunks) of the samples, and of the reference images;
  class_counts, classes_covered (>= 1% of the samples) and class_kl_from_uniform of the
  samples' argmax predictions, and the same for the reference.
- classifier_error_on_reference: the classifier's error on the labelled reference images,
  a check that the classifier reads this data (binarized or grey) correctly.

The result is printed and appended to `<workdir>/sample_quality.jsonl` (nothing else in
the workdir is written).

Reference levels with the classifier of configs/mnist_classifier.py (runs/mnist_classifier,
step 2,500), 10,000 training images against the 10,000 test images (reference_scores):
binarized MNIST (seeded binarizations, evaluation seed 0 and 1): fid_mnist_classifier
floor 1.07, test halves 1.43, test Inception Score 9.67 +- 0.14, classifier error 0.99%;
8-bit MNIST: floor 1.06, halves 1.45, IS 9.75 +- 0.12, error 0.68%. For scale, the
NVIL sigmoid belief net of the README (runs/sbn_nvil, 106.73 nats), 10,000 samples:
fid_mnist_classifier 187.6, IS 3.74 +- 0.04, all 10 classes covered, KL from uniform
0.22 nats (11 s on one core).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

import experiments
from experiments import datasets, input_pipeline, train
from experiments import workdir as workdir_lib
from experiments.errors import UserError
from experiments.models import build_model
from quality import metrics

IMAGE_SHAPE = (28, 28, 1)
RESULTS_NAME = 'sample_quality.jsonl'
TRAIN_CLASSIFIER = ('python -m experiments.main --config=configs/mnist_classifier.py '
                    '--workdir=runs/mnist_classifier')


class SampleQualityError(UserError, ValueError):
  """A sample-quality request that cannot be met: no classifier, a model that cannot
  sample, data the classifier cannot read."""


def load_classifier(classifier_workdir: str | None,
                    batch_size: int = 500) -> tuple[metrics.ClassifierFeatures, int]:
  """The classifier run's EMA parameters as a FeatureExtractor, and its step."""
  if not classifier_workdir:
    raise SampleQualityError(
        '--mode=sample_quality needs --classifier_workdir, the workdir of a trained MNIST '
        f'classifier run (train one with: {TRAIN_CLASSIFIER}).')
  if not os.path.isdir(classifier_workdir):
    raise SampleQualityError(
        f'--classifier_workdir={classifier_workdir} does not exist (or is not a directory). '
        f'Pass the workdir of a trained classifier, or train one: {TRAIN_CLASSIFIER}.')
  checkpoints = os.path.join(classifier_workdir, 'checkpoints')
  if not (os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))
          and os.path.exists(os.path.join(classifier_workdir, 'config.json'))):
    raise SampleQualityError(
        f'--classifier_workdir={classifier_workdir} holds no classifier checkpoint (no '
        f'{os.path.abspath(checkpoints)}/<step>): train it first ({TRAIN_CLASSIFIER} '
        'with that --workdir), or check the path.')
  run = experiments.load_run(classifier_workdir)
  if not (hasattr(run.model, 'features') and hasattr(run.model, 'logits')):
    raise SampleQualityError(
        f'--classifier_workdir={classifier_workdir} holds a {run.config.model_name!r} run, '
        'not a classifier (a model with features and logits methods). Pass the workdir '
        f'of an mnist_classifier run ({TRAIN_CLASSIFIER}).')
  extractor = metrics.ClassifierFeatures(run.model, run.variables,
                                         name=run.config.model_name, batch_size=batch_size)
  return extractor, run.step


def check_generative_config(config) -> None:
  """Refuses, before anything is loaded, a model that cannot sample or data that is not
  28x28x1 MNIST."""
  info = input_pipeline.data_info(config.data)
  name = config.data.name
  if info.kind != 'image' or tuple(info.shape) != IMAGE_SHAPE:
    raise SampleQualityError(
        f'--mode=sample_quality scores 28x28x1 MNIST images (the classifier\'s input), but '
        f'config.data.name={name!r} is {info.kind} data of shape {tuple(info.shape)}. Use '
        "it on a run of 'mnist' or 'binarized_mnist'.")
  if datasets.source_name(name) != 'mnist':
    raise SampleQualityError(
        f'--mode=sample_quality scores digits with an MNIST classifier; config.data.name='
        f"{name!r} is not MNIST. Use it on a run of 'mnist' or 'binarized_mnist'.")
  model = build_model(config.model_name, config.model.to_dict())
  if not hasattr(model, 'sample'):
    raise SampleQualityError(
        f'config.model_name={config.model_name!r} ({type(model).__name__}) cannot sample '
        '(it has no sample method): --mode=sample_quality needs a generative model\'s run.')


def to_unit(images, num_levels: int) -> np.ndarray:
  """Integer images in {0..num_levels-1} -> float32 on [0, 1] (binary as is, 8-bit / 255)."""
  return np.asarray(images, np.float32) / np.float32(num_levels - 1)


def draw_samples(run: train.Run, num_samples: int, seed: int, batch_size: int) -> np.ndarray:
  """num_samples integer images from the run's configured sampler, in batches of one
  compiled shape (the last one drawn whole and cut)."""
  bs = max(1, min(batch_size, num_samples))
  shape = (bs, *run.data.example_shape)
  num_classes = getattr(run.model, 'num_classes', 0) or 0
  out, t0 = [], time.time()
  for i, start in enumerate(range(0, num_samples, bs)):
    kwargs = {}
    if num_classes:
      kwargs['label'] = jnp.asarray((start + np.arange(bs)) % num_classes, jnp.int32)
    rng = jax.random.fold_in(jax.random.key(seed), i)
    out.append(np.asarray(run._sample(rng, shape, **kwargs)))  # pylint: disable=protected-access
    drawn = min(start + bs, num_samples)
    logging.info('sample_quality: %d/%d samples drawn (%.1f s)', drawn, num_samples,
                 time.time() - t0)
  return np.concatenate(out)[:num_samples]


def _eval_images(data: input_pipeline.Datasets) -> tuple[np.ndarray, np.ndarray | None]:
  """Every real example of an evaluation split: images and labels (None without labels)."""
  xs, ys = [], []
  for batch in data.eval_batches():
    mask = np.asarray(batch['example_mask'], bool)
    xs.append(np.asarray(batch['image'])[mask])
    if 'label' in batch:
      ys.append(np.asarray(batch['label'])[mask])
  return np.concatenate(xs), (np.concatenate(ys) if ys else None)


def _data_images(data_config, split: str, binarization_seed: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray | None]:
  """A split processed as the evaluation split is (a fixed seeded binarization for
  binarized data): images and labels."""
  cfg = ml_collections.ConfigDict(data_config.to_dict())
  cfg.eval_split = split
  cfg.eval_binarization_seed = int(binarization_seed)
  cfg.num_labelled = 0
  return _eval_images(input_pipeline.create_datasets(cfg, seed=seed))


def _eval_seed(config) -> int:
  return int(config.data.get('eval_binarization_seed',
                             input_pipeline.DEFAULT_EVAL_BINARIZATION_SEED))


def _append(path: str, record: dict) -> None:
  workdir_lib.append_json_line(path, json.dumps(record))


def _distribution(prefix: str, probs: np.ndarray, name: str) -> dict:
  """Inception Score and class histogram of class probabilities, keys prefixed."""
  is_mean, is_std = metrics.inception_score(probs)
  hist = metrics.class_histogram(probs)
  return {f'{prefix}is_{name}': is_mean, f'{prefix}is_{name}_std': is_std,
          f'{prefix}class_counts': hist['counts'],
          f'{prefix}classes_covered': hist['classes_covered'],
          f'{prefix}class_kl_from_uniform': hist['kl_from_uniform']}


@dataclasses.dataclass
class Reference:
  """The evaluation split of a data config through a feature extractor."""
  features: np.ndarray        # [N, F]
  probs: np.ndarray           # [N, K]
  labels: np.ndarray | None   # [N]
  num_levels: int
  split: str


def reference_set(config, extractor: metrics.FeatureExtractor) -> Reference:
  """The features of config.data's evaluation split, processed as its evaluation is."""
  levels = input_pipeline.data_info(config.data).num_levels
  images, labels = _data_images(config.data, config.data.eval_split, _eval_seed(config),
                                config.seed)
  feats, probs = metrics.features_and_probs(extractor, to_unit(images, levels))
  return Reference(feats, probs, labels, levels, config.data.eval_split)


def reference_scores(config, extractor: metrics.FeatureExtractor, ref: Reference,
                     num_floor: int) -> dict:
  """What real data scores: FID of the first num_floor training images (binarized, where
  the data is, with the evaluation seed + 1) against the reference, of the reference's
  even against its odd examples, and the reference's Inception Score, class histogram and
  classifier error."""
  name = extractor.name
  train_images, _ = _data_images(config.data, f'train[:{num_floor}]', _eval_seed(config) + 1,
                                 config.seed)
  f_train, _ = metrics.features_and_probs(extractor, to_unit(train_images, ref.num_levels))
  out = {
      f'fid_{name}_floor_train': metrics.frechet_distance_of_features(f_train, ref.features),
      'floor_train_num': int(len(train_images)),
      f'fid_{name}_floor_test_halves': (
          metrics.frechet_distance_of_features(ref.features[0::2], ref.features[1::2])
          if len(ref.features) >= 4 else float('nan')),
  }
  out.update(_distribution('reference_', ref.probs, name))
  if ref.labels is not None:
    out['classifier_error_on_reference'] = float(np.mean(np.argmax(ref.probs, 1)
                                                         != ref.labels))
  return out


def sample_quality_run(config, workdir: str, *, classifier_workdir: str | None,
                       num_samples: int = 10000, seed: int = 0, batch_size: int = 500,
                       allow_config_change: bool = False) -> dict:
  """Draws num_samples samples from the run in `workdir` and scores them against its
  evaluation split with the classifier of `classifier_workdir` (module docstring).
  Returns the record it appends to <workdir>/sample_quality.jsonl."""
  t0 = time.time()
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
    raise SampleQualityError(f'--quality_num_samples={num_samples} must be an integer >= 2 '
                             '(a covariance needs two samples; 10000 is the usual count).')
  extractor, classifier_step = load_classifier(classifier_workdir, batch_size)
  check_generative_config(config)
  name = extractor.name
  run = train._read_only_run(config, workdir, allow_config_change,  # pylint: disable=protected-access
                             evaluate=False)
  try:
    levels = run.data.info.num_levels
    method = train.sampler_method(run.model, config.sample.sampler)
    samples = draw_samples(run, num_samples, seed, batch_size)
    step = run.restored_step
  finally:
    run.close()
  lo, hi = int(samples.min()), int(samples.max())
  if lo < 0 or hi > levels - 1:
    logging.warning("sample_quality: samples range over [%d, %d], outside the data's "
                    '{0..%d}; clipped.', lo, hi, levels - 1)
    samples = np.clip(samples, 0, levels - 1)
  ref = reference_set(config, extractor)
  f_samples, p_samples = metrics.features_and_probs(extractor, to_unit(samples, levels))
  record = {
      'workdir': workdir, 'step': step, 'model_name': config.model_name,
      'data_name': config.data.name, 'num_levels': levels,
      'sampler': method, 'temperature': float(config.sample.temperature), 'seed': seed,
      'num_samples': int(num_samples), 'reference_split': ref.split,
      'num_reference': int(len(ref.features)),
      'classifier_workdir': os.path.abspath(classifier_workdir),
      'classifier_step': classifier_step, 'feature_extractor': name,
      f'fid_{name}': metrics.frechet_distance_of_features(f_samples, ref.features),
  }
  record.update(_distribution('', p_samples, name))
  record.update(reference_scores(config, extractor, ref, min(num_samples, 60000)))
  record['wall_time_s'] = round(time.time() - t0, 2)
  record['time'] = time.strftime('%Y-%m-%dT%H:%M:%S')
  if jax.process_index() == 0:
    _append(os.path.join(workdir, RESULTS_NAME), record)
  return record
