"""WaveNet: van den Oord, Dieleman, Zen, Simonyan, Vinyals, Graves, Kalchbrenner, Senior &
Kavukcuoglu, "WaveNet: A Generative Model for Raw Audio", 2016, arXiv 1609.03499.

p(x | h) = prod_t p(x_t | x_<t, h) over the samples of a waveform (Eq. 1, Eq. 4). Each x_t
is one of 256 levels of 8-bit mu-law companding (Eq. 2, `mu_law_encode`):

  f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu),  mu = 255, x in [-1, 1],

quantized uniformly in f. The network (Sec. 2.1-2.4, Fig. 3-4; autoreg.causal_conv):

  * the input x_<t as one channel of companded values f in [-1, 1], shifted right by one
    sample with a zero (silence) start value, so output t is predicted from x_<t only;
  * a causal convolution (kernel `input_kernel`) to `residual_channels`;
  * `num_stacks` repeats of `num_layers` gated residual blocks with kernel 2 and
    dilations 1, 2, ..., 2^(num_layers - 1), each
      z = tanh(W_f * x + V_f h + V_f' * y) . sigmoid(W_g * x + V_g h + V_g' * y)
    (Eq. 3, 5, 6) with a 1x1 residual update and a 1x1 skip output;
  * ReLU -> 1x1 -> ReLU -> 1x1 on the sum of the skips, giving 256 logits (a softmax over
    the mu-law levels, Sec. 2.2).

Receptive field R = input_kernel + num_stacks (kernel_size - 1) (2^num_layers - 1)
samples: output t depends on exactly x_{t-R} .. x_{t-1} (tested by gradients). With the defaults of
the CPU config (input kernel 2, 2 stacks of dilations 1..512) R = 2048 samples, 0.256 s at 8 kHz.

Conditioning: global (Eq. 5) one-hot speaker and digit-class vectors h, one linear map
V per layer and per vector (`num_speakers`, `num_classes`; 0 turns either off); local
(Eq. 6) a feature sequence [B, T', C] at a lower rate, upsampled by a learned transposed
convolution with stride `local_upsample` (Sec. 2.6) to `local_channels` channels at the
sample rate, entering each layer through its own 1x1 convolution V' * y.

output='logistic_mixture' replaces the softmax with PixelCNN++'s discretized logistic
mixture (Salimans et al. 2017, arXiv 1701.05517, Eq. 2; autoreg.distributions), used for
audio by Parallel WaveNet (van den Oord et al. 2017, arXiv 1711.10433). Here it is over the
same 256 mu-law levels (companded values in [-1, 1], bins of width 2/255) rather than
over raw 16-bit PCM, so both heads model the same discrete variable and their bits per
sample compare directly.

`sample` is naive ancestral sampling (the whole network on the whole sequence per
sample); `sample_fast` is the fast generation of Paine et al. 2016 (arXiv 1611.09482) with
per-layer ring buffers (autoreg.causal_conv.ring_taps), compiled as one lax.scan. Both
draw sample t with jax.random.fold_in(rng, t) and emit the same samples.

The num_stacks x num_layers gated blocks are one `nn.scan` over `WaveNetLayer` (issue
18): the dilation is a scanned input (the causal shift a dynamic slice), so the train
step traces one block whatever the depth or the number of stacks, and the blocks'
parameters are stacked on a leading layer axis under `layers` (conv_kernel, conv_bias,
out_kernel, out_bias, local_kernel). The fast sampler keeps one ring buffer per layer,
whose lengths (k-1) d differ, so it loops over the layers with each one's slice of the
stacked parameters and a static dilation (its compile time still grows with depth; the
train step's does not). Checkpoints of the unrolled model (`stack/convs_l`,
`stack/outs_l`, `local_proj_l`, before this change) convert with `unrolled_to_scanned`,
which maps the parameters and, applied to them, Adam's mu and nu. Measured on the 2-core
CPU while shared (rough): the default config's init + train-step compile + first step
took 6.9-8.2 CPU s against 10.5-10.6 unrolled (2 stacks: 7.1 against 12.0), the same
step time; the train step's HLO went from 4,552 to 1,612 lines.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from autoreg import distributions, likelihood
from autoreg.causal_conv import CausalConv1D, receptive_field, ring_taps, shift_right
from autoreg.gating import gate
from autoreg.pixelcnn import to_network_input

PCM_SCALE = 32768.0   # int16 full scale


def mu_law_encode(audio, num_levels: int = 256):
  """Eq. 2: audio -> integer codes in {0..num_levels-1} (int32).

  audio: int16 PCM (scaled by 1/32768) or floats in [-1, 1] (clipped). The companded value
  f in [-1, 1] is rounded to the nearest of num_levels evenly spaced levels.
  """
  audio = jnp.asarray(audio)
  mu = num_levels - 1
  if jnp.issubdtype(audio.dtype, jnp.integer):
    x = audio.astype(jnp.float32) / PCM_SCALE
  else:
    x = jnp.clip(audio.astype(jnp.float32), -1.0, 1.0)
  f = jnp.sign(x) * jnp.log1p(mu * jnp.abs(x)) / math.log1p(mu)
  return jnp.clip(jnp.floor((f + 1.0) * (mu / 2.0) + 0.5), 0, mu).astype(jnp.int32)


def mu_law_decode(codes, num_levels: int = 256, dtype=jnp.float32):
  """The inverse of Eq. 2 at the level centres: codes -> audio in [-1, 1].

  dtype=jnp.int16 gives 16-bit PCM (for a WAV file). The error of a round trip
  x -> code -> x' is at most (1/mu + |x|) ((1 + mu)^(1/mu) - 1), about 2.2% of |x| plus
  8.6e-5 for mu = 255 (half a level in f, through the slope of the expansion).
  """
  mu = num_levels - 1
  f = jnp.asarray(codes).astype(jnp.float32) * (2.0 / mu) - 1.0
  # Clipped: in float32 the top level's expm1(ln 256) / 255 can exceed 1 by an ulp.
  x = jnp.clip(jnp.sign(f) * jnp.expm1(jnp.abs(f) * math.log1p(mu)) / mu, -1.0, 1.0)
  if jnp.dtype(dtype) == jnp.int16:
    return jnp.clip(jnp.round(x * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1).astype(jnp.int16)
  return x.astype(dtype)


def _shift_right_traced(x, n):
  """shift_right(x, n) for a traced n >= 0: x [B, T, C] delayed by n steps, zeros first."""
  t = x.shape[1]
  return jax.lax.dynamic_slice_in_dim(jnp.concatenate([jnp.zeros_like(x), x], axis=1),
                                      t - jnp.minimum(n, t), t, axis=1)


def _layer_output(p, taps, current, cond, feat, residual_channels: int):
  """One gated residual block (Eq. 3, 5, 6; Fig. 4) from its parameters p and its taps
  [B, T, k R] (the k inputs at t - (k-1) d, ..., t concatenated along channels, as
  CausalConv1D concatenates them): (residual output, skip output). The full pass (under
  nn.scan) and the fast sampler (on one layer's slice of p) both call this."""
  if feat is not None:
    loc = jnp.dot(feat, p['local_kernel'])
    cond = loc if cond is None else cond + loc
  kernel = p['conv_kernel']
  pre = jnp.dot(taps, kernel.reshape(-1, kernel.shape[-1])) + p['conv_bias']
  if cond is not None:
    pre = pre + cond
  out = jnp.dot(gate(pre), p['out_kernel']) + p['out_bias']
  return current + out[..., :residual_channels], out[..., residual_channels:]


class WaveNetLayer(nn.Module):
  """The dilated gated residual block that `nn.scan` repeats over all layers: the
  dilation is a scanned input, so one traced body serves 1, 2, ..., 512 and every stack.

  Parameters (under nn.scan each with a leading layer axis): conv_kernel [k, R, 2G],
  conv_bias [2G] (the dilated convolution, W_f and W_g), out_kernel [G, R + S], out_bias
  (the 1x1 residual and skip outputs), and with local conditioning local_kernel [C, 2G]
  (V_f' and V_g').
  """
  residual_channels: int
  gate_channels: int
  skip_channels: int
  kernel_size: int

  @nn.compact
  def __call__(self, carry, xs, feat):
    """carry (h [B, T, R], skip sum [B, T, S]); xs (dilation, global term or None)."""
    h, skip = carry
    dilation, glob = xs
    k, r, g2 = self.kernel_size, self.residual_channels, 2 * self.gate_channels
    lecun, zeros = nn.initializers.lecun_normal(), nn.initializers.zeros
    p = {'conv_kernel': self.param('conv_kernel', lecun, (k, r, g2)),
         'conv_bias': self.param('conv_bias', zeros, (g2,)),
         'out_kernel': self.param('out_kernel', lecun, (self.gate_channels,
                                                        r + self.skip_channels)),
         'out_bias': self.param('out_bias', zeros, (r + self.skip_channels,))}
    if feat is not None:
      p['local_kernel'] = self.param('local_kernel', lecun, (feat.shape[-1], g2))
    taps = jnp.concatenate([_shift_right_traced(h, (k - 1 - j) * dilation)
                            for j in range(k)], axis=-1)
    h, s = _layer_output(p, taps, h, glob, feat, r)
    return (h, s if skip is None else skip + s), None


def unrolled_to_scanned(variables: dict) -> dict:
  """Parameters of the unrolled WaveNet (before issue 18: `stack/convs_l` {kernel, bias},
  `stack/outs_l` {kernel, bias} and `local_proj_l` {kernel}, l = 0..n-1 over all stacks'
  layers) -> this module's layout: one `layers` holding conv_kernel [n, k, R, 2G],
  conv_bias [n, 2G], out_kernel [n, G, R + S], out_bias [n, R + S] and, with local
  conditioning, local_kernel [n, C, 2G], each the old leaves stacked in layer order;
  input_conv, speaker_proj, label_proj, upsample, hidden_out and logits_out unchanged.
  Takes {'params': tree, ...} or a bare parameter tree (so it maps Adam's mu and nu
  too); a tree already converted is returned as it is.
  """
  variables = dict(variables)
  if 'params' in variables:
    return {**variables, 'params': unrolled_to_scanned(variables['params'])}
  if 'layers' in variables:
    return variables
  stack = variables['stack']
  n = len([k for k in stack if k.startswith('convs_')])
  def stacked(module, leaf, prefix=None):
    return jnp.stack([(stack if prefix is None else variables)[f'{module}_{i}'][leaf]
                      for i in range(n)])
  layers = {'conv_kernel': stacked('convs', 'kernel'), 'conv_bias': stacked('convs', 'bias'),
            'out_kernel': stacked('outs', 'kernel'), 'out_bias': stacked('outs', 'bias')}
  if 'local_proj_0' in variables:
    layers['local_kernel'] = stacked('local_proj', 'kernel', prefix='')
  out = {k: v for k, v in variables.items()
         if k != 'stack' and not k.startswith('local_proj_')}
  out['layers'] = layers
  return out


class WaveNet(nn.Module):
  """WaveNet over mu-law codes [B, T] (see the module docstring).

  Attributes:
    num_levels: quantization levels of mu-law companding (256: mu = 255).
    residual_channels: channels of the residual stream.
    gate_channels: channels of each gated unit's output z ("dilation channels").
    skip_channels: channels of each layer's skip output.
    output_channels: channels of the hidden 1x1 layer of the output.
    kernel_size: kernel of the dilated convolutions (2 in the paper).
    num_layers: dilated layers per stack, dilations 1, 2, ..., 2^(num_layers - 1).
    num_stacks: repeats of the dilation cycle.
    input_kernel: kernel of the first causal convolution.
    num_speakers: speakers of global conditioning on batch['speaker']; 0 = off.
    num_classes: classes (digits) of global conditioning on batch['label']; 0 = off.
    local_channels: channels of the upsampled local features; 0 = no local conditioning.
    local_upsample: samples per local feature frame (the transposed convolution's stride).
    output: 'categorical' (softmax over the levels) or 'logistic_mixture'.
    num_mixtures: logistic components in 'logistic_mixture' mode.

  Local features are a call argument `local` [B, T', C] with T' * local_upsample >= T
  (batch['local'] in `loss`); initialize with them to create their parameters.
  """
  num_levels: int = 256
  residual_channels: int = 32
  gate_channels: int = 32
  skip_channels: int = 64
  output_channels: int = 128
  kernel_size: int = 2
  num_layers: int = 10
  num_stacks: int = 2
  input_kernel: int = 2
  num_speakers: int = 0
  num_classes: int = 0
  local_channels: int = 0
  local_upsample: int = 1
  output: str = 'categorical'
  num_mixtures: int = 10

  @property
  def dilations(self) -> tuple[int, ...]:
    return tuple(2 ** i for i in range(self.num_layers)) * self.num_stacks

  @property
  def receptive_field(self) -> int:
    """R: output t depends on exactly the samples t - R .. t - 1."""
    return self.input_kernel - 1 + receptive_field(self.kernel_size, self.dilations)

  @property
  def _mixture(self) -> bool:
    return self.output == 'logistic_mixture'

  @property
  def _head_features(self) -> int:
    if self._mixture:
      return distributions.num_params(1, self.num_mixtures)
    return self.num_levels

  def setup(self):
    if self.output not in ('categorical', 'logistic_mixture'):
      raise ValueError("WaveNet output must be 'categorical' or 'logistic_mixture', got "
                       f'{self.output!r}')
    if min(self.num_layers, self.num_stacks, self.input_kernel, self.kernel_size,
           self.local_upsample) < 1:
      raise ValueError('WaveNet needs num_layers, num_stacks, input_kernel, kernel_size and '
                       f'local_upsample >= 1, got {self.num_layers}, {self.num_stacks}, '
                       f'{self.input_kernel}, {self.kernel_size}, {self.local_upsample}')
    if self._mixture and self.num_mixtures < 1:
      raise ValueError(f'num_mixtures must be >= 1, got {self.num_mixtures}')
    n, g2 = len(self.dilations), 2 * self.gate_channels
    self.input_conv = CausalConv1D(self.residual_channels, self.input_kernel)
    # All layers of all stacks: one traced body, parameters stacked on axis 0, the
    # dilation a scanned input and the local features broadcast.
    layers = nn.scan(WaveNetLayer, variable_axes={'params': 0}, split_rngs={'params': True},
                     in_axes=(0, nn.broadcast), length=n)
    self.layers = layers(self.residual_channels, self.gate_channels, self.skip_channels,
                         self.kernel_size)
    # V_f h and V_g h of every layer as the column blocks of one matrix per vector.
    if self.num_speakers:
      self.speaker_proj = nn.Dense(n * g2, use_bias=False)
    if self.num_classes:
      self.label_proj = nn.Dense(n * g2, use_bias=False)
    if self.local_channels:
      self.upsample = nn.ConvTranspose(self.local_channels, (self.local_upsample,),
                                       strides=(self.local_upsample,), padding='VALID')
    self.hidden_out = nn.Dense(self.output_channels)
    self.logits_out = nn.Dense(self._head_features)

  # -- Pieces shared by the full pass and the fast sampler -------------------------------

  def _global_terms(self, speaker, label):
    """V_f h + V_g h (Eq. 5) of every layer, stacked [layers, B, 1, 2 gate_channels], or
    None."""
    for name, n, value in (('speaker', self.num_speakers, speaker),
                           ('label', self.num_classes, label)):
      if n and value is None:
        raise ValueError(f'This WaveNet is conditioned on the {name} ({n} values): pass '
                         f'{name}= int [B].')
      if not n and value is not None:
        raise ValueError(f'A {name} was given to a WaveNet that is not conditioned on it.')
    n = len(self.dilations)
    term = None
    if self.num_speakers:
      term = self.speaker_proj(jax.nn.one_hot(speaker, self.num_speakers))
    if self.num_classes:
      lab = self.label_proj(jax.nn.one_hot(label, self.num_classes))
      term = lab if term is None else term + lab
    if term is None:
      return None
    # Layer l's terms are columns l * 2G .. (l + 1) * 2G - 1.
    return jnp.transpose(term.reshape(term.shape[0], n, -1), (1, 0, 2))[:, :, None, :]

  def _local_features(self, local, length: int):
    """Local features upsampled to the sample rate, [B, length, local_channels], or None."""
    if not self.local_channels:
      if local is not None:
        raise ValueError('Local features were given to a WaveNet with local_channels=0.')
      return None
    if local is None:
      raise ValueError(f'This WaveNet has local conditioning (local_channels='
                       f'{self.local_channels}): pass local= features [B, T\', C].')
    y = self.upsample(jnp.asarray(local, jnp.float32))
    if y.shape[1] < length:
      raise ValueError(f'{local.shape[1]} local frames x local_upsample={self.local_upsample} '
                       f'= {y.shape[1]} samples, fewer than the {length} to condition.')
    return y[:, :length]

  def _head(self, skip):
    return self.logits_out(nn.relu(self.hidden_out(nn.relu(skip))))

  def _draw(self, key, out, temperature):
    """One sample's code [B] from its logits or mixture parameters [B, F]."""
    if self._mixture:
      return distributions.sample(key, out, 1, self.num_levels, self.num_mixtures,
                                  temperature)[:, 0].astype(jnp.int32)
    return jax.random.categorical(key, out / temperature).astype(jnp.int32)

  # -- Entry points ------------------------------------------------------------------------

  def __call__(self, x, train: bool = False, speaker=None, label=None, local=None):
    """Logits [B, T, num_levels] of each sample given the earlier ones (with
    output='logistic_mixture', mixture parameters [B, T, 3 num_mixtures]).

    x: mu-law codes int [B, T], or floats already scaled to [-1, 1] (so gradients with
    respect to the input can be taken). speaker, label: int [B] for global conditioning.
    local: [B, T', C] features for local conditioning.
    """
    del train  # no dropout or batch statistics
    if x.ndim != 2:
      raise ValueError(f'WaveNet expects mu-law codes [B, T], got shape {x.shape}')
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = to_network_input(x, self.num_levels)
    glob = self._global_terms(speaker, label)
    feat = self._local_features(local, x.shape[1])
    # The input at t is x_{t-1} (silence at t = 0): output t never sees x_t.
    h = self.input_conv(shift_right(x[..., None], 1))
    skip = jnp.zeros((*h.shape[:2], self.skip_channels), h.dtype)
    dilations = jnp.asarray(self.dilations, jnp.int32)
    (h, skip), _ = self.layers((h, skip), (dilations, glob), feat)
    return self._head(skip)

  def position_log_probs(self, out, codes):
    """log p(x_t | x_<t) [B, T] from the network's output [B, T, F] and codes [B, T]."""
    b, t = codes.shape
    flat = out.reshape(b * t, -1)
    if self._mixture:
      lp = distributions.log_prob(flat, codes.reshape(b * t, 1), self.num_levels,
                                  self.num_mixtures)
    else:
      lp = likelihood.categorical_log_prob(flat, codes.reshape(b * t))
    return lp.reshape(b, t)

  def log_prob(self, codes, speaker=None, label=None, local=None, mask=None):
    """log p(x) per example in nats, summed over the samples where mask [B, T] is True."""
    lp = self.position_log_probs(self(codes, speaker=speaker, label=label, local=local),
                                 codes)
    if mask is not None:
      lp = jnp.where(mask, lp, 0.0)
    return lp.sum(axis=-1)

  def decode_audio(self, codes):
    """Generated mu-law codes [B, T] -> waveforms in [-1, 1] (the inverse of Eq. 2)."""
    return mu_law_decode(codes, self.num_levels)

  def loss(self, batch, train: bool = True):
    """Objective: nats per scored sample. Metrics per example: 'nll' (nats summed over the
    samples of batch['mask']; padding is not scored) and 'num_dims' (samples scored), so
    the trainer's bits/dim is bits per audio sample.

    batch['audio']: int16 PCM [B, T] (mu-law encoded here); 'mask' bool [B, T] (all True
    when absent); 'speaker', 'label' int [B] when conditioned on them; 'local' [B, T', C]
    with local conditioning.
    """
    codes = mu_law_encode(batch['audio'], self.num_levels)
    mask = batch.get('mask')
    mask = jnp.ones(codes.shape, bool) if mask is None else jnp.asarray(mask, bool)
    nll = -self.log_prob(codes, speaker=batch['speaker'] if self.num_speakers else None,
                         label=batch['label'] if self.num_classes else None,
                         local=batch.get('local') if self.local_channels else None,
                         mask=mask)
    num_dims = mask.sum(axis=-1).astype(jnp.float32)
    objective = nll.sum() / jnp.maximum(num_dims.sum(), 1.0)
    return objective, {'nll': nll, 'num_dims': num_dims}

  def sample(self, rng, shape, temperature: float = 1.0, speaker=None, label=None,
             local=None, init=None, start: int = 0, stop: int | None = None):
    """Naive ancestral sampling: the whole network on the whole sequence for each sample,
    in a compiled fori_loop. Returns mu-law codes int [B, T] (`mu_law_decode` them).

    Sample t is drawn with jax.random.fold_in(rng, t). `init` [B, T] and `start` continue
    from given codes (samples before `start` are kept); samples from `stop` on are left
    as they are (a benchmark times a prefix).
    """
    b, length = shape
    x = jnp.zeros(shape, jnp.int32) if init is None else jnp.asarray(init, jnp.int32)

    def body(t, x):
      out = self(x, speaker=speaker, label=label, local=local)
      out_t = jax.lax.dynamic_index_in_dim(out, t, 1, keepdims=False)
      return x.at[:, t].set(self._draw(jax.random.fold_in(rng, t), out_t, temperature))

    return jax.lax.fori_loop(start, length if stop is None else stop, body, x)

  def sample_fast(self, rng, num_samples_or_shape, temperature: float = 1.0, speaker=None,
                  label=None, local=None, init=None, start: int = 0,
                  return_logits: bool = False):
    """Fast generation with per-layer ring buffers (Paine et al. 2016), one lax.scan step
    per sample at O(layers) cost. The same draws as `sample` under the same rng.

    num_samples_or_shape: (B, T), or T for as many sequences as speaker/label/local give
    (else 1). `init` and `start` as in `sample`. Returns codes int [B, T]; with
    return_logits also the network's output [B, T, F] each draw used.
    """
    if isinstance(num_samples_or_shape, (int, np.integer)):
      given = [v for v in (speaker, label, local, init) if v is not None]
      shape = (len(given[0]) if given else 1, int(num_samples_or_shape))
    else:
      shape = tuple(num_samples_or_shape)
    b, length = shape
    glob = self._global_terms(speaker, label)
    feat = self._local_features(local, length)
    given = jnp.zeros(shape, jnp.int32) if init is None else jnp.asarray(init, jnp.int32)
    k0 = self.input_kernel
    carry = (jnp.zeros((b, 1, 1), jnp.float32),                 # input at t: x_{t-1}
             jnp.zeros((b, k0 - 1, 1), jnp.float32),            # the input conv's queue
             [jnp.zeros((b, (self.kernel_size - 1) * d, self.residual_channels))
              for d in self.dilations])                         # one queue per layer
    # The fast sampler loops over the layers with each one's slice of the stacked
    # parameters: the queues differ in length (the dilations are static there).
    params = self.layers.variables['params']
    k, r = self.kernel_size, self.residual_channels

    def step(carry, t):
      x_prev, in_cache, caches = carry
      taps, in_cache = ring_taps(in_cache, x_prev, t, k0, 1)
      h = self.input_conv(taps, decode=True)
      feat_t = None if feat is None else jax.lax.dynamic_slice_in_dim(feat, t, 1, 1)
      skip, new_caches = None, []
      for layer, (cache, d) in enumerate(zip(caches, self.dilations, strict=True)):
        taps, cache = ring_taps(cache, h, t, k, d)
        p = jax.tree.map(lambda a, layer=layer: a[layer], params)
        h, s = _layer_output(p, taps.reshape(b, 1, k * r), taps[:, -1:],
                             None if glob is None else glob[layer], feat_t, r)
        skip = s if skip is None else skip + s
        new_caches.append(cache)
      out = self._head(skip)[:, 0]
      draw = self._draw(jax.random.fold_in(rng, t), out, temperature)
      code = jnp.where(t < start, jax.lax.dynamic_index_in_dim(given, t, 1, False), draw)
      x_t = to_network_input(code, self.num_levels)[:, None, None]
      return (x_t, in_cache, new_caches), (code, out if return_logits else None)

    _, (codes, outs) = jax.lax.scan(step, carry, jnp.arange(length, dtype=jnp.int32))
    codes = codes.T
    return (codes, jnp.swapaxes(outs, 0, 1)) if return_logits else codes

  def sample_cached(self, rng, shape, temperature: float = 1.0, **kwargs):
    """The trainer's name for the fast sampler (config.sample.sampler='cached')."""
    return self.sample_fast(rng, shape, temperature, **kwargs)
