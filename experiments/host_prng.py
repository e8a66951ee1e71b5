"""Threefry on the host for the one-off init on CPU: the same bits, a fraction of the compile.

JAX lowers every `threefry2x32` (each `jax.random` split, fold-in and draw; a Flax init has
two to four per parameter) on CPU as a rolled loop of its own, and XLA:CPU compiles each one
separately, about 0.05-0.1 s apiece (2026-12-07, 2-core AMD EPYC, quiet: 50 lecun-normal
parameters of distinct shapes, compile 7.0 s, 4.4 s with the hash on the host; the
trainer's set-up, init included, realnvp_mnist:cpu 4.16 -> 2.46 s, vpn_moving_mnist 7.13 ->
4.31 s, gated_pixelcnn_mnist 5.33 -> 2.25 s). Inside `threefry_on_host()`
the CPU lowering of `threefry2x32` is instead a `jax.pure_callback` into
`np_threefry2x32`, a numpy transcription of the same hash (Salmon et al. 2011, "Parallel
random numbers: as easy as 1, 2, 3", Threefry-2x32 with 20 rounds, as jax's lowering): XLA
compiles one small custom call per draw, and the values are the same bits (tested against
jax's lowering, and the inits of every model family bitwise).

The trainer lowers its init inside it on CPU meshes (`train.init_train_state`); the train
step and everything else keep JAX's lowering (a host callback per step would stall the
step, and accelerators keep their own kernels). The host rule only takes a module lowered
for one device (jax sees one CPU device unless it is told otherwise, so every user's
default run); on several it steps aside to jax's lowering, whoever called it: there the
callback would run on one device while the others wait in the program's collectives
(Glow's data-dependent init all-reduces over the sharded batch), and XLA:CPU aborts the
process when its 40 s rendezvous times out. The switch is per thread and only acts
while a function is lowered (`jax.jit(f).lower(...)` inside the block; compiling and running
the result may happen outside it). Executables with host callbacks are not written to the
persistent compilation cache, so a rerun compiles the init again (the cheaper compile).

Draws of more than HOST_MAX_ELEMENTS words keep jax's lowering even inside the block:
for those XLA's parallel hash beats numpy's by more than the compile it costs.

If this jax moves the internals it hooks into (`_platform_specific_lowerings`), the block
does nothing and JAX's own lowering runs, with the same values; `active()` says which.
"""
from __future__ import annotations

import contextlib
import math
import threading

import jax
import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

# The largest draw hashed on the host, in the primitive's elements (one per 32-bit word
# drawn, with jax's partitionable threefry). numpy takes ~60 ns an element on large arrays
# (one thread; 2026-12-07, 2-core Intel Xeon: 4M elements 247 ms), while XLA hashes them
# in parallel and vectorized; the compile the host saves is per draw, whatever its size.
# Larger draws keep jax's lowering: with every draw on the host, the set-up (init
# included) of the 55.8 M-parameter Real NVP took 5.35 s against 3.77 s with jax's.
HOST_MAX_ELEMENTS = 2 ** 17

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def np_threefry2x32(k1, k2, x1, x2):
  """Threefry-2x32, 20 rounds, on uint32 arrays (broadcast together): jax's
  `threefry2x32_p` in numpy. Returns the two output words."""
  shape = np.broadcast_shapes(*(np.shape(a) for a in (k1, k2, x1, x2)))
  # At least 1-d: numpy warns of (intended) uint32 wrap-around on scalars, not on arrays.
  k1, k2, x1, x2 = (np.array(np.broadcast_to(a, shape), np.uint32, ndmin=1)
                    for a in (k1, k2, x1, x2))
  ks = (k1, k2, k1 ^ k2 ^ _PARITY)
  a, b = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      a = a + b
      b = a ^ ((b << np.uint32(r)) | (b >> np.uint32(32 - r)))
    a = a + ks[(i + 1) % 3]
    b = b + ks[(i + 2) % 3] + np.uint32(i + 1)
  return a.reshape(shape), b.reshape(shape)


_state = threading.local()


def _on() -> bool:
  return getattr(_state, 'on', False)


def _host_rule(ctx, k1, k2, x1, x2):
  aval = ctx.avals_out[0]
  out = (jax.ShapeDtypeStruct(aval.shape, np.uint32),) * 2

  def call(k1, k2, x1, x2):
    return jax.pure_callback(np_threefry2x32, out, k1, k2, x1, x2,
                             vmap_method='broadcast_all')

  return mlir.lower_fun(call, multiple_results=True)(ctx, k1, k2, x1, x2)


def _lowered_for_one_device(ctx) -> bool:
  """Whether the module being lowered runs on one device. On several, the callback would
  run on one of them while the others wait in the program's collectives (Glow's
  data-dependent init all-reduces over the sharded batch), and XLA:CPU aborts the process
  when its 40 s rendezvous times out; so there the host rule steps aside. An axis context
  this code does not know counts as several devices."""
  axis_context = getattr(getattr(ctx, 'module_context', None), 'axis_context', None)
  num_devices = getattr(axis_context, 'num_devices', None)        # jit: ShardingContext
  if num_devices is None:
    mesh = getattr(axis_context, 'mesh', None)                    # shard_map: SPMDAxisContext
    num_devices = getattr(mesh, 'size', None)
  return num_devices == 1


def _install():
  """Registers a CPU rule that dispatches to the host rule inside `threefry_on_host` and
  to jax's own CPU rule elsewhere; None where jax's rule cannot be found."""
  try:
    from jax._src.interpreters import mlir as mlir_internal  # pylint: disable=g-import-not-at-top
    entry = mlir_internal._platform_specific_lowerings['cpu'][threefry2x32_p]  # pylint: disable=protected-access
    jax_rule, inline = entry.rule, entry.inline
  except (ImportError, AttributeError, KeyError):
    return None
  if getattr(jax_rule, '_dgm_host_prng', False):   # installed already (module reloaded)
    return jax_rule

  def rule(ctx, *args, **params):
    if (_on() and math.prod(ctx.avals_out[0].shape) <= HOST_MAX_ELEMENTS
        and _lowered_for_one_device(ctx)):
      return _host_rule(ctx, *args)
    return jax_rule(ctx, *args, **params)

  rule._dgm_host_prng = True  # pylint: disable=protected-access
  mlir.register_lowering(threefry2x32_p, rule, platform='cpu', inline=inline)
  return rule


_RULE = _install()


def active() -> bool:
  """Whether `threefry_on_host` takes effect with this jax (False: it is a no-op)."""
  return _RULE is not None


@contextlib.contextmanager
def threefry_on_host(enabled: bool = True):
  """Within the block (in this thread), functions lowered for CPU hash on the host."""
  previous = _on()
  _state.on = bool(enabled) and active()
  try:
    yield
  finally:
    _state.on = previous
