"""Sample quality for models without a likelihood: a small MNIST classifier
(quality/classifier.py) and the metrics computed on its features and class probabilities
(quality/metrics.py: Frechet distance, Inception Score, class histogram). The run-level
driver, which loads a generative run and a classifier checkpoint, is
experiments/sample_quality.py (model packages never import experiments)."""
