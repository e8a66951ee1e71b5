"""Discretized logistic mixture likelihood of PixelCNN++ (Salimans, Karpathy, Chen &
Kingma 2017, arXiv 1701.05517, Sec. 2.1-2.2, Eq. 2-3), for grey and RGB images.

Each pixel gets K logistic components shared by its channels. The probability of an
integer value v in {0..L-1} (scaled to x in [-1, 1], bin half-width 1/(L-1)) is the
logistic mass of its bin; the edge bins take all the mass below the lowest and above the
highest value (Eq. 2). For RGB the means are linear in earlier channels of the same pixel
(Eq. 3): mu_G + c_0 x_R and mu_B + c_1 x_R + c_2 x_G, so R -> G -> B stays autoregressive
inside a pixel while the network predicts all channels at once.

Parameter layout per pixel (last axis, size num_params(C, K)):
  [logit_probs K | means C*K | log_scales C*K | coeffs C*(C-1)/2*K].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

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


def log_prob(params, x, num_levels: int, num_mixtures: int):
  """log P(x) per example in nats.

  params: [B, H, W, num_params(C, K)]; x: int [B, H, W, C] in {0..L-1}. Returns [B].
  """
  c = x.shape[-1]
  logit_probs, means, log_scales, coeffs = _split(params.astype(jnp.float32), c, num_mixtures)
  xs = to_unit_range(x, num_levels)
  means = _coupled_means(means, coeffs, xs)
  centred = xs[..., None] - means                      # [B, H, W, C, K]
  inv_s = jnp.exp(-log_scales)
  half_bin = 1.0 / (num_levels - 1)
  plus_in = inv_s * (centred + half_bin)
  min_in = inv_s * (centred - half_bin)
  log_cdf_plus = jax.nn.log_sigmoid(plus_in)           # log CDF at the bin's top (edge: 0)
  log_one_minus_cdf_min = -jax.nn.softplus(min_in)     # log(1 - CDF) at the bin's bottom
  cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
  mid_in = inv_s * centred
  # Where the bin's mass underflows in float32, use the density at the centre times the bin
  # width (PixelCNN++'s approximation; width 2/(L-1)).
  log_pdf_mid = mid_in - log_scales - 2.0 * jax.nn.softplus(mid_in)
  log_mass_mid = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                           log_pdf_mid + jnp.log(2.0 * half_bin))
  xk = xs[..., None]
  log_mass = jnp.where(xk < -1.0 + 1e-3, log_cdf_plus,
                       jnp.where(xk > 1.0 - 1e-3, log_one_minus_cdf_min, log_mass_mid))
  log_pixel = log_mass.sum(axis=-2) + jax.nn.log_softmax(logit_probs, axis=-1)  # [B,H,W,K]
  return jax.nn.logsumexp(log_pixel, axis=-1).reshape(x.shape[0], -1).sum(-1)


def sample(rng, params, num_channels: int, num_levels: int, num_mixtures: int,
           temperature: float = 1.0):
  """Draws integer pixels [..., C] from per-pixel parameters [..., num_params(C, K)]."""
  logit_probs, means, log_scales, coeffs = _split(params.astype(jnp.float32), num_channels,
                                                  num_mixtures)
  k_mix, k_logistic = jax.random.split(rng)
  comp = jax.random.categorical(k_mix, logit_probs / temperature, axis=-1)     # [...]
  pick = lambda a: jnp.take_along_axis(a, comp[..., None, None], axis=-1)[..., 0]
  means, log_scales = pick(means), pick(log_scales)                              # [..., C]
  u = jax.random.uniform(k_logistic, means.shape, minval=1e-5, maxval=1.0 - 1e-5)
  noise = jnp.exp(log_scales) * temperature * (jnp.log(u) - jnp.log1p(-u))
  xs, idx = [], 0
  for ch in range(num_channels):
    m = means[..., ch]
    for prev in range(ch):
      m = m + pick(coeffs[..., idx:idx + 1, :])[..., 0] * xs[prev]
      idx += 1
    xs.append(jnp.clip(m + noise[..., ch], -1.0, 1.0))
  x = jnp.stack(xs, axis=-1)
  return jnp.round((x + 1.0) * (num_levels - 1) / 2.0).astype(jnp.int32)
