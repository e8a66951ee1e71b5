"""Naive ancestral sampling of raster-order image models (PixelCNN, PixelRNN)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def naive_raster_sample(logits_fn, rng, shape, temperature: float = 1.0, init=None,
                        start: int = 0):
  """Draws sub-pixels one at a time in raster order, then colour, each from
  logits_fn(image) [B, H, W, C, L] of the whole image so far, in a compiled loop.

  Sub-pixel t draws with jax.random.fold_in(rng, t), so any faster sampler that computes
  the same conditionals reproduces these samples draw for draw. `init` and `start`
  continue from a partly given image (completion): sub-pixels before `start` are kept.
  """
  b, hgt, wid, ch = shape
  x = jnp.zeros(shape, jnp.int32) if init is None else init.astype(jnp.int32)

  def body(t, x):
    i, rem = jnp.divmod(t, wid * ch)
    j, c = jnp.divmod(rem, ch)
    logits = logits_fn(x)
    step_logits = jax.lax.dynamic_index_in_dim(logits, i, 1, keepdims=False)
    step_logits = jax.lax.dynamic_index_in_dim(step_logits, j, 1, keepdims=False)
    step_logits = jax.lax.dynamic_index_in_dim(step_logits, c, 1, keepdims=False)
    draw = jax.random.categorical(jax.random.fold_in(rng, t), step_logits / temperature)
    return x.at[:, i, j, c].set(draw.astype(jnp.int32))

  return jax.lax.fori_loop(start, hgt * wid * ch, body, x)
