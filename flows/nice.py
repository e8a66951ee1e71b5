"""NICE: Non-linear Independent Components Estimation.

Dinh, Krueger & Bengio 2014, arXiv 1410.8516. The MNIST model of Sec. 5.1: the image as a
flat vector, four additive coupling layers (Sec. 3.2, y2 = x2 + m(x1), unit Jacobian) with
alternating even/odd partitions, each m a ReLU MLP of 5 hidden layers of 1000 units, then
the diagonal scaling layer y = exp(s) * x (Sec. 3.3, log-determinant sum s), and a standard
logistic prior (Sec. 3.4). Data are dequantized and rescaled to [0, 1) with no further
preprocessing, as in the paper. log p(x) = sum_d log p_logistic(h_d) + sum_d s_d (Eq. 5 with
the scaling layer); flows/models.py turns it into the 8-bit image's nll.

The paper reports a test log-likelihood of 1980.50 nats in its continuous [0, 1] space,
i.e. (D log 256 - 1980.50) / (D log 2) = 4.36 bits/dim for D = 784.
"""
from __future__ import annotations

from typing import Sequence

from flows import bijectors as fb
from flows.models import ImageFlow


class NICE(ImageFlow):
  """NICE on flat images.

  Attributes (beyond ImageFlow's image_shape, preprocessing, prior):
    num_couplings: additive coupling layers (4 in the paper).
    hidden: the coupling MLP's hidden widths ((1000,) * 5 in the paper).
  """
  num_couplings: int = 4
  hidden: Sequence[int] = (1000,) * 5
  preprocessing: str = 'none'
  prior: str = 'logistic'

  def setup(self):
    self._check_config()
    layers = [fb.AdditiveCoupling(mask='checkerboard', flip=bool(i % 2),
                                  hidden=tuple(self.hidden), name=f'coupling_{i}')
              for i in range(self.num_couplings)]
    layers.append(fb.DiagonalScaling(name='scaling'))
    self.flow = fb.Chain(layers)

  def _flow(self, y, train):
    return self.flow(y.reshape(y.shape[0], -1), inverse=False, train=train)

  def _flow_inverse(self, eps):
    return self.flow(eps, inverse=True)[0]
