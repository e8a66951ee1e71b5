"""Class-conditional Gated PixelCNN on CIFAR-10 (arXiv 1606.05328, Sec. 2.3 and 3.2): the
class label enters every gate as V_f h and V_g h. Sample grids have one row per class.

  python -m experiments.main --config=configs/gated_pixelcnn_cifar10_conditional.py \
      --workdir=runs/gc10_cond
"""
from configs import gated_pixelcnn_cifar10


def get_config(arg: str | None = None):
  c = gated_pixelcnn_cifar10.get_config(arg)
  c.model.num_classes = 10
  c.train.num_samples = 40 if 'tiny' not in (arg or '') else 10
  return c
