"""Moving MNIST generation, its input pipeline, and the Video Pixel Network: causality by
gradients, normalization by exhaustive sums, samplers against the exact probabilities and
cached against naive, and the trainer end to end (PNG strips, GIFs, --mode=sample)."""
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from autoreg.vpn import VPN
from experiments import moving_mnist as mm
from tests.conftest import random_params


def _digits(n=5, seed=0):
  """Random 28x28 'digits': a blob of random grey levels, so every paste is visible."""
  rng = np.random.default_rng(seed)
  d = np.zeros((n, 28, 28), np.uint8)
  d[:, 4:24, 6:22] = rng.integers(1, 256, (n, 20, 16))
  return d


def _tiny(**kw):
  args = dict(context_frames=2, encoder_features=2, encoder_blocks=2, encoder_dilations=(1, 2),
              lstm_features=3, decoder_features=2, decoder_layers=2, decoder_first_kernel=3,
              decoder_output_features=4)
  args.update(kw)
  return VPN(**args)


# ------------------------------------------------------------------------- Moving MNIST


def test_a_sequence_is_a_pure_function_of_seed_and_index():
  spec = mm.Spec(frame_size=40, num_frames=6)
  a, b = mm.Source(_digits(), 100, 3, spec), mm.Source(_digits(), 100, 3, spec)
  assert np.array_equal(a[7]['video'], b[7]['video'])
  assert not np.array_equal(a[7]['video'], a[8]['video'])
  assert not np.array_equal(a[7]['video'], mm.Source(_digits(), 100, 4, spec)[7]['video'])
  sub = mm.Source(_digits(), 100, 3, spec, indices=range(5, 10))
  assert len(sub) == 5 and np.array_equal(sub[2]['video'], a[7]['video'])
  assert a[0]['video'].shape == (6, 40, 40, 1) and a[0]['video'].dtype == np.uint8


@pytest.mark.parametrize('spec', [mm.Spec(frame_size=40, num_frames=6),
                                  mm.Spec(frame_size=16, digit_size=7, num_digits=3,
                                          num_frames=30)])
def test_generate_renders_the_same_sequences_as_one_by_one_access(spec):
  # generate() draws, moves and pastes whole chunks of sequences at once; the evaluation
  # split is made by it and training batches one by one, so the two must agree pixel for
  # pixel (3 small digits in a small frame overlap and bounce often; 30 frames bounce).
  source = mm.Source(_digits(7), 1000, 2, spec, indices=range(100, 161))
  want = np.stack([source[k]['video'] for k in range(len(source))])
  got = source.generate(chunk=16)
  assert got.shape == want.shape and got.dtype == np.uint8
  assert np.array_equal(got, want)
  assert (want.max(axis=(2, 3, 4)) > 0).all()


def test_digits_move_with_constant_velocity_and_bounce_off_the_edges():
  spec = mm.Spec(frame_size=64, num_frames=200)
  path = mm.trajectories(np.random.default_rng(0), spec)      # [D, T, 2] corners
  free = spec.frame_size - spec.digit_size
  assert path.min() >= 0 and path.max() <= free
  # Re-derive the unit-square motion: per frame each coordinate moves by the same amount
  # (0.1 x |v| of the free range) until it reaches an edge, where its direction flips.
  step = np.abs(np.diff(path, axis=1))
  speeds = np.abs(np.diff(path.astype(float), axis=1))
  for d in range(spec.num_digits):
    for axis in range(2):
      moving = speeds[d, :, axis]
      inner = (path[d, 1:, axis] > 0) & (path[d, 1:, axis] < free) & (
          path[d, :-1, axis] > 0) & (path[d, :-1, axis] < free)
      # Away from the edges consecutive moves differ by at most the int truncation (1 px).
      assert np.ptp(moving[inner]) <= 1.0 + 1e-9
    # On a 200-frame path each digit reaches an edge and comes back (it bounces rather
    # than sticks): the sign of each coordinate's motion changes only at an edge.
    for axis in range(2):
      moves = np.diff(path[d, :, axis].astype(float))
      signs = np.sign(moves[moves != 0])
      turns = np.flatnonzero(np.diff(signs) != 0)
      assert len(turns) > 0
      at_turn = path[d, 1:, axis][moves != 0][turns]
      assert ((at_turn == 0) | (at_turn == free)).all()
  assert step.max() <= int(np.ceil(free * spec.step_length)) + 1


def test_frames_are_the_pixelwise_max_of_the_digits_at_their_corners():
  spec = mm.Spec(frame_size=48, num_frames=5)
  digits = _digits(2)
  corners = mm.trajectories(np.random.default_rng(1), spec)
  frames = mm.render(digits, corners, spec)[..., 0]
  for t in range(spec.num_frames):
    want = np.zeros((48, 48), np.uint8)
    for d in range(2):
      y, x = corners[d, t]
      want[y:y + 28, x:x + 28] = np.maximum(want[y:y + 28, x:x + 28], digits[d])
    assert np.array_equal(frames[t], want)


def test_one_digit_sequences_show_one_of_the_split_digits_and_shrinking_is_block_means():
  spec = mm.Spec(frame_size=32, digit_size=14, num_digits=1, num_frames=4)
  digits = _digits(3)
  source = mm.Source(digits, 10, 0, spec)
  small = mm.shrink_digits(digits, 14)
  assert np.array_equal(small[1], np.rint(digits[1].reshape(14, 2, 14, 2).mean((1, 3))))
  # Every block size gives the float32 block means the data set was first generated with.
  many = np.random.default_rng(5).integers(0, 256, (500, 28, 28)).astype(np.uint8)
  for size in (14, 7, 4, 2, 1):
    f = 28 // size
    old = many.reshape(500, size, f, size, f).astype(np.float32).mean(axis=(2, 4))
    assert np.array_equal(mm.shrink_digits(many, size), np.rint(old).astype(np.uint8)), size
  video = source[4]['video'][..., 0]
  rng = np.random.default_rng([0, 4])
  which = rng.integers(0, 3, 1)[0]
  (y, x) = mm.trajectories(rng, spec)[0, 2]
  assert np.array_equal(video[2, y:y + 14, x:x + 14], small[which])
  with pytest.raises(ValueError, match='digit_size'):
    mm.Spec(digit_size=10)


def test_video_pipeline_batches_are_deterministic_and_resume_from_the_state(data_dir):
  import ml_collections  # pylint: disable=g-import-not-at-top

  from experiments import input_pipeline  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(
      name='moving_mnist', source='auto', local_dir=data_dir, train_split='train',
      eval_split='test[:6]', batch_size=4, eval_batch_size=4, frame_size=32, digit_size=14,
      num_digits=2, num_frames=5))
  data = input_pipeline.create_datasets(cfg, seed=0)
  assert data.info.kind == 'video' and data.example_shape == (5, 32, 32, 1)
  assert data.num_dims == 5 * 32 * 32
  next(data.train_iter)
  state = data.train_iter.get_state()
  after = next(data.train_iter)['video']
  again = input_pipeline.create_datasets(cfg, seed=0)
  again.train_iter.set_state(state)
  assert np.array_equal(next(again.train_iter)['video'], after)
  batches = list(data.eval_batches())
  assert [int(b['example_mask'].sum()) for b in batches] == [4, 2]
  # The test set is the fixed seeded one, made of MNIST test digits.
  from experiments import datasets  # pylint: disable=g-import-not-at-top
  test = datasets.moving_mnist_source('test', input_pipeline.video_spec(cfg),
                                      indices=range(6), local_dir=data_dir).generate()
  assert np.array_equal(batches[0]['video'], test[:4])
  assert after.shape == (4, 5, 32, 32, 1) and after.max() > 100


# ------------------------------------------------------------------------------ VPN


def _input_gradient(model, params, video, t, i, j):
  """d(sum of logits of pixel (i, j) of predicted frame t) / d(video) [T, H, W]."""
  def f(v):
    logits = model.apply(params, v)
    return logits[0, t - model.context_frames, i, j].sum()
  return np.asarray(jax.grad(f)(video))[0, ..., 0]


@pytest.mark.parametrize('dependencies', [True, False])
def test_a_predicted_pixel_sees_the_past_frames_and_earlier_pixels_only(dependencies):
  model = _tiny(frame_dependencies=dependencies, output='categorical')
  video = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (1, 4, 5, 5, 1)), jnp.float32)
  params = random_params(model, video)
  for t, i, j in [(2, 0, 0), (2, 2, 3), (3, 4, 4), (3, 1, 0)]:
    g = np.abs(_input_gradient(model, params, video, t, i, j))
    assert t + 1 == len(g) or g[t + 1:].max() == 0, 'a later frame reaches the pixel'
    frame = g[t].reshape(-1)
    k = i * 5 + j
    assert frame[k:].max() == 0, 'the pixel or a later one of its own frame reaches it'
    if dependencies:   # the neighbours left and above are inside any receptive field
      assert j == 0 or frame[k - 1] > 0, 'the pixel to the left is cut off'
      assert i == 0 or frame[k - 5] > 0, 'the pixel above is cut off'
    else:
      assert frame.max() == 0, 'the no-dependencies baseline sees its own frame'
    assert g[:t].max() > 0 and (g[:t].reshape(t, -1).max(axis=1) > 0).all(), \
        'every earlier frame should reach the pixel'


@pytest.mark.parametrize('output', ['categorical', 'bernoulli'])
def test_probabilities_of_all_predicted_frames_sum_to_one(output):
  if output == 'categorical':   # 1x1 frames, one predicted frame: 256 outcomes
    model, shape = _tiny(context_frames=2, output=output), (1, 1)
    outcomes = np.arange(256)[:, None]
  else:   # binary 2x1 frames, two predicted: 16 outcomes
    model, shape = _tiny(context_frames=1, output=output), (2, 1)
    outcomes = np.array(list(itertools.product([0, 255], repeat=4)))
  n_pred = outcomes.shape[1] // (shape[0] * shape[1])
  k = model.context_frames
  ctx = np.random.default_rng(1).integers(0, 256, (k, *shape, 1))
  videos = np.concatenate([np.broadcast_to(ctx, (len(outcomes), *ctx.shape)),
                           outcomes.reshape(len(outcomes), n_pred, *shape, 1)], axis=1)
  videos = jnp.asarray(videos, jnp.int32)
  params = random_params(model, videos[:1])
  logp = np.asarray(model.apply(params, videos, method='log_prob'), np.float64)
  assert abs(np.exp(logp).sum() - 1) < 1e-4


@pytest.mark.parametrize('dependencies', [True, False])
def test_samples_match_the_exact_probabilities_the_model_scores(dependencies):
  """Binary 2x1 frames, one context and two predicted frames: the 16 outcomes' sample
  frequencies against exp(log_prob) (a chi-square test at a generous threshold)."""
  model = _tiny(context_frames=1, output='bernoulli', frame_dependencies=dependencies)
  ctx = jnp.asarray(np.array([0, 255]).reshape(1, 1, 2, 1, 1), jnp.int32)
  outcomes = np.array(list(itertools.product([0, 255], repeat=4)))
  videos = np.concatenate([np.broadcast_to(np.asarray(ctx), (16, 1, 2, 1, 1)),
                           outcomes.reshape(16, 2, 2, 1, 1)], axis=1)
  params = random_params(model, jnp.asarray(videos[:1]))
  p = np.exp(np.asarray(model.apply(params, jnp.asarray(videos), method='log_prob'), np.float64))
  n = 4000
  draws = model.apply(params, jax.random.key(5), (n, 3, 2, 1, 1),
                      context=jnp.tile(ctx, (n, 1, 1, 1, 1)),
                      method='sample_cached' if dependencies else 'sample')
  draws = np.asarray(draws)[:, 1:].reshape(n, 4)
  assert set(np.unique(draws)) <= {0, 255}
  codes = (draws // 255) @ (2 ** np.arange(3, -1, -1))
  counts = np.bincount(codes, minlength=16)
  expected = n * p
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 45, (chi2, counts, expected.round(1))   # 15 dof: p(chi2 > 45) ~ 1e-4


@pytest.mark.parametrize('output', ['categorical', 'bernoulli'])
def test_cached_sampler_draws_exactly_what_the_naive_sampler_draws(output):
  model = _tiny(output=output)
  video = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, 4, 4, 5, 1)), jnp.int32)
  params = random_params(model, video)
  kw = dict(context=video[:, :2])
  naive = model.apply(params, jax.random.key(3), video.shape, method='sample', **kw)
  cached = model.apply(params, jax.random.key(3), video.shape, method='sample_cached', **kw)
  assert np.array_equal(np.asarray(naive), np.asarray(cached))
  assert np.array_equal(np.asarray(naive[:, :2]), np.asarray(video[:, :2]))
  assert not np.array_equal(np.asarray(naive[:, 2]), np.asarray(naive[:, 3]))


def test_bernoulli_loss_is_the_intensity_cross_entropy_and_its_floor_the_entropy():
  model = _tiny(output='bernoulli')
  video = jnp.asarray(np.random.default_rng(3).integers(0, 256, (2, 3, 3, 3, 1)), jnp.int32)
  params = random_params(model, video)
  logits = np.asarray(model.apply(params, video), np.float64)[..., 0, :]   # [B, 1, 3, 3, 2]
  q = np.exp(logits[..., 1]) / np.exp(logits).sum(-1)
  p = np.asarray(video[:, 2:, ..., 0], np.float64) / 255
  want = -(p * np.log(q) + (1 - p) * np.log(1 - q)).reshape(2, -1).sum(1)
  _, metrics = model.apply(params, {'video': video}, method='loss')
  assert np.allclose(metrics['nll'], want, rtol=1e-5)
  ent = -(p * np.log(np.where(p > 0, p, 1)) + (1 - p) * np.log(np.where(p < 1, 1 - p, 1)))
  assert np.allclose(metrics['entropy_per_frame'], ent.reshape(2, -1).sum(1), rtol=1e-5)
  assert (np.asarray(metrics['nll']) >= np.asarray(metrics['entropy_per_frame'])).all()


def test_mu_and_rmb_are_the_papers_equations():
  from autoreg.vpn import MultiplicativeUnit, ResidualMultiplicativeBlock  # pylint: disable=g-import-not-at-top
  h = jnp.asarray(np.random.default_rng(4).normal(size=(1, 5, 5, 3)), jnp.float32)
  mu = MultiplicativeUnit(3)
  p = mu.init(jax.random.key(0), h)
  z = jax.lax.conv_general_dilated(h, p['params']['Conv_0']['kernel'], (1, 1), 'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  z = z + p['params']['Conv_0']['bias']
  g1, g2, g3, u = np.split(np.asarray(z), 4, axis=-1)

  def sig(a):
    return 1 / (1 + np.exp(-a))
  want = sig(g1) * np.tanh(sig(g2) * np.asarray(h) + sig(g3) * np.tanh(u))
  assert np.allclose(mu.apply(p, h), want, atol=1e-5)
  x = jnp.concatenate([h, h], axis=-1)
  rmb = ResidualMultiplicativeBlock(3, dilation=2)
  q = rmb.init(jax.random.key(1), x)
  assert q['params']['Conv_0']['kernel'].shape == (1, 1, 6, 3)      # 2c -> c
  assert q['params']['Conv_1']['kernel'].shape == (1, 1, 3, 6)      # c -> 2c
  assert rmb.apply(q, x).shape == x.shape


# ------------------------------------------------------------------------ the trainer


def test_tiny_config_trains_evaluates_and_writes_video_samples(tmp_path, data_dir):
  from configs import vpn_moving_mnist  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  c = vpn_moving_mnist.get_config('tiny')
  c.data.local_dir = data_dir
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(c, workdir)
  assert result['num_examples'] == 8 and np.isfinite(result['nll'])
  assert 0 < result['entropy_per_frame'] < result['nll_per_frame']
  step_dir = os.path.join(workdir, 'samples', 'step_4')
  assert sorted(os.listdir(step_dir)) == ['sequence_0.gif', 'sequence_0.png',
                                          'sequence_1.gif', 'sequence_1.png']
  gif = Image.open(os.path.join(step_dir, 'sequence_0.gif'))
  assert gif.n_frames == c.data.num_frames
  # --mode=sample from the checkpoint writes them again, identically (same keys), into a
  # directory of its own (it overwrites nothing).
  before = np.asarray(Image.open(os.path.join(step_dir, 'sequence_1.png')))
  again = train.sample_run(c, workdir)
  assert again != step_dir and os.path.basename(again) == 'step_4'
  assert np.array_equal(np.asarray(Image.open(os.path.join(again, 'sequence_1.png'))), before)


def test_context_frames_must_leave_a_frame_to_predict(tmp_path, data_dir):
  from configs import vpn_moving_mnist  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  from experiments.errors import UserError  # pylint: disable=g-import-not-at-top
  c = vpn_moving_mnist.get_config('tiny')
  c.data.local_dir = data_dir
  c.model.context_frames = 4
  with pytest.raises(UserError, match='context_frames=4 leaves no frame to predict'):
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')
  c.model.context_frames = 2
  c.data.digit_size = 10
  with pytest.raises(UserError, match='digit_size=10'):
    train.train_and_evaluate(c, str(tmp_path / 'run2'))


def test_the_train_steps_convlstm_is_unrolled_not_a_while_loop():
  """Issue 18: under nn.scan XLA:CPU ran the ConvLSTM's convolution gradients inside the
  while loop ~20x slower (the CPU config's step 18.4 s against 0.9 s unrolled). The loss
  gradient must lower to straight-line code: no `while` in its StableHLO."""
  model = _tiny()
  video = jnp.asarray(np.random.default_rng(4).integers(0, 256, (2, 4, 4, 4, 1)), jnp.int32)
  params = random_params(model, video)

  def loss(p):
    return model.apply(p, {'video': video}, method='loss')[0]

  text = jax.jit(jax.grad(loss)).lower(params).as_text()
  assert 'stablehlo.while' not in text
  assert text.count('stablehlo.convolution') > 0


def test_conv_lstm_over_frames_is_flax_cell_stepped_frame_by_frame():
  """autoreg.vpn.ConvLSTM has nn.ConvLSTMCell's parameters (paths, shapes, initial values)
  and, its input convolution batched over the frames, the cell's outputs and final state;
  its one-step call (the samplers') is the cell's step."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  from autoreg.vpn import ConvLSTM  # pylint: disable=g-import-not-at-top
  frames = jax.random.normal(jax.random.key(3), (2, 5, 6, 7, 3))
  carry = (jnp.zeros((2, 6, 7, 4)), jnp.zeros((2, 6, 7, 4)))
  cell, ours = nn.ConvLSTMCell(4, (3, 3)), ConvLSTM(4, (3, 3))
  params = cell.init(jax.random.key(0), carry, frames[:, 0])
  ours_params = ours.init(jax.random.key(0), carry, frames[:, 0])
  assert jax.tree.structure(params) == jax.tree.structure(ours_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ours_params), strict=True):
    np.testing.assert_array_equal(a, b)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(4), p.shape),
                        params)   # non-zero biases too
  c, outs = carry, []
  for t in range(frames.shape[1]):
    c, h = cell.apply(params, c, frames[:, t])
    outs.append(h)
  (c_ours, h_ours), got = ours.apply(params, carry, frames, method='over_frames')
  np.testing.assert_allclose(got, jnp.stack(outs, axis=1), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(c_ours, c[0], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(h_ours, c[1], atol=1e-5, rtol=1e-5)
  step = ours.apply(params, carry, frames[:, 0])
  want = cell.apply(params, carry, frames[:, 0])
  for a, b in zip(jax.tree.leaves(step), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)
