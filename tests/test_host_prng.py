"""experiments/host_prng.py: the init's threefry on the host gives jax's bits exactly."""
import contextlib
import threading

import jax
import numpy as np
import pytest
from jax.extend.random import threefry2x32_p

from experiments import host_prng, train


def test_hooks_into_this_jax():
  # With the pinned jax the switch must take effect; if a jax upgrade moves the internals
  # it falls back to jax's lowering (same values, slower compile) and this test says so.
  assert host_prng.active()


@pytest.mark.parametrize('key, count, want', [
    # Random123's known-answer vectors for Threefry-2x32-20 (also in jax's random tests).
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6b200159, 0x99ba4efe)),
    ((0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff), (0x1cb996fc, 0xbb002be7)),
    ((0x13198a2e, 0x03707344), (0x243f6a88, 0x85a308d3), (0xc4923a9c, 0x483df7a0)),
])
def test_numpy_threefry_known_answers(key, count, want):
  got = host_prng.np_threefry2x32(*(np.uint32(v) for v in key + count))
  assert tuple(int(w) for w in got) == want


def test_numpy_threefry_matches_jax_with_broadcasting():
  rng = np.random.default_rng(0)
  k1, k2 = rng.integers(0, 2 ** 32, (2, 1, 5), dtype=np.uint32)
  x1, x2 = rng.integers(0, 2 ** 32, (2, 7, 5), dtype=np.uint32)
  want = jax.jit(lambda *a: threefry2x32_p.bind(*a))(k1, k2, x1, x2)
  got = host_prng.np_threefry2x32(k1, k2, x1, x2)
  for g, w in zip(got, want, strict=True):
    assert g.shape == (7, 5) and g.dtype == np.uint32
    np.testing.assert_array_equal(g, np.asarray(w))


def _draws(key):
  k1, k2, k3 = jax.random.split(key, 3)
  k4 = jax.random.fold_in(k3, 7)
  init = jax.nn.initializers.lecun_normal()
  return {
      'normal': jax.random.normal(k1, (3, 5)),
      'uniform': jax.random.uniform(k2, (4, 2, 3), minval=-1.0, maxval=2.0),
      'lecun': init(k4, (3, 3, 2, 4)),
      'bernoulli': jax.random.bernoulli(k3, 0.3, (17,)),
      'randint': jax.random.randint(k4, (9,), 0, 1000),
      'permutation': jax.random.permutation(k2, 11),
      'split_data': jax.random.key_data(jax.random.split(k1, 4)),
      'vmapped': jax.vmap(lambda k: jax.random.normal(k, (6,)))(jax.random.split(k2, 3)),
      'scanned': jax.lax.scan(lambda k, _: (jax.random.fold_in(k, 1),
                                            jax.random.uniform(k, (2,))), k1, None, 4)[1],
  }


def test_lowered_inside_the_block_same_bits_and_no_threefry_loop():
  key = jax.random.key(3)
  with host_prng.threefry_on_host():
    lowered = jax.jit(_draws).lower(key)
  host = lowered.compile()
  assert 'callback' in host.as_text()
  reference = jax.jit(lambda k: _draws(k)).lower(key).compile()   # a fresh function: no cache
  assert 'callback' not in reference.as_text()
  got, want = host(key), reference(key)
  for name in want:
    np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)
  # Outside the block (and in other threads) nothing changes.
  assert not host_prng._on()  # pylint: disable=protected-access


def test_large_draws_keep_jax_lowering_inside_the_block():
  key = jax.random.key(5)
  n = host_prng.HOST_MAX_ELEMENTS

  def draws(k):
    k1, k2 = jax.random.split(k)
    return jax.random.normal(k1, (n,)), jax.random.normal(k2, (n + 1,))
  with host_prng.threefry_on_host():
    lowered = jax.jit(draws).lower(key)
  text = lowered.as_text()
  # The split and the draw of n words on the host; the larger draw as jax's rolled loop.
  assert text.count('custom_call @xla_ffi_python_cpu_callback') == 2
  assert text.count('stablehlo.while') == 1
  reference = jax.jit(lambda k: draws(k)).lower(key).compile()
  for g, w in zip(lowered.compile()(key), reference(key), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_the_switch_is_per_thread_and_nests():
  seen = {}
  with host_prng.threefry_on_host():
    assert host_prng._on()  # pylint: disable=protected-access
    t = threading.Thread(target=lambda: seen.setdefault('other', host_prng._on()))  # pylint: disable=protected-access
    t.start()
    t.join()
    with host_prng.threefry_on_host(enabled=False):
      assert not host_prng._on()  # pylint: disable=protected-access
    assert host_prng._on()  # pylint: disable=protected-access
  assert not host_prng._on() and seen == {'other': False}  # pylint: disable=protected-access


def _models():
  from autoreg.gated_pixelcnn import GatedPixelCNN
  from flows.glow import Glow
  from flows.realnvp import RealNVP
  return {
      'realnvp': (lambda: RealNVP(image_shape=(8, 8, 1), num_scales=2, features=4,
                                  num_blocks=2), 'image'),
      'glow': (lambda: Glow(image_shape=(8, 8, 1), num_levels=2, num_steps=2,
                            hidden_features=8), 'image'),
      'gated_pixelcnn': (lambda: GatedPixelCNN(num_layers=3, features=8, num_levels=4),
                         'image'),
  }


@pytest.mark.parametrize('name, devices', [('realnvp', 1), ('realnvp', 8), ('glow', 1),
                                           ('glow', 8), ('gated_pixelcnn', 1),
                                           ('gated_pixelcnn', 8)])
def test_init_train_state_bitwise_equal_to_jax_lowering(name, devices, monkeypatch):
  """The trainer's init inside the block (host threefry) against the same init with jax's
  lowering: every leaf of the state bitwise equal. On eight devices the host rule itself
  steps aside: Glow's data-dependent init has an all-reduce over the sharded batch, and a
  host callback on one device left the others waiting until XLA aborted the process (its
  40 s rendezvous timeout, in tests/test_convert_checkpoint.py); Glow on 8 is that case."""
  from configs import nice_mnist
  if jax.device_count() < devices:
    pytest.skip(f'needs {devices} devices')
  make, field = _models()[name]
  tx, _ = train.create_optimizer(nice_mnist.get_config('tiny').optimizer, 10)
  mesh = train.make_mesh(jax.devices()[:devices])
  rng = np.random.default_rng(1)
  levels = 4 if name == 'gated_pixelcnn' else 256
  images = rng.integers(0, levels, (8, 8, 8, 1)).astype(np.int32)
  batch = {field: images if name == 'gated_pixelcnn' else images.astype(np.float32) / 256.0}
  calls = []
  real = host_prng.threefry_on_host

  def spy(enabled=True):
    calls.append(enabled)
    return real(enabled)
  monkeypatch.setattr(host_prng, 'threefry_on_host', spy)
  fast = jax.device_get(train.init_train_state(make(), tx, batch, 0, mesh))
  assert calls == [True]            # the trainer turns it on for every CPU mesh
  monkeypatch.setattr(host_prng, 'threefry_on_host', lambda enabled=True: contextlib.nullcontext())
  default = jax.device_get(train.init_train_state(make(), tx, batch, 0, mesh))
  leaves = jax.tree.leaves(fast)
  assert len(leaves) > 5
  for a, b in zip(leaves, jax.tree.leaves(default), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_modules_lowered_for_several_devices_keep_jax_lowering():
  """Inside the block, the host rule takes a module lowered for one device only: a jit over
  an eight-device mesh, and a shard_map's body, lower to jax's own threefry (no callback),
  whoever the caller; the values stay jax's."""
  if jax.device_count() < 2:
    pytest.skip('needs 2 devices')
  from jax.sharding import PartitionSpec as P
  key = jax.random.key(7)
  one = train.make_mesh(jax.devices()[:1])
  many = train.make_mesh(jax.devices())
  axis = many.axis_names[0]

  def lowered_text(mesh):
    with host_prng.threefry_on_host():
      return jax.jit(_draws, out_shardings=train.replicated(mesh)).lower(key).as_text()
  assert 'callback' in lowered_text(one)
  assert 'callback' not in lowered_text(many)

  def body(x):
    return x + jax.random.uniform(jax.random.fold_in(key, 1), x.shape)
  mapped = jax.shard_map(body, mesh=many, in_specs=P(axis), out_specs=P(axis))
  x = np.zeros((jax.device_count() * 2,), np.float32)
  with host_prng.threefry_on_host():
    lowered = jax.jit(mapped).lower(x)
  assert 'callback' not in lowered.as_text()
  np.testing.assert_array_equal(np.asarray(lowered.compile()(x)),
                                np.asarray(jax.jit(lambda x: mapped(x))(x)))
