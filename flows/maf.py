"""MAF: Masked Autoregressive Flow for density estimation.

Papamakarios, Pavlakou & Murray 2017, arXiv 1705.07057. A stack of MADE layers (Sec. 3.1,
flows/bijectors.py MAF): each computes u_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i)) for
all i in one pass, log-determinant -sum alpha; consecutive layers reverse the ordering
(Sec. 3.1: "use a different order in each layer"), and the base density is N(0, I)
(Eq. 2). With batch_norm, a batch-normalization bijector follows every MADE, the last
included, as in the authors' code (github gpapamak/maf, ml/models/mafs.py
MaskedAutoregressiveFlow: a BatchNorm after each MADE, following Real NVP); its running
averages live in 'batch_stats'.

Images (the paper's MNIST and CIFAR-10 experiments): the flat image, dequantized and mapped to logit
space, y = logit(lambda + (1 - 2 lambda) x) with lambda = 1e-6, the Jacobian entering the likelihood
(flows/models.py). The MNIST models use MADEs of two hidden layers of 1024 ReLU units (the code's
run_experiments.py: [1024] * 2 for every MNIST model); Papamakarios et al. report MAF (5) at about
1.89 bits/pixel on MNIST.

Density evaluation (and so training) is one pass per layer; sampling and `decode` invert
each layer with D sequential MADE passes.
"""
from __future__ import annotations

from typing import Sequence

from flows import bijectors as fb
from flows.models import ImageFlow


class MAFModel(ImageFlow):
  """MAF on flat images.

  Attributes (beyond ImageFlow's image_shape, preprocessing, alpha, prior):
    num_layers: MADE layers (5 in the paper's MAF (5)).
    hidden_sizes: each MADE's hidden widths ((1024, 1024) for MNIST).
    batch_norm: a BatchNormBijector after every MADE, the last included.
    momentum: its running-average momentum.
  """
  num_layers: int = 5
  hidden_sizes: Sequence[int] = (1024, 1024)
  batch_norm: bool = True
  momentum: float = 0.99
  preprocessing: str = 'logit'
  alpha: float = 1e-6
  prior: str = 'gaussian'

  def setup(self):
    self._check_config()
    layers = []
    for i in range(self.num_layers):
      layers.append(fb.MAF(tuple(self.hidden_sizes),
                           input_order='natural' if i % 2 == 0 else 'reversed',
                           name=f'made_{i}'))
      if self.batch_norm:
        layers.append(fb.BatchNormBijector(momentum=self.momentum, name=f'batchnorm_{i}'))
    self.flow = fb.Chain(layers)

  def _flow(self, y, train):
    return self.flow(y.reshape(y.shape[0], -1), inverse=False, train=train)

  def _flow_inverse(self, eps):
    return self.flow(eps, inverse=True)[0]
