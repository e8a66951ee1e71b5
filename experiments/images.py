"""Sample grids as PNG files a person opens."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(images, num_levels: int) -> np.ndarray:
  """Integer images in {0..L-1} -> uint8 in {0..255}."""
  x = np.asarray(images).astype(np.float32) * (255.0 / (num_levels - 1))
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_grid(images_uint8: np.ndarray, ncols: int | None = None, pad: int = 1,
              min_size: int = 512) -> np.ndarray:
  """Tiles [N, H, W, C] uint8 images into one [rows*H', cols*W', 3] image.

  Small images are upscaled by an integer factor (nearest neighbour) so the grid is at
  least `min_size` pixels wide and each pixel stays a crisp square.
  """
  x = np.asarray(images_uint8)
  n, h, w, c = x.shape
  if c == 1:
    x = np.repeat(x, 3, axis=-1)
  ncols = ncols or int(np.ceil(np.sqrt(n)))
  nrows = int(np.ceil(n / ncols))
  scale = max(1, min_size // (ncols * (w + pad)))
  x = x.repeat(scale, axis=1).repeat(scale, axis=2)
  h, w = h * scale, w * scale
  grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 128, np.uint8)
  for k in range(n):
    r, col = divmod(k, ncols)
    grid[pad + r * (h + pad): pad + r * (h + pad) + h,
         pad + col * (w + pad): pad + col * (w + pad) + w] = x[k]
  return grid


def save_grid(path: str, images, num_levels: int, ncols: int | None = None) -> np.ndarray:
  """Writes integer images as a PNG grid; returns the grid."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  grid = make_grid(to_uint8(images, num_levels), ncols)
  Image.fromarray(grid).save(path)
  return grid


def unit_to_uint8(images) -> np.ndarray:
  """Float images on [0, 1] (decoder means) -> uint8 in {0..255}."""
  x = np.asarray(images, np.float32) * 255.0
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def save_image(path: str, image_uint8: np.ndarray) -> np.ndarray:
  """Writes one [H, W, 3] (or [H, W]) uint8 image as a PNG, creating its directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image_uint8, np.uint8)).save(path)
  return image_uint8


def save_unit_grid(path: str, images, ncols: int | None = None) -> np.ndarray:
  """Writes float images on [0, 1] as a PNG grid (make_grid's layout); returns the grid."""
  grid = make_grid(unit_to_uint8(images), ncols)
  return save_image(path, grid)
