"""Invertible image models (flows/nice.py, realnvp.py, glow.py, maf.py): exact round trips,
the reported nll against a brute-force jax.jacfwd log-determinant of the whole model
(preprocessing and learned priors included), a 2-D flow density that integrates to one,
sampling and temperature, finiteness at the papers' depths, and training through the
generic trainer (batch statistics and LU constants in the state and the checkpoint).

Round trips and likelihoods use RANDOM variables: a fresh flow is (nearly) the identity.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import train
from experiments.checkpointing import Checkpointer
from flows import bijectors as fb
from flows import glow
from flows.glow import Glow
from flows.maf import MAFModel
from flows.models import quantize
from flows.nice import NICE
from flows.realnvp import RealNVP
from tests.conftest import random_flow_variables

SHAPE = (4, 4, 1)
D = math.prod(SHAPE)
MODELS = {
    'nice': lambda: NICE(image_shape=SHAPE, hidden=(8, 8)),
    'realnvp': lambda: RealNVP(image_shape=SHAPE, num_scales=2, features=4, num_blocks=1),
    'glow': lambda: Glow(image_shape=SHAPE, num_levels=2, num_steps=2, hidden_features=8),
    'maf': lambda: MAFModel(image_shape=SHAPE, num_layers=2, hidden_sizes=(16,)),
}


# MAF's scales exp(alpha) are unbounded: random MADEs on logit-space inputs (|y| up to 14)
# can compound them until z reaches 1e10 (seed 1 with the batch norm after the last MADE),
# where float32 cannot round-trip; seed 0 gives |z| < 50, as the other models' draws do.
ROUND_TRIP_SEEDS = {'maf': 0}


def _images(n=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n,) + SHAPE), jnp.uint8)


def random_variables(model, image, seed=0):
  """Every variable drawn at random in NumPy into the shapes `init` gives: kernels at a
  fan-in scale, 1-D parameters uniform in [-0.5, 0.5], running variances positive, LU
  constants a random permutation matrix and random signs."""
  shapes = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'sample': jax.random.key(0)}, {'image': image},
      train=False, method='loss'))
  if isinstance(model, Glow):   # drawn per step as for the unrolled model, then stacked
    return glow.unrolled_to_scanned(random_flow_variables(
        jax.eval_shape(glow.scanned_to_unrolled, shapes), seed))
  return random_flow_variables(shapes, seed)


def _log_base(eps, prior):
  """An independent NumPy base density, standard normal or standard logistic."""
  eps = np.asarray(eps, np.float64)
  if prior == 'gaussian':
    return (-0.5 * eps ** 2 - 0.5 * np.log(2 * np.pi)).sum(-1)
  return (-eps - 2 * np.log1p(np.exp(-eps))).sum(-1)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_round_trip_nll_by_brute_force_jacobian_and_sampling(name):
  """decode(encode(x)) == x; the loss's nll equals -log p(x) + D log 256 with log p from
  the base density and jax.jacfwd's log-determinant of encode; samples are valid integer
  images, and temperature 0 gives the decoded base mean."""
  model = MODELS[name]()
  image = _images()
  variables = random_variables(model, image, seed=ROUND_TRIP_SEEDS.get(name, 1))
  key = jax.random.key(7)

  @jax.jit
  def run(variables):
    def apply(*a, **k):
      return model.apply(variables, *a, **k)
    x = apply(image, rngs={'sample': key}, method='dequantize')
    _, metrics = apply({'image': image}, train=False, rngs={'sample': key}, method='loss')
    z = apply(x, method='encode')
    x_back = apply(z, method='decode')
    def encode_one(v):
      return apply(v.reshape((1,) + SHAPE), method='encode')[0]
    jac = jax.vmap(jax.jacfwd(encode_one))(x.reshape(x.shape[0], -1))
    samples = apply(jax.random.key(0), (5,) + SHAPE, method='sample')
    cold = [apply(jax.random.key(i), (2,) + SHAPE, temperature=0.0, method='sample')
            for i in (1, 2)]
    mean = quantize(apply(jnp.zeros((2, D)), method='decode'))
    return x, metrics, z, x_back, jnp.linalg.slogdet(jac), samples, cold, mean

  x, metrics, z, x_back, (sign, log_det), samples, cold, mean = jax.tree.map(
      np.asarray, run(variables))
  # Exact inverse, and not the identity.
  assert z.shape == (3, D)
  np.testing.assert_allclose(x_back, x, atol=2e-5)
  assert np.abs(z - x.reshape(3, D)).max() > 0.1
  # Dequantization: x in the image's bin.
  assert np.all(np.floor(x * 256) == np.asarray(image))
  # nll = -(log p_base(eps) + log|det d eps/dx|) + D log 256, by brute force.
  assert np.all(sign != 0)
  want = -(_log_base(z, model.prior) + log_det) + D * np.log(256)
  np.testing.assert_allclose(metrics['nll'], want, rtol=1e-5, atol=2e-3)
  np.testing.assert_allclose(metrics['log_det'] + metrics['log_prior'],
                             -(metrics['nll'] - D * np.log(256)), rtol=1e-5, atol=1e-3)
  assert all(v.dtype == np.float32 and v.shape == (3,) for v in metrics.values())
  # Sampling.
  assert samples.shape == (5,) + SHAPE and samples.dtype == np.int32
  assert samples.min() >= 0 and samples.max() <= 255
  assert len({s.tobytes() for s in samples}) == 5, 'independent draws differ'
  for c in cold:
    np.testing.assert_array_equal(c, mean)


def test_two_dimensional_flow_density_integrates_to_one():
  """Affine couplings, a MAF layer and batch norm (eval) on R^2 with a N(0, I) base:
  sum over a grid of exp(log p) * cell area is 1."""
  flow = fb.Chain((fb.AffineCoupling(hidden=(16,)), fb.AffineCoupling(flip=True, hidden=(16,)),
                   fb.MAF(hidden_sizes=(16,), input_order='reversed'),
                   fb.BatchNormBijector(), fb.AffineCoupling(mask='channel', hidden=(16,))))
  from tests.test_bijectors import random_variables as bijector_variables
  variables = bijector_variables(flow, jnp.zeros((2, 2)), seed=3)
  n, lim = 801, 12.0
  g = np.linspace(-lim, lim, n, dtype=np.float32)
  points = jnp.asarray(np.stack(np.meshgrid(g, g, indexing='ij'), -1).reshape(-1, 2))

  @jax.jit
  def log_p(points):
    z, ld = flow.apply(variables, points, method='forward')
    return -0.5 * jnp.sum(z ** 2, -1) - jnp.log(2 * jnp.pi) + ld

  lp = np.asarray(log_p(points), np.float64)
  total = np.exp(lp).sum() * (g[1] - g[0]) ** 2
  assert abs(total - 1.0) < 1e-2, total
  # Not a Gaussian in disguise: the density is far from N(0, I)'s.
  gauss = -0.5 * np.sum(np.asarray(points, np.float64) ** 2, -1) - np.log(2 * np.pi)
  assert np.abs(np.exp(lp) - np.exp(gauss)).max() > 0.01


def _config_model(name, **overrides):
  import importlib

  from experiments.models import build_model
  c = importlib.import_module(f'configs.{name}').get_config()
  return build_model(c.model_name, {**c.model.to_dict(), **overrides}), c.model.image_shape


# The configs' flow depths (every coupling, normalization and 1x1 convolution layer, so
# every log-determinant that adds up); the coupling networks shrink to keep the test cheap,
# and Glow's 1x1 convolutions are the plain ones here because LU-decomposing 64 random
# rotations without jit costs most of the test's time.
PAPER_DEPTHS = {
    'nice_mnist': dict(hidden=(8,) * 5),
    'maf_mnist': dict(hidden_sizes=(8,)),
    'realnvp_mnist': dict(features=2, num_blocks=1),
    'glow_mnist': dict(hidden_features=4, lu=False),
}


@pytest.mark.parametrize('name', sorted(PAPER_DEPTHS))
def test_fresh_model_at_paper_depth_has_finite_loss(name):
  model, shape = _config_model(name, **PAPER_DEPTHS[name])
  image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8,) + tuple(shape)),
                      jnp.uint8)
  # Without jit: compiling dozens of flow steps costs far more than running them once.
  variables = model.init({'params': jax.random.key(0), 'sample': jax.random.key(1)},
                         {'image': image}, train=False, method='loss')
  (objective, metrics), _ = model.apply(variables, {'image': image}, train=True,
                                        rngs={'sample': jax.random.key(2)}, method='loss',
                                        mutable=['batch_stats'])
  assert np.isfinite(float(objective)) and objective.dtype == jnp.float32
  assert set(metrics) == {'nll', 'log_det', 'log_prior'}
  for k, v in metrics.items():
    assert v.dtype == jnp.float32 and v.shape == (8,), k
    assert np.all(np.isfinite(np.asarray(v))), k


def _tiny_config(module, data_dir, **train_overrides):
  c = module.get_config('tiny')
  c.data.local_dir = data_dir
  c.train.update(train_overrides)
  return c


def test_realnvp_trains_updates_batch_stats_and_resumes_them(tmp_path, data_dir):
  from configs import realnvp_mnist
  c = _tiny_config(realnvp_mnist, data_dir, num_steps=2)
  workdir = str(tmp_path / 'run')
  run = train.Run(c, workdir, restore=False)
  initial = jax.device_get(run.state.model_state)
  assert set(initial) == {'batch_stats'}
  fresh = jax.tree.map(jnp.copy, run.state)    # the train step donates run.state
  step = train.make_train_step(run.model, run.tx, run.schedule, ema_decay=0.99,
                               num_dims=run.data.num_dims, mesh=run.mesh)
  state = run.state
  for _ in range(2):
    state, metrics = step(state, train.to_global_batch(next(run.data.train_iter), run.mesh))
    assert np.isfinite(float(metrics['loss'])) and 'log_det' in metrics
  trained = jax.device_get(state.model_state)
  # The first batch-norm bijector sees the data's statistics (far from its initial 0 and
  # 1); later ones see the normalized outputs of near-identity couplings, so they barely
  # move in two steps.
  first = jax.tree.map(lambda a: a[0], trained['batch_stats']['scale0_checkerboard']['steps'][
      'batchnorm'])
  assert np.abs(first['mean']).min() > 1e-3 and np.abs(first['var'] - 1).min() > 1e-3
  moved = [np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(trained),
                                                   jax.tree.leaves(initial), strict=True)]
  assert np.mean(moved) > 0.5
  run.ckpt.save(2, state, {'iterator': run.data.train_iter.get_state()})
  run.ckpt.close()

  # What Run does on resume: restore into the structure of a freshly initialized state.
  ckpt = Checkpointer(workdir)
  restored, _ = ckpt.restore(fresh)
  ckpt.close()
  assert int(restored.step) == 2
  assert jax.tree.structure(restored.model_state) == jax.tree.structure(trained)
  for a, b in zip(jax.tree.leaves(jax.device_get(restored.model_state)),
                  jax.tree.leaves(trained), strict=True):
    np.testing.assert_array_equal(a, b)


def test_glow_trains_samples_and_loads_with_its_constants(tmp_path, data_dir):
  import experiments
  from configs import glow_mnist
  c = _tiny_config(glow_mnist, data_dir, num_steps=2, checkpoint_every=2, num_samples=4)
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(c, workdir)
  assert result['step'] == 2 and np.isfinite(result['bits_per_dim'])
  assert 3.0 < result['bits_per_dim'] < 12.0
  assert (tmp_path / 'run' / 'samples' / 'step_2.png').exists()
  assert (tmp_path / 'run' / 'samples' / 'interpolations_step_2.png').exists()
  loaded = experiments.load_run(workdir)
  assert set(loaded.model_state) == {'constants'} and set(loaded.variables) == {
      'params', 'constants'}
  for level in loaded.model_state['constants'].values():   # each step's P is a permutation
    p = np.asarray(level['invconv']['permutation'])
    assert set(np.unique(p)) <= {0.0, 1.0} and np.all(p.sum(-2) == 1) and np.all(p.sum(-1) == 1)


def test_non_finite_log_det_stops_training_and_names_it(tmp_path):
  model = NICE(image_shape=SHAPE, hidden=(8,))
  tx, schedule = train.create_optimizer(
      _optimizer_config(), 10)
  mesh = train.make_mesh(jax.devices()[:1])
  batch = {'image': np.asarray(_images(8))}
  state = train.init_train_state(model, tx, batch, 0, mesh)
  params = jax.device_get(state.params)
  params['scaling']['log_scale'] = np.full((D,), 3e37, np.float32)   # sums to inf
  state = state.replace(params=jax.device_put(params, train.replicated(mesh)))
  step = train.make_train_step(model, tx, schedule, ema_decay=0.9, num_dims=D, mesh=mesh)
  _, metrics = step(state, train.to_global_batch(batch, mesh))
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  with pytest.raises(train.NaNLossError, match='log_det=inf'):
    train._check_finite(metrics, 1, Checkpointer(str(tmp_path)))  # pylint: disable=protected-access


def _optimizer_config():
  from configs import nice_mnist
  return nice_mnist.get_config('tiny').optimizer


def test_checkpoint_from_before_model_state_restores(tmp_path):
  """Runs saved before TrainState had model_state resume, with an empty one."""
  import flax

  @flax.struct.dataclass
  class OldState:
    step: jax.Array
    params: dict
    opt_state: tuple
    ema_params: dict
    rng: jax.Array

  old = OldState(step=jnp.int32(4), params={'w': jnp.ones(3)}, opt_state=(),
                 ema_params={'w': jnp.full(3, 2.0)}, rng=jnp.zeros(2, jnp.uint32))
  ckpt = Checkpointer(str(tmp_path))
  ckpt.save(4, old, {})
  ckpt.close()
  target = train.TrainState(step=jnp.int32(0), params={'w': jnp.zeros(3)}, opt_state=(),
                            ema_params={'w': jnp.zeros(3)}, rng=jnp.zeros(2, jnp.uint32))
  ckpt = Checkpointer(str(tmp_path))
  state, _ = ckpt.restore(target)
  ckpt.close()
  assert int(state.step) == 4 and state.model_state == {}
  np.testing.assert_array_equal(state.ema_params['w'], 2.0)


def test_flow_sampling_benchmark_times_a_tiny_model():
  from benchmarks import flow_sampling
  r = flow_sampling.time_model('nice_mnist', 'tiny', n=4, repeats=1)
  assert r['sample_s'] > 0 and r['density_s'] > 0 and r['params'] > 0


def test_eval_key_folds_in_the_batch_index(tmp_path, data_dir):
  """Each block of test images gets its own dequantization noise, the same in every run."""
  from configs import realnvp_mnist
  c = _tiny_config(realnvp_mnist, data_dir)
  run = train.Run(c, str(tmp_path / 'run'), restore=False)
  batch = next(iter(run.data.eval_batches()))
  gbatch = train.to_global_batch(batch, run.mesh)
  ms = run.state.model_state

  def nll(index):
    return float(run.eval_step(run.state.params, gbatch, ms, jnp.asarray(index, jnp.int32))[
        'nll'])

  assert nll(0) == nll(0)
  assert nll(0) != nll(1) and nll(1) != nll(2)
  rerun = train.Run(c, str(tmp_path / 'run2'), restore=False)
  assert float(rerun.eval_step(rerun.state.params, gbatch, rerun.state.model_state,
                               jnp.asarray(1, jnp.int32))['nll']) == nll(1)


def test_ema_evaluation_recomputes_batch_stats_and_keeps_the_data_position(tmp_path, data_dir):
  import flax.traverse_util

  from configs import realnvp_mnist
  c = _tiny_config(realnvp_mnist, data_dir, batch_stats_batches=3)
  assert c.train.eval_with_ema and c.train.eval_batch_stats == 'recompute'
  run = train.Run(c, str(tmp_path / 'run'), restore=False)
  step = train.make_train_step(run.model, run.tx, run.schedule, ema_decay=0.99,
                               num_dims=run.data.num_dims, mesh=run.mesh)
  for _ in range(3):
    run.state, _ = step(run.state, train.to_global_batch(next(run.data.train_iter), run.mesh))
  position = run.data.train_iter.get_state()
  trained = jax.device_get(run.state.model_state['batch_stats'])
  recomputed = jax.device_get(run.eval_model_state['batch_stats'])
  assert run.data.train_iter.get_state() == position      # the data position is put back
  assert run.eval_model_state is run.eval_model_state      # once per step
  assert jax.tree.structure(recomputed) == jax.tree.structure(trained)
  flat_recomputed = flax.traverse_util.flatten_dict(recomputed)
  flat_trained = flax.traverse_util.flatten_dict(trained)
  for path in [p for p in flat_recomputed if p[-1] == 'count']:  # per scanned layer
    assert np.all(flat_recomputed[path] == 3.0), path          # restarted, then 3 batches
    assert np.all(flat_trained[path] == 3.0)
  # The EMA weights differ from the raw ones, so the statistics of what they compute do.
  assert any(np.abs(flat_recomputed[p] - flat_trained[p]).max() > 1e-6
             for p in flat_recomputed if p[-1] == 'mean')
  again = jax.device_get(train.recompute_batch_stats(
      train.make_batch_stats_step(run.model, run.mesh, c.seed), run.eval_params,
      run.state.model_state, run.data, run.mesh, 3)['batch_stats'])
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(recomputed), strict=True):
    np.testing.assert_array_equal(a, b)
  c.train.eval_batch_stats = 'current'
  assert run.eval_model_state is run.state.model_state
  c.train.eval_batch_stats = 'fresh'
  with pytest.raises(ValueError, match="'recompute' or 'current'"):
    _ = run.eval_model_state


# Glow's coupling and permutation choices (Kingma & Dhariwal 2018, Fig. 3). The default
# (affine coupling, LU 1x1 convolution) is the 'glow' case of the round-trip test above.
@pytest.mark.parametrize('coupling,permutation,lu', [
    ('additive', 'shuffle', True), ('affine', 'reverse', True), ('additive', '1x1conv', False),
])
def test_glow_choices_invert_and_their_log_det_matches_the_jacobian(coupling, permutation, lu):
  model = Glow(image_shape=SHAPE, num_levels=2, num_steps=2, hidden_features=8,
               coupling=coupling, permutation=permutation, lu=lu)
  image = _images()
  variables = random_variables(model, image, seed=1)
  assert ('constants' in variables) == (permutation == '1x1conv' and lu)
  if permutation == '1x1conv' and not lu:
    # A Gaussian random W can be near singular, too ill-conditioned for a float32 inverse:
    # a rotation with per-channel scales in [0.7, 1.4] keeps log|det W| away from zero.
    rng = np.random.default_rng(2)
    unrolled = glow.scanned_to_unrolled(variables)
    params = dict(unrolled['params'])
    for name in [n for n in params if n.endswith('_invconv')]:
      c = params[name]['kernel'].shape[0]
      w = np.linalg.qr(rng.standard_normal((c, c)))[0] * rng.uniform(0.7, 1.4, c)
      params[name] = {'kernel': jnp.asarray(w, jnp.float32)}
    variables = glow.unrolled_to_scanned({**unrolled, 'params': params})

  @jax.jit
  def run(variables):
    def apply(*a, **k):
      return model.apply(variables, *a, **k)
    x = apply(image, rngs={'sample': jax.random.key(7)}, method='dequantize')
    z = apply(x, method='encode')
    def encode_one(v):
      return apply(v.reshape((1,) + SHAPE), method='encode')[0]
    jac = jax.vmap(jax.jacfwd(encode_one))(x.reshape(x.shape[0], -1))
    return x, z, apply(z, method='decode'), apply(x, method='log_prob'), jnp.linalg.slogdet(jac)

  x, z, x_back, log_p, (sign, log_det) = jax.tree.map(np.asarray, run(variables))
  np.testing.assert_allclose(x_back, x, atol=2e-5)
  assert np.abs(z - x.reshape(3, D)).max() > 0.1
  assert np.all(sign != 0)
  # Glow's preprocessing is a shift (Jacobian 1), so log p(x) = log N(z) + log|dz/dx|.
  np.testing.assert_allclose(log_p, _log_base(z, 'gaussian') + log_det, rtol=1e-5, atol=2e-3)


def test_glow_additive_coupling_has_zero_log_det_and_shuffles_differ_per_step():
  from tests.test_bijectors import IMAGE, check_bijector
  r = check_bijector(fb.GlowCoupling(hidden_features=8, additive=True), IMAGE)
  assert np.all(r['ld'] == 0.0) and np.all(r['ild_z'] == 0.0)
  assert np.abs(r['jac_fwd']).max() < 1e-4            # a unit Jacobian determinant
  assert np.abs(r['y'] - r['x']).max() > 1e-2, 'a vacuous test'
  # RGB, so the levels have 12 and 24 channels: distinct seeds give distinct shuffles.
  model = Glow(image_shape=(4, 4, 3), num_levels=2, num_steps=3, hidden_features=4,
               permutation='shuffle')
  perms = [tuple(p) for level in range(2)
           for p in model.shuffle_permutations(level, 12 if level == 0 else 24)]
  assert len(perms) == 6 and len(set(perms)) == 6, perms
  assert all(p != tuple(sorted(p)) for p in perms)


def test_glow_defaults_keep_the_saved_runs_layer_names():
  """A config.json written before `coupling` and `permutation` existed builds the model its
  checkpoint holds: affine couplings and 1x1 convolutions under the same names, once
  glow.unrolled_to_scanned has stacked the steps of each level."""
  from experiments.models import build_model
  old = dict(image_shape=SHAPE, num_levels=2, num_steps=2, hidden_features=4, lu=True,
             learn_top=True)
  model = build_model('glow', old)
  assert (model.coupling, model.permutation) == ('affine', '1x1conv')
  variables = jax.eval_shape(lambda: model.init(
      {'params': jax.random.key(0), 'sample': jax.random.key(0)}, {'image': _images()},
      train=False, method='loss'))
  unrolled = jax.eval_shape(glow.scanned_to_unrolled, variables)
  steps = [f'level{level}_step{k}' for level in range(2) for k in range(2)]
  assert set(unrolled['params']) == {f'{s}_{n}' for s in steps for n in (
      'actnorm', 'invconv', 'coupling')} | {'level0_split', 'top_prior'}
  assert set(unrolled['constants']) == {f'{s}_invconv' for s in steps}
  assert set(variables['params']['level0_steps']) == {'actnorm', 'invconv', 'coupling'}
  for key, value in (('coupling', 'affine_'), ('permutation', '1x1'), ('permutation', 'lu')):
    with pytest.raises(ValueError, match=f'{key}={value!r}; choose one of'):
      Glow(image_shape=SHAPE, num_levels=2, num_steps=1, **{key: value}).init(
          {'params': jax.random.key(0), 'sample': jax.random.key(0)}, {'image': _images()},
          train=False, method='loss')


def test_glow_initializes_on_the_first_init_examples_of_the_eval_batch(tmp_path, data_dir):
  """config.train.init_examples: actnorm's data-dependent start is the statistics of the
  first n evaluation images (the released code's n_batch_init), and n changes it."""
  from configs import glow_mnist
  from experiments import validation
  from experiments.models import ConfigError
  c = _tiny_config(glow_mnist, data_dir, init_examples=32)
  run = train.Run(c, str(tmp_path / 'run'), restore=False)
  example = next(iter(run.data.eval_batches()))
  assert len(example['image']) == c.data.eval_batch_size > 32
  try:
    for n, same in ((32, True), (0, False)):   # 0: the whole batch
      want = train.init_train_state(run.model, run.tx,
                                    {'image': example['image'][:n or None]}, c.seed, run.mesh)
      equal = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                           jax.device_get(want.params), jax.device_get(run.state.params))
      actnorm = equal['level0_steps']['actnorm']
      assert actnorm['bias'] is same and actnorm['log_scale'] is same
      assert all(jax.tree.leaves(equal['level0_steps']['invconv']))  # not data-dependent
  finally:
    run.close()
  c.train.init_examples = -1
  with pytest.raises(ConfigError, match=r'train.init_examples.*>= 0 \(0: the whole first'):
    validation.validate_config(c)


@pytest.mark.parametrize('name', ['glow', 'realnvp'])
def test_init_compiled_at_the_cpu_init_level_matches_xla_defaults(name, monkeypatch):
  """init_train_state compiles with INIT_COMPILER_OPTIONS on CPU, for compile time only:
  its state (Glow's data-dependent actnorm included) matches the default-compiled init to
  float rounding."""
  model = {'glow': lambda: Glow(image_shape=SHAPE, num_levels=2, num_steps=2,
                                hidden_features=8),
           'realnvp': lambda: RealNVP(image_shape=SHAPE, num_scales=2, features=4,
                                      num_blocks=1)}[name]()
  tx, _ = train.create_optimizer(_optimizer_config(), 10)
  mesh = train.make_mesh(jax.devices()[:1])
  assert train.init_compiler_options(mesh) == train.INIT_COMPILER_OPTIONS   # tests run on CPU
  batch = {'image': np.asarray(_images(8))}
  fast = jax.device_get(train.init_train_state(model, tx, batch, 0, mesh))
  monkeypatch.setattr(train, 'init_compiler_options', lambda mesh: None)
  default = jax.device_get(train.init_train_state(model, tx, batch, 0, mesh))
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(default), strict=True):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=1e-5, atol=1e-6)
