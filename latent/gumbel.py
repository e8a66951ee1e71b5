"""Gumbel-softmax / Concrete relaxations of discrete latents, and a VAE trained with them.

Jang, Gu & Poole, "Categorical Reparameterization with Gumbel-Softmax", 2017, arXiv
1611.01144; Maddison, Mnih & Teh, "The Concrete Distribution", 2017, arXiv 1611.00712.

A categorical z with class probabilities pi = softmax(logits) is relaxed to

  y = softmax((logits + g) / tau),   g_k ~ Gumbel(0, 1) i.i.d.                (Jang Eq. 2)

a point of the simplex that becomes one-hot as tau -> 0, and a Bernoulli unit with logit a to
its binary Concrete y = sigmoid((a + l) / tau), l ~ Logistic(0, 1) (Maddison Sec. 3.3, the
two-class case). Both are reparameterized: the gradient flows through y to the logits.

- estimator 'gumbel': the decoder sees y. 'straight_through' (Jang Sec. 2.2): it sees the
  discrete one-hot argmax of y (a binary unit: y > 1/2) in the forward pass and the
  gradient of y in the backward pass.
- The temperature tau is annealed as in Jang Sec. 4: tau_t = max(min_temperature,
  temperature * exp(-anneal_rate * t)), with t the training step rounded down to a multiple
  of anneal_every (their released code recomputes tau every 1000 steps).
- kl='categorical' (Jang Sec. 4.2): the KL of the discrete q(z | x) from the categorical
  prior in closed form, sum_k pi_k log(pi_k / p_k), with the reconstruction term on the
  relaxed sample (not a bound on the relaxed model, Maddison Sec. 3.4, but their choice).
- kl='relaxed' (Maddison Sec. 3.4 and Appendix C): the ELBO of the relaxed model itself,
  E_y[log p(x | y) + log rho(y) - log q(y | x)], with q the Concrete of temperature tau and
  rho the Concrete with the prior's location at temperature prior_temperature (their
  binary setting: tau = 2/3 for q, 1/2 for the prior, Appendix D.5); both densities
  are taken in the numerically stable log-space (ExpConcrete: y = log_softmax(.) for a
  categorical, the logit (a + l) / tau for a binary unit; Maddison Appendix C.3-C.4).

The model a researcher evaluates is the discrete one, p(z) the (learned or uniform) prior
and p(x | z) the decoder at a one-hot (binary) z: `log_weights` draw discrete z ~ q(z | x), so the
k = 5000 importance-sampled log-likelihood of the VAE family (latent/iwae.py) and the 'elbo' of
evaluation (one discrete sample, the exact KL) are those of the discrete model, whatever relaxation
trained it. The relaxed objective at the final temperature is reported beside them as
'relaxed_loss'.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent import estimators as est
from latent import iwae
from latent.vae import MLP

LATENT_TYPES = ('categorical', 'bernoulli')
RELAXED_ESTIMATORS = ('gumbel', 'straight_through')
KLS = ('categorical', 'relaxed')

sg = jax.lax.stop_gradient


# -- Relaxations and their densities ------------------------------------------------------

def gumbel_softmax(rng, logits, temperature, hard: bool = False):
  """A relaxed one-hot sample over the last axis; hard: the straight-through one-hot."""
  y = jax.nn.softmax((logits + jax.random.gumbel(rng, logits.shape, logits.dtype))
                     / temperature, axis=-1)
  return straight_through(y, one_hot_argmax(y)) if hard else y


def binary_concrete(rng, logits, temperature, hard: bool = False):
  """A relaxed Bernoulli sample sigmoid((a + l) / tau) per unit; hard: y > 1/2 forward."""
  y = jax.nn.sigmoid((logits + jax.random.logistic(rng, logits.shape, logits.dtype))
                     / temperature)
  return straight_through(y, (y > 0.5).astype(y.dtype)) if hard else y


def one_hot_argmax(y):
  return jax.nn.one_hot(jnp.argmax(y, axis=-1), y.shape[-1], dtype=y.dtype)


def straight_through(soft, hard):
  """Equal to `hard`, with the gradient of `soft`."""
  return soft + sg(hard - soft)


def exp_concrete_sample(rng, logits, temperature):
  """ExpConcrete: y = log_softmax((logits + g) / tau), so exp(y) is a Gumbel-softmax draw."""
  g = jax.random.gumbel(rng, logits.shape, logits.dtype)
  return jax.nn.log_softmax((logits + g) / temperature, axis=-1)


def exp_concrete_log_prob(y, logits, temperature):
  """log density of the ExpConcrete(alpha = exp(logits), tau) at y (last axis, n classes),
  Maddison Eq. 26: log (n-1)! + (n-1) log tau + sum_k (log alpha_k - tau y_k)
  - n logsumexp_k (log alpha_k - tau y_k). Invariant to a shift of the logits.

  The density is symmetric in the classes, so it is taken against the symmetric measure
  e^{y_n} dy_1 ... dy_{n-1} on the log-simplex; against Lebesgue measure on y_1..y_{n-1} it
  is this minus y_n (tests/test_gumbel.py integrates both). A log ratio of two ExpConcrete
  densities, the relaxed KL's, is the same under either."""
  n = y.shape[-1]
  a = logits - temperature * y
  return (math.lgamma(n) + (n - 1) * jnp.log(temperature) + a.sum(-1)
          - n * jax.nn.logsumexp(a, axis=-1))


def logistic_concrete_sample(rng, logits, temperature):
  """The logit of a binary Concrete draw, (a + l) / tau, l ~ Logistic(0, 1)."""
  return (logits + jax.random.logistic(rng, logits.shape, logits.dtype)) / temperature


def logistic_concrete_log_prob(y, logits, temperature):
  """log density of the logit y of a binary Concrete(alpha = exp(a), tau), Maddison
  Appendix C.4: log tau + (a - tau y) - 2 softplus(a - tau y)."""
  z = logits - temperature * y
  return jnp.log(temperature) + z - 2.0 * jax.nn.softplus(z)


def annealed_temperature(step, temperature: float, min_temperature: float,
                         anneal_rate: float, anneal_every: int):
  """Jang Sec. 4: max(min_temperature, temperature * exp(-anneal_rate * t)), t = step
  rounded down to a multiple of anneal_every (anneal_rate = 0: the constant temperature)."""
  if anneal_rate == 0:
    return jnp.asarray(temperature, jnp.float32)
  t = (jnp.asarray(step) // anneal_every) * anneal_every
  return jnp.maximum(min_temperature,
                     temperature * jnp.exp(-anneal_rate * t.astype(jnp.float32)))


class GumbelVAE(nn.Module):
  """A VAE with discrete latents trained through a Gumbel-softmax / Concrete relaxation.

  Attributes:
    image_shape: (H, W, C) of the binary data.
    latent_type: 'categorical' (num_latents variables of num_categories classes each,
      the decoder reading their one-hot vectors concatenated) or 'bernoulli' (num_latents
      binary units).
    num_latents, num_categories: the discrete code's size.
    encoder_hidden, decoder_hidden: ReLU layers of the x -> logits and z -> x MLPs.
    estimator: 'gumbel' or 'straight_through'.
    temperature: tau at step 0; min_temperature, anneal_rate, anneal_every: the schedule
      (anneal_rate = 0: tau fixed at `temperature`).
    kl: 'categorical' (Jang) or 'relaxed' (Maddison).
    prior_temperature: the prior Concrete's temperature for kl='relaxed'.
    learned_prior: learn the prior's class (unit) logits, as Jang Sec. 4.2 does ("a
      learned categorical prior"); False: the uniform prior of their released notebook.
    eval_num_samples, eval_chunk_size: the importance-sampled evaluation (0: the ELBO).
  """
  image_shape: Sequence[int] = (28, 28, 1)
  latent_type: str = 'categorical'
  num_latents: int = 30
  num_categories: int = 10
  encoder_hidden: Sequence[int] = (512, 256)
  decoder_hidden: Sequence[int] = (256, 512)
  estimator: str = 'gumbel'
  temperature: float = 1.0
  min_temperature: float = 0.5
  anneal_rate: float = 3e-5
  anneal_every: int = 1000
  kl: str = 'categorical'
  prior_temperature: float = 0.5
  learned_prior: bool = True
  eval_num_samples: int = 0
  eval_chunk_size: int = 100

  @property
  def num_dims(self) -> int:
    return int(math.prod(self.image_shape))

  @property
  def _classes(self) -> int:
    return self.num_categories if self.latent_type == 'categorical' else 2

  @property
  def code_dim(self) -> int:
    """Width of the code the decoder reads (and `encode` returns)."""
    return self.num_latents * (self.num_categories if self.latent_type == 'categorical' else 1)

  def setup(self):
    self.check()
    self.encoder = MLP(tuple(self.encoder_hidden), self.code_dim, activation='relu')
    self.decoder = MLP(tuple(self.decoder_hidden), self.num_dims, activation='relu')
    shape = ((self.num_latents, self.num_categories) if self.latent_type == 'categorical'
             else (self.num_latents,))
    if self.learned_prior:
      self.prior_logits = self.param('prior_logits', nn.initializers.zeros, shape)
    else:
      self.prior_logits = jnp.zeros(shape, jnp.float32)

  def check(self):
    if self.latent_type not in LATENT_TYPES:
      raise ValueError(f'latent_type={self.latent_type!r}; choose one of '
                       f'{", ".join(LATENT_TYPES)} (config.model.latent_type).')
    if self.estimator not in RELAXED_ESTIMATORS:
      raise ValueError(f'estimator={self.estimator!r} is not a relaxed estimator; choose one '
                       f'of {", ".join(RELAXED_ESTIMATORS)} (config.model.estimator). The '
                       'score-function estimators are latent/sbn.py\'s.')
    if self.kl not in KLS:
      raise ValueError(f'kl={self.kl!r}; choose one of {", ".join(KLS)} (config.model.kl).')
    if int(self.num_latents) < 1:
      raise ValueError(f'num_latents={self.num_latents} must be >= 1 (config.model.num_latents).')
    if self.latent_type == 'categorical' and int(self.num_categories) < 2:
      raise ValueError(f'num_categories={self.num_categories} must be >= 2 for categorical '
                       'latents (config.model.num_categories).')
    for name in ('temperature', 'min_temperature', 'prior_temperature'):
      if not getattr(self, name) > 0:
        raise ValueError(f'{name}={getattr(self, name)} must be > 0 (config.model.{name}): '
                         'a relaxation at temperature 0 is the discrete sample, with no '
                         'gradient.')
    if self.anneal_rate < 0 or int(self.anneal_every) < 1:
      raise ValueError(f'anneal_rate={self.anneal_rate} must be >= 0 and anneal_every='
                       f'{self.anneal_every} >= 1 (config.model.anneal_*).')

  def _flat(self, image):
    return image.reshape(image.shape[:-3] + (-1,)).astype(jnp.float32)

  def _logits(self, x):
    """[..., N, K] class logits (categorical) or [..., N] unit logits (bernoulli)."""
    out = self.encoder(x)
    if self.latent_type == 'categorical':
      return out.reshape(out.shape[:-1] + (self.num_latents, self.num_categories))
    return out

  def _code(self, z):
    return z.reshape(z.shape[:-2] + (-1,)) if self.latent_type == 'categorical' else z

  def _log_px(self, x, code):
    return est.bernoulli_log_prob(x, self.decoder(code))

  def _exact_kl(self, logits):
    """KL(q(z | x) || p(z)) of the discrete code in closed form, summed over the latents."""
    if self.latent_type == 'categorical':
      logq = jax.nn.log_softmax(logits, axis=-1)
      logp = jax.nn.log_softmax(self.prior_logits, axis=-1)
      return (jnp.exp(logq) * (logq - logp)).sum((-2, -1))
    q, a = jax.nn.sigmoid(logits), self.prior_logits
    return (q * (jax.nn.log_sigmoid(logits) - jax.nn.log_sigmoid(a))
            + (1 - q) * (jax.nn.log_sigmoid(-logits) - jax.nn.log_sigmoid(-a))).sum(-1)

  def current_temperature(self, step=None):
    """tau at a training step; the final (annealed) temperature when step is None."""
    if step is None:
      return jnp.asarray(self.min_temperature if self.anneal_rate > 0 else self.temperature,
                         jnp.float32)
    return annealed_temperature(step, self.temperature, self.min_temperature,
                                self.anneal_rate, self.anneal_every)

  def relaxed_objective(self, x, logits, rng, tau):
    """Per-example (objective to maximize, reconstruction term, KL term) at temperature tau."""
    hard = self.estimator == 'straight_through'
    if self.kl == 'categorical':
      if self.latent_type == 'categorical':
        z = gumbel_softmax(rng, logits, tau, hard)
      else:
        z = binary_concrete(rng, logits, tau, hard)
      rec = self._log_px(x, self._code(z))
      kl = self._exact_kl(logits)
      return rec - kl, rec, kl
    # The relaxed model's own ELBO, in log space.
    if self.latent_type == 'categorical':
      y = exp_concrete_sample(rng, logits, tau)
      log_q = exp_concrete_log_prob(y, logits, tau).sum(-1)
      log_prior = exp_concrete_log_prob(y, jnp.broadcast_to(self.prior_logits, logits.shape),
                                        self.prior_temperature).sum(-1)
      z = jnp.exp(y)
      z = straight_through(z, one_hot_argmax(z)) if hard else z
    else:
      y = logistic_concrete_sample(rng, logits, tau)
      log_q = logistic_concrete_log_prob(y, logits, tau).sum(-1)
      log_prior = logistic_concrete_log_prob(
          y, jnp.broadcast_to(self.prior_logits, logits.shape), self.prior_temperature).sum(-1)
      z = jax.nn.sigmoid(y)
      z = straight_through(z, (y > 0).astype(z.dtype)) if hard else z
    rec = self._log_px(x, self._code(z))
    kl = log_q - log_prior
    return rec - kl, rec, kl

  # -- The discrete model -----------------------------------------------------------------

  def discrete_sample(self, logits, rng):
    """z ~ q(z | x) discrete (one-hot [.., N, K] or binary [.., N]) and log q(z | x)."""
    if self.latent_type == 'categorical':
      idx = jax.random.categorical(rng, logits, axis=-1)
      z = jax.nn.one_hot(idx, self.num_categories, dtype=logits.dtype)
      log_q = (z * jax.nn.log_softmax(logits, axis=-1)).sum((-2, -1))
    else:
      z = est.bernoulli_sample(rng, logits)
      log_q = est.bernoulli_log_prob(z, logits)
    return sg(z), log_q

  def log_prior(self, z):
    """log p(z) [...] of discrete codes (one-hot [..., N, K] or binary [..., N])."""
    if self.latent_type == 'categorical':
      return (z * jax.nn.log_softmax(self.prior_logits, axis=-1)).sum((-2, -1))
    return est.bernoulli_log_prob(z, jnp.broadcast_to(self.prior_logits, z.shape))

  def log_weights(self, image, rng, num_samples: int):
    """[K, B] log p(x, z) - log q(z | x) of the discrete model, z ~ q(z | x) discrete."""
    x = self._flat(image)
    logits = self._logits(x)
    logits = jnp.broadcast_to(logits, (num_samples,) + logits.shape)
    z, log_q = self.discrete_sample(logits, rng)
    return self._log_px(x, self._code(z)) + self.log_prior(z) - log_q

  def log_likelihood(self, image, rng, num_samples: int = 5000):
    """Importance-sampled log p(x) of the discrete model, k = num_samples, proposal q."""
    return iwae.log_likelihood(lambda r, n: self.log_weights(image, r, n), rng,
                               num_samples, self.eval_chunk_size)

  # -- Training ---------------------------------------------------------------------------

  def loss(self, batch, train: bool = True, step=None):
    """The negated relaxed ELBO at the step's temperature (nats per example).

    Metrics: in training 'nll' is that loss; in evaluation 'nll' is -log p(x) of the
    discrete model (importance-sampled, eval_num_samples) or its negated ELBO, 'elbo' the
    discrete model's one-sample ELBO with the exact KL, 'relaxed_loss' the training
    objective at the final temperature; 'recon', 'kl' and 'temperature' as trained."""
    x = self._flat(batch['image'])
    rng = self.make_rng('sample')
    k_relax, k_disc, k_eval = jax.random.split(rng, 3)
    logits = self._logits(x)
    tau = self.current_temperature(step if train else None)
    obj, rec, kl = self.relaxed_objective(x, logits, k_relax, tau)
    metrics = {'nll': -obj, 'recon': -rec, 'kl': kl,
               'temperature': jnp.broadcast_to(tau, obj.shape)}
    if not train:
      z, log_q = self.discrete_sample(logits, k_disc)
      elbo = self._log_px(x, self._code(z)) - self._exact_kl(logits)
      metrics.update(relaxed_loss=-obj, elbo=elbo, nll=-elbo)
      if self.eval_num_samples > 0:
        metrics['nll'] = -self.log_likelihood(batch['image'], k_eval, self.eval_num_samples)
    return -obj.mean(), metrics

  # -- Pictures and samples ---------------------------------------------------------------

  def encode(self, image):
    """q(z | x)'s class probabilities (unit probabilities), flattened [B, code_dim]."""
    logits = self._logits(self._flat(image))
    if self.latent_type == 'categorical':
      return self._code(jax.nn.softmax(logits, axis=-1))
    return jax.nn.sigmoid(logits)

  def decode(self, code):
    """The mean image p(x = 1 | z) on [0, 1] for a code [B, code_dim]."""
    return jax.nn.sigmoid(self.decoder(code)).reshape(code.shape[:-1] + tuple(self.image_shape))

  def _prior_codes(self, rng, n: int):
    """Discrete codes [n, code_dim] drawn from p(z)."""
    logits = jnp.broadcast_to(self.prior_logits, (n,) + self.prior_logits.shape)
    z, _ = self.discrete_sample(logits, rng)
    return self._code(z)

  def sample_means(self, rng, n: int, temperature: float = 1.0):
    """Mean images p(x = 1 | z) for discrete z drawn from the prior."""
    del temperature
    return self.decode(self._prior_codes(rng, n))

  def sample(self, rng, shape, temperature: float = 1.0):
    """Binary images [N, H, W, C] from the discrete model: z ~ p(z), x ~ p(x | z)."""
    del temperature
    if tuple(shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'GumbelVAE samples have shape [N, {tuple(self.image_shape)}], '
                       f'asked for {shape}.')
    k_z, k_x = jax.random.split(rng)
    x = est.bernoulli_sample(k_x, self.decoder(self._prior_codes(k_z, shape[0])))
    return x.reshape(tuple(shape)).astype(jnp.int32)
