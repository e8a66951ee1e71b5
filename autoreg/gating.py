"""The gated activation unit shared by the Gated PixelCNN (arXiv 1606.05328, Eq. 2) and
WaveNet/ByteNet (arXiv 1609.03499, Eq. 2): y = tanh(W_f * x) . sigmoid(W_g * x), with the
filter and gate pre-activations stacked on the last axis."""
import jax
import jax.numpy as jnp


def gate(pre):
  """tanh of the first half of the channels times sigmoid of the second."""
  f, g = jnp.split(pre, 2, axis=-1)
  return jnp.tanh(f) * jax.nn.sigmoid(g)
