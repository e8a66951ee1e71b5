"""Test-session setup: 8 simulated CPU devices (before JAX is imported) and shared helpers."""
import os
import sys

# The multi-device tests shard over 8 host devices; ordinary computations still run on
# device 0. Must be set before jax is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

# experiments.main turns JAX's persistent compilation cache on. The suite leaves the user's
# ~/.cache alone: the controller makes one folder for the session (pytest_configure below),
# shared by the xdist workers, their in-process compiles and their subprocesses, so a
# program compiled once (the tiny configs' train steps, every resumed subprocess's) is read
# back after; it is deleted at the end. DGM_TEST_COMPILATION_CACHE=none runs without it.
import pytest  # pylint: disable=g-import-not-at-top

CACHE_ENV = 'DGM_TEST_COMPILATION_CACHE'

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def random_params(model, *args, seed=0, method=None, **kwargs):
  """Random parameters for causality tests: positive biases, so no connection is cut by
  chance (output ReLUs mostly pass) and a zero gradient means 'not connected'; kernels at a
  fan-in scale, so activations stay O(1) through the layers. Drawn in NumPy into the
  tree's shapes, because compiling init (and its many threefry calls) costs seconds on a
  small CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  key = jax.random.key(0)
  shapes = jax.eval_shape(lambda: model.init({'params': key, 'sample': key, 'dropout': key},
                                             *args, method=method, **kwargs))
  rng = np.random.default_rng(seed)

  def draw(leaf):
    if leaf.ndim == 1:
      return jnp.asarray(rng.uniform(0.1, 0.5, leaf.shape), jnp.float32)
    scale = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
    return jnp.asarray(scale * rng.standard_normal(leaf.shape), jnp.float32)

  return jax.tree.map(draw, shapes)


def random_flow_variables(shapes, seed=0):
  """Every variable of a flow drawn at random in NumPy into `shapes` (a jax.eval_shape of
  init): kernels at a fan-in scale, 1-D parameters uniform in [-0.5, 0.5], running variances
  positive, LU constants a random permutation matrix and random signs, so no layer is the
  identity its initialization makes it."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    collection, name = path[0].key, path[-1].key
    if collection == 'constants' and name == 'permutation':
      value = np.eye(leaf.shape[0])[rng.permutation(leaf.shape[0])]
    elif collection == 'constants' and name == 'sign_s':
      value = rng.choice([-1.0, 1.0], leaf.shape)
    elif collection == 'batch_stats' and name == 'count':
      value = np.full(leaf.shape, 10.0)
    elif collection == 'batch_stats':
      value = rng.uniform(0.5, 2.0, leaf.shape) if name == 'var' else rng.normal(
          0, 0.5, leaf.shape)
    elif leaf.ndim == 1:
      value = rng.uniform(-0.5, 0.5, leaf.shape)
    else:
      value = rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def shared_data_dir():
  """$DGM_DATA_DIR, else ../shared/data beside the repo, if it holds MNIST; else None."""
  path = os.environ.get('DGM_DATA_DIR') or os.path.join(os.path.dirname(REPO), 'shared', 'data')
  return path if os.path.exists(os.path.join(path, 'mnist', 't10k-images-idx3-ubyte.gz')) else None


@pytest.fixture
def data_dir():
  path = shared_data_dir()
  if path is None:
    pytest.skip('MNIST files not found: set DGM_DATA_DIR to a directory holding mnist/.')
  return path


def pytest_configure(config):
  import jax  # pylint: disable=g-import-not-at-top
  # Tests run tiny models, where XLA's optimization passes cost more than they save.
  jax.config.update('jax_disable_most_optimizations', True)
  if not hasattr(config, 'workerinput') and CACHE_ENV not in os.environ:
    # The controller (or a run without xdist), before any worker starts: they inherit it.
    import tempfile  # pylint: disable=g-import-not-at-top
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix='dgm-test-jax-cache-')
    config.dgm_own_cache = os.environ[CACHE_ENV]
  from experiments import compilation_cache  # pylint: disable=g-import-not-at-top
  cache = os.environ[CACHE_ENV]
  if cache.strip().lower() in compilation_cache.OFF:
    os.environ['DGM_COMPILATION_CACHE'] = 'none'
    return
  # Every program, however quick its compile (the tiny models' take well under JAX's 1 s
  # default threshold); entries are compressed, so a half-written one fails to decompress
  # and is compiled again with a warning.
  os.environ['DGM_COMPILATION_CACHE'] = cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  compilation_cache.enable(cache)


def pytest_unconfigure(config):
  own = getattr(config, 'dgm_own_cache', None)
  if own:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(own, ignore_errors=True)
