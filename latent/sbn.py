"""Sigmoid belief networks trained by wake-sleep, reweighted wake-sleep, REINFORCE, NVIL or
VIMCO.

Neal, "Connectionist learning of belief networks", 1992: layers of binary units,

  p(x, h_1..h_L) = p(h_L) prod_{l=2..L} p(h_{l-1} | h_l) p(x | h_1),
  p(h_L) = prod_i Bernoulli(sigmoid(b_i)),  p(h_{l-1} | h_l) = Bernoulli(sigmoid(W_l h_l + b_l)),

with a factorial sigmoid recognition network, bottom-up, of the same shape (Hinton et al.
1995; Mnih & Gregor 2014, Sec. 5.1): q(h_1 | x) q(h_2 | h_1) ... q(h_L | h_{L-1}), each a
linear layer and a sigmoid. latent_dims = (200,) is the one-layer SBN 200 of the NVIL and
wake-sleep tables, (200, 200, 200) the three-layer SBN 200-200-200 of NVIL, VIMCO and RWS.

The estimators (latent/estimators.py) are surrogates routed by stop_gradient, so the one
train step serves every rule. Every model reports the same numbers: 'elbo' (one sample from
q), 'bound' (L_K of the K training samples) and 'nll' (in training the negated bound the
estimator targets: -ELBO for wake-sleep, REINFORCE and NVIL, -L_K for RWS and VIMCO; in
evaluation with eval_num_samples > 0 the importance-sampled estimate of -log p(x) with q as
the proposal, Burda et al. 2016, arXiv 1509.00519, Sec. 5).
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent import estimators as est
from latent import iwae


def check_dims(name: str, dims) -> None:
  dims = tuple(dims)
  if not dims or any(int(d) < 1 for d in dims):
    raise ValueError(f'{name}={dims} needs at least one layer and every layer >= 1 unit '
                     f'(e.g. --config.model.{name}="(200,)").')


class EstimatedLoss:
  """The loss, log weights and importance-sampled likelihood of a model with binary latents,
  shared by SBN and DARN. The model gives q_sample(x, rng, K) -> (hs, log q),
  q_log_prob(x, hs), joint_log_prob(x, hs), log_px(x, h_1), dream(rng, n) -> (hs, x), and
  the fields image_shape, estimator, num_samples, rws_q_update, eval_num_samples,
  eval_chunk_size; NVIL's models also a `baseline` (estimators.NVILBaseline)."""

  @property
  def num_dims(self) -> int:
    return int(math.prod(self.image_shape))

  def _flat(self, image):
    return image.reshape(image.shape[:-3] + (-1,)).astype(jnp.float32)

  def log_weights(self, image, rng, num_samples: int):
    """[K, B] log w = log p(x, h) - log q(h | x), h ~ q(h | x)."""
    x = self._flat(image)
    hs, log_q = self.q_sample(x, rng, num_samples)
    return self.joint_log_prob(x, hs) - log_q

  # -- Training ---------------------------------------------------------------------------

  def loss(self, batch, train: bool = True):
    """Objective: its value is the negated bound the estimator targets (nats per example);
    its gradient is the estimator's (latent/estimators.py). Per-example metrics: 'nll',
    'elbo', 'bound' (L_K), 'recon' (-E log p(x | h_1)), 'kl' (E log q(h|x) - log p(h))."""
    x = self._flat(batch['image'])
    rng = self.make_rng('sample')
    k_q, k_dream, k_eval = jax.random.split(rng, 3)
    hs, log_q = self.q_sample(x, k_q, self.num_samples)
    log_px = self.log_px(x, hs[0])
    log_p = self.joint_log_prob(x, hs)
    log_w = log_p - log_q
    elbo, bound = log_w.mean(0), est.iwae_bound(log_w)
    extra = {}
    sleep = None
    if est.needs_dreams(self.estimator, self.rws_q_update):
      dh, dx = self.dream(k_dream, x.shape[0])
      sleep = self.q_log_prob(dx, dh)
    signal, baseline_loss = None, 0.0
    if self.estimator == 'nvil':
      signal, baseline_loss = self.baseline(x, log_w, train)
      extra['baseline_loss'] = baseline_loss
    surr = est.surrogate(self.estimator, log_p, log_q, signal=signal, sleep_log_q=sleep,
                         rws_q_update=self.rws_q_update) - baseline_loss
    target = bound if self.estimator in ('rws', 'vimco') else elbo
    objective = est.with_value(-target.mean(), -surr.mean())
    metrics = {'nll': -target, 'elbo': elbo, 'bound': bound, 'recon': -log_px.mean(0),
               'kl': (log_px - log_w).mean(0), **extra}
    if not train and self.eval_num_samples > 0:
      metrics['nll'] = -self.log_likelihood(batch['image'], k_eval, self.eval_num_samples)
    return objective, metrics

  def log_likelihood(self, image, rng, num_samples: int = 5000):
    """Importance-sampled log p(x) per example, k = num_samples, proposal q(h | x)."""
    return iwae.log_likelihood(lambda r, n: self.log_weights(image, r, n), rng,
                               num_samples, self.eval_chunk_size)



class SBN(EstimatedLoss, nn.Module):
  """A sigmoid belief network over binary images and its recognition network.

  Attributes:
    image_shape: (H, W, C) of the binary data.
    latent_dims: binary units per layer, from the data upwards: (200,) or (200, 200, 200).
    estimator: 'wake_sleep', 'rws', 'reinforce', 'nvil' or 'vimco'.
    num_samples: K samples of q per training example (RWS, VIMCO: the K of their papers;
      the single-sample estimators average K estimates).
    rws_q_update: RWS's recognition update, 'wake', 'sleep' or 'both'.
    baseline_hidden: tanh units of NVIL's input-dependent baseline (0: none).
    baseline_decay: decay of NVIL's running mean and variance.
    centering, variance_normalization: NVIL's two running-average corrections.
    eval_num_samples, eval_chunk_size: the importance-sampled evaluation (0: the bound).
  """
  image_shape: Sequence[int] = (28, 28, 1)
  latent_dims: Sequence[int] = (200,)
  estimator: str = 'nvil'
  num_samples: int = 1
  rws_q_update: str = 'wake'
  baseline_hidden: int = 100
  baseline_decay: float = 0.8
  centering: bool = True
  variance_normalization: bool = True
  eval_num_samples: int = 0
  eval_chunk_size: int = 100

  def setup(self):
    check_dims('latent_dims', self.latent_dims)
    est.check_estimator(self.estimator, self.num_samples, self.rws_q_update)
    if not 0.0 <= self.baseline_decay < 1.0:
      raise ValueError(f'baseline_decay={self.baseline_decay} must be in [0, 1).')
    dims = [int(d) for d in self.latent_dims]
    self.prior_logits = self.param('prior_logits', nn.initializers.zeros, (dims[-1],))
    # p_nets[0]: h_1 -> x; p_nets[l]: h_{l+1} -> h_l.
    # q_nets[0]: x -> h_1; q_nets[l]: h_l -> h_{l+1}.
    self.p_nets = [nn.Dense(self.num_dims, name='p_x')] + [
        nn.Dense(dims[layer - 1], name=f'p_h{layer}') for layer in range(1, len(dims))]
    self.q_nets = [nn.Dense(dims[0], name='q_h1')] + [
        nn.Dense(dims[layer], name=f'q_h{layer + 1}') for layer in range(1, len(dims))]
    if self.estimator == 'nvil':
      self.baseline = est.NVILBaseline(self.baseline_hidden, self.baseline_decay,
                                       self.centering, self.variance_normalization)

  # -- Densities --------------------------------------------------------------------------

  def q_sample(self, x, rng, num_samples: int):
    """h_1..h_L ~ q(h | x) as [K, B, D_l] constants and log q(h | x) [K, B]."""
    keys = jax.random.split(rng, len(self.q_nets))
    inp = jnp.broadcast_to(x, (num_samples,) + x.shape)
    hs, log_q = [], 0.0
    for net, key in zip(self.q_nets, keys, strict=True):
      logits = net(inp)
      h = est.bernoulli_sample(key, logits)
      log_q = log_q + est.bernoulli_log_prob(h, logits)
      hs.append(h)
      inp = h
    return hs, log_q

  def q_log_prob(self, x, hs):
    """log q(h | x) [...] of given binary h_1..h_L."""
    inp, log_q = jnp.broadcast_to(x, hs[0].shape[:-1] + x.shape[-1:]), 0.0
    for net, h in zip(self.q_nets, hs, strict=True):
      log_q = log_q + est.bernoulli_log_prob(h, net(inp))
      inp = h
    return log_q

  def joint_log_prob(self, x, hs):
    """log p(x, h_1..h_L) [...] (the prior, each layer given the one above, x given h_1)."""
    logits = jnp.broadcast_to(self.prior_logits, hs[-1].shape)
    log_p = est.bernoulli_log_prob(hs[-1], logits)
    for layer in range(len(hs) - 1, 0, -1):
      log_p = log_p + est.bernoulli_log_prob(hs[layer - 1], self.p_nets[layer](hs[layer]))
    return log_p + self.log_px(x, hs[0])

  def log_px(self, x, h1):
    return est.bernoulli_log_prob(x, self.p_nets[0](h1))

  def dream(self, rng, n: int):
    """Ancestral samples (h_1..h_L, x) ~ p as constants: h [n, D_l], x [n, H*W*C]."""
    keys = jax.random.split(rng, len(self.latent_dims) + 1)
    h = est.bernoulli_sample(keys[-1], jnp.broadcast_to(self.prior_logits,
                                                        (n, self.latent_dims[-1])))
    hs = [h]
    for layer in range(len(self.latent_dims) - 1, 0, -1):
      h = est.bernoulli_sample(keys[layer], self.p_nets[layer](h))
      hs.insert(0, h)
    x = est.bernoulli_sample(keys[0], self.p_nets[0](hs[0]))
    return hs, x

  # -- Pictures and samples ---------------------------------------------------------------

  def encode(self, image):
    """q(h_1 = 1 | x) [B, D_1], the point summary the pictures use."""
    return jax.nn.sigmoid(self.q_nets[0](self._flat(image)))

  def decode(self, h1):
    """The mean image p(x = 1 | h_1) on [0, 1], [B, H, W, C]."""
    return jax.nn.sigmoid(self.p_nets[0](h1)).reshape(h1.shape[:-1] + tuple(self.image_shape))

  def sample_means(self, rng, n: int, temperature: float = 1.0):
    """Means p(x = 1 | h_1) for h ancestrally sampled from the prior."""
    del temperature
    hs, _ = self.dream(rng, n)
    return self.decode(hs[0])

  def sample(self, rng, shape, temperature: float = 1.0):
    """Binary images [N, H, W, C] ancestrally sampled from p."""
    del temperature
    if tuple(shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'SBN samples have shape [N, {tuple(self.image_shape)}], asked for {shape}.')
    _, x = self.dream(rng, shape[0])
    return x.reshape(tuple(shape)).astype(jnp.int32)
