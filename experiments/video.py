"""Video samples as files a person opens: a PNG strip per sequence (context, ground truth,
samples) and an animated GIF of the same rows playing over time."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from experiments import images


def strip(rows: list[np.ndarray], context_frames: int, pad: int = 2,
          min_height: int = 64) -> np.ndarray:
  """rows: uint8 [T, H, W, 1] videos (the ground truth, then samples) -> one RGB picture,
  a row per video and a column per frame; the context columns have a green border, the
  predicted ones a grey one. Small frames are upscaled (nearest neighbour)."""
  t, h, w, _ = rows[0].shape
  scale = max(1, min_height // h)
  h, w = h * scale, w * scale
  out = np.full((len(rows) * (h + pad) + pad, t * (w + pad) + pad, 3), 96, np.uint8)
  for r, video in enumerate(rows):
    for f in range(t):
      y, x = pad + r * (h + pad), pad + f * (w + pad)
      border = (0, 160, 0) if f < context_frames else (96, 96, 96)
      out[y - 1 if y else 0:y + h + 1, x - 1:x + w + 1] = border
      frame = np.repeat(video[f].repeat(scale, 0).repeat(scale, 1), 3, axis=-1)
      out[y:y + h, x:x + w] = frame
  return out


def animation(rows: list[np.ndarray], context_frames: int, pad: int = 2,
              min_height: int = 64) -> list[np.ndarray]:
  """The rows side by side, one RGB picture per time step, over a progress bar (green
  while the frames are given, white once they are predicted). The bar also keeps every
  picture distinct: GIF writers merge identical consecutive frames."""
  t, h, w, _ = rows[0].shape
  scale = max(1, min_height // h)
  frames = []
  for f in range(t):
    tiles = np.stack([v[f] for v in rows])
    grid = images.make_grid(tiles.repeat(scale, 1).repeat(scale, 2), ncols=len(rows),
                            pad=pad, min_size=0)
    bar = np.full((4, grid.shape[1], 3), 64, np.uint8)
    bar[:, :max(1, round(grid.shape[1] * (f + 1) / t))] = (
        (0, 200, 0) if f < context_frames else (255, 255, 255))
    frames.append(np.concatenate([grid, bar]))
  return frames


def save_gif(path: str, frames: list[np.ndarray], frame_ms: int = 200) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  pictures = [Image.fromarray(f) for f in frames]
  pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)


def write_video_samples(directory: str, truth: np.ndarray, samples: np.ndarray,
                        context_frames: int) -> list[str]:
  """truth [N, T, H, W, 1] and samples [S, N, T, H, W, 1] (uint8): for each sequence n,
  sequence_n.png (rows: ground truth, then each sample; the first context_frames columns
  are the given frames) and sequence_n.gif. Returns the paths."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  for n in range(len(truth)):
    rows = [np.asarray(truth[n], np.uint8)] + [np.asarray(s[n], np.uint8) for s in samples]
    png = os.path.join(directory, f'sequence_{n}.png')
    images.save_image(png, strip(rows, context_frames))
    gif = os.path.join(directory, f'sequence_{n}.gif')
    save_gif(gif, animation(rows, context_frames))
    paths += [png, gif]
  return paths
