"""The PyTorch twins of Glow and Real NVP (benchmarks/torch_flows.py) compute the Flax
models' functions: a speed comparison against them compares the same computation.

torch is the `bench` extra, not a test dependency: without it these tests skip (CI installs
only `.[test]`); benchmarks/flow_throughput.py runs the same checks before it times.
"""
import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from benchmarks import torch_flows as tf  # noqa: E402
from flows.glow import Glow  # noqa: E402
from flows.realnvp import RealNVP  # noqa: E402


def _perturbed(variables, seed):
  """Every parameter moved off its initial value (zero-initialized output layers, unit
  scales), so the check sees every layer."""
  key = jax.random.key(seed)
  leaves, treedef = jax.tree.flatten(variables['params'])
  keys = jax.random.split(key, len(leaves))
  moved = [np.asarray(p) + 0.05 * np.asarray(jax.random.normal(k, p.shape))
           for p, k in zip(leaves, keys, strict=True)]
  return {**variables, 'params': jax.tree.unflatten(treedef, moved)}


def test_glow_twin_has_the_same_log_density_and_inverse():
  model = Glow(image_shape=(8, 8, 1), num_levels=2, num_steps=3, hidden_features=16)
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1)).astype(np.uint8)
  variables = jax.jit(lambda b: model.init(
      {'params': jax.random.key(1), 'sample': jax.random.key(2)}, b, train=False,
      method='loss'))({'image': images})
  variables = _perturbed(variables, 3)
  twin = tf.GlowTorch((8, 8, 1), 2, 3, 16)
  assert tf.num_params(twin) == sum(p.size for p in jax.tree.leaves(variables['params']))
  diffs = tf.check_glow(model, variables, twin, batch=4)
  assert diffs['log_prob'] < 1e-2 and diffs['decode'] < 1e-4
  # The check fails when the twin computes something else: one weight changed.
  with torch.no_grad():
    twin.levels[1][2].out.bias[1] += 0.5
  # Seeded: over random inputs the changed bias moves the largest log-density by 0.078 to
  # 0.381 (20 seeds), and an unseeded run once fell under the threshold (0.088); seed 0
  # gives 0.173, and check_glow's tolerance is 1e-2.
  x = torch.rand(4, 8, 8, 1, generator=torch.Generator().manual_seed(0))
  changed = twin.log_prob(x)
  tf.load_glow(twin, variables)
  assert torch.max(torch.abs(changed - twin.log_prob(x))) > 0.1


def test_glow_twin_loss_is_the_models_objective():
  model = Glow(image_shape=(8, 8, 1), num_levels=2, num_steps=2, hidden_features=8)
  images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1)).astype(np.uint8)
  variables = jax.jit(lambda b: model.init(
      {'params': jax.random.key(1), 'sample': jax.random.key(2)}, b, train=False,
      method='loss'))({'image': images})
  twin = tf.GlowTorch((8, 8, 1), 2, 2, 8)
  tf.load_glow(twin, variables)
  x = (images.astype(np.float32) + 0.5) / 256
  lp = np.asarray(model.apply(variables, x, method='log_prob'))
  want = np.mean(-lp / (64 * np.log(2)) + 8.0)   # + log2(256) bits per dimension
  got = tf.bits_per_dim_loss(twin.log_prob(torch.from_numpy(x)), 64).item()
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_realnvp_twin_has_the_same_log_density_in_train_and_eval_mode():
  model = RealNVP(image_shape=(8, 8, 1), num_scales=2, features=8, num_blocks=2)
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1)).astype(np.uint8)
  variables = jax.jit(lambda b: model.init(
      {'params': jax.random.key(1), 'sample': jax.random.key(2)}, b, train=False,
      method='loss'))({'image': images})
  variables = _perturbed(variables, 4)
  # Running averages away from (0, 1), so eval mode differs from train mode.
  _, moved = model.apply(variables, (images + 0.5) / 256.0, True, method='log_prob',
                         mutable=['batch_stats'])
  variables = {**variables, **moved}
  twin = tf.RealNVPTorch((8, 8, 1), 2, 8, 2)
  assert tf.num_params(twin) == sum(p.size for p in jax.tree.leaves(variables['params']))
  diffs = tf.check_realnvp(model, variables, twin, batch=8)
  assert diffs['log_prob_eval'] < 1e-2 and diffs['log_prob_train'] < 1e-2
