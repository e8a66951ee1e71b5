"""Metrics to TensorBoard event files (tensorboardX, no TensorFlow) and a JSON-lines file."""
from __future__ import annotations

import json
import os
import time

import numpy as np


class MetricWriter:
  """Writes scalars to `<workdir>/tensorboard/` and appends them to `<workdir>/metrics.jsonl`.

  Only process 0 writes; other processes get a writer that does nothing.
  """

  def __init__(self, workdir: str, enabled: bool = True, purge_step: int | None = None):
    """purge_step (a resumed run's first step): TensorBoard discards the events this
    workdir already holds from that step on, so a redone step shows once."""
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), purge_step=purge_step)

  def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = '') -> None:
    if not self.enabled:
      return
    scalars = {f'{prefix}{k}': float(np.asarray(v)) for k, v in scalars.items()}
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps({'step': int(step), 'time': time.time(), **scalars}) + '\n')

  def write_image(self, step: int, name: str, grid_uint8: np.ndarray) -> None:
    if self.enabled:
      self._tb.add_image(name, grid_uint8, step, dataformats='HWC')

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
