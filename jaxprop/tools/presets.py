"""Networks and data for gradient checks: the presets of ``jaxprop check`` and random data
that suits a loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxprop.core.layers import Dense, activation
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.network import Model, mlp, serial
from jaxprop.core.registry import lookup
from jaxprop.data.synthetic import xor

# name -> (dtype -> (model, loss name, data)); the presets are looked up when called
_BUILDERS = {
    "mixed": lambda dtype: (*mixed_preset(dtype), None),
    "xor": lambda dtype: (*xor_preset(dtype), xor_data(dtype)),
}
PRESETS = tuple(_BUILDERS)


def mixed_preset(dtype=jnp.float32) -> tuple[Model, str]:
    """Five Dense layers (4 -> 8 -> 8 -> 8 -> 8 -> 3) using every activation in ACTIVATIONS.

    Loss ``mse`` on the softmax output.
    """
    d = dict(dtype=dtype)
    model = serial(
        Dense(8, **d), activation("tanh"), activation("gelu"),
        Dense(8, **d), activation("leaky_relu"), activation("sigmoid"),
        Dense(8, **d), activation("relu"), activation("softplus"),
        Dense(8, **d), activation("gelu_tanh"), activation("identity"),
        Dense(3, **d), activation("softmax"),
        in_shape=(4,),
    )  # fmt: skip (tests/test_gradcheck.py checks that it uses every activation)
    return model, "mse"


def xor_preset(dtype=jnp.float32) -> tuple[Model, str]:
    """The classic 2-4-1 sigmoid network, standard-normal weights, sum-of-squares loss."""
    return mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal", dtype=dtype), "sse_half"


def preset(name: str, dtype=jnp.float32) -> tuple[Model, str, tuple | None]:
    """The preset ``name`` (one of ``PRESETS``) as ``(model, loss name, data)``: ``data`` is
    the preset's own ``(x, t)`` (xor: its four patterns, :func:`xor_data`), or ``None`` where
    random data that suits the loss (:func:`make_data`) is checked."""
    return lookup(_BUILDERS, name, "preset")(dtype)


def xor_data(dtype=jnp.float32):
    """The four XOR patterns as ``(x (4, 2), t (4, 1))`` in ``dtype``."""
    x, t = xor()
    return jnp.asarray(x, dtype), jnp.asarray(t, dtype)


def make_data(key, loss: str | Loss, in_shape, out_shape, batch: int, dtype, *,
              integer_inputs: int | None = None):
    """Inputs ~ N(0, 1) (or integer ids ``0..integer_inputs-1``, for a model that starts with
    an Embedding) and targets that suit the loss.

    Targets: class labels for a loss on integer labels, one-hot rows for a categorical loss,
    values in [0, 1] for a loss on probabilities or binary logits, normal values otherwise.
    ``x: (batch, *in_shape)``; ``t: (batch, *out_shape)``, or ``(batch, *out_shape[:-1])``
    integer labels in ``0..out_shape[-1]-1``.

    Args:
      key: PRNG key, split once for ``x`` and ``t``.
      loss: a loss name or :class:`~jaxprop.Loss`.
      in_shape: one example's input shape.
      out_shape: one example's output shape (its last axis: the classes).
      batch: examples.
      dtype: the floating dtype of ``x`` and of non-integer ``t``.
      integer_inputs: the model's ``integer_inputs`` fact: draw ``x`` as ids below it.

    Returns:
      ``(x, t)``.
    """
    loss = get_loss(loss)
    kx, kt = jax.random.split(key)
    x = jax.random.randint(kx, (batch, *in_shape), 0, integer_inputs) if integer_inputs \
        else jax.random.normal(kx, (batch, *in_shape), dtype)
    shape = (batch, *out_shape)
    if loss.integer_labels:
        t = jax.random.randint(kt, shape[:-1], 0, shape[-1])
    elif loss.categorical:
        t = jax.nn.one_hot(jax.random.randint(kt, shape[:-1], 0, shape[-1]), shape[-1], dtype=dtype)
    elif loss.from_logits or loss.input_range == (0, 1):
        t = jax.random.uniform(kt, shape, dtype)
    else:
        t = jax.random.normal(kt, shape, dtype)
    return x, t
