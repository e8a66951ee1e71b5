"""Discretized logistic mixture likelihood of PixelCNN++ (Salimans, Karpathy, Chen &
Kingma 2017, arXiv 1701.05517, Sec. 2.1-2.2, Eq. 2-3), for grey and RGB images.

Each pixel gets K logistic components shared by its channels. The probability of an
integer value v in {0..L-1} (scaled to x in [-1, 1], bin half-width h = 1/(L-1)) is the
logistic mass of its bin, sigma((x + h - mu)/s) - sigma((x - h - mu)/s); the edge bins take
all the mass below the lowest and above the highest value (Eq. 2). For RGB the means are
linear in earlier channels of the same pixel (Eq. 3): mu_G + c_0 x_R and
mu_B + c_1 x_R + c_2 x_G, where x_R, x_G are the channels' level values, so R -> G -> B
stays autoregressive inside a pixel while the network predicts all channels at once.

`discretized_logistic_log_mass` is the one implementation of a bin's log mass;
latent.distributions uses it for the single-logistic decoders of the VAE family.

Parameter layout per pixel (last axis, size num_params(C, K)):
  [logit_probs K | means C*K | log_scales C*K | coeffs C*(C-1)/2*K].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

LOG_SCALE_MIN = -7.0


def num_params(num_channels: int, num_mixtures: int) -> int:
  return num_mixtures * (1 + 2 * num_channels + num_channels * (num_channels - 1) // 2)


def _split(params, num_channels: int, num_mixtures: int):
  c, k = num_channels, num_mixtures
  shape = params.shape[:-1]
  logit_probs = params[..., :k]
  means = params[..., k:k + c * k].reshape(*shape, c, k)
  log_scales = jnp.maximum(params[..., k + c * k:k + 2 * c * k].reshape(*shape, c, k),
                           LOG_SCALE_MIN)
  coeffs = jnp.tanh(params[..., k + 2 * c * k:].reshape(*shape, c * (c - 1) // 2, k))
  return logit_probs, means, log_scales, coeffs


def _coupled_means(means, coeffs, x):
  """Eq. 3: the mean of channel c adds coeff * x of each earlier channel of the pixel."""
  c = means.shape[-2]
  out, idx = [means[..., 0, :]], 0
  for ch in range(1, c):
    m = means[..., ch, :]
    for prev in range(ch):
      m = m + coeffs[..., idx, :] * x[..., prev, None]
      idx += 1
    out.append(m)
  return jnp.stack(out, axis=-2)


def to_unit_range(x, num_levels: int):
  return x.astype(jnp.float32) * (2.0 / (num_levels - 1)) - 1.0


def discretized_logistic_log_mass(x_int, mean, log_scale, num_levels: int):
  """log P(x_int), elementwise, for x_int in {0..L-1} under logistic(mean, exp(log_scale))
  on [-1, 1] cut into L bins, the edge bins taking the tails (Eq. 2). No clamp on
  log_scale: callers that want one apply it.

  With standardized bin edges a = (x + h - mu)/s > b = (x - h - mu)/s,
    sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - e^(b - a))   (exact),
  so the log mass is a sum of three non-positive terms, each computed without
  cancellation: no subtraction of two sigmoids near 1 (which loses digits in float32), and
  no density-times-width stand-in for the far tails (wrong by tens of nats when the bin is
  wide against the scale), at any mean and scale.
  """
  dtype = jnp.result_type(mean, log_scale, jnp.float32)
  x_int = jnp.asarray(x_int)
  inv_s = jnp.exp(-jnp.asarray(log_scale, dtype))
  mean = jnp.asarray(mean, dtype)
  # Bin edges (2j - 1)/(L-1) - 1, j = 0..L, as a float32 value plus its rounding error
  # (taken in float64): rounding the edge alone moves a standardized edge by up to 6e-8/s,
  # 7e-5 at the clamp, while (edge_hi - mean) + edge_lo is off by ulps of the difference.
  edges = (2.0 * np.arange(num_levels + 1) - 1.0) / (num_levels - 1) - 1.0
  edges_hi = edges.astype(np.dtype(dtype))
  edges_lo = (edges - edges_hi.astype(np.float64)).astype(np.dtype(dtype))
  v = x_int.astype(jnp.int32)
  a = ((jnp.take(edges_hi, v + 1) - mean) + jnp.take(edges_lo, v + 1)) * inv_s
  b = ((jnp.take(edges_hi, v) - mean) + jnp.take(edges_lo, v)) * inv_s
  log_below_top = jax.nn.log_sigmoid(a)
  log_above_bottom = jax.nn.log_sigmoid(-b)
  # b - a = -2h/s independently of the mean; taken from inv_s, not from a - b, which
  # cancels when both edges are far out.
  log_width = jnp.log(-jnp.expm1(-(2.0 / (num_levels - 1)) * inv_s))
  interior = log_below_top + log_above_bottom + log_width
  return jnp.where(x_int == 0, log_below_top,
                   jnp.where(x_int == num_levels - 1, log_above_bottom, interior))


def log_prob(params, x, num_levels: int, num_mixtures: int):
  """log P(x) per example in nats.

  params: [B, H, W, num_params(C, K)]; x: int [B, H, W, C] in {0..L-1}. Returns [B].
  """
  c = x.shape[-1]
  logit_probs, means, log_scales, coeffs = _split(params.astype(jnp.float32), c, num_mixtures)
  means = _coupled_means(means, coeffs, to_unit_range(x, num_levels))
  log_mass = discretized_logistic_log_mass(x[..., None], means, log_scales, num_levels)
  log_pixel = log_mass.sum(axis=-2) + jax.nn.log_softmax(logit_probs, axis=-1)  # [B,H,W,K]
  return jax.nn.logsumexp(log_pixel, axis=-1).reshape(x.shape[0], -1).sum(-1)


def sample(rng, params, num_channels: int, num_levels: int, num_mixtures: int,
           temperature: float = 1.0):
  """Draws integer pixels [..., C] from per-pixel parameters [..., num_params(C, K)].

  At temperature 1 the draws follow exp(log_prob) exactly: each channel's mean is coupled
  on the earlier channels' drawn *levels* (Eq. 3 as log_prob scores it), not on their
  continuous logistic draws, which differ by up to half a bin.
  """
  logit_probs, means, log_scales, coeffs = _split(params.astype(jnp.float32), num_channels,
                                                  num_mixtures)
  k_mix, k_logistic = jax.random.split(rng)
  comp = jax.random.categorical(k_mix, logit_probs / temperature, axis=-1)     # [...]
  def pick(a):
    return jnp.take_along_axis(a, comp[..., None, None], axis=-1)[..., 0]
  means, log_scales = pick(means), pick(log_scales)                              # [..., C]
  # The full logistic: a uniform clipped to [1e-5, 1 - 1e-5] would move the tails' mass
  # onto the quantiles at +-11.5 scales.
  noise = jnp.exp(log_scales) * temperature * jax.random.logistic(k_logistic, means.shape)
  levels, xs, idx = [], [], 0
  for ch in range(num_channels):
    m = means[..., ch]
    for prev in range(ch):
      m = m + pick(coeffs[..., idx:idx + 1, :])[..., 0] * xs[prev]
      idx += 1
    # Rounding to the nearest level after clipping to [-1, 1] puts each continuous draw in
    # the bin log_prob integrates over, the tails in the edge bins.
    level = jnp.round((jnp.clip(m + noise[..., ch], -1.0, 1.0) + 1.0) * (num_levels - 1) / 2.0)
    levels.append(level)
    xs.append(to_unit_range(level, num_levels))
  return jnp.stack(levels, axis=-1).astype(jnp.int32)
