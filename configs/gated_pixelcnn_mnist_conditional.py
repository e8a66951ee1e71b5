"""Class-conditional Gated PixelCNN on binarized MNIST (arXiv 1606.05328, Sec. 2.3).

The digit label enters every gate as V_f h and V_g h; sample grids have one row per class.

  DGM_DATA_DIR=../shared/data python -m experiments.main \
      --config=configs/gated_pixelcnn_mnist_conditional.py --workdir=runs/gated_mnist_cond

`:tiny` is for tests.
"""
from configs import gated_pixelcnn_binarized_mnist


def get_config(arg: str | None = None):
  c = gated_pixelcnn_binarized_mnist.get_config(arg)
  c.model.num_classes = 10
  c.train.num_samples = 40 if arg != 'tiny' else 10   # rows of 4 (tiny: 1) per class
  return c
