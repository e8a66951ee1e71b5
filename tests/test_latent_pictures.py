"""Pictures of latent-variable models: each grid shows what its docstring says, at the
expected place, and training and --mode=sample write them."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from PIL import Image

from experiments import images as image_io
from experiments import latent_pictures as lp
from latent.vae import VAE

H = W = 8
LEVELS = 2


def _tile(grid, r, c, ncols, h=H, w=W, pad=1):
  """Tile (r, c) of an images.make_grid grid, undoing its integer upscaling."""
  scale = ((grid.shape[1] - pad) // ncols - pad) // w
  hs, ws = h * scale, w * scale
  t = grid[pad + r * (hs + pad): pad + r * (hs + pad) + hs,
           pad + c * (ws + pad): pad + c * (ws + pad) + ws]
  return t[::scale, ::scale, 0]


def _grid_shape(n, ncols, h=H, w=W):
  return image_io.make_grid(np.zeros((n, h, w, 1), np.uint8), ncols).shape


def _png(path):
  return np.asarray(Image.open(path))


@pytest.fixture(scope='module')
def vae():
  model = VAE(image_shape=(H, W, 1), num_levels=LEVELS, latent_dims=(2,), hidden_dims=((16,),))
  x = jnp.zeros((1, H, W, 1), jnp.int32)
  params = model.init(jax.random.key(0), x, method='reconstruct')['params']
  return model, params


@pytest.fixture(scope='module')
def test_set():
  rng = np.random.default_rng(0)
  images = rng.integers(0, LEVELS, (60, H, W, 1)).astype(np.int32)
  labels = np.arange(60) % 10
  return images, labels


def _u8(x):
  return image_io.unit_to_uint8(np.asarray(x))


def _recon(model, params, x):
  return model.apply({'params': params}, jnp.asarray(x), method='reconstruct')


def test_protocol_detects_latent_models_only(vae):
  from autoreg.pixelcnn import PixelCNN
  assert lp.protocol(vae[0]) == lp.VAE
  assert lp.protocol(FakeM2()) == lp.M2
  assert lp.protocol(FakeSampledVAE()) == lp.SAMPLED
  assert lp.protocol(PixelCNN()) is None


@pytest.mark.parametrize('module,cls,kind', [('latent.m2', 'M2', lp.M2),
                                              ('latent.pixelvae', 'PixelVAE', lp.SAMPLED)])
def test_the_latent_models_follow_their_protocols(module, cls, kind):
  model = getattr(pytest.importorskip(module), cls)()
  assert lp.protocol(model) == kind


def test_reconstructions_are_rows_of_inputs_then_their_reconstructions(vae, test_set, tmp_path):
  model, params = vae
  x, y = test_set
  path = str(tmp_path / 'r.png')
  grid = lp.reconstructions(model, params, x, y, jax.random.key(0), path, num_levels=LEVELS,
                            num_images=8, ncols=4)
  assert grid.shape == _grid_shape(16, 4)
  np.testing.assert_array_equal(_png(path), grid)
  recon = _u8(_recon(model, params, x[:8]))
  for k in range(8):
    r, c = divmod(k, 4)
    np.testing.assert_array_equal(_tile(grid, 2 * r, c, 4), x[k, ..., 0] * 255)
    np.testing.assert_allclose(_tile(grid, 2 * r + 1, c, 4), recon[k, ..., 0], atol=1)


def test_sample_means_are_the_decoder_means_of_prior_samples(vae, tmp_path):
  model, params = vae
  path = str(tmp_path / 's.png')
  grid = lp.sample_means(model, params, jax.random.key(3), path, num_samples=9)
  assert grid.shape == _grid_shape(9, 3) and os.path.exists(path)
  want = _u8(model.apply({'params': params}, jax.random.key(3), 9, method='sample_means'))
  np.testing.assert_allclose(_tile(grid, 1, 2, 3), want[5, ..., 0], atol=1)


def test_manifold_decodes_the_standard_normal_quantiles(vae, tmp_path):
  g = 20
  z = lp.manifold_latents(g)
  q = scipy.stats.norm.ppf(np.linspace(0.05, 0.95, g))
  np.testing.assert_allclose(z[:g, 0], q, atol=1e-5)               # first row: z_1 varies
  np.testing.assert_allclose(z[::g, 1], q[::-1], atol=1e-5)        # first column: z_2, up is +
  assert np.allclose(z[:g, 1], q[-1], atol=1e-5)
  model, params = vae
  path = str(tmp_path / 'm.png')
  grid = lp.manifold(model, params, jax.random.key(0), path, grid_size=g)
  assert grid.shape == _grid_shape(g * g, g) and os.path.exists(path)
  i, j = 3, 17
  want = _u8(model.apply({'params': params}, jnp.asarray([[q[j], q[g - 1 - i]]], jnp.float32),
                         method='decode'))
  np.testing.assert_allclose(_tile(grid, i, j, g), want[0, ..., 0], atol=1)


def test_rasterized_scatter_puts_each_label_colour_at_its_point():
  points = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5], [0.25, -0.75]])
  labels = np.array([3, 7, 1, 9])
  bounds = np.array([[-1.0, -1.0], [1.0, 1.0]])
  size, margin = 600, 30
  canvas = lp.rasterize_scatter(points, labels, bounds=bounds, size=size, margin=margin,
                                num_classes=10)
  assert canvas.shape == (640, 600, 3) and canvas.dtype == np.uint8
  rows, cols = lp.point_pixels(points, bounds, size, margin)
  # corners of the data area: (x0, y1) top left, (x1, y1) top right, y grows upwards
  assert (rows[1], cols[1]) == (margin, size - margin - 1)
  assert (rows[2], cols[2]) == (165, margin)                     # 30 + 0.25 * 539
  assert (rows[3], cols[3]) == (502, 367)                        # 30 + (.875, .625) * 539
  for r, c, lab in zip(rows, cols, labels, strict=True):
    np.testing.assert_array_equal(canvas[r, c], lp.PALETTE[lab])
  assert (canvas[5:25, 5:25] == 255).all()                      # white outside the frame
  legend = canvas[600:]
  for c in range(10):                                            # swatches in label order
    assert (legend == lp.PALETTE[c]).all(-1).any()
  left = [np.nonzero((legend == lp.PALETTE[c]).all(-1).any(0))[0].min() for c in range(10)]
  assert left == sorted(left)


def test_principal_components_find_the_direction_of_largest_variance():
  rng = np.random.default_rng(0)
  t = rng.standard_normal(500)
  d = np.array([1.0, 2.0, 2.0]) / 3.0
  z = 5.0 * t[:, None] * d + 0.1 * rng.standard_normal((500, 3)) + 7.0
  p = lp.principal_components(z)
  assert p.shape == (500, 2)
  assert abs(np.corrcoef(p[:, 0], t)[0, 1]) > 0.99
  assert p[:, 0].std() > 10 * p[:, 1].std()


def test_latent_scatter_of_the_vae_encodings(vae, test_set, tmp_path):
  model, params = vae
  x, y = test_set
  path = str(tmp_path / 'sc.png')
  grid = lp.latent_scatter(model, params, x, y, jax.random.key(0), path)
  assert grid.shape == (640, 600, 3)
  np.testing.assert_array_equal(_png(path), grid)
  z = lp.encode(model, params, x, y, chunk=25)        # chunked and padded == one call
  np.testing.assert_allclose(z, model.apply({'params': params}, jnp.asarray(x),
                                            method='encode'), atol=1e-6)
  rows, cols = lp.point_pixels(z, lp.scatter_bounds(z))
  # the last point drawn at each pixel is on top; some point of that pixel's colour is there
  for k in range(5):
    colour = grid[rows[k], cols[k]]
    here = (np.abs(rows - rows[k]) <= 1) & (np.abs(cols - cols[k]) <= 1)
    assert any((colour == lp.PALETTE[y[i]]).all() for i in np.nonzero(here)[0])


def test_interpolation_endpoints_are_the_reconstructions(vae, test_set, tmp_path):
  model, params = vae
  x, y = test_set
  steps, pairs = 6, 3
  path = str(tmp_path / 'i.png')
  grid = lp.interpolations(model, params, x, y, jax.random.key(0), path, num_levels=LEVELS,
                           num_pairs=pairs, num_steps=steps)
  ncols = steps + 2
  assert grid.shape == _grid_shape(pairs * ncols, ncols) and os.path.exists(path)
  pair_list = lp.interpolation_pairs(y, pairs, same_label=False, n=len(x))
  assert pair_list == [(0, 1), (2, 3), (4, 5)]
  for r, (a, b) in enumerate(pair_list):
    ra, rb = _u8(_recon(model, params, x[[a, b]]))
    np.testing.assert_array_equal(_tile(grid, r, 0, ncols), x[a, ..., 0] * 255)
    np.testing.assert_array_equal(_tile(grid, r, ncols - 1, ncols), x[b, ..., 0] * 255)
    np.testing.assert_allclose(_tile(grid, r, 1, ncols), ra[..., 0], atol=1)
    np.testing.assert_allclose(_tile(grid, r, steps, ncols), rb[..., 0], atol=1)
  assert lp.interpolation_pairs(y, 2, same_label=True, n=len(x)) == [(0, 10), (1, 11)]


class FakeM2(nn.Module):
  """M2's protocol: encode(x, y) = [y, mean pixel]; decode(z, y) paints the top half y / 10
  (the class asked for) and the bottom half z_0 / 10 (the class the style came from)."""
  num_classes: int = 10

  def encode(self, image, label):
    return jnp.stack([label.astype(jnp.float32), image.mean((1, 2, 3))], -1)

  def decode(self, z, label, rng=None):
    del rng
    top = jnp.broadcast_to((label / 10.0)[:, None, None, None], (len(z), H // 2, W, 1))
    bottom = jnp.broadcast_to((z[:, 0] / 10.0)[:, None, None, None], (len(z), H // 2, W, 1))
    return jnp.concatenate([top, bottom], 1)

  def classify(self, image):
    return jnp.zeros((len(image), self.num_classes))

  def __call__(self, image, label):
    return self.decode(self.encode(image, label), label)


def test_analogies_render_each_style_as_every_class(test_set, tmp_path):
  x, y = test_set
  model = FakeM2()
  path = str(tmp_path / 'a.png')
  grid = lp.analogies(model, {}, x, y, jax.random.key(0), path, num_levels=LEVELS,
                      num_images=4)
  assert grid.shape == _grid_shape(4 * 11, 11) and os.path.exists(path)
  for r in range(4):
    np.testing.assert_array_equal(_tile(grid, r, 0, 11), x[r, ..., 0] * 255)
    for c in range(10):
      t = _tile(grid, r, c + 1, 11)
      assert (t[:H // 2] == round(255 * c / 10)).all()          # rendered as class c
      assert (t[H // 2:] == round(255 * y[r] / 10)).all()       # encoded with its true label


class FakeSampledVAE(nn.Module):
  """PixelVAE's protocol: encode(x) -> [B, D]; decode(z, rng) samples binary pixels."""
  latent_dim: int = 2

  @nn.compact
  def encode(self, image):
    return nn.Dense(self.latent_dim)(image.reshape(len(image), -1).astype(jnp.float32))

  def decode(self, z, rng):
    p = jax.nn.sigmoid(z.sum(-1))[:, None, None, None]
    return jax.random.bernoulli(rng, jnp.broadcast_to(p, (len(z), H, W, 1))).astype(jnp.float32)


@pytest.mark.parametrize('kind', ['vae', 'm2', 'sampled'])
def test_write_latent_pictures_writes_what_each_protocol_supports(kind, vae, test_set, tmp_path):
  x, y = test_set
  if kind == 'vae':
    model, params = vae
  elif kind == 'm2':
    model, params = FakeM2(), {}
  else:
    model = FakeSampledVAE()
    params = model.init(jax.random.key(0), jnp.asarray(x[:1]), method='encode')['params']
  paths = lp.write_latent_pictures(model, params, x, y, jax.random.key(1), str(tmp_path), 7,
                                   num_levels=LEVELS, num_samples=4)
  names = sorted(os.path.basename(p) for p in paths)
  want = {'vae': ['interpolations', 'latent_scatter', 'manifold', 'reconstructions',
                  'sample_means'],
          'm2': ['analogies', 'interpolations', 'latent_scatter', 'reconstructions'],
          'sampled': ['interpolations', 'latent_scatter', 'manifold', 'reconstructions']}[kind]
  assert names == [f'{n}_step_7.png' for n in want]
  assert sorted(os.listdir(tmp_path)) == names
  if kind == 'sampled':                         # slow decoders get a smaller manifold
    g = lp.SAMPLED_SIZES['grid_size']
    assert _png(tmp_path / 'manifold_step_7.png').shape == _grid_shape(g * g, g)
  assert lp.write_latent_pictures(model, params, x, y, jax.random.key(1), str(tmp_path / 'no'),
                                  7, num_levels=LEVELS, write=False)
  assert not os.path.exists(tmp_path / 'no')


def test_more_than_two_latent_dims_scatter_their_principal_components(test_set, tmp_path):
  x, y = test_set
  model = FakeSampledVAE(latent_dim=3)
  params = model.init(jax.random.key(0), jnp.asarray(x[:1]), method='encode')['params']
  paths = lp.write_latent_pictures(model, params, x, y, jax.random.key(1), str(tmp_path), 0,
                                   num_levels=LEVELS, num_samples=4)
  names = {os.path.basename(p) for p in paths}
  assert 'latent_scatter_pca_step_0.png' in names and 'manifold_step_0.png' not in names


def _tiny_vae_config(data_dir):
  import ml_collections

  from configs import common
  c = common.base_config()
  c.model_name = 'vae'
  c.model = ml_collections.ConfigDict(dict(
      image_shape=(28, 28, 1), num_levels=2, latent_dims=(2,), hidden_dims=((16,),)))
  c.data.name = 'binarized_mnist'
  c.data.local_dir = data_dir
  c.data.batch_size = 16
  c.data.eval_split = 'test[:256]'
  c.optimizer.warmup_steps = 2
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 4
  c.train.num_samples = 4
  return c


def test_training_and_sample_mode_write_the_pictures(tmp_path, data_dir):
  from experiments import train
  c = _tiny_vae_config(data_dir)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(c, workdir)
  samples = os.path.join(workdir, 'samples')
  names = ['step_4', 'sample_means_step_4', 'reconstructions_step_4', 'manifold_step_4',
           'latent_scatter_step_4', 'interpolations_step_4']
  assert sorted(os.listdir(samples)) == sorted(f'{n}.png' for n in names)
  for n in names:
    os.remove(os.path.join(samples, f'{n}.png'))
  # Sample mode writes into a folder of its own (nothing training wrote is replaced).
  path = train.sample_run(c, workdir)
  folder = os.path.dirname(path)
  assert os.path.dirname(folder) == samples and path == os.path.join(folder, 'step_4.png')
  assert sorted(os.listdir(folder)) == sorted(f'{n}.png' for n in names)
  scatter = _png(os.path.join(folder, 'latent_scatter_step_4.png'))
  assert scatter.shape == (640, 600, 3)
  # 256 test digits of all ten labels: every label's colour is on the canvas
  for c in range(10):
    assert (scatter[:600] == lp.PALETTE[c]).all(-1).any()
