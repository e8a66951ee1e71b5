"""The semi-supervised VAE M2: Kingma, Rezende, Mohamed & Welling, "Semi-supervised Learning
with Deep Generative Models", 2014, arXiv 1406.5298 (Sec. 3.1.2, 3.2, Eqs. 6-9).

Generative model (Eq. 2): p(y) = Cat(y; uniform over K classes), p(z) = N(z; 0, I),
p(x | y, z) = Bernoulli(x; MLP([y, z])). Inference networks (Eqs. 4-5):
q(z | x, y) = N(z; mu(x, y), diag sigma^2(x, y)) and q(y | x) = Cat(y; softmax(MLP(x))).

Bounds on log p(x, y) and log p(x) (Eqs. 6-7), with one reparameterized z and the analytic KL:

  -L(x, y) = E_q(z|x,y)[-log p(x | y, z)] + KL(q(z | x, y) || p(z)) - log p(y)
  -U(x)    = sum_y q(y | x) (-L(x, y)) - H(q(y | x))

U marginalizes y exactly: every class's L(x, y) is evaluated, vectorized over a leading
class axis. By Jensen, U(x) <= log sum_y exp L(x, y), with equality when q(y | x) is the
model's own posterior softmax_y L(x, y); in expectation over z, L(x, y) <= log p(x, y), so
-U(x) is an upper bound on -log p(x) (reported as 'nll').

Objective (Eq. 9): J^alpha = sum_labelled L + sum_unlabelled U + alpha_paper E_labelled[-log
q(y | x)], alpha_paper = 0.1 N. Here it is normalized per example of the batch:

  objective = 1/B sum_b [ labelled_b ? -L(x_b, y_b) + alpha (-log q(y_b | x_b)) : -U(x_b) ]

so the learning rate does not depend on the batch size. `alpha` is the weight of one
labelled example's classification loss relative to one example's bound. The paper's balance
(the classification term 0.1 times the whole data set's bound) is alpha = 0.1 N_u / N_l
when labelled examples come at their natural rate (about 60 for 100 labels of 60,000), and
alpha = 0.1 B_u / B_l when each batch holds B_u unlabelled and B_l labelled examples
(experiments/input_pipeline.py's `labelled_batch_size`); see `alpha` below for the default.

Batches: 'image' [B, H, W, C] in {0, 1}, 'label' [B] and optionally 'labelled' [B] (bool;
absent means no example is labelled, as in evaluation batches). Labels of examples with
'labelled' False never enter the objective; they only score the 'error' metric.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent import distributions as dist
from latent.vae import ACTIVATIONS, MLP


class JointEncoder(nn.Module):
  """An MLP on the concatenation [x, one_hot(y)], evaluated for every class at once.

  A dense layer on a concatenation is the sum of dense layers on its parts, so the first
  layer's x part (the widest product, D_x x hidden) is computed once per example rather than
  once per (class, example).
  """
  hidden: Sequence[int]
  out: int
  activation: str = 'softplus'

  @nn.compact
  def __call__(self, x, y_onehot):
    """x [B, D_x], y_onehot [..., B, K] -> [..., B, out]."""
    act = ACTIVATIONS[self.activation]
    if not self.hidden:
      return (nn.Dense(self.out, name='x_proj')(x)
              + nn.Dense(self.out, use_bias=False, name='y_proj')(y_onehot))
    h = (nn.Dense(self.hidden[0], name='x_proj')(x)
         + nn.Dense(self.hidden[0], use_bias=False, name='y_proj')(y_onehot))
    return MLP(tuple(self.hidden[1:]), self.out, self.activation, name='mlp')(act(h))


class M2(nn.Module):
  """M2 on binary images.

  Attributes:
    image_shape: (H, W, C) of the data.
    num_classes: K, the label classes.
    latent_dim: units of z (50 in the paper).
    hidden_dims: hidden layer widths of each of the three networks (the paper: one layer of
      500 units).
    activation: 'softplus' (the paper), 'tanh', 'relu' or 'elu'.
    alpha: the weight of a labelled example's classification loss -log q(y | x) relative to
      one example's bound, in the per-example objective above. The default 0.1 is the
      paper's alpha = 0.1 N when batches hold as many labelled as unlabelled examples
      (0.1 B_u / B_l); configs set it for their batch composition.
  """
  image_shape: Sequence[int] = (28, 28, 1)
  num_classes: int = 10
  latent_dim: int = 50
  hidden_dims: Sequence[int] = (500,)
  activation: str = 'softplus'
  alpha: float = 0.1

  @property
  def num_dims(self) -> int:
    return int(math.prod(self.image_shape))

  def setup(self):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation={self.activation!r}; choose one of {sorted(ACTIVATIONS)}.')
    if self.num_classes < 2:
      raise ValueError(f'num_classes={self.num_classes}: M2 needs at least two classes.')
    if self.alpha < 0:
      raise ValueError(f'alpha={self.alpha} must be >= 0.')
    hidden = tuple(self.hidden_dims)
    self.classifier = MLP(hidden, self.num_classes, self.activation)      # q(y | x)
    self.encoder = JointEncoder(hidden, 2 * self.latent_dim, self.activation)  # q(z | x, y)
    self.decoder = MLP(hidden[::-1], self.num_dims, self.activation)      # p(x | y, z)

  # -- Networks ----------------------------------------------------------------------------

  def _flat(self, image):
    return image.astype(jnp.float32).reshape(image.shape[0], -1)

  def _onehot(self, label):
    return jax.nn.one_hot(label, self.num_classes)

  def _posterior(self, x, y_onehot):
    mean, log_var = jnp.split(self.encoder(x, y_onehot), 2, axis=-1)
    return mean, log_var

  def _decoder_logits(self, z, y_onehot):
    return self.decoder(jnp.concatenate([y_onehot, z], axis=-1))

  # -- Bounds --------------------------------------------------------------------------------

  def labelled_bound(self, image, label, eps):
    """-L(x, y) per example [B] for labels [B], with z = mu + sigma * eps (eps [B, D]).

    Also returns its parts: the reconstruction term -log p(x | y, z) and the KL."""
    x = self._flat(image)
    y = jnp.broadcast_to(self._onehot(label), x.shape[:-1] + (self.num_classes,))
    return self._neg_elbo(x, y, eps)

  def _neg_elbo(self, x, y_onehot, eps):
    """-L for x [B, D_x] and labels y_onehot [..., B, K] (leading class axes broadcast)."""
    mean, log_var = self._posterior(x, y_onehot)
    z = mean + jnp.exp(0.5 * log_var) * eps
    logits = self._decoder_logits(z, y_onehot)
    nb = logits.ndim - 1
    recon = -dist.bernoulli_log_prob(x, logits, batch_ndim=nb)
    kl = dist.gaussian_kl_to_standard(mean, log_var, batch_ndim=nb)
    return recon + kl + math.log(self.num_classes), recon, kl

  def all_class_bounds(self, image, eps):
    """-L(x, y) for every class: [K, B], from eps [K, B, D] (one z per class and example),
    and the parts (reconstruction, KL), each [K, B]."""
    x = self._flat(image)
    y = jnp.broadcast_to(jnp.eye(self.num_classes)[:, None, :],
                         (self.num_classes, x.shape[0], self.num_classes))
    return self._neg_elbo(x, y, eps)

  def classify(self, image):
    """Logits of q(y | x) [B, K]."""
    return self.classifier(self._flat(image))

  def _bounds(self, image, eps):
    neg_l, recon, kl = self.all_class_bounds(image, eps)
    logits = self.classify(image)
    log_q = jax.nn.log_softmax(logits)
    q = jnp.exp(log_q)
    neg_u = jnp.sum(q * (neg_l.T + log_q), axis=-1)
    parts = {'recon': jnp.sum(q * recon.T, axis=-1), 'kl': jnp.sum(q * kl.T, axis=-1)}
    return neg_u, logits, neg_l, parts

  def unlabelled_bound(self, image, eps):
    """-U(x) [B] = sum_y q(y|x) (-L(x, y)) + sum_y q(y|x) log q(y|x), from eps [K, B, D].

    Returns (-U, logits of q(y|x) [B, K], -L for every class [K, B])."""
    return self._bounds(image, eps)[:3]

  def loss(self, batch, train: bool = True):
    """The per-example objective -J^alpha / B (module docstring) and metrics per example:
    'nll' (-U(x), an upper bound on -log p(x), for every example), 'error' (argmax q(y|x)
    != label), 'class_nll' (-log q(y|x) where the label is known: 'labelled' examples, or
    every example when the batch has no 'labelled' field, as in evaluation), and 'recon',
    'kl' (the q(y|x)-weighted parts of -U)."""
    del train   # the same bound in training and evaluation
    image = batch['image']
    b = image.shape[0]
    has_flags = 'labelled' in batch
    labelled = batch['labelled'].astype(bool) if has_flags else jnp.zeros((b,), bool)
    label = batch.get('label')
    if label is None:
      if has_flags:
        raise ValueError("A batch with a 'labelled' field needs 'label'.")
      label = jnp.zeros((b,), jnp.int32)
    eps = jax.random.normal(self.make_rng('sample'), (self.num_classes, b, self.latent_dim))
    neg_u, logits, neg_l_all, parts = self._bounds(image, eps)
    # -L(x, y) at the given label, with that class's noise (one reparameterized sample).
    onehot = self._onehot(label)
    neg_l = jnp.sum(onehot * neg_l_all.T, axis=-1)
    class_nll = -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)
    per_example = jnp.where(labelled, neg_l + self.alpha * class_nll, neg_u)
    known = labelled if has_flags else jnp.ones((b,), bool)
    metrics = {'nll': neg_u, 'class_nll': jnp.where(known, class_nll, 0.0), **parts}
    if 'label' in batch:
      metrics['error'] = (jnp.argmax(logits, -1) != label).astype(jnp.float32)
    return per_example.mean(), metrics

  # -- Pictures ------------------------------------------------------------------------------

  def encode(self, image, label):
    """The posterior mean of q(z | x, y) [B, latent_dim]."""
    return self._posterior(self._flat(image), self._onehot(label))[0]

  def decode(self, z, label, rng=None):
    """The mean image on [0, 1] [B, H, W, C] of p(x | y, z). `rng` is unused (the mean is
    deterministic); it is accepted so callers can treat all decoders alike."""
    del rng
    logits = self._decoder_logits(z, self._onehot(label))
    return jax.nn.sigmoid(logits).reshape((z.shape[0],) + tuple(self.image_shape))

  def sample(self, rng, shape, temperature: float = 1.0, label=None):
    """x ~ p(x | y, z), z ~ N(0, temperature^2 I), y = label or uniform: integer images
    [N, H, W, C] in {0, 1}. label: [N] class ids (one row per class in sample grids)."""
    if tuple(shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'M2 samples have shape [N, {tuple(self.image_shape)}], asked for {shape}.')
    n = shape[0]
    k_y, k_z, k_x = jax.random.split(rng, 3)
    if label is None:
      label = jax.random.randint(k_y, (n,), 0, self.num_classes)
    label = jnp.broadcast_to(jnp.asarray(label), (n,))
    z = temperature * jax.random.normal(k_z, (n, self.latent_dim))
    logits = self._decoder_logits(z, self._onehot(label))
    x = jax.random.bernoulli(k_x, jax.nn.sigmoid(logits)).astype(jnp.int32)
    return x.reshape((n,) + tuple(self.image_shape))
