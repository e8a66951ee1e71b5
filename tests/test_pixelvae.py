"""PixelVAE: the decoder is autoregressive given z and depends on z at every pixel; the
bounds are what they claim (ELBO = log p(x|z) - KL, IWAE_1 = the Monte Carlo ELBO, the
importance-sampled estimate above the ELBO); the k decoder passes batched as k * B images
are the per-sample passes; the naive and cached samplers draw the same images, binary and
8-bit RGB; the tiny config trains end to end on MNIST."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent import distributions as dist
from latent import iwae
from latent.pixelvae import PixelVAE
from tests.conftest import random_params

SMALL = dict(image_shape=(8, 8, 1), num_levels=2, latent_dim=3, conv_features=(4, 8),
             hidden_dim=16, cond_channels=4, features=8, num_layers=2, first_kernel=3,
             kernel_size=3, output_features=16)


def _images(shape, num_levels, seed=0):
  return jax.random.randint(jax.random.key(seed), shape, 0, num_levels).astype(jnp.uint8)


def _params(model, images):
  return random_params(model, {'image': images}, method='loss', train=False)


def test_decoder_is_autoregressive_given_z_and_every_pixel_depends_on_z():
  model = PixelVAE(**SMALL)
  h, w, _ = SMALL['image_shape']
  params = _params(model, _images((2, h, w, 1), 2))
  # Float inputs on [-1, 1] (the PixelCNN's input scale) so gradients can be taken;
  # independent examples keep their Jacobians apart when summed over the batch.
  xf = jax.random.uniform(jax.random.key(1), (3, h, w, 1), minval=-1.0, maxval=1.0)
  target = _images((3, h, w, 1), 2, seed=2)
  z = jax.random.normal(jax.random.key(3), (3, SMALL['latent_dim']))

  def pixel_log_lik(xf, z):
    """log p(x_ij | x_<ij, z) at every pixel, summed over the batch: [H, W]."""
    logits = model.apply(params, xf, z, method='decoder_outputs')[..., 0, :]
    lp = jax.nn.log_softmax(logits)
    lp = jnp.take_along_axis(lp, target.astype(jnp.int32), axis=-1)[..., 0]
    return lp.sum(0)

  jac_x, jac_z = jax.jit(jax.jacrev(pixel_log_lik, argnums=(0, 1)))(xf, z)
  dep_x = np.asarray((jac_x != 0).any(axis=(2, 5)))   # [H, W, H, W]
  dep_z = np.asarray((jac_z != 0).any(axis=(2, 3)))   # [H, W]
  idx = np.arange(h * w)
  later_or_same = (idx[None, :] >= idx[:, None]).reshape(h, w, h, w)
  assert not (dep_x & later_or_same).any(), 'a pixel sees itself or a later pixel'
  for i in range(h):
    for j in range(w):
      if j > 0:
        assert dep_x[i, j, i, j - 1], f'pixel {(i, j)} does not see its left neighbour'
      if i > 0:
        assert dep_x[i, j, i - 1, j], f'pixel {(i, j)} does not see the pixel above'
  # Every pixel's likelihood depends on z, including (0, 0), which sees no pixel at all.
  assert dep_z.all()


def test_elbo_is_log_px_minus_kl_and_iwae_1_is_the_monte_carlo_elbo():
  model = PixelVAE(**SMALL)
  iwae_model = PixelVAE(**SMALL, objective='iwae')
  x = _images((4, 8, 8, 1), 2)
  params = _params(model, x)
  n = 500

  @jax.jit
  def compute(params, rng):
    out = {}
    out['objective'], out['m'] = model.apply(params, {'image': x}, train=True,
                                             rngs={'sample': rng}, method='loss')
    _, out['mi'] = iwae_model.apply(params, {'image': x}, train=True, rngs={'sample': rng},
                                    method='loss')
    # The loss's first make_rng('sample'), split as the loss splits it: the same z.
    k_train = model.apply(params, rngs={'sample': rng},
                          method=lambda m: jax.random.split(m.make_rng('sample'))[0])
    out['log_w'], out['log_px'], out['kl_mc'] = model.apply(params, x, k_train, 1,
                                                            method='log_weights')
    mean, log_var = model.apply(params, x, method=lambda m, x: m._posterior(x))
    out['kl'] = dist.gaussian_kl_to_standard(mean, log_var)
    # k = 3 samples decoded as one batch of 3 * B images, and one sample at a time.
    _, out['log_px3'], _ = model.apply(params, x, k_train, 3, method='log_weights')
    z = dist.reparameterize(k_train, mean, log_var, (3,))
    out['per_sample'] = jnp.stack([model.apply(params, x, z[s], method='log_px')
                                   for s in range(3)])
    _, _, out['kl_many'] = model.apply(params, x, jax.random.key(8), n, method='log_weights')
    return out

  o = jax.device_get(compute(params, jax.random.key(7)))
  m, mi, kl = o['m'], o['mi'], o['kl']
  def close(a, b):
    return np.testing.assert_allclose(a, b, rtol=1e-5)
  close(m['recon'], -o['log_px'][0])
  close(m['kl'], kl)
  close(m['elbo'], -m['recon'] - m['kl'])
  close(m['nll'], -m['elbo'])
  close(o['objective'], -m['elbo'].mean())
  # L_1 = log w of the one sample = log p(x|z) - (log q(z|x) - log p(z)).
  close(iwae.iwae_bound(o['log_w']), o['log_w'][0])
  close(o['log_w'][0], o['log_px'][0] - o['kl_mc'][0])
  close(mi['nll'], -o['log_w'][0])
  close(mi['recon'], m['recon'])
  # The k decoder passes batched as k * B images are the per-sample passes.
  close(o['log_px3'], o['per_sample'])
  # The Monte Carlo KL averages to the analytic one.
  se = o['kl_many'].std(0) / np.sqrt(n)
  assert (np.abs(o['kl_many'].mean(0) - kl) < 5 * se + 1e-3).all()


def test_importance_sampled_estimate_is_above_the_elbo():
  model = PixelVAE(**SMALL, eval_num_samples=40, eval_chunk_size=10)
  x = _images((8, 8, 8, 1), 2, seed=4)
  params = _params(model, x)
  _, m = jax.jit(lambda p, b: model.apply(p, b, train=False, rngs={'sample': jax.random.key(9)},
                                          method='loss'))(params, {'image': x})
  # nll is -log p(x) estimated with k = 40; -elbo the one-sample bound (analytic KL).
  assert np.isfinite(m['nll']).all()
  assert float(m['nll'].mean()) < float(-m['elbo'].mean())


@pytest.mark.parametrize('num_levels, channels', [(2, 1), (256, 3)])
def test_samplers_agree_draw_for_draw_and_give_valid_images(num_levels, channels):
  kw = dict(SMALL, image_shape=(8, 8, channels), num_levels=num_levels)
  if channels == 3:
    kw.update(features=12, output_features=24)  # multiples of the colour groups
  model = PixelVAE(**kw)
  x = _images((2, 8, 8, channels), num_levels)
  params = _params(model, x)
  shape = (2, 8, 8, channels)

  @jax.jit
  def compute(params, rng):
    k1, k2, k3 = jax.random.split(rng, 3)
    naive = model.apply(params, k1, shape, method='sample')
    cached = model.apply(params, k1, shape, method='sample_cached')
    _, m = model.apply(params, {'image': x}, train=True, rngs={'sample': k2}, method='loss')
    z = model.apply(params, x, method='encode')
    return naive, cached, m, z, model.apply(params, z, k3, method='decode')

  naive, cached, m, z, img = jax.device_get(compute(params, jax.random.key(11)))
  assert naive.dtype == np.int32 and naive.shape == shape
  assert naive.min() >= 0 and naive.max() <= num_levels - 1
  np.testing.assert_array_equal(naive, cached)
  assert len(np.unique(naive)) > 1
  # The likelihood is over the integer levels: finite, positive NLL.
  assert np.isfinite(m['nll']).all() and (m['recon'] > 0).all()
  # encode gives the posterior mean; decode a sampled image on [0, 1].
  assert z.shape == (2, SMALL['latent_dim'])
  assert img.shape == shape and img.min() >= 0.0 and img.max() <= 1.0
  np.testing.assert_allclose(img * (num_levels - 1), np.round(img * (num_levels - 1)),
                             atol=1e-4)


def test_tiny_config_trains_end_to_end(tmp_path, data_dir):
  from configs import pixelvae_binarized_mnist
  from experiments import train
  c = pixelvae_binarized_mnist.get_config('tiny')
  c.data.local_dir = data_dir
  result = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert result['step'] == 10 and result['num_examples'] == 256
  assert np.isfinite(result['nll']) and result['nll'] <= -result['elbo'] + 1e-3
  assert os.path.exists(tmp_path / 'run' / 'samples' / 'step_10.png')
