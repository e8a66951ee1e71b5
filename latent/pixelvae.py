"""PixelVAE: a VAE whose decoder p(x | z) is a small gated PixelCNN conditioned on z.

Gulrajani, Kumar, Ahmed, Taiga, Visin, Vazquez & Courville, "PixelVAE: A Latent Variable
Model for Natural Images", ICLR 2017, arXiv 1611.05013.

  p(x, z) = p(z) prod_i p(x_i | x_<i, z),   p(z) = N(0, I),
  q(z | x) = N(mu(x), diag sigma^2(x)),
  L(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))           (the ELBO)

The decoder: z goes through a convolutional upsampling network (latent.vae.ConvDecoder:
dense to an (H/4, W/4) map, two stride-2 transposed convolutions, a 3x3 convolution) to a
map s(z) of `cond_channels` features at full resolution, and an autoregressive PixelCNN
models the pixels given s(z). The PixelCNN has few layers, so its receptive field is small
and global structure must come through z (the paper's MNIST experiments vary the number of
PixelCNN layers). The encoder is latent.vae.ConvEncoder (two stride-2 3x3 convolutions, a
dense layer); the KL term is in closed form (latent.distributions.gaussian_kl_to_standard).

What is implemented, and how it differs from the paper:

  * The PixelCNN is autoreg.gated_pixelcnn.GatedPixelCNN (vertical and horizontal stacks,
    no blind spot), and s(z) enters every gated layer through its 1x1 map projections
    (van den Oord et al. 2016, arXiv 1606.05328, Eq. 5): y = tanh(W_f*x + V_f*s) .
    sigmoid(W_g*x + V_g*s). The paper's upsampling decoder (the official code's
    `upsample_z_conv`, github.com/igul222/PixelVAE) concatenates the upsampled maps with
    the image at the PixelCNN's input; its binarized-MNIST recipe (`cond_z_bias`) instead
    adds a linear map of z to every gated layer, as a bias. Adding s(z) to every layer
    covers both.
  * One stochastic layer; the paper's hierarchical PixelVAE (LSUN, ImageNet) is not
    implemented.
  * No KL warm-up (the official code anneals the KL weight from 0 to 1 over 10,000
    iterations) and no weight normalization: the trainer's loss has no step, and every
    objective here is the true bound. The latent is used without warm-up all the same: in
    a 3,500-step run of the default model and optimizer (on a GPU, in a loop mirroring the
    trainer) the KL term grew from ~0.1 to ~3.7 nats, and to ~5.4 by 20,000 steps.
  * Size. The paper reports 79.66 nats on binarized MNIST. The official code's
    binarized-MNIST recipe (its README) is z of 16 dimensions, a 7x7 gated input layer and
    12 more gated layers of 16 features with 5x5 filters, batch 100, on a GPU; its
    evaluation script importance-samples with k = 10. The defaults here are sized for a
    CPU: 4 gated layers of 32 features (a 7x7 first layer, then 3x3: receptive field 6
    pixels), z of 16 dimensions, batch 32.

Objectives: 'elbo' (the mean of k single-sample ELBOs, analytic KL) or 'iwae' (Burda et al.
2016, arXiv 1509.00519, L_k; latent/iwae.py). The k decoder passes of one batch run as one
PixelCNN batch of k * B images.

8-bit images work the same way (num_levels=256): the PixelCNN's categorical (or
logistic-mixture) likelihood is over the integer levels, so log p(x | z) is already in nats
per integer image and needs no discretization offset.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg.gated_pixelcnn import GatedPixelCNN
from latent import distributions as dist
from latent import iwae
from latent.vae import ConvDecoder, ConvEncoder


class PixelVAE(nn.Module):
  """A VAE with a gated PixelCNN decoder conditioned on z through a spatial map.

  Attributes:
    image_shape: (H, W, C) of the data; H and W divisible by 2 ** len(conv_features).
    num_levels: 2 for binarized images, 256 for 8-bit.
    latent_dim: units of z (16 in the official binarized-MNIST recipe).
    conv_features: channels of the encoder's stride-2 convolutions; the upsampling network
      mirrors them.
    hidden_dim: the dense layer between the convolutions and z, in both directions.
    cond_channels: channels of the conditioning map s(z) [B, H, W, cond_channels].
    features, num_layers, first_kernel, kernel_size, output_features, output,
      num_mixtures: the GatedPixelCNN decoder's arguments, under its names.
    objective: 'elbo' (mean of k single-sample ELBOs, analytic KL) or 'iwae' (L_k).
    num_samples: k used in training.
    eval_num_samples: 0 reports the training bound in evaluation; > 0 the
      importance-sampled log-likelihood with that many samples.
    eval_chunk_size: samples per chunk of that estimate (each chunk decodes
      eval_chunk_size * B images at once).
  """
  image_shape: Sequence[int] = (28, 28, 1)
  num_levels: int = 2
  latent_dim: int = 16
  conv_features: Sequence[int] = (32, 64)
  hidden_dim: int = 256
  cond_channels: int = 16
  features: int = 32
  num_layers: int = 4
  first_kernel: int = 7
  kernel_size: int = 3
  output_features: int = 64
  output: str = 'categorical'
  num_mixtures: int = 10
  objective: str = 'elbo'
  num_samples: int = 1
  eval_num_samples: int = 0
  eval_chunk_size: int = 10

  @property
  def num_dims(self) -> int:
    return int(math.prod(self.image_shape))

  def setup(self):
    if self.objective not in ('elbo', 'iwae'):
      raise ValueError(f"objective={self.objective!r}; choose 'elbo' or 'iwae'.")
    if self.num_samples < 1:
      raise ValueError(f'num_samples={self.num_samples} must be >= 1.')
    h, w, c = self.image_shape
    scale = 2 ** len(self.conv_features)
    if h % scale or w % scale:
      raise ValueError(f'The upsampling network needs H and W divisible by {scale} '
                       f'(2 ** len(conv_features)), got {tuple(self.image_shape)}.')
    self.encoder = ConvEncoder(tuple(self.conv_features), self.hidden_dim,
                               2 * self.latent_dim)
    self.upsampler = ConvDecoder(tuple(self.image_shape), tuple(self.conv_features),
                                 self.hidden_dim, self.cond_channels)
    self.pixelcnn = GatedPixelCNN(
        num_levels=self.num_levels, num_channels=c, features=self.features,
        num_layers=self.num_layers, first_kernel=self.first_kernel,
        kernel_size=self.kernel_size, output_features=self.output_features, num_classes=0,
        output=self.output, num_mixtures=self.num_mixtures)

  # -- Pieces ----------------------------------------------------------------------------

  def _posterior(self, image):
    """(mean, log_var) of q(z | x), each [B, latent_dim]."""
    x = image.astype(jnp.float32) / (self.num_levels - 1)
    return tuple(jnp.split(self.encoder(x), 2, axis=-1))

  def cond_map(self, z):
    """s(z): z [..., latent_dim] -> [..., H, W, cond_channels]."""
    return self.upsampler(z)

  def decoder_outputs(self, x, z):
    """The PixelCNN's outputs given z: logits [B, H, W, C, num_levels] (or mixture
    parameters) of each sub-pixel given the earlier ones. x: integer images, or floats
    scaled to [-1, 1] (so that gradients with respect to the input can be taken)."""
    return self.pixelcnn(x, cond_map=self.cond_map(z))

  def log_px(self, image, z):
    """log p(x | z) per example, in nats. image [B, H, W, C]; z [B, D] or [k, B, D] (then
    the k * B images are decoded as one batch and the result is [k, B])."""
    lead, event = z.shape[:-1], tuple(image.shape[1:])
    x = jnp.broadcast_to(image, lead + event).reshape((-1,) + event)
    s = self.cond_map(z.reshape(-1, z.shape[-1]))
    return self.pixelcnn.log_prob(x, cond_map=s).reshape(lead)

  # -- The model -------------------------------------------------------------------------

  def log_weights(self, image, rng, num_samples: int):
    """[k, B] log w = log p(x | z) + log p(z) - log q(z | x) for k samples
    z = reparameterize(rng, mean, log_var, (k,)) from q(z | x), and the per-sample terms
    log p(x | z) and log q(z | x) - log p(z), [k, B] each."""
    mean, log_var = self._posterior(image)
    z = dist.reparameterize(rng, mean, log_var, (num_samples,))
    log_q = dist.gaussian_log_prob(z, mean, log_var, batch_ndim=2)
    log_p = dist.standard_normal_log_prob(z, batch_ndim=2)
    log_px = self.log_px(image, z)
    return log_px + log_p - log_q, log_px, log_q - log_p

  def loss(self, batch, train: bool = True):
    """Objective: -bound in nats per example, averaged. Metrics per example: 'nll' (the
    negated bound; in evaluation with eval_num_samples > 0, the importance-sampled
    estimate), 'recon' (-E log p(x|z)), 'kl' (analytic for 'elbo', Monte Carlo for
    'iwae') and 'elbo'."""
    image = batch['image']
    rng = self.make_rng('sample')
    k_train, k_eval = jax.random.split(rng)
    log_w, log_px, kl_mc = self.log_weights(image, k_train, self.num_samples)
    if self.objective == 'elbo':
      # Analytic KL: lower-variance gradients (Kingma & Welling 2014, Eq. 10).
      kl = dist.gaussian_kl_to_standard(*self._posterior(image))
      elbo = log_px.mean(0) - kl
      bound = elbo
    else:
      kl = kl_mc.mean(0)
      elbo = log_w.mean(0)
      bound = iwae.iwae_bound(log_w)
    metrics = {'recon': -log_px.mean(0), 'kl': kl, 'elbo': elbo, 'nll': -bound}
    # Not at init: the trainer initializes from an evaluation batch, and the estimate
    # would run k decoder passes over it for parameters that already exist.
    if not train and self.eval_num_samples > 0 and not self.is_initializing():
      metrics['nll'] = -self.log_likelihood(image, k_eval, self.eval_num_samples)
    return -bound.mean(), metrics

  def log_likelihood(self, image, rng, num_samples: int = 100):
    """Importance-sampled log p(x) per example with k = num_samples (IWAE paper, Sec. 5),
    in chunks of eval_chunk_size samples."""
    return iwae.log_likelihood(lambda r, n: self.log_weights(image, r, n)[0], rng,
                               num_samples, self.eval_chunk_size)

  # -- Pictures and samples --------------------------------------------------------------

  def encode(self, image):
    """The posterior mean of z [B, latent_dim]."""
    return self._posterior(image)[0]

  def decode(self, z, rng, temperature: float = 1.0):
    """An image on [0, 1] [B, H, W, C] sampled from p(x | z) (the cached sampler, which
    draws what the naive one draws)."""
    shape = (z.shape[0], *self.image_shape)
    x = self.pixelcnn.sample_cached(rng, shape, temperature, cond_map=self.cond_map(z))
    return x.astype(jnp.float32) / (self.num_levels - 1)

  def reconstruct(self, image, rng):
    """x' ~ p(x | z = posterior mean of z given x), on [0, 1]."""
    return self.decode(self.encode(image), rng)

  def _prior_map(self, rng, shape, temperature: float):
    if tuple(shape[1:]) != tuple(self.image_shape):
      raise ValueError(f'PixelVAE samples have shape [N, {tuple(self.image_shape)}], '
                       f'asked for {tuple(shape)}.')
    z = temperature * jax.random.normal(rng, (shape[0], self.latent_dim))
    return self.cond_map(z)

  def sample(self, rng, shape, temperature: float = 1.0):
    """x ~ p(x | z), z ~ N(0, T^2 I): integer images [N, H, W, C]. The temperature T also
    divides the PixelCNN's logits. Naive sampler: one PixelCNN pass per sub-pixel."""
    k_z, k_x = jax.random.split(rng)
    s = self._prior_map(k_z, shape, temperature)
    return self.pixelcnn.sample(k_x, tuple(shape), temperature, cond_map=s)

  def sample_cached(self, rng, shape, temperature: float = 1.0):
    """The same draws as `sample` under the same rng, from the PixelCNN's cached sampler
    (Ramachandran et al. 2017, arXiv 1704.06001)."""
    k_z, k_x = jax.random.split(rng)
    s = self._prior_map(k_z, shape, temperature)
    return self.pixelcnn.sample_cached(k_x, tuple(shape), temperature, cond_map=s)
