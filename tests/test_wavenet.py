"""WaveNet and ByteNet: causality and the exact receptive field by gradients, mu-law
companding, the fast (ring-buffer) generator drawing exactly what the naive sampler draws,
masked likelihoods, local conditioning, and the tiny configs through the trainer."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoreg.bytenet import ByteNet
from autoreg.causal_conv import ring_taps
from autoreg.wavenet import WaveNet, mu_law_decode, mu_law_encode
from experiments import train
from tests.conftest import random_params

TINY = dict(residual_channels=8, gate_channels=8, skip_channels=8, output_channels=16,
            num_layers=3, num_stacks=2)


def _band(length, lo, hi):
  """Boolean [T, T]: output t is expected to depend on input s iff t - lo <= s <= t - hi."""
  t, s = np.arange(length)[:, None], np.arange(length)[None, :]
  return (s >= t - lo) & (s <= t - hi)


@pytest.mark.parametrize('kernel_size,input_kernel', [(2, 2), (3, 4)])
def test_wavenet_output_t_sees_exactly_the_receptive_field_before_t(kernel_size, input_kernel):
  model = WaveNet(**TINY, kernel_size=kernel_size, input_kernel=input_kernel, num_speakers=2)
  r = model.receptive_field
  assert r == input_kernel + 2 * (kernel_size - 1) * (1 + 2 + 4)
  length = r + 12
  speaker = jnp.array([0, 1, 1])
  params = random_params(model, jnp.zeros((3, length)), speaker=speaker)
  x = jax.random.uniform(jax.random.key(3), (3, length), minval=-1.0, maxval=1.0)
  # Examples are independent, so summing over the batch keeps their Jacobians apart.
  jac = jax.jit(jax.jacrev(lambda x: model.apply(params, x, speaker=speaker).sum((0, -1))))(x)
  dep = np.asarray((jac != 0).any(axis=1))                      # [T out, T in]
  np.testing.assert_array_equal(dep, _band(length, r, 1))


def test_bytenet_prediction_sees_exactly_the_receptive_field_up_to_t():
  model = ByteNet(residual_channels=8, gate_channels=8, output_channels=16, num_layers=2,
                  num_stacks=2)
  r = model.receptive_field
  assert r == 1 + 2 * (1 + 2) * 2
  length = r + 10
  params = random_params(model, jnp.zeros((3, length), jnp.int32))
  emb = jax.random.normal(jax.random.key(4), (3, length, 8))
  jac = jax.jit(jax.jacrev(lambda e: model.apply(params, e).sum((0, -1))))(emb)
  dep = np.asarray((jac != 0).any(axis=(1, 3)))
  # Output t predicts character t + 1: it sees characters t - R + 1 .. t, never t + 1.
  np.testing.assert_array_equal(dep, _band(length, r - 1, 0))


def test_mu_law_codes_in_range_and_round_trip_error_bound():
  pcm = jnp.arange(-32768, 32768, dtype=jnp.int32).astype(jnp.int16)
  codes = np.asarray(jax.jit(mu_law_encode)(pcm))
  assert codes.dtype == np.int32 and codes.min() == 0 and codes.max() == 255
  assert (np.diff(codes) >= 0).all()                          # monotone
  assert codes[32768] == 128                                  # silence
  x = np.asarray(pcm, np.float64) / 32768
  back = np.asarray(jax.jit(mu_law_decode)(codes), np.float64)
  mu = 255
  bound = (1 / mu + np.abs(x)) * ((1 + mu) ** (1 / mu) - 1) + 1e-6
  assert (np.abs(back - x) <= bound).all()
  # Level centres are fixed points; floats out of range clip; int16 output.
  levels = jnp.arange(256)
  np.testing.assert_array_equal(mu_law_encode(mu_law_decode(levels)), levels)
  np.testing.assert_array_equal(mu_law_encode(jnp.array([-3.0, 2.0])), [0, 255])
  pcm_back = np.asarray(jax.jit(mu_law_decode, static_argnums=(1, 2))(codes, 256, jnp.int16))
  assert pcm_back.dtype == np.int16
  # rounding to the int16 grid; +1.0 (the top level) clips to 32767 / 32768
  assert np.abs(pcm_back / 32768 - back).max() <= 1 / 32768 + 1e-9


def test_ring_buffer_returns_the_dilated_taps():
  d, k, length = 3, 3, 11
  xs = jnp.arange(1, length + 1, dtype=jnp.float32)[None, :, None]   # input at t is t + 1
  cache = jnp.zeros((1, (k - 1) * d, 1))
  for t in range(length):
    taps, cache = ring_taps(cache, xs[:, t:t + 1], jnp.int32(t), k, d)
    expected = [s + 1 if s >= 0 else 0 for s in (t - 2 * d, t - d, t)]
    np.testing.assert_array_equal(np.asarray(taps)[0, :, 0], expected)


@pytest.mark.parametrize('variant', ['speaker_and_digit', 'unconditional_local_mixture'])
def test_fast_generation_draws_exactly_the_naive_samples(variant):
  kwargs, call = {}, {}
  batch, length = 2, 24                      # > receptive field 8: the buffers wrap
  if variant == 'speaker_and_digit':
    kwargs.update(num_speakers=3, num_classes=10)
    call.update(speaker=jnp.array([0, 2]), label=jnp.array([7, 3]))
    # ... continuing given audio: the first 5 samples are kept, the rest drawn.
    call.update(init=jax.random.randint(jax.random.key(6), (batch, length), 0, 256), start=5)
  else:
    kwargs.update(local_channels=4, local_upsample=8, output='logistic_mixture',
                  num_mixtures=3)
    call['local'] = jax.random.normal(jax.random.key(5), (batch, length // 8, 2))
  model = WaveNet(**dict(TINY, num_layers=2), **kwargs)
  cond = {k: v for k, v in call.items() if k not in ('init', 'start')}
  params = random_params(model, jnp.zeros((batch, length), jnp.int32), **cond)
  if model.output == 'logistic_mixture':
    # Narrow logistics (log-scales near -3), or most draws clip to the edge levels.
    head = params['params']['logits_out']
    head['kernel'] = 0.3 * head['kernel']
    head['bias'] = head['bias'].at[6:9].set(-3.0)    # [logits 3 | means 3 | log-scales 3]
  naive = jax.jit(lambda r: model.apply(params, r, (batch, length), **call,
                                        method='sample'))
  fast = jax.jit(lambda r: model.apply(params, r, (batch, length), **call,
                                       return_logits=True, method='sample_fast'))
  full = jax.jit(lambda codes: model.apply(params, codes, **cond))
  for seed in range(3):
    rng = jax.random.key(seed)
    codes, logits = fast(rng)
    np.testing.assert_array_equal(naive(rng), codes, err_msg=f'seed {seed}')
    if 'init' in call:
      np.testing.assert_array_equal(codes[:, :5], call['init'][:, :5])
    assert len(np.unique(np.asarray(codes))) > 10       # not a degenerate sequence
    # The fast path's outputs are the full pass's on the sequence it drew.
    np.testing.assert_allclose(logits, full(codes), atol=1e-4)


def test_bytenet_fast_sampling_continues_the_prompt_as_the_naive_sampler():
  model = ByteNet(residual_channels=8, gate_channels=8, output_channels=16, num_layers=2,
                  num_stacks=2)
  prompt = jnp.array([[18, 1, 2], [40, 41, 42]])
  params = random_params(model, prompt)
  fast = jax.jit(lambda r: model.apply(params, r, prompt, 30, method='sample'))
  naive = jax.jit(lambda r: model.apply(params, r, prompt, 30, method='sample_naive'))
  for seed in range(3):
    out = fast(jax.random.key(seed))
    assert out.shape == (2, 33)
    np.testing.assert_array_equal(out[:, :3], prompt)
    np.testing.assert_array_equal(out, naive(jax.random.key(seed)))


def test_logistic_mixture_head_is_normalized_over_the_256_levels():
  model = WaveNet(**TINY, output='logistic_mixture', num_mixtures=3)
  params = random_params(model, jnp.zeros((1, 8), jnp.int32))
  out = jnp.tile(jax.random.normal(jax.random.key(0), (1, 1, 9)), (1, 256, 1))
  lp = jax.jit(lambda o: model.apply(params, o, jnp.arange(256)[None],
                                     method='position_log_probs'))(out)
  np.testing.assert_allclose(jax.nn.logsumexp(lp), 0.0, atol=1e-4)


def test_masked_loss_ignores_padding():
  model = WaveNet(**TINY, num_speakers=3)
  lengths = np.array([25, 40])
  rng = np.random.default_rng(0)
  audio = rng.integers(-5000, 5000, (2, 40)).astype(np.int16)
  mask = np.arange(40)[None] < lengths[:, None]
  batch = {'audio': audio, 'mask': mask, 'speaker': np.array([1, 2])}
  params = random_params(model, jnp.zeros((2, 40), jnp.int32), speaker=batch['speaker'])
  loss = jax.jit(lambda b: model.apply(params, b, method='loss'))
  _, m = loss(batch)
  np.testing.assert_array_equal(m['num_dims'], lengths)
  noisy = dict(batch, audio=np.where(mask, audio, rng.integers(-9000, 9000, (2, 40))
                                     ).astype(np.int16))
  np.testing.assert_allclose(loss(noisy)[1]['nll'], m['nll'], rtol=1e-6)
  # A causal model scores the first 25 samples the same without the rest.
  short = {'audio': audio[:1, :25], 'speaker': np.array([1])}
  np.testing.assert_allclose(loss(short)[1]['nll'], m['nll'][:1], rtol=1e-5)


def test_local_conditioning_changes_outputs_from_its_frame_on():
  model = WaveNet(**TINY, local_channels=4, local_upsample=4)
  local = jax.random.normal(jax.random.key(0), (1, 8, 3))
  x = jnp.zeros((1, 32), jnp.int32)
  params = random_params(model, x, local=local)
  apply = jax.jit(lambda local: model.apply(params, x, local=local))
  out, changed = apply(local), apply(local.at[:, 2].add(1.0))
  diff = np.abs(np.asarray(out - changed)).max(axis=-1)[0]
  assert (diff[:8] == 0).all()                # samples before frame 2 (4 samples a frame)
  assert (diff[8:12] > 1e-4).all()            # frame 2's own samples
  with pytest.raises(ValueError, match='local'):
    model.apply(params, x)


def _train_tiny(module, tmp_path, data_dir):
  c = module.get_config('tiny')
  c.data.local_dir = data_dir
  return train.train_and_evaluate(c, str(tmp_path / 'run'))


def test_wavenet_spoken_digit_tiny_trains(tmp_path, data_dir):
  if not os.path.isdir(os.path.join(data_dir, 'spoken_digit')):
    pytest.skip('spoken_digit/ not in the data directory.')
  from configs import wavenet_spoken_digit
  result = _train_tiny(wavenet_spoken_digit, tmp_path, data_dir)
  assert result['step'] == 3 and result['num_examples'] == 16
  # a barely trained model over 256 mu-law levels: about 8 bits per sample
  assert 6.0 < result['bits_per_dim'] < 9.0
  # one 16-bit, 8 kHz WAV per digit for the configured speaker
  wavs = sorted(os.listdir(tmp_path / 'run' / 'samples' / 'step_3'))
  assert len(wavs) == 10 and wavs[0] == 'speaker_0_digit_0_0.wav'
  import wave
  with wave.open(str(tmp_path / 'run' / 'samples' / 'step_3' / wavs[0])) as f:
    assert (f.getframerate(), f.getsampwidth(), f.getnchannels()) == (8000, 2, 1)
    assert f.getnframes() == 8000


def test_bytenet_shakespeare_tiny_trains(tmp_path, data_dir):
  if not os.path.isdir(os.path.join(data_dir, 'tiny_shakespeare')):
    pytest.skip('tiny_shakespeare/ not in the data directory.')
  from configs import bytenet_shakespeare
  result = _train_tiny(bytenet_shakespeare, tmp_path, data_dir)
  assert result['step'] == 3
  assert 4.0 < result['bits_per_dim'] < 7.0             # log2(65) = 6.02
  text = (tmp_path / 'run' / 'samples' / 'step_3.txt').read_text()
  assert text.count('=== sample') == 4 and '\nROMEO:' in text


def test_bytenet_dropout_only_in_training_and_never_breaks_causality():
  model = ByteNet(residual_channels=8, gate_channels=8, output_channels=16, num_layers=2,
                  num_stacks=1, dropout_rate=0.5)
  text = jax.random.randint(jax.random.key(0), (2, 13), 0, 65)
  params = random_params(model, text[:, :-1])
  def run(train, key):
    return model.apply(params, text[:, :-1], train=train,
                       rngs={'dropout': jax.random.key(key)})
  np.testing.assert_array_equal(run(False, 1), run(False, 2))          # evaluation: no noise
  np.testing.assert_array_equal(run(False, 1), model.apply(params, text[:, :-1]))
  assert not np.allclose(run(True, 1), run(True, 2))                   # training: dropout
  # Dropout masks elementwise in time, so a training pass is still causal.
  emb = model.apply(params, text[:, :-1], method=lambda m, t: m.embed(t))
  jac = jax.jacrev(lambda e: model.apply(params, e, train=True, rngs={
      'dropout': jax.random.key(3)}).sum((0, -1)))(emb)
  dep = np.asarray((jac != 0).any(axis=(1, 3)))
  assert not np.triu(dep, 1).any()


def test_text_training_windows_start_at_random_offsets(data_dir):
  from configs import bytenet_shakespeare
  from experiments import datasets, input_pipeline
  cfg = bytenet_shakespeare.get_config('tiny').data
  cfg.unlock()
  cfg.update(local_dir=data_dir, source='local', batch_size=64)
  text = datasets.load_split('tiny_shakespeare', 'train', source='local',
                             local_dir=data_dir)['text']
  batches = [next(input_pipeline.create_datasets(cfg, seed=s).train_iter)['text']
             for s in (0, 0, 1)]
  np.testing.assert_array_equal(batches[0], batches[1])       # deterministic per seed
  assert not np.array_equal(batches[0], batches[2])
  starts = []
  for w in batches[0]:   # every window is a contiguous slice of the text
    hits = np.flatnonzero(np.all(
        np.lib.stride_tricks.sliding_window_view(text, len(w)) == w, axis=1))
    assert len(hits) >= 1
    starts.append(hits[0])
  offsets = np.array(starts) % cfg.seq_len
  assert len(set(offsets.tolist())) > 8     # not all aligned to the non-overlapping grid
