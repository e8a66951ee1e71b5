"""Video Pixel Networks: Kalchbrenner, van den Oord, Simonyan, Danihelka, Vinyals, Graves &
Kavukcuoglu, "Video Pixel Networks", ICML 2017, arXiv 1610.00527.

A video x = (F_0, ..., F_{T-1}) of grey frames is factorized over time and space (Eq. 1-2):

  p(F_K, ..., F_{T-1} | F_0..F_{K-1}) = prod_{t >= K} prod_{i, j} p(x_t,ij | x_t,<ij, F_<t),

K = context_frames given, the rest predicted. The network follows Sec. 3-4:

  * a resolution-preserving encoder per frame: a 3x3 input convolution to 2c channels,
    then residual multiplicative blocks (RMBs, Sec. 4.2) with dilated convolutions;
  * a convolutional LSTM (Shi et al. 2015; flax's ConvLSTMCell, its input convolution
    batched over frames: `ConvLSTM`) over the encoded frames,
    whose output after frame t - 1 is the context of frame t;
  * a PixelCNN decoder per frame, conditioned on that context map: here the gated
    PixelCNN of autoreg.gated_pixelcnn (van den Oord et al. 2016, by the same group), which
    adds a 1x1 convolution of the map to every layer's pre-activation (its Eq. 5) and has
    the cached sampler of Ramachandran et al. 2017. The paper's decoder is a stack of RMBs
    with masked convolutions; the gated stacks have no blind spot and a cached sampler,
    and the conditioning enters the same way.

A multiplicative unit (MU, Eq. 8-9) of a map h with c channels:

  g1, g2, g3 = sigmoid(W1 * h), sigmoid(W2 * h), sigmoid(W3 * h);  u = tanh(W4 * h)
  MU(h) = g1 . tanh(g2 . h + g3 . u)

and an RMB maps 2c channels to c (1x1), applies two MUs (3x3, dilated), maps back to 2c
(1x1) and adds its input.

Output distributions:

  * 'categorical': a 256-way softmax per pixel (the paper's model of raw pixel values), an
    exact log-likelihood of the 8-bit frames;
  * 'bernoulli': the Moving MNIST objective of the paper's Table 1 (as of Srivastava et
    al.): each pixel's intensity p = x / 255 is the target of a sigmoid cross-entropy,
    -[p log q + (1 - p) log(1 - q)]. Not a likelihood of 8-bit frames: its minimum is the
    entropy of the targets (the 86.3 nats per frame "lower bound" of Table 1), which
    `target_entropy` computes exactly. Sampling draws binary pixels (shown as 0 or 255).

frame_dependencies=False is the paper's baseline without dependencies between the pixels
of a frame: each predicted pixel depends only on the earlier frames (through the ConvLSTM
map), so a frame's pixels are independent given the past. Its decoder is a stack of
unmasked RMBs on the context map, as wide as the gated decoder.

Where this differs from the paper's Moving MNIST model (Sec. 5.1: 8 encoder RMBs with
dilations 1, 2, 4, 8 twice, c = 128, a 256-channel ConvLSTM, 12 masked decoder RMBs, a
768-channel layer before the output; RMSProp at 3e-4, batch 64, 300,000 steps): the
decoder is the gated PixelCNN named above; the ConvLSTM's kernel size (3 here) and how its
output enters the decoder (a 1x1 projection added to every layer here) are not given in
the paper.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from autoreg.gated_pixelcnn import GatedPixelCNN
from autoreg.pixelcnn import to_network_input

OUTPUTS = ('categorical', 'bernoulli')


class MultiplicativeUnit(nn.Module):
  """MU(h) = g1 . tanh(g2 . h + g3 . u) (Eq. 8-9), with 3x3 (dilated) convolutions."""
  features: int
  dilation: int = 1
  kernel_size: int = 3

  @nn.compact
  def __call__(self, h):
    k, d = self.kernel_size, self.dilation
    # The four convolutions W1..W4 as one, split into gates.
    z = nn.Conv(4 * self.features, (k, k), kernel_dilation=(d, d), padding='SAME')(h)
    g1, g2, g3, u = jnp.split(z, 4, axis=-1)
    g1, g2, g3, u = nn.sigmoid(g1), nn.sigmoid(g2), nn.sigmoid(g3), jnp.tanh(u)
    return g1 * jnp.tanh(g2 * h + g3 * u)


class ResidualMultiplicativeBlock(nn.Module):
  """2c -> c (1x1) -> MU -> MU -> 2c (1x1), plus the input (Sec. 4.2, Fig. 3)."""
  features: int          # c; the block's input and output have 2c channels
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.features, (1, 1))(x)
    h = MultiplicativeUnit(self.features, self.dilation)(h)
    h = MultiplicativeUnit(self.features, self.dilation)(h)
    return x + nn.Conv(2 * self.features, (1, 1))(h)


class FrameEncoder(nn.Module):
  """Resolution-preserving encoder of frames [B, H, W, 1] (floats in [-1, 1]) -> [B, H, W, 2c]."""
  features: int
  num_blocks: int
  dilations: Sequence[int]

  @nn.compact
  def __call__(self, frames):
    h = nn.Conv(2 * self.features, (3, 3), padding='SAME')(frames)
    for b in range(self.num_blocks):
      h = ResidualMultiplicativeBlock(self.features, self.dilations[b % len(self.dilations)])(h)
    return h


class IndependentDecoder(nn.Module):
  """The no-dependencies baseline's decoder (Sec. 5.1: "the frame to be predicted thus
  cannot be given as input"): unmasked RMBs on the context map, then per-pixel logits
  [B, H, W, 1, L]. Its maps have `features` channels (RMBs of c = features / 2), the
  width of the gated decoder's stacks, so the two decoders cost about the same."""
  features: int
  num_blocks: int
  num_levels: int
  output_features: int

  @nn.compact
  def __call__(self, cond_map):
    c = max(1, self.features // 2)
    h = nn.Conv(2 * c, (1, 1))(cond_map)
    for _ in range(self.num_blocks):
      h = ResidualMultiplicativeBlock(c)(h)
    h = nn.Conv(self.output_features, (1, 1))(nn.relu(h))
    logits = nn.Conv(self.num_levels, (1, 1))(nn.relu(h))
    return logits[..., None, :]


class ConvLSTM(nn.Module):
  """flax's nn.ConvLSTMCell (Shi et al. 2015: gates = conv_ih(x_t) + conv_hh(h_{t-1}); i, g,
  f, o = split; forget bias 1), with the same parameters (`ih`, `hh`: the cell's names,
  shapes and initializers), plus `over_frames`: the input-to-state convolution of every
  frame as one batched convolution, the loop over frames left with the state-to-state
  convolution and the gates."""
  features: int
  kernel_size: tuple

  def setup(self):
    conv = lambda name: nn.Conv(4 * self.features, self.kernel_size, padding='SAME',  # noqa: E731
                                name=name)
    self.ih, self.hh = conv('ih'), conv('hh')

  def _gates(self, carry, pre):
    c, h = carry
    i, g, f, o = jnp.split(pre + self.hh(h), 4, axis=-1)
    f = nn.sigmoid(f + 1)
    new_c = f * c + nn.sigmoid(i) * jnp.tanh(g)
    new_h = nn.sigmoid(o) * jnp.tanh(new_c)
    return (new_c, new_h), new_h

  def __call__(self, carry, inputs):
    """One step, as nn.ConvLSTMCell: (carry, x_t) -> (new carry, h_t)."""
    return self._gates(carry, self.ih(inputs))

  def over_frames(self, carry, frames):
    """frames [B, T, H, W, C] -> (final carry, outputs [B, T, H, W, features])."""
    b, t = frames.shape[:2]
    pre = self.ih(frames.reshape(b * t, *frames.shape[2:]))
    pre = pre.reshape(b, t, *pre.shape[1:])
    outs = []
    for k in range(t):
      carry, h = self._gates(carry, pre[:, k])
      outs.append(h)
    return carry, jnp.stack(outs, axis=1)


class VPN(nn.Module):
  """Video Pixel Network over uint8 grey videos [B, T, H, W, 1] (values 0..255).

  Attributes:
    context_frames: K, the frames given; frames K..T-1 are predicted (Moving MNIST: 10).
    output: 'categorical' (256-way softmax) or 'bernoulli' (intensity cross-entropy).
    encoder_features: c of the encoder's RMBs (their maps have 2c channels).
    encoder_blocks: RMBs per frame encoder.
    encoder_dilations: the dilation of each block's MUs, cycled (1, 2, 4, 8 in the paper).
    lstm_features, lstm_kernel: the ConvLSTM's channels and kernel size.
    decoder_features, decoder_layers, decoder_first_kernel, decoder_kernel,
      decoder_output_features: the gated PixelCNN decoder (autoreg.gated_pixelcnn).
    frame_dependencies: False for the baseline whose pixels depend on earlier frames only
      (its decoder: decoder_layers unmasked RMBs with maps of decoder_features channels).
  """
  context_frames: int = 10
  output: str = 'categorical'
  encoder_features: int = 64
  encoder_blocks: int = 4
  encoder_dilations: Sequence[int] = (1, 2, 4, 8)
  lstm_features: int = 64
  lstm_kernel: int = 3
  decoder_features: int = 32
  decoder_layers: int = 6
  decoder_first_kernel: int = 7
  decoder_kernel: int = 3
  decoder_output_features: int = 64
  frame_dependencies: bool = True

  @property
  def num_levels(self) -> int:
    """Values per pixel of the data: 256 (8-bit frames) in both output modes."""
    return 256

  @property
  def _decoder_levels(self) -> int:
    return 256 if self.output == 'categorical' else 2

  def setup(self):
    if self.output not in OUTPUTS:
      raise ValueError(f"VPN output must be one of {OUTPUTS}, got {self.output!r}.")
    if self.context_frames < 1:
      raise ValueError(f'context_frames must be >= 1, got {self.context_frames}.')
    if not self.encoder_dilations or min(self.encoder_dilations) < 1:
      raise ValueError(f'encoder_dilations must be positive, got {self.encoder_dilations}.')
    self.encoder = FrameEncoder(self.encoder_features, self.encoder_blocks,
                                tuple(self.encoder_dilations))
    # The ConvLSTM is applied in a Python loop over the frames, on purpose (issue 18): under
    # nn.scan (3c0ecdf) XLA:CPU ran the cell's convolution gradients inside the while loop
    # about 20x slower: the CPU config's train step took 18.4 s against 0.9 s unrolled,
    # while compiling 1.2 s faster (benchmarks.compile_time, 2026-12-05). Its input-to-state
    # convolution runs once over all frames (ConvLSTM.over_frames; flax's cell's
    # parameters): 2 rounds, 2026-12-07, compile 6.28 / 6.21 -> 5.54 / 5.80 s, step 1.05 /
    # 1.06 -> 0.94 / 0.97 s.
    self.lstm = ConvLSTM(self.lstm_features, (self.lstm_kernel, self.lstm_kernel))
    if self.frame_dependencies:
      self.decoder = GatedPixelCNN(
          num_levels=self._decoder_levels, num_channels=1, features=self.decoder_features,
          num_layers=self.decoder_layers, first_kernel=self.decoder_first_kernel,
          kernel_size=self.decoder_kernel, output_features=self.decoder_output_features)
    else:
      self.decoder = IndependentDecoder(self.decoder_features, self.decoder_layers,
                                        self._decoder_levels, self.decoder_output_features)

  # -- pieces ---------------------------------------------------------------------------

  def _check(self, video):
    if video.ndim != 5 or video.shape[-1] != 1:
      raise ValueError(f'VPN expects grey videos [B, T, H, W, 1], got shape {video.shape}.')
    if not self.context_frames < video.shape[1]:
      raise ValueError(f'context_frames={self.context_frames} leaves no frame to predict in '
                       f'videos of {video.shape[1]} frames.')

  def _encode(self, frames):
    """[B, N, H, W, 1] levels -> [B, N, H, W, 2c], each frame encoded on its own."""
    b, n = frames.shape[:2]
    e = self.encoder(to_network_input(frames, 256).reshape(b * n, *frames.shape[2:]))
    return e.reshape(b, n, *e.shape[1:])

  def _initial_carry(self, frame_shape):
    b, h, w = frame_shape[:3]
    zeros = jnp.zeros((b, h, w, self.lstm_features), jnp.float32)
    return zeros, zeros

  def _contexts(self, video):
    """ConvLSTM outputs after frames 0..T-2: [B, T-1, H, W, L]; entry t conditions frame t+1."""
    e = self._encode(video[:, :-1])
    carry = self._initial_carry(video.shape[0:1] + video.shape[2:])
    return self.lstm.over_frames(carry, e)[1]

  def _frame_logits(self, frames, cond):
    """Decoder logits [B, H, W, 1, L] of frames [B, H, W, 1] given context maps."""
    if not self.frame_dependencies:
      return self.decoder(cond)
    # Levels 0..255 scaled to [-1, 1]: what the decoder's own samplers feed it (their
    # binary draws in bernoulli mode are levels 0 and 255), and differentiable.
    return self.decoder(to_network_input(frames, 256), cond_map=cond)

  def _frame_log_prob(self, logits, frames):
    """Per-frame log-likelihood [B] (categorical) or minus the cross-entropy (bernoulli)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if self.output == 'categorical':
      picked = jnp.take_along_axis(logp, frames[..., None].astype(jnp.int32), axis=-1)[..., 0]
    else:
      p = frames.astype(jnp.float32) / 255.0
      picked = p * logp[..., 1] + (1.0 - p) * logp[..., 0]
    return picked.reshape(picked.shape[0], -1).sum(axis=-1)

  # -- entry points -------------------------------------------------------------------

  def __call__(self, video, train: bool = False):
    """Logits [B, T-K, H, W, 1, L] of the predicted frames, each pixel given the context
    frames, the earlier predicted frames and (with frame_dependencies) the earlier pixels
    of its own frame. video: uint8 or int [B, T, H, W, 1]; floats 0..255 are accepted so
    gradients with respect to the input can be taken."""
    del train
    self._check(video)
    k = self.context_frames
    cond = self._contexts(video)[:, k - 1:]             # conditions frames K..T-1
    target = video[:, k:]
    b, n = target.shape[:2]
    logits = self._frame_logits(target.reshape(b * n, *target.shape[2:]),
                                cond.reshape(b * n, *cond.shape[2:]))
    return logits.reshape(b, n, *logits.shape[1:])

  def log_prob(self, video):
    """Per video [B]: log p(F_K..F_{T-1} | F_<K) in nats (categorical), or minus the summed
    per-pixel intensity cross-entropy (bernoulli)."""
    logits = self(video)
    k = self.context_frames
    target = video[:, k:]
    b, n = target.shape[:2]
    lp = self._frame_log_prob(logits.reshape(b * n, *logits.shape[2:]),
                              target.reshape(b * n, *target.shape[2:]))
    return lp.reshape(b, n).sum(axis=1)

  def loss(self, batch, train: bool = True):
    """Mean NLL per video; metrics per video: 'nll' (nats, all predicted frames; in
    bernoulli mode the intensity cross-entropy), 'nll_per_frame', 'num_dims' (predicted
    pixels) for bits/dim, and in bernoulli mode 'entropy_per_frame', the targets' own
    entropy (the cross-entropy's lower bound)."""
    video = batch['video']
    n = video.shape[1] - self.context_frames
    nll = -self.log_prob(video)
    dims = jnp.full(nll.shape, n * video.shape[2] * video.shape[3], jnp.float32)
    metrics = {'nll': nll, 'nll_per_frame': nll / n, 'num_dims': dims}
    if self.output == 'bernoulli':   # the cross-entropy's floor on these very frames
      metrics['entropy_per_frame'] = self.target_entropy(video) / n
    return nll.mean(), metrics

  def target_entropy(self, video):
    """bernoulli mode's lower bound per video [B]: the summed binary entropy of the
    predicted frames' intensities, nats (0 for binary frames)."""
    p = video[:, self.context_frames:].astype(jnp.float32) / 255.0
    tiny = jnp.finfo(jnp.float32).tiny   # 0 log 0 = 0, without a NaN anywhere under jit
    h = -(p * jnp.log(jnp.maximum(p, tiny)) + (1 - p) * jnp.log(jnp.maximum(1 - p, tiny)))
    return h.reshape(h.shape[0], -1).sum(axis=-1)

  # -- sampling ---------------------------------------------------------------------

  def _levels_of(self, draws):
    """Decoder draws -> 8-bit levels: bernoulli's binary pixels become 0 or 255."""
    return draws if self.output == 'categorical' else draws * 255

  def _sample_frames(self, rng, shape, temperature, context, frame_sampler):
    """Frames K..T-1 given context [B, K, H, W, 1], one at a time: decode the next frame
    from the ConvLSTM's state, encode it, step the ConvLSTM. Returns the whole video
    [B, T, H, W, 1] int32 (the context followed by the samples)."""
    b, t_total = shape[:2]
    k = self.context_frames
    if context is None or context.shape[1] != k or tuple(context.shape[2:]) != tuple(shape[2:]):
      raise ValueError(f'VPN sampling needs context [B, {k}, H, W, 1] frames matching shape '
                       f'{tuple(shape)}, got {None if context is None else context.shape}.')
    context = context.astype(jnp.int32)
    frame_shape = (b, *shape[2:])
    carry = self._initial_carry(frame_shape)
    # The context frames through the ConvLSTM as the likelihood runs them (_contexts).
    carry, _ = self.lstm.over_frames(carry, self._encode(context))
    h = carry[1]   # the last context frame's output (the carry is (c, h))
    frames = [context[:, t] for t in range(k)]
    for t in range(k, t_total):
      key = jax.random.fold_in(rng, t)
      if self.frame_dependencies:
        draws = frame_sampler(key, frame_shape, h)
      else:
        logits = self.decoder(h)[..., 0, :]
        draws = jax.random.categorical(key, logits / temperature)[..., None]
      frame = self._levels_of(draws.astype(jnp.int32))
      frames.append(frame)
      if t < t_total - 1:
        carry, h = self.lstm(carry, self._encode(frame[:, None])[:, 0])
    return jnp.stack(frames, axis=1)

  def sample(self, rng, shape, temperature: float = 1.0, context=None):
    """Naive sampling: each predicted frame by the decoder's naive sampler (one full
    decoder pass per pixel). Frame t uses jax.random.fold_in(rng, t)."""
    return self._sample_frames(
        rng, shape, temperature, context,
        lambda key, fs, h: self.decoder.sample(key, fs, temperature, cond_map=h))

  def sample_cached(self, rng, shape, temperature: float = 1.0, context=None):
    """The same draws as `sample`, each frame by the gated PixelCNN's cached sampler."""
    return self._sample_frames(
        rng, shape, temperature, context,
        lambda key, fs, h: self.decoder.sample_cached(key, fs, temperature, cond_map=h))

