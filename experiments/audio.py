"""WAV output for audio samples: mono 16-bit PCM, written with the standard library."""
from __future__ import annotations

import os
import wave

import numpy as np


def write_wav(path: str, samples, sample_rate: int) -> None:
  """samples: int16 or floats in [-1, 1], shape [T]."""
  x = np.asarray(samples)
  if np.issubdtype(x.dtype, np.floating):
    x = np.round(np.clip(x, -1.0, 1.0) * 32767.0)
  x = x.astype('<i2')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with wave.open(path, 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(sample_rate)
    f.writeframes(x.tobytes())
