"""Composing layers into a network: ``serial`` and its shortcut ``mlp``.

A :class:`Model` keeps the layers and (optionally) the shape of one input example. Its params
are a plain pytree: a list with one entry per layer (``{"W", "b"}`` for Dense, ``()`` for an
activation). Forward runs the layers in order keeping each layer's residuals; backward walks
them in reverse, each layer turning ``dL/d(output)`` into ``dL/d(params)`` and ``dL/d(input)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxprop.layers import Dense, Layer
from jaxprop.layers import activation as activation_layer

Array = jax.Array


class Model(NamedTuple):
    """A feedforward network: ``layers`` applied in order to inputs of shape ``in_shape``.

    ``init(key) -> params``, ``apply(params, x) -> y``, ``forward(params, x) -> (y, residuals)``
    and ``backward(params, residuals, dy) -> (dparams, dx)``. ``as_layer()`` gives the Layer
    protocol (``init(key, in_shape) -> (params, out_shape)``) so models nest inside ``serial``.
    """

    layers: tuple[Layer, ...]
    in_shape: tuple[int, ...] | None = None

    # -- Layer protocol ---------------------------------------------------------------------

    def init_with_shape(self, key: Array, in_shape: Sequence[int]):
        """``(params, out_shape)`` for inputs of per-example shape ``in_shape``."""
        shape = tuple(in_shape)
        params = []
        for layer, k in zip(self.layers, jax.random.split(key, len(self.layers))):
            p, shape = layer.init(k, shape)
            params.append(p)
        return params, shape

    def forward_trace(self, params: list, x: Array) -> tuple[list[Array], list[Any]]:
        """Every layer's output ``[y_1, ..., y_L]`` and every layer's residuals."""
        self._check_params(params)
        outputs, residuals = [], []
        for layer, p in zip(self.layers, params):
            x, r = layer.forward(p, x)
            outputs.append(x)
            residuals.append(r)
        return outputs, residuals

    def backward_trace(self, params: list, residuals: list, dy: Array):
        """``(dparams, [dL/dx_1, ..., dL/dx_L])``: gradients w.r.t. params and each layer input."""
        dparams, dxs = [None] * len(self.layers), [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            dparams[i], dy = self.layers[i].backward(params[i], residuals[i], dy)
            dxs[i] = dy
        return dparams, dxs

    def forward(self, params: list, x: Array):
        """``(y, residuals)``; ``x: (..., *in_shape)``."""
        outputs, residuals = self.forward_trace(params, x)
        return outputs[-1], residuals

    def backward(self, params: list, residuals: list, dy: Array):
        """``(dL/dparams, dL/dx)`` from ``dy = dL/dy``."""
        dparams, dxs = self.backward_trace(params, residuals, dy)
        return dparams, dxs[0]

    # -- Conveniences -----------------------------------------------------------------------

    def init(self, key: Array, in_shape: Sequence[int] | None = None) -> list:
        """Fresh params for inputs of shape ``in_shape`` (default: the model's own)."""
        shape = in_shape if in_shape is not None else self.in_shape
        if shape is None:
            raise ValueError("this model has no input shape: pass in_shape to init()")
        return self.init_with_shape(key, shape)[0]

    def apply(self, params: list, x: Array) -> Array:
        """The network's output ``y`` for ``x``."""
        return self.forward(params, x)[0]

    def as_layer(self) -> Layer:
        return Layer(self.init_with_shape, self.forward, self.backward, self.describe())

    def describe(self) -> str:
        return " -> ".join(layer.name for layer in self.layers)

    def _check_params(self, params) -> None:
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(
                f"params must be a list with one entry per layer ({len(self.layers)}), got {got}"
            )


def serial(*layers: Layer | Model, in_shape: Sequence[int] | None = None) -> Model:
    """Compose layers (or models) in order. ``in_shape`` is one example's shape, e.g. ``(2,)``."""
    if not layers:
        raise ValueError("serial() needs at least one layer")
    flat = []
    for layer in layers:
        if isinstance(layer, Model):
            flat.append(layer.as_layer())
        elif isinstance(layer, Layer):
            flat.append(layer)
        else:
            raise ValueError(f"serial() takes Layers or Models, got {type(layer).__name__}")
    return Model(tuple(flat), None if in_shape is None else tuple(in_shape))


def default_init(act: str) -> str:
    """He for the ReLU family, Glorot otherwise."""
    return "he" if act in ("relu", "leaky_relu", "gelu", "gelu_tanh") else "glorot"


def mlp(
    sizes: Sequence[int],
    activation: str | Sequence[str] = "sigmoid",
    output_activation: str = "sigmoid",
    *,
    init: str | None = None,
    dtype=jnp.float32,
) -> Model:
    """A multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``activation`` is one name for every hidden layer, or one name per hidden layer.
    ``init`` names the weight initialiser (``normal``, ``glorot``, ``he``, ...); by default He
    for ReLU-like hidden activations and Glorot otherwise. Biases start at zero.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ValueError(f"mlp: sizes must be at least two positive ints, got {sizes}")
    n_hidden = len(sizes) - 2
    acts = [activation] * n_hidden if isinstance(activation, str) else list(activation)
    if len(acts) != n_hidden:
        raise ValueError(
            f"mlp: {n_hidden} hidden layers but {len(acts)} activations were given: {acts}"
        )
    w_init = init or default_init(acts[0] if acts else output_activation)
    layers: list[Layer] = []
    for width, act in zip(sizes[1:], acts + [output_activation]):
        layers += [Dense(width, W_init=w_init, dtype=dtype), activation_layer(act)]
    return Model(tuple(layers), (sizes[0],))

