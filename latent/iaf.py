"""An inverse autoregressive flow posterior for VAEs (Kingma, Salimans, Jozefowicz, Chen,
Sutskever & Welling, "Improved Variational Inference with Inverse Autoregressive Flow",
NeurIPS 2016, arXiv 1606.04934, Sec. 4 and Algorithm 1).

The encoder gives mu(x), sigma(x) and a context vector h(x); z_0 = mu + sigma * eps with
eps ~ N(0, I), then T IAF steps (flows/bijectors.py: IAF)

    [m_t, s_t] = MADE_t(z_{t-1}, h),  sigma_t = sigmoid(s_t + forget_bias),
    z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t,

each with the reverse variable ordering of the one before (the paper reverses the order
between steps), and

    log q(z_T | x) = log N(z_0; mu, sigma^2) - sum_t sum_i log sigma_t,i.

Sampling and the density of a sample take one MADE pass per step; the density of an
arbitrary z (`log_prob`) inverts the steps with D sequential passes each.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from flows import bijectors as fb
from latent import distributions as dist


class IAFPosterior(nn.Module):
  """T IAF steps on z [..., D] conditioned on h [..., C] (leading axes broadcast: e.g.
  z [k, B, D] for k samples per example with h [B, C])."""
  num_steps: int = 2
  hidden_sizes: Sequence[int] = (320, 320)
  forget_bias: float = 1.0

  def setup(self):
    self.steps = [fb.IAF(hidden_sizes=tuple(self.hidden_sizes),
                         input_order='natural' if t % 2 == 0 else 'reversed',
                         forget_bias=self.forget_bias, name=f'step_{t}')
                  for t in range(self.num_steps)]

  def _run(self, z, context, inverse: bool):
    lead, d = z.shape[:-1], z.shape[-1]
    ctx = jnp.broadcast_to(context, lead + context.shape[-1:]).reshape(-1, context.shape[-1])
    z = z.reshape(-1, d)
    log_det = jnp.zeros((z.shape[0],), jnp.float32)
    for step in (reversed(self.steps) if inverse else self.steps):
      z, ld = step(z, inverse=inverse, context=ctx)
      log_det = log_det + ld
    return z.reshape(lead + (d,)), log_det.reshape(lead)

  def __call__(self, z0, context):
    """z_0 -> (z_T, sum_t log|dz_t/dz_{t-1}| = sum log sigma) per leading index."""
    return self._run(z0, context, inverse=False)

  def inverse(self, z_t, context):
    """z_T -> (z_0, log|dz_0/dz_T|), by D sequential MADE passes per step."""
    return self._run(z_t, context, inverse=True)

  def sample(self, eps, mean, log_var, context):
    """z_T and log q(z_T | x) from base noise eps [..., D] (broadcast against mean)."""
    z0 = mean + jnp.exp(0.5 * log_var) * eps
    log_q0 = dist.gaussian_log_prob(z0, mean, log_var, batch_ndim=z0.ndim - 1)
    z, log_det = self(z0, context)
    return z, log_q0 - log_det

  def log_prob(self, z, mean, log_var, context):
    """log q(z | x) of given z [..., D] by the inverse of the flow."""
    z0, log_det = self.inverse(z, context)
    return dist.gaussian_log_prob(z0, mean, log_var, batch_ndim=z.ndim - 1) + log_det
