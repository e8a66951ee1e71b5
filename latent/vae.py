"""Variational autoencoders and deep latent Gaussian models, trained by the ELBO or the
importance-weighted bound.

- VAE: Kingma & Welling, "Auto-Encoding Variational Bayes", 2014, arXiv 1312.6114. A
  Gaussian encoder q(z|x) = N(mu(x), diag sigma^2(x)), the reparameterization
  z = mu + sigma * eps (Sec. 2.4), prior N(0, I), and the ELBO with the KL term in closed
  form (Eq. 10, Appendix B): L = E_q[log p(x|z)] - KL(q(z|x) || p(z)).
- Deep latent Gaussian model: Rezende, Mohamed & Wierstra 2014 (arXiv 1401.4082) and the
  two-stochastic-layer model of Burda et al. 2016 (arXiv 1509.00519, Sec. 5 / Appendix):
  p(x, z_1..z_L) = p(z_L) prod_l p(z_l | z_{l+1}) p(x | z_1), each conditional a diagonal
  Gaussian whose mean and log-variance come from an MLP, and the posterior
  q(z_1..z_L | x) = q(z_1 | x) prod_l q(z_{l+1} | z_l). Sampling is ancestral from z_L.
- IWAE: the same model trained on L_k (latent/iwae.py) with objective='iwae'; the VAE
  with k > 1 averages k single-sample ELBOs (the IWAE paper's "VAE, k" rows).
- IAF posterior (Kingma et al. 2016, arXiv 1606.04934): with iaf_steps = T > 0 the
  encoder also outputs a context h(x), and q(z_1 | x) is the diagonal Gaussian followed by
  T inverse autoregressive flow steps conditioned on h (latent/iaf.py); log q(z_1 | x)
  is exact, so every bound and the importance-sampled estimate hold unchanged, with the
  KL term estimated by Monte Carlo.

Decoders p(x | z_1): 'bernoulli' (binary images, logits), 'gaussian' (8-bit images
dequantized to [0, 1) with uniform noise; mean and per-pixel log-variance) and 'logistic'
(a discretized logistic per sub-pixel, exact over {0..255}). Encoders and the x <-> z_1
decoder are MLPs (the IWAE paper's tanh networks) or convolutional (two stride-2 layers).

Every model reports -log p(x) estimates per example in nats as 'nll': during training the
negated bound it optimizes; in evaluation, with eval_num_samples > 0, the importance-sampled
estimate with k = eval_num_samples (5000 in the IWAE paper), computed in chunks.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg import likelihood
from latent import distributions as dist
from latent import iaf, iwae
from latent.ais import gaussian_decoder_log_prob, gaussian_decoder_sample

LIKELIHOODS = ('bernoulli', 'gaussian', 'logistic')
ACTIVATIONS = {'tanh': jnp.tanh, 'relu': nn.relu, 'elu': nn.elu, 'softplus': nn.softplus}


class MLP(nn.Module):
  """Hidden dense layers with an activation, then a linear output of `out` units."""
  hidden: Sequence[int]
  out: int
  activation: str = 'tanh'

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    for h in self.hidden:
      x = act(nn.Dense(h)(x))
    return nn.Dense(self.out)(x)


class ConvEncoder(nn.Module):
  """x [..., H, W, C] -> out features: two stride-2 3x3 convolutions, a dense layer."""
  features: Sequence[int]
  hidden: int
  out: int
  activation: str = 'relu'

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS[self.activation]
    lead = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    for f in self.features:
      x = act(nn.Conv(f, (3, 3), strides=(2, 2), padding='SAME')(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.out)(act(nn.Dense(self.hidden)(x)))
    return x.reshape(lead + (self.out,))


class ConvDecoder(nn.Module):
  """z [..., D] -> [..., H, W, out_channels]: a dense layer to an (H/4, W/4) map, two
  stride-2 transposed 3x3 convolutions, a 3x3 convolution to the output parameters."""
  image_shape: Sequence[int]
  features: Sequence[int]
  hidden: int
  out_channels: int
  activation: str = 'relu'

  @nn.compact
  def __call__(self, z):
    act = ACTIVATIONS[self.activation]
    h, w, _ = self.image_shape
    scale = 2 ** len(self.features)
    lead = z.shape[:-1]
    x = z.reshape(-1, z.shape[-1])
    x = act(nn.Dense(self.hidden)(x))
    feats = list(self.features)[::-1]
    x = act(nn.Dense((h // scale) * (w // scale) * feats[0])(x))
    x = x.reshape(-1, h // scale, w // scale, feats[0])
    for f in feats:
      x = act(nn.ConvTranspose(f, (3, 3), strides=(2, 2), padding='SAME')(x))
    x = nn.Conv(self.out_channels, (3, 3), padding='SAME')(x)
    return x.reshape(lead + (h, w, self.out_channels))


def _split_gaussian(params):
  mean, log_var = jnp.split(params, 2, axis=-1)
  return mean, log_var


class VAE(nn.Module):
  """A VAE (one stochastic layer) or a deep latent Gaussian model (several).

  Attributes:
    image_shape: (H, W, C) of the data.
    num_levels: 2 for binary images (likelihood 'bernoulli'), 256 for 8-bit.
    latent_dims: units of z_1 .. z_L, from the data upwards: (50,) is the IWAE paper's
      one-layer model, (100, 50) its two-layer model.
    hidden_dims: one tuple of deterministic layer widths per stochastic layer; entry l
      serves q(z_l | z_{l-1}) (z_0 = x) and, mirrored, p(z_{l-1} | z_l). The IWAE paper
      and its code: ((200, 200),) and ((200, 200), (100, 100)) (784-200-200-100-100-100-50).
    architecture: 'mlp' or 'conv' (the x <-> z_1 networks; deeper ones are MLPs).
    conv_features: channels of the convolutional encoder's two stride-2 layers.
    likelihood: 'bernoulli', 'gaussian' or 'logistic'.
    activation: 'tanh' (the IWAE paper), 'relu', 'elu' or 'softplus'.
    objective: 'elbo' (mean of k single-sample ELBOs; k = 1 with one latent layer uses the
      analytic KL) or 'iwae' (L_k).
    num_samples: k used in training.
    eval_num_samples: 0 reports the training bound in evaluation; > 0 the
      importance-sampled log-likelihood with that many samples (5000 in the paper).
    eval_chunk_size: samples per chunk of that estimate.
    iaf_steps: 0 for the diagonal Gaussian q(z_1 | x); T > 0 adds T IAF steps to it.
    iaf_hidden: hidden layer widths of each IAF step's MADE.
    iaf_context: size of the encoder's context vector h(x), an input of every MADE.
    iaf_forget_bias: added to the gate's logit, sigma = sigmoid(s + bias) (paper: 1 or 2).
  """
  image_shape: Sequence[int] = (28, 28, 1)
  num_levels: int = 2
  latent_dims: Sequence[int] = (50,)
  hidden_dims: Sequence[Sequence[int]] = ((200, 200),)
  architecture: str = 'mlp'
  conv_features: Sequence[int] = (32, 64)
  likelihood: str = 'bernoulli'
  activation: str = 'tanh'
  objective: str = 'elbo'
  num_samples: int = 1
  eval_num_samples: int = 0
  eval_chunk_size: int = 100
  iaf_steps: int = 0
  iaf_hidden: Sequence[int] = (320, 320)
  iaf_context: int = 100
  iaf_forget_bias: float = 1.0

  @property
  def num_dims(self) -> int:
    return int(math.prod(self.image_shape))

  def setup(self):
    if self.likelihood not in LIKELIHOODS:
      raise ValueError(f'likelihood={self.likelihood!r}; choose one of {LIKELIHOODS}.')
    if (self.likelihood == 'bernoulli') != (self.num_levels == 2):
      raise ValueError(f"likelihood='bernoulli' goes with num_levels=2 (binary images) and "
                       f"the others with 256; got {self.likelihood!r}, {self.num_levels}.")
    if self.objective not in ('elbo', 'iwae'):
      raise ValueError(f"objective={self.objective!r}; choose 'elbo' or 'iwae'.")
    if len(self.hidden_dims) != len(self.latent_dims) or not self.latent_dims:
      raise ValueError(f'hidden_dims needs one entry per stochastic layer: latent_dims='
                       f'{tuple(self.latent_dims)}, hidden_dims={tuple(self.hidden_dims)}.')
    if self.architecture not in ('mlp', 'conv'):
      raise ValueError(f"architecture={self.architecture!r}; choose 'mlp' or 'conv'.")
    if self.num_samples < 1:
      raise ValueError(f'num_samples={self.num_samples} must be >= 1.')
    if self.iaf_steps < 0 or (self.iaf_steps and self.iaf_context < 1):
      raise ValueError(f'iaf_steps={self.iaf_steps} must be >= 0 and iaf_context='
                       f'{self.iaf_context} >= 1 with an IAF posterior.')
    ctx = self.iaf_context if self.iaf_steps else 0
    out_ch = self.image_shape[-1] * (1 if self.likelihood == 'bernoulli' else 2)
    dims, hid = list(self.latent_dims), [tuple(h) for h in self.hidden_dims]
    if self.architecture == 'conv':
      h, w, _ = self.image_shape
      if h % 4 or w % 4:
        raise ValueError(f'The conv architecture needs H and W divisible by 4, got '
                         f'{tuple(self.image_shape)}.')
      width = hid[0][-1] if hid[0] else 256
      q1 = ConvEncoder(tuple(self.conv_features), width, 2 * dims[0] + ctx)
      p1 = ConvDecoder(tuple(self.image_shape), tuple(self.conv_features), width, out_ch)
    else:
      q1 = MLP(hid[0], 2 * dims[0] + ctx, self.activation)
      h, w, _ = self.image_shape
      p1 = MLP(hid[0][::-1], h * w * out_ch, self.activation)
    self.q_nets = [q1] + [MLP(hid[layer], 2 * dims[layer], self.activation)
                          for layer in range(1, len(dims))]
    self.p_nets = [p1] + [MLP(hid[layer][::-1], 2 * dims[layer - 1], self.activation)
                          for layer in range(1, len(dims))]
    if self.iaf_steps:
      self.iaf = iaf.IAFPosterior(self.iaf_steps, tuple(self.iaf_hidden),
                                  self.iaf_forget_bias)

  # -- Data <-> network scale -------------------------------------------------------------

  def _net_input(self, x):
    """Integer images -> the encoder's input scale ([0, 1]); MLPs take them flattened."""
    x = x.astype(jnp.float32) / (self.num_levels - 1)
    if self.architecture == 'mlp':
      x = x.reshape(x.shape[:-3] + (-1,))
    return x

  def _decoder_params(self, z1):
    out = self.p_nets[0](z1)
    return out.reshape(z1.shape[:-1] + tuple(self.image_shape[:-1]) + (-1,))

  def _log_px(self, image, out, rng):
    """log p(x | z_1) per example (leading axes of `out` beyond the batch broadcast)."""
    c = self.image_shape[-1]
    nb = out.ndim - 3
    if self.likelihood == 'bernoulli':
      return dist.bernoulli_log_prob(image, out, batch_ndim=nb)
    mean, log_s = out[..., :c], out[..., c:]
    if self.likelihood == 'logistic':
      return dist.discretized_logistic_log_prob(image, jnp.tanh(mean), log_s,
                                                self.num_levels, batch_ndim=nb)
    # Gaussian density of uniformly dequantized data on [0, 1); reported log-likelihoods
    # subtract likelihood.discretization_offset (D log 256) to be per integer image.
    u = jax.random.uniform(rng, image.shape)
    x = (image.astype(jnp.float32) + u) / self.num_levels
    return (dist.gaussian_log_prob(x, mean, log_s, batch_ndim=nb)
            - likelihood.discretization_offset(self.num_dims, self.num_levels))

  def _decoded_mean(self, out):
    """The decoder's mean image on [0, 1]."""
    c = self.image_shape[-1]
    if self.likelihood == 'bernoulli':
      return jax.nn.sigmoid(out)
    if self.likelihood == 'logistic':
      return (jnp.tanh(out[..., :c]) + 1.0) / 2.0
    return jnp.clip(out[..., :c], 0.0, 1.0)

  def _sample_x(self, rng, out, temperature: float = 1.0):
    c = self.image_shape[-1]
    if self.likelihood == 'bernoulli':
      return jax.random.bernoulli(rng, jax.nn.sigmoid(out)).astype(jnp.int32)
    mean, log_s = out[..., :c], out[..., c:]
    if self.likelihood == 'logistic':
      x = jnp.tanh(mean) + temperature * jnp.exp(log_s) * jax.random.logistic(rng, mean.shape)
      return dist.logistic_mean_to_levels(jnp.clip(x, -1, 1), self.num_levels)
    x = mean + temperature * jnp.exp(0.5 * log_s) * jax.random.normal(rng, mean.shape)
    return jnp.clip(jnp.floor(x * self.num_levels), 0, self.num_levels - 1).astype(jnp.int32)

  # -- The model -------------------------------------------------------------------------

  def _q1(self, image):
    """The encoder's q(z_1 | x) parameters: mean, log_var [B, D] and the IAF context h
    [B, C] (None without an IAF posterior)."""
    out = self.q_nets[0](self._net_input(image))
    d = self.latent_dims[0]
    h = out[..., 2 * d:] if self.iaf_steps else None
    return out[..., :d], out[..., d:2 * d], h

  def _z1_from_noise(self, q1, eps):
    """z_1 and log q(z_1 | x) [k, B] from base noise eps [k, B, D]."""
    mean, log_var, h = q1
    if self.iaf_steps:
      return self.iaf.sample(eps, mean, log_var, h)
    z = mean + jnp.exp(0.5 * log_var) * eps
    return z, dist.gaussian_log_prob(z, mean, log_var, batch_ndim=eps.ndim - 1)

  def posterior_sample(self, image, rng, num_samples: int):
    """z_1 ~ q(z_1 | x) [k, B, D] and log q(z_1 | x) [k, B] (exact, with or without IAF)."""
    q1 = self._q1(image)
    eps = jax.random.normal(rng, (num_samples,) + q1[0].shape, q1[0].dtype)
    return self._z1_from_noise(q1, eps)

  def posterior_log_prob(self, image, z1):
    """log q(z_1 | x) of given z_1 [..., B, D]; with an IAF posterior it inverts the flow
    (D sequential MADE passes per step)."""
    mean, log_var, h = self._q1(image)
    if self.iaf_steps:
      return self.iaf.log_prob(z1, mean, log_var, h)
    return dist.gaussian_log_prob(z1, mean, log_var, batch_ndim=z1.ndim - 1)

  def log_weights(self, image, rng, num_samples: int):
    """[k, B] log w = log p(x, z) - log q(z | x) for k samples z ~ q(z | x), and the
    per-sample terms (log p(x|z_1), log q(z|x) - log p(z)) as [k, B] each."""
    return self._log_weights(image, rng, num_samples)[:3]

  def _log_weights(self, image, rng, num_samples: int):
    """log_weights' three arrays and q(z_1 | x)'s (mean, log_var), so the loss's analytic
    KL reuses the encoder pass instead of running it again."""
    keys = jax.random.split(rng, len(self.latent_dims) + 1)
    q1 = self._q1(image)
    eps = jax.random.normal(keys[0], (num_samples,) + q1[0].shape, q1[0].dtype)
    h, log_q = self._z1_from_noise(q1, eps)
    zs = [h]
    for layer in range(1, len(self.latent_dims)):
      mean, log_var = _split_gaussian(self.q_nets[layer](h))
      z = dist.reparameterize(keys[layer], mean, log_var)
      log_q = log_q + dist.gaussian_log_prob(z, mean, log_var, batch_ndim=2)
      zs.append(z)
      h = z
    log_p = dist.standard_normal_log_prob(zs[-1], batch_ndim=2)
    for layer in range(len(self.latent_dims) - 1, 0, -1):
      mean, log_var = _split_gaussian(self.p_nets[layer](zs[layer]))
      log_p = log_p + dist.gaussian_log_prob(zs[layer - 1], mean, log_var, batch_ndim=2)
    log_px = self._log_px(image, self._decoder_params(zs[0]), keys[-1])
    return log_px + log_p - log_q, log_px, log_q - log_p, q1[:2]

  def loss(self, batch, train: bool = True):
    """Objective: -bound in nats per example, averaged. Metrics per example: 'nll' (the
    negated bound; in evaluation with eval_num_samples > 0, the importance-sampled
    estimate), 'recon' (-E log p(x|z_1)), 'kl' (E log q(z|x) - log p(z); analytic for one
    layer) and 'elbo'."""
    image = batch['image']
    rng = self.make_rng('sample')
    k_train, k_eval = jax.random.split(rng)
    k = self.num_samples
    log_w, log_px, kl_mc, (mean, log_var) = self._log_weights(image, k_train, k)
    if len(self.latent_dims) == 1 and self.objective == 'elbo' and not self.iaf_steps:
      # Analytic KL: lower-variance gradients (Kingma & Welling 2014, Eq. 10).
      kl = dist.gaussian_kl_to_standard(mean, log_var)
      elbo = log_px.mean(0) - kl
    else:
      kl = kl_mc.mean(0)
      elbo = log_w.mean(0)
    bound = iwae.iwae_bound(log_w) if self.objective == 'iwae' else elbo
    metrics = {'recon': -log_px.mean(0), 'kl': kl, 'elbo': elbo, 'nll': -bound}
    if not train and self.eval_num_samples > 0:
      metrics['nll'] = -self.log_likelihood(image, k_eval, self.eval_num_samples)
    return -bound.mean(), metrics

  def log_likelihood(self, image, rng, num_samples: int = 5000):
    """Importance-sampled log p(x) per example with k = num_samples (IWAE paper, Sec. 5)."""
    return iwae.log_likelihood(lambda r, n: self.log_weights(image, r, n)[0], rng,
                               num_samples, self.eval_chunk_size)

  # -- Annealed importance sampling (latent/ais.py, experiments/ais_eval.py) -------------

  def ais_latent_dim(self) -> int:
    """d of z ~ N(0, I_d), the space AIS anneals in (one stochastic layer only)."""
    if len(self.latent_dims) != 1:
      raise ValueError(f'AIS over a VAE needs one stochastic layer (z ~ N(0, I), x ~ p(x|z)); '
                       f'this model has latent_dims={tuple(self.latent_dims)}. Deep latent '
                       'Gaussian models are not supported: their prior over z_1 is not '
                       'N(0, I).')
    return int(self.latent_dims[0])

  def decoder_log_prob(self, z, image, obs_std=None):
    """log p(x | z) [B, C] of images [B, H, W, C] (as the batch holds them) for latents z
    [B, C, d]: chain c of example b scores image b. The same density as log_weights' log
    p(x|z): exact for 'bernoulli' and 'logistic'; for 'gaussian' the density of the image
    dequantized with noise drawn from the 'sample' rng (the same noise on every call with
    the same rng, so AIS anneals towards one posterior), minus D log num_levels. The
    decoder's own density is the observation model unless obs_std is given: then (for the
    'gaussian' and 'logistic' decoders) a Gaussian of that standard deviation around the
    decoder's mean on [0, 1], Wu et al.'s protocol for comparing a VAE with a GAN. The IAF
    posterior only changes q, so it makes no difference here."""
    d = self.ais_latent_dim()
    if obs_std is not None and self.likelihood == 'bernoulli':
      raise ValueError(f'obs_std={obs_std}: a Bernoulli VAE scores binary images with its own '
                       'decoder density; leave --ais_obs_std unset.')
    if z.ndim != 3 or z.shape[-1] != d or z.shape[0] != image.shape[0]:
      raise ValueError(f'decoder_log_prob takes z [B, C, {d}] and images '
                       f'[B, H, W, C]; got {z.shape} and {image.shape}.')
    if obs_std is not None:
      return self._fixed_std_log_px(z, image, obs_std)
    if self.likelihood == 'gaussian' and not self.has_rng('sample'):
      raise ValueError("decoder_log_prob with likelihood='gaussian' dequantizes the image: "
                       "pass rngs={'sample': key} to apply.")
    rng = self.make_rng('sample') if self.likelihood == 'gaussian' else None
    return self._log_px(image[:, None], self._decoder_params(z), rng)

  def _decoder_mean_of(self, z):
    """The decoder's mean image on [0, 1] for latents z [N, d]."""
    return self._decoded_mean(self._decoder_params(z))

  def _fixed_std_log_px(self, z, image, obs_std):
    """log N(x; decoder mean(z), obs_std^2 I), x = image / (num_levels - 1) on [0, 1]: the
    observation model Wu et al. (2017) give a GAN, applied to this decoder's mean so the two
    kinds of model are scored on one footing (latent.ais.gaussian_decoder_log_prob)."""
    return gaussian_decoder_log_prob(self._decoder_mean_of, z, image, obs_std,
                                     self.num_levels, 'VAE')

  def decoder_sample(self, rng, z, obs_std=None):
    """x ~ p(x | z) for z [N, d]: the decoder's own sampler, or with obs_std the
    fixed-variance Gaussian of decoder_log_prob (on [0, 1], rounded to the levels), so a
    BDMC simulation draws from the density AIS scores."""
    if obs_std is None:
      return self._sample_x(rng, self._decoder_params(z))
    return gaussian_decoder_sample(self._decoder_mean_of, rng, z, obs_std, self.num_levels,
                                   'VAE')

  def encode(self, image):
    """A point summary of q(z_1 | x) [B, latent_dims[0]], the embedding pictures use: the
    Gaussian's mean, pushed through the IAF steps (eps = 0) with an IAF posterior."""
    q1 = self._q1(image)
    return self._z1_from_noise(q1, jnp.zeros_like(q1[0]))[0]

  def decode(self, z1):
    """The mean image on [0, 1] [B, H, W, C] given z_1."""
    return self._decoded_mean(self._decoder_params(z1))

  def reconstruct(self, image):
    return self.decode(self.encode(image))

  def _ancestral_z1(self, rng, n: int, temperature: float):
    keys = jax.random.split(rng, len(self.latent_dims))
    z = temperature * jax.random.normal(keys[-1], (n, self.latent_dims[-1]))
    for layer in range(len(self.latent_dims) - 1, 0, -1):
      mean, log_var = _split_gaussian(self.p_nets[layer](z))
      noise = jax.random.normal(keys[layer - 1], mean.shape)
      z = mean + temperature * jnp.exp(0.5 * log_var) * noise
    return z

  def sample_means(self, rng, n: int, temperature: float = 1.0):
    """Ancestral samples z_L -> .. -> z_1, shown as the decoder's mean image on [0, 1]."""
    return self.decode(self._ancestral_z1(rng, n, temperature))

  def sample(self, rng, shape, temperature: float = 1.0):
    """Ancestral samples x ~ p(x | z_1), z ~ p(z): integer images [N, H, W, C].
    temperature scales every Gaussian's standard deviation."""
    if tuple(shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'VAE samples have shape [N, {tuple(self.image_shape)}], asked for {shape}.')
    k_z, k_x = jax.random.split(rng)
    z1 = self._ancestral_z1(k_z, shape[0], temperature)
    return self._sample_x(k_x, self._decoder_params(z1), temperature)
