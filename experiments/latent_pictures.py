"""Pictures of latent-variable models, written as PNG files a person opens.

For a model with an encoder and a decoder, `write_latent_pictures` writes into
`<workdir>/samples/`:

- reconstructions_step_N.png: pairs of rows, test inputs above their reconstructions
  decode(encode(x)).
- sample_means_step_N.png (VAE-like): the decoder's mean image for prior samples. For a
  Bernoulli decoder these look far better than the binary samples of step_N.png.
- manifold_step_N.png (only for a 2-D z with a N(0, I) prior): the decoded grid over the
  prior's quantiles, z = Phi^-1(linspace(0.05, 0.95, G)) on each axis; Kingma & Welling,
  "Auto-Encoding Variational Bayes", 2014, arXiv 1312.6114, Fig. 4.
- latent_scatter_step_N.png: the posterior means of (up to 5000) test images, one colour
  per label; for D > 2 their projection on the first two principal components,
  latent_scatter_pca_step_N.png.
- interpolations_step_N.png: rows decoding linear interpolations between the encodings of
  two test images, flanked by the two inputs.
- analogies_step_N.png (semi-supervised M2): the style z = encode(x, y_true) of a test digit
  rendered as every digit, decode(z, y) for y = 0..9; Kingma, Rezende, Mohamed & Welling,
  "Semi-Supervised Learning with Deep Generative Models", 2014, arXiv 1406.5298, Fig. 1.

The model protocol is duck-typed (`protocol(model)`), so autoregressive models, which have
no `encode`/`decode`, get none of these:

- 'vae' (latent/vae.py): encode(image) -> [B, D], decode(z) -> [B, H, W, C] mean image on
  [0, 1], sample_means(rng, n, temperature).
- 'm2' (latent/m2.py): encode(image, label), decode(z, label) (the mean image),
  classify(image), num_classes.
- 'sampled' (latent/pixelvae.py): encode(image), decode(z, rng) -> a SAMPLED image on
  [0, 1]. Decoding is autoregressive and slow, so its pictures are smaller (SAMPLED_SIZES).
- 'generator' (latent/gan.py): no encoder; decode(z) -> [B, H, W, C] on [0, 1] for
  z ~ N(0, I) of size ais_latent_dim(), sample_means(rng, n, temperature). Pictures:
  sample_means, prior_interpolations (rows decoding the spherical interpolation between two
  prior draws; slerp keeps the path where a Gaussian's mass is, White 2016, arXiv
  1609.04468) and, for a 2-D z, the manifold.

Images given to these functions are the data's integers in {0..num_levels-1}; pictures
show every image on [0, 1]. Each picture function returns its uint8 grid and writes it to
`path` unless `path` is None.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments import images as image_io

VAE, M2, SAMPLED, GENERATOR = 'vae', 'm2', 'sampled', 'generator'

MAX_SCATTER_POINTS = 5000
ENCODE_CHUNK = 500
# Picture sizes: (reconstructed images, manifold grid side, interpolation pairs, steps).
SIZES = {'reconstructions': 32, 'grid_size': 20, 'num_pairs': 8, 'num_steps': 10,
         'analogies': 8}
SAMPLED_SIZES = {'reconstructions': 16, 'grid_size': 10, 'num_pairs': 4, 'num_steps': 8,
                 'analogies': 8}

# matplotlib's 'tab10' colours, label c drawn in PALETTE[c % 10].
PALETTE = np.array([
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]],
    np.uint8)

# 3x5 bitmap digits for the scatter plot's legend.
_DIGITS = ['111101101101111', '010110010010111', '111001111100111', '111001111001111',
           '101101111001001', '111100111001111', '111100111101111', '111001001001001',
           '111101111101111', '111101111001111']


# --------------------------------------------------------------------------- the protocol

def protocol(model) -> str | None:
  """VAE, M2, SAMPLED or GENERATOR (see the module docstring); None for models without a
  latent code."""
  if (hasattr(model, 'decode') and hasattr(model, 'sample_means')
      and hasattr(model, 'ais_latent_dim') and not hasattr(model, 'encode')):
    return GENERATOR
  if not (hasattr(model, 'encode') and hasattr(model, 'decode')):
    return None
  if hasattr(model, 'classify') and getattr(model, 'num_classes', 0):
    return M2
  if hasattr(model, 'sample_means'):
    return VAE
  return SAMPLED


def _variables(params) -> dict:
  """`params` is a parameter tree or, for models with non-parameter collections (batch
  statistics, constants), the whole variables dict {'params': ..., 'batch_stats': ...}."""
  if isinstance(params, dict) and 'params' in params:
    return params
  return {'params': params}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(model, method, params, *args):
  return model.apply(_variables(params), *args, method=method)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _sample_means(model, params, rng, n, temperature):
  return model.apply(_variables(params), rng, n, temperature, method='sample_means')


def _chunks(n: int, chunk: int):
  """(start, stop, pad): fixed-size chunks when n > chunk, so one compiled call serves all."""
  if n <= chunk:
    yield 0, n, 0
    return
  for s in range(0, n, chunk):
    yield s, min(s + chunk, n), max(0, s + chunk - n)


def _pad(x, pad):
  return x if not pad else np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])


def encode(model, params, images, labels=None, chunk: int = ENCODE_CHUNK) -> np.ndarray:
  """Posterior means [N, D] of integer images (M2: given their labels)."""
  kind = protocol(model)
  images = np.asarray(images)
  out = []
  for s, e, pad in _chunks(len(images), chunk):
    args = [jnp.asarray(_pad(images[s:e], pad), jnp.int32)]
    if kind == M2:
      args.append(jnp.asarray(_pad(np.asarray(labels)[s:e], pad), jnp.int32))
    out.append(np.asarray(jax.device_get(_apply(model, 'encode', params, *args)))[:e - s])
  return np.concatenate(out)


def decode(model, params, z, labels=None, rng=None, chunk: int = ENCODE_CHUNK) -> np.ndarray:
  """Images on [0, 1] [N, H, W, C] for latents z [N, D]: the decoder's mean (VAE, M2) or,
  for SAMPLED decoders, a sample drawn with `rng` (the same rng gives the same noise)."""
  kind = protocol(model)
  z = np.asarray(z, np.float32)
  out = []
  for i, (s, e, pad) in enumerate(_chunks(len(z), chunk)):
    args = [jnp.asarray(_pad(z[s:e], pad))]
    if kind == M2:
      args.append(jnp.asarray(_pad(np.asarray(labels)[s:e], pad), jnp.int32))
    elif kind == SAMPLED:
      args.append(jax.random.fold_in(rng, i))
    out.append(np.asarray(jax.device_get(_apply(model, 'decode', params, *args)))[:e - s])
  return np.concatenate(out)


def _finish(path: str | None, tiles, ncols: int) -> np.ndarray:
  """Tiles on [0, 1] -> a uint8 grid (images.make_grid), written to `path` if given."""
  grid = image_io.make_grid(image_io.unit_to_uint8(tiles), ncols)
  if path is not None:
    image_io.save_image(path, grid)
  return grid


def _unit(images, num_levels: int) -> np.ndarray:
  return np.asarray(images, np.float32) / (num_levels - 1)


# --------------------------------------------------------------------------- pictures

def reconstructions(model, params, images, labels, rng, path: str | None = None, *,
                    num_levels: int, num_images: int = 32, ncols: int = 8) -> np.ndarray:
  """Pairs of rows: `ncols` test inputs, then their reconstructions decode(encode(x))
  (M2 encodes and decodes with the true label)."""
  n = min(num_images, len(images))
  ncols = min(ncols, n)
  n -= n % ncols
  x = np.asarray(images[:n])
  y = None if labels is None else np.asarray(labels[:n])
  recon = decode(model, params, encode(model, params, x, y), y, rng)
  inputs = _unit(x, num_levels)
  rows = []
  for r in range(0, n, ncols):
    rows += [inputs[r:r + ncols], recon[r:r + ncols]]
  return _finish(path, np.concatenate(rows), ncols)


def sample_means(model, params, rng, path: str | None = None, *, num_samples: int = 64,
                 temperature: float = 1.0) -> np.ndarray:
  """The decoder's mean images of `num_samples` prior samples (VAE-like models)."""
  x = np.asarray(jax.device_get(_sample_means(model, params, rng, num_samples,
                                              jnp.float32(temperature))))
  return _finish(path, x, int(np.ceil(np.sqrt(num_samples))))


def manifold_latents(grid_size: int = 20, lo: float = 0.05, hi: float = 0.95) -> np.ndarray:
  """[G*G, 2] latents at the standard normal's quantiles, in the grid's row-major order:
  column j has z_1 = Phi^-1(q_j), row i has z_2 = Phi^-1(q_{G-1-i}) (up is positive),
  q = linspace(lo, hi, G)."""
  q = np.asarray(jax.scipy.special.ndtri(jnp.linspace(lo, hi, grid_size)), np.float32)
  z2, z1 = np.meshgrid(q[::-1], q, indexing='ij')
  return np.stack([z1.ravel(), z2.ravel()], axis=-1)


def manifold(model, params, rng, path: str | None = None, *, grid_size: int = 20
             ) -> np.ndarray:
  """The learned 2-D manifold: decode over a G x G grid of the N(0, I) prior's quantiles
  (Kingma & Welling 2014, Fig. 4). Only for a 2-dimensional z."""
  z = manifold_latents(grid_size)
  return _finish(path, decode(model, params, z, None, rng), grid_size)


def principal_components(z: np.ndarray, k: int = 2) -> np.ndarray:
  """z [N, D] centred and projected on its first k principal directions (numpy SVD)."""
  zc = np.asarray(z, np.float64) - np.mean(z, axis=0)
  _, _, vt = np.linalg.svd(zc, full_matrices=False)
  return (zc @ vt[:k].T).astype(np.float32)


def scatter_bounds(points: np.ndarray, pad_fraction: float = 0.05) -> np.ndarray:
  """[[x0, y0], [x1, y1]]: the points' range, padded on each side by a fraction of it."""
  points = np.asarray(points, np.float64)
  lo, hi = points.min(0), points.max(0)
  pad = np.where(hi > lo, (hi - lo) * pad_fraction, 1.0)
  return np.stack([lo - pad, hi + pad])


def point_pixels(points, bounds, size: int = 600, margin: int = 30):
  """(rows, cols) of points in a size x size plot whose data area spans pixels
  [margin, size - margin) on both axes; y grows upwards."""
  points = np.asarray(points, np.float64)
  (x0, y0), (x1, y1) = np.asarray(bounds, np.float64)
  span = size - 2 * margin - 1
  cols = margin + np.round((points[:, 0] - x0) / (x1 - x0) * span)
  rows = margin + np.round((y1 - points[:, 1]) / (y1 - y0) * span)
  return rows.astype(int), cols.astype(int)


def _draw_digit(canvas, number: int, top: int, left: int, scale: int = 3):
  for k, ch in enumerate(str(number)):
    glyph = np.array([int(b) for b in _DIGITS[int(ch)]], bool).reshape(5, 3)
    glyph = glyph.repeat(scale, 0).repeat(scale, 1)
    x = left + k * 4 * scale
    region = canvas[top:top + glyph.shape[0], x:x + glyph.shape[1]]
    region[glyph[:region.shape[0], :region.shape[1]]] = 0


def rasterize_scatter(points, labels=None, *, bounds=None, size: int = 600, margin: int = 30,
                      point_size: int = 3, num_classes: int | None = None,
                      legend_height: int = 40, seed: int = 0) -> np.ndarray:
  """A scatter plot as a uint8 [size + legend_height, size, 3] image, without matplotlib.

  A white canvas; the data area is [margin, size - margin) on both axes, covering `bounds`
  ([[x0, y0], [x1, y1]]; by default the points' range padded by 5%, scatter_bounds), framed
  by a grey box; light grey lines mark x = 0 and y = 0 where they fall inside. Each point is
  a point_size x point_size square centred at point_pixels(), in PALETTE[label % 10], drawn
  in a fixed random order so no label always lies on top. Below, a legend strip: one
  colour swatch per label 0..num_classes-1, left to right, each followed by its number.
  """
  points = np.asarray(points, np.float32)
  labels = np.zeros(len(points), int) if labels is None else np.asarray(labels, int)
  if num_classes is None:
    num_classes = int(labels.max()) + 1 if len(labels) else 1
  bounds = scatter_bounds(points) if bounds is None else np.asarray(bounds, np.float64)
  canvas = np.full((size + legend_height, size, 3), 255, np.uint8)
  lo, hi = margin - point_size, size - margin + point_size - 1
  (x0, y0), (x1, y1) = bounds
  zr, zc = point_pixels(np.array([[0.0, 0.0]]), bounds, size, margin)
  if x0 < 0 < x1:
    canvas[lo:hi + 1, zc[0]] = 220
  if y0 < 0 < y1:
    canvas[zr[0], lo:hi + 1] = 220
  canvas[[lo, hi], lo:hi + 1] = 128
  canvas[lo:hi + 1, [lo, hi]] = 128
  rows, cols = point_pixels(points, bounds, size, margin)
  half = point_size // 2
  for i in np.random.default_rng(seed).permutation(len(points)):
    r, c = rows[i], cols[i]
    canvas[max(r - half, 0):r - half + point_size,
           max(c - half, 0):c - half + point_size] = PALETTE[labels[i] % len(PALETTE)]
  if legend_height >= 20:
    top = size + (legend_height - 15) // 2
    step = max(1, (size - 2 * margin) // max(num_classes, 1))
    for c in range(num_classes):
      left = margin + c * step
      canvas[top:top + 15, left:left + 15] = PALETTE[c % len(PALETTE)]
      _draw_digit(canvas, c, top, left + 19)
  return canvas


def latent_scatter(model, params, images, labels, rng, path: str | None = None, *,
                   max_points: int = MAX_SCATTER_POINTS) -> np.ndarray:
  """The test set's posterior means (M2: given the true label) scattered by label; for
  D > 2 their first two principal components (name the file latent_scatter_pca_...), for
  D = 1 against the label."""
  del rng
  n = min(max_points, len(images))
  y = None if labels is None else np.asarray(labels[:n])
  z = encode(model, params, np.asarray(images[:n]), y)
  if z.shape[1] > 2:
    z = principal_components(z)
  elif z.shape[1] == 1:
    z = np.concatenate([z, np.zeros_like(z) if y is None else y[:, None].astype(z.dtype)], 1)
  num_classes = getattr(model, 'num_classes', 0) or None
  grid = rasterize_scatter(z, y, num_classes=num_classes)
  if path is not None:
    image_io.save_image(path, grid)
  return grid


def interpolation_pairs(labels, num_pairs: int, same_label: bool, n: int):
  """Pairs (i, j) of distinct test images in order: with labels, the next image of the same
  label (same_label) or of a different one; without, consecutive images."""
  used, pairs = set(), []
  for i in range(n):
    if len(pairs) == num_pairs:
      break
    if i in used:
      continue
    for j in range(i + 1, n):
      if j in used:
        continue
      if labels is None or (labels[i] == labels[j]) == same_label:
        pairs.append((i, j))
        used.update((i, j))
        break
  return pairs


def interpolations(model, params, images, labels, rng, path: str | None = None, *,
                   num_levels: int, num_pairs: int = 8, num_steps: int = 10,
                   search: int = 500) -> np.ndarray | None:
  """One row per pair of test images (a, b): input a, decode((1 - t) z_a + t z_b) for
  t = linspace(0, 1, num_steps), input b. Columns 1 and num_steps are the reconstructions.
  Unconditional models pair images of different labels; M2 pairs images of one label and
  decodes with it. Pairs are looked for among the first `search` images; None where there
  is no pair."""
  kind = protocol(model)
  n = min(len(images), search)
  y_all = None if labels is None else np.asarray(labels[:n])
  pairs = interpolation_pairs(y_all, num_pairs, same_label=kind == M2, n=n)
  if not pairs:
    return None
  a = np.array([p[0] for p in pairs])
  b = np.array([p[1] for p in pairs])
  x = np.asarray(images)
  ya = None if y_all is None else y_all[a]
  za = encode(model, params, x[a], ya)
  zb = encode(model, params, x[b], None if y_all is None else y_all[b])
  t = np.linspace(0.0, 1.0, num_steps, dtype=np.float32)[None, :, None]
  z = ((1.0 - t) * za[:, None] + t * zb[:, None]).reshape(-1, za.shape[-1])
  y = None if ya is None else np.repeat(ya, num_steps)
  dec = decode(model, params, z, y, rng).reshape((len(pairs), num_steps) + x.shape[1:])
  rows = np.concatenate([_unit(x[a], num_levels)[:, None], dec,
                         _unit(x[b], num_levels)[:, None]], axis=1)
  return _finish(path, rows.reshape((-1,) + x.shape[1:]), num_steps + 2)


def analogies(model, params, images, labels, rng, path: str | None = None, *,
              num_levels: int, num_images: int = 8) -> np.ndarray:
  """M2: one row per test digit: the input, then decode(encode(x, y_true), y) for every
  class y = 0..num_classes-1 (column y + 1): its style rendered as every digit."""
  k = model.num_classes
  n = min(num_images, len(images))
  x, y = np.asarray(images[:n]), np.asarray(labels[:n])
  z = encode(model, params, x, y)
  z_all = np.repeat(z, k, axis=0)
  y_all = np.tile(np.arange(k), n)
  dec = decode(model, params, z_all, y_all, rng).reshape((n, k) + x.shape[1:])
  rows = np.concatenate([_unit(x, num_levels)[:, None], dec], axis=1)
  return _finish(path, rows.reshape((-1,) + x.shape[1:]), k + 1)


# --------------------------------------------------------------------------- all of them

def latent_dim(model, params, image, label=None) -> int:
  """D, the size of the code encode() returns (from shapes only, nothing is computed)."""
  args = [jnp.asarray(image[:1], jnp.int32)]
  if protocol(model) == M2:
    args.append(jnp.asarray(label[:1], jnp.int32))
  return int(jax.eval_shape(lambda p, *a: model.apply(_variables(p), *a, method='encode'),
                            params, *args).shape[-1])


def has_standard_normal_z(model) -> bool:
  """Whether the code that decode() takes has a N(0, I) prior: not so for the z_1 of a deep
  latent Gaussian model (VAE with several latent_dims), whose prior is p(z_1 | z_2)."""
  return protocol(model) != M2 and len(getattr(model, 'latent_dims', (0,))) == 1


def write_latent_pictures(model, params, images, labels, rng, directory: str, step: int, *,
                          num_levels: int, num_samples: int = 64, temperature: float = 1.0,
                          write: bool = True, writer=None) -> list[str]:
  """Every picture this model's protocol supports, as <directory>/<name>_step_<step>.png.

  Returns the paths (also where `write` is False, on processes other than 0, which compute
  but write nothing). `writer` (a MetricWriter) also gets each grid as a TensorBoard image.
  Models without encode/decode, or without test images, get nothing.
  """
  kind = protocol(model)
  if kind is None or not len(images) or (kind == M2 and labels is None):
    return []
  sizes = SAMPLED_SIZES if kind == SAMPLED else SIZES
  keys = iter(jax.random.split(rng, 8))
  paths = []
  if kind == GENERATOR:
    return _write_generator_pictures(model, params, keys, directory, step, write, writer,
                                     num_samples, temperature, sizes)

  def out(name, fn, *args, **kwargs):
    path = os.path.join(directory, f'{name}_step_{step}.png')
    grid = fn(model, params, *args, path if write else None, **kwargs)
    if grid is None:
      return
    if writer is not None:
      writer.write_image(step, f'latent/{name}', grid)
    paths.append(path)

  common = (images, labels)
  out('reconstructions', reconstructions, *common, next(keys), num_levels=num_levels,
      num_images=sizes['reconstructions'])
  if kind == VAE:
    out('sample_means', sample_means, next(keys), num_samples=num_samples,
        temperature=temperature)
  d = latent_dim(model, params, images, labels)
  if d == 2 and has_standard_normal_z(model):
    out('manifold', manifold, next(keys), grid_size=sizes['grid_size'])
  out('latent_scatter_pca' if d > 2 else 'latent_scatter', latent_scatter, *common,
      next(keys))
  out('interpolations', interpolations, *common, next(keys), num_levels=num_levels,
      num_pairs=sizes['num_pairs'], num_steps=sizes['num_steps'])
  if kind == M2:
    out('analogies', analogies, *common, next(keys), num_levels=num_levels,
        num_images=sizes['analogies'])
  return paths


def prior_interpolations(model, params, rng, path: str | None = None, *, num_pairs: int = 8,
                         num_steps: int = 10) -> np.ndarray:
  """GENERATOR models: one row per pair of prior draws (z_a, z_b), decode(slerp(z_a, z_b, t))
  for t = linspace(0, 1, num_steps)."""
  from latent.gan import slerp  # pylint: disable=g-import-not-at-top
  d = int(model.ais_latent_dim())
  za, zb = jax.random.normal(rng, (2, num_pairs, d))
  t = jnp.linspace(0.0, 1.0, num_steps)
  z = jax.vmap(lambda ti: slerp(za, zb, ti))(t)            # [steps, pairs, d]
  z = np.asarray(jnp.transpose(z, (1, 0, 2)).reshape(-1, d))
  dec = decode(model, params, z)
  return _finish(path, dec, num_steps)


def _write_generator_pictures(model, params, keys, directory, step, write, writer,
                              num_samples, temperature, sizes) -> list[str]:
  paths = []

  def out(name, fn, *args, **kwargs):
    path = os.path.join(directory, f'{name}_step_{step}.png')
    grid = fn(model, params, *args, path if write else None, **kwargs)
    if writer is not None:
      writer.write_image(step, f'latent/{name}', grid)
    paths.append(path)

  out('sample_means', sample_means, next(keys), num_samples=num_samples,
      temperature=temperature)
  out('prior_interpolations', prior_interpolations, next(keys),
      num_pairs=sizes['num_pairs'], num_steps=sizes['num_steps'])
  if int(model.ais_latent_dim()) == 2:
    out('manifold', manifold, next(keys), grid_size=sizes['grid_size'])
  return paths
