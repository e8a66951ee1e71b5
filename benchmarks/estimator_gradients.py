"""Bias and variance of the discrete-latent gradient estimators against exact gradients.

  python -m benchmarks.estimator_gradients            # 20,000 estimates per row
  python -m benchmarks.estimator_gradients --quick    # 2,000, under a minute

The model is a one-layer sigmoid belief net small enough to enumerate (latent/sbn.py with
10 binary latents over 10 binary pixels, random weights of scale 1.5, 4 images drawn from
it), so the exact gradient of each estimator's target in the recognition parameters
(q(h|x)'s 10 x 10 weights and 10 biases) is `jax.grad` of a finite sum
(latent/enumeration.py). For each estimator, N independent estimates g_i of that gradient
(one minibatch of the 4 images each) give, relative to the exact gradient g*:

  bias     = |mean_i g_i - g*| / |g*|     (with its Monte-Carlo standard error
                                           sqrt(tr Cov / N) / |g*|: a bias below ~2 se is
                                           indistinguishable from zero)
  variance = tr Cov(g_i) / |g*|^2         (the squared relative error of one estimate)

Rows: REINFORCE (score function, signal log w), NVIL (its baseline network trained on this
model, centring by the running mean; variance normalization off, since it only rescales),
VIMCO K = 2 (exact L_2 by enumerating 2^10 x 2^10 pairs) and K = 5 (variance only: L_5 is
not enumerable here), RWS's wake-q update at K = 5 and 50 (consistent, biased for finite
K; target the gradient of KL(p(h|x) || q)), wake-sleep's sleep phase (target the gradient
of -E_p log q(h|x), enumerated over all 2^10 images), the Binary Concrete / Gumbel-softmax
relaxation and its straight-through version at several temperatures (target the discrete
ELBO; the relaxed objective's KL is the analytic Bernoulli KL, as Jang et al. 2017), and,
for reference, the reparameterization gradient of a Gaussian VAE with 10 latents and the
same decoder (its own target; bias measured against 10x more estimates). The last line is
a JSON object.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from latent import enumeration, gumbel
from latent import estimators as est
from latent.sbn import SBN

IMAGE = (2, 5, 1)
LATENTS = 10
BATCH = 4


def _flat(tree):
  return jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(tree)])


def make_problem(seed: int = 0, scale: float = 1.5):
  """The NVIL model (a superset of every SBN variant's variables) and 4 images it dreams."""
  model = SBN(image_shape=IMAGE, latent_dims=(LATENTS,), estimator='nvil',
              baseline_hidden=16, variance_normalization=False)
  x0 = jnp.zeros((BATCH,) + IMAGE, jnp.int32)
  k_init, k_w, k_x = jax.random.split(jax.random.key(seed), 3)
  v = model.init({'params': k_init, 'sample': k_init}, {'image': x0}, method='loss')
  leaves, tree = jax.tree.flatten(v['params'])
  keys = jax.random.split(k_w, len(leaves))
  params = jax.tree.unflatten(tree, [scale * jax.random.normal(k, leaf.shape)
                                     for k, leaf in zip(keys, leaves, strict=True)])
  v = {**v, 'params': params}
  _, x = model.apply(v, k_x, BATCH, method='dream')
  return model, v, x.reshape((BATCH,) + IMAGE).astype(jnp.int32)


def train_baseline(model, variables, image, steps: int = 2000):
  """NVIL's baseline network and running averages trained on this fixed model (only the
  baseline's parameters move), as they would be mid-training."""
  tx = optax.adam(1e-2)
  opt = tx.init(variables['params']['baseline'])

  @jax.jit
  def step(v, opt, key):
    def f(b):
      p = {**v['params'], 'baseline': b}
      (_, m), moved = model.apply({**v, 'params': p}, {'image': image}, rngs={'sample': key},
                                  method='loss', mutable=['running'])
      return m['baseline_loss'].mean(), moved
    (_, moved), g = jax.value_and_grad(f, has_aux=True)(v['params']['baseline'])
    upd, opt = tx.update(g, opt)
    b = optax.apply_updates(v['params']['baseline'], upd)
    return {**v, **moved, 'params': {**v['params'], 'baseline': b}}, opt

  for i in range(steps):
    variables, opt = step(variables, opt, jax.random.key(10_000 + i))
  return variables


def exact_gradients(model, variables, image):
  """The exact recognition-parameter gradients of each target (as the objective to
  minimize, the negated bound averaged over the batch), flattened."""
  x = image.reshape(BATCH, -1).astype(jnp.float32)

  def grad_of(fn):
    def f(q):
      v = {**variables, 'params': {**variables['params'], 'q_h1': q}}
      return fn(v)
    return _flat(jax.grad(f)(variables['params']['q_h1']))

  return {
      'elbo': grad_of(lambda v: -enumeration.elbo(model, v, x).mean()),
      'L_2': grad_of(lambda v: -enumeration.iwae_bound_k2(model, v, x).mean()),
      'kl(p||q)': grad_of(lambda v: enumeration.rws_wake_q_target(model, v, x).mean()),
      'sleep': grad_of(lambda v: enumeration.sleep_target(model, v, int(np.prod(IMAGE)))),
  }


def sbn_estimator(estimator: str, k: int = 1, rws_q_update: str = 'wake'):
  """f(variables, image, key) -> one estimate of the recognition gradient (flattened)."""
  m = SBN(image_shape=IMAGE, latent_dims=(LATENTS,), estimator=estimator, num_samples=k,
          rws_q_update=rws_q_update, baseline_hidden=16, variance_normalization=False)

  def f(variables, image, key):
    def obj(q):
      v = {**variables, 'params': {**variables['params'], 'q_h1': q}}
      return m.apply(v, {'image': image}, rngs={'sample': key}, method='loss')[0]
    return _flat(jax.grad(obj)(variables['params']['q_h1']))
  return f


def relaxed_estimator(temperature: float, straight_through: bool = False):
  """The Binary Concrete (Gumbel-softmax with two classes) gradient of the relaxed ELBO:
  y = sigmoid((logit + logistic noise) / tau) fed to the decoder (straight-through: the
  rounded y forward, y's gradient backward), minus the analytic KL(q || p) of the
  unrelaxed Bernoullis (Jang et al. 2017, arXiv 1611.01144; Maddison et al. 2017,
  arXiv 1611.00712)."""
  m = SBN(image_shape=IMAGE, latent_dims=(LATENTS,), estimator='reinforce')

  def f(variables, image, key):
    x = image.reshape(BATCH, -1).astype(jnp.float32)
    prior = variables['params']['prior_logits']

    def obj(q):
      v = {**variables, 'params': {**variables['params'], 'q_h1': q}}
      logits = m.apply(v, x, method=lambda mod, x: mod.q_nets[0](x))
      y = gumbel.binary_concrete(key, logits, temperature, hard=straight_through)
      log_px = m.apply(v, x, y, method='log_px')
      pq, lq, lq0 = jax.nn.sigmoid(logits), jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
      kl = (pq * (lq - jax.nn.log_sigmoid(prior))
            + (1 - pq) * (lq0 - jax.nn.log_sigmoid(-prior))).sum(-1)
      return -(log_px - kl).mean()
    return _flat(jax.grad(obj)(variables['params']['q_h1']))
  return f


def gaussian_vae_estimator(variables):
  """A Gaussian VAE with 10 latents and the SBN's decoder p(x | z) = sigmoid(W z + b): the
  reparameterization gradient of its ELBO (analytic KL) in the encoder's mean and log-variance
  layers (each 10 x 10 + 10, initialized like the SBN's recognition layer and half of it)."""
  q = variables['params']['q_h1']
  enc = {'mean': q, 'log_var': jax.tree.map(lambda a: 0.5 * a, q)}
  dec = variables['params']['p_x']

  def f(enc_params, image, key):
    x = image.reshape(BATCH, -1).astype(jnp.float32)

    def obj(e):
      mean = x @ e['mean']['kernel'] + e['mean']['bias']
      log_var = x @ e['log_var']['kernel'] + e['log_var']['bias']
      z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
      logits = z @ dec['kernel'] + dec['bias']
      log_px = est.bernoulli_log_prob(x, logits)
      kl = -0.5 * (1 + log_var - mean ** 2 - jnp.exp(log_var)).sum(-1)
      return -(log_px - kl).mean()
    return _flat(jax.grad(obj)(enc_params))
  return f, enc


def moments(fn, variables, image, n: int, seed: int, chunk: int = 1000):
  """Mean [P] and total variance tr Cov of n estimates, computed in chunks under vmap."""
  batched = jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))
  total, total_sq, done = 0.0, 0.0, 0
  key = jax.random.key(seed)
  while done < n:
    c = min(chunk, n - done)
    keys = jax.random.split(jax.random.fold_in(key, done), c)
    g = np.asarray(batched(variables, image, keys), np.float64)
    total = total + g.sum(0)
    total_sq = total_sq + (g ** 2).sum(0)
    done += c
  mean = total / n
  var = (total_sq / n - mean ** 2).sum() * n / (n - 1)
  return mean, float(var)


def row(name, target, mean, var, exact, n):
  norm = float(np.linalg.norm(exact))
  bias = float(np.linalg.norm(mean - exact)) / norm if target is not None else float('nan')
  se = np.sqrt(var / n) / norm
  return dict(estimator=name, target=target or '-', bias=bias, se=float(se),
              variance=var / norm ** 2)


def run(n: int, seed: int = 0, quick_baseline: bool = False) -> list[dict]:
  model, v, image = make_problem(seed)
  v = train_baseline(model, v, image, steps=300 if quick_baseline else 2000)
  exact = {k: np.asarray(g, np.float64) for k, g in exact_gradients(model, v, image).items()}
  specs = [
      ('reinforce', 'elbo', sbn_estimator('reinforce')),
      ('nvil (baseline + centring)', 'elbo', sbn_estimator('nvil')),
      ('vimco K=2', 'L_2', sbn_estimator('vimco', 2)),
      ('vimco K=5', None, sbn_estimator('vimco', 5)),
      ('rws wake-q K=5', 'kl(p||q)', sbn_estimator('rws', 5)),
      ('rws wake-q K=50', 'kl(p||q)', sbn_estimator('rws', 50)),
      ('wake-sleep (sleep q)', 'sleep', sbn_estimator('wake_sleep')),
  ]
  for tau in (2.0, 1.0, 0.5, 0.25, 0.1):
    specs.append((f'gumbel-softmax tau={tau}', 'elbo', relaxed_estimator(tau)))
  for tau in (1.0, 0.5, 0.1):
    specs.append((f'straight-through tau={tau}', 'elbo', relaxed_estimator(tau, True)))
  rows = []
  for i, (name, target, fn) in enumerate(specs):
    t0 = time.perf_counter()
    mean, var = moments(fn, v, image, n, seed=1 + i)
    ref = exact[target] if target else mean
    r = row(name, target, mean, var, ref, n)
    r['seconds'] = round(time.perf_counter() - t0, 1)
    rows.append(r)
  # The Gaussian VAE's reparameterization gradient: its own target, estimated with 10x more.
  fn, enc = gaussian_vae_estimator(v)
  mean, var = moments(fn, enc, image, n, seed=100)
  ref, _ = moments(fn, enc, image, 10 * n, seed=101)
  rows.append(row('gaussian vae reparam (reference)', 'own elbo (10x MC)', mean, var, ref, n))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--num_estimates', type=int, default=None)
  args = parser.parse_args()
  n = args.num_estimates or (2000 if args.quick else 20_000)
  print(f'{common.machine()}; load {common.loadavg()}; {n} estimates per row')
  t0 = time.perf_counter()
  rows = run(n, quick_baseline=args.quick)
  common.print_table(
      [(r['estimator'], r['target'], f"{r['bias']:.4f}", f"{r['se']:.4f}",
        f"{r['variance']:.4g}") for r in rows],
      ('estimator', 'target', 'rel. bias', 'se', 'rel. variance'))
  common.emit({'benchmark': 'estimator_gradients', 'num_estimates': n,
               'seconds': round(time.perf_counter() - t0, 1), 'rows': rows})


if __name__ == '__main__':
  main()
