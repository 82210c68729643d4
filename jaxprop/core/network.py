"""Composing layers into a network: ``serial`` and its shortcut ``mlp``.

``serial(*layers)`` is itself a :class:`~jaxprop.core.layers.Layer` (a :class:`Model`), so it
nests like any other layer. Its params and state are plain lists with one entry per layer
(``{"W", "b"}`` for Dense, ``()`` for an activation). ``forward`` runs the layers in order,
splitting the key once per layer and threading the state list, and keeps each layer's
residuals; ``backward`` walks the layers in reverse, each turning ``dL/d(output)`` into
``dL/d(params)`` and ``dL/d(input)``.

The forward pass also notes (statically, at trace time) the shape and dtype of every layer's
input, so the backward pass checks what each layer's ``backward`` returns -- the structure,
shapes and dtypes of ``dparams`` and ``dx`` -- and stops a malformed one with a
:class:`~jaxprop.core.checks.BackwardError` naming the layer, instead of a shape error deep
inside XLA or ``lax.scan``. Under ``jit`` these checks run once, while tracing, and cost nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxprop.core.checks import (
    BackwardError,
    check_output_fits_loss,
    checked_backward,
    layer_label,
)
from jaxprop.core.layers import Dense, Flatten, Layer, decoder, get_initializer
from jaxprop.core.layers import activation as activation_layer
from jaxprop.core.validate import is_int

Array = jax.Array


class Spec(NamedTuple):
    """Shape and dtype (name) of an array, noted at trace time."""

    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, a) -> "Spec":
        return cls(tuple(int(d) for d in a.shape), jnp.dtype(a.dtype).name)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["per_layer"],
                   meta_fields=["inputs", "output"])
@dataclasses.dataclass(frozen=True)
class Residuals:
    """``serial``'s residuals: each layer's own (``residuals[i]``), and, as static pytree
    metadata, the :class:`Spec` of every layer's input and of the model's output (what the
    backward pass checks each layer's ``dx`` against)."""

    per_layer: list
    inputs: tuple[Spec, ...]
    output: Spec

    def __getitem__(self, i):
        return self.per_layer[i]

    def __len__(self) -> int:
        return len(self.per_layer)

    def __iter__(self):
        return iter(self.per_layer)


@dataclasses.dataclass(frozen=True, eq=False)
class Model(Layer):
    """A feedforward network made by :func:`serial` (or :func:`mlp`): a Layer, plus the
    per-example input shape ``in_shape`` it was built for (``None`` if not given).

    The Layer protocol (``init(key, in_shape)``, ``forward``, ``backward``) works as for any
    layer. Shortcuts for the common cases:

    * ``model.init(key) -> params`` for the model's own ``in_shape`` (a model without state;
      a model with state, e.g. BatchNorm, raises and points to ``init_with_state``);
    * ``model.init_with_state(key) -> (params, state)``;
    * ``model.apply(params, x, state=None, *, key=None, train=False) -> y`` (evaluation mode by
      default: dropout off, BatchNorm's running averages).
    """

    in_shape: tuple[int, ...] | None = None

    @property
    def layers(self) -> tuple[Layer, ...]:
        return self.sublayers

    def init_with_state(self, key: Array, in_shape: Sequence[int] | None = None):
        """``(params, state)`` for inputs of per-example shape ``in_shape`` (default: own)."""
        params, state, _ = self.init(key, self._shape(in_shape))
        return params, state

    def apply(self, params, x: Array, state=None, *, key=None, train: bool = False) -> Array:
        """The network's output ``y`` for ``x`` (the new state is dropped).

        Shapes: ``x: (..., *in_shape) -> y: (..., *out_shape)``.

        Args:
          params: the per-layer params list.
          x: the inputs.
          state: the per-layer state list, or ``None`` for a model without state.
          key: PRNG key for layers that draw random numbers in training (Dropout); split once
            per layer.
          train: training mode; evaluation mode by default (dropout off, BatchNorm's running
            averages).

        Returns:
          ``y``, the last layer's output.
        """
        return self.forward(params, state, x, key=key, train=train)[0]

    def forward_trace(self, params, state, x: Array, *, key=None, train: bool = True):
        """``(outputs, residuals, new_state)``: every layer's output, residuals and new state.

        ``x: (..., *in_shape)``; ``y_i`` is layer ``i``'s output.

        Args:
          params: the per-layer params list (one entry per layer, else ``ValueError``).
          state: the per-layer state list, or ``None`` (or empty) for none.
          x: the inputs.
          key: PRNG key, split once per layer (:meth:`layer_keys`), or ``None``.
          train: training mode (default) or evaluation mode.

        Returns:
          ``(outputs, residuals, new_state)``: ``[y_1, ..., y_L]``; a :class:`Residuals`
          (each layer's residuals, with the input and output :class:`Spec` the backward pass
          checks against); the new per-layer state (the caller's ``state`` itself when no layer
          has state).
        """
        self._check_list(params, "params")
        states = self.layer_states(state)
        outputs, residuals, new_states, inputs = [], [], [], []
        for layer, p, s, k in zip(self.layers, params, states, self.layer_keys(key)):
            inputs.append(Spec.of(x))
            x, r, s = layer.forward(p, s, x, key=k, train=train)
            outputs.append(x)
            residuals.append(r)
            new_states.append(s)
        if state is None or (isinstance(state, (list, tuple)) and len(state) == 0):
            if not jax.tree.leaves(new_states):
                new_states = state  # stateless: keep the caller's structure
        return outputs, Residuals(residuals, tuple(inputs), Spec.of(x)), new_states

    def layer_keys(self, key) -> tuple:
        """The key each layer gets from ``key`` in ``forward`` (``None`` for each if ``key`` is
        ``None``): one ``jax.random.split``, once per layer."""
        n = len(self.layers)
        return (None,) * n if key is None else tuple(jax.random.split(key, n))

    def backward_trace(self, params, residuals, dy: Array):
        """``(dparams, [dL/dx_1, ..., dL/dx_L])``: gradients w.r.t. params and each layer input.

        What each layer's ``backward`` returns is checked against its params and (when
        ``residuals`` come from :meth:`forward_trace`) its input; a malformed result raises a
        :class:`~jaxprop.core.checks.BackwardError` naming the layer."""
        n = len(self.layers)
        specs = self._input_specs(residuals, dy)
        dparams, dxs = [None] * n, [None] * n
        for i in reversed(range(n)):
            layer = self.layers[i]
            dparams[i], dy = checked_backward(layer, layer_label(i, layer.name), params[i],
                                              residuals[i], dy, specs[i])
            dxs[i] = dy
        return dparams, dxs

    def describe(self) -> str:
        """``"Dense(4) -> sigmoid -> Dense(1) -> sigmoid"``."""
        return " -> ".join(layer.name for layer in self.layers)

    # -- internals ---------------------------------------------------------------------------

    def _shape(self, in_shape):
        shape = in_shape if in_shape is not None else self.in_shape
        if shape is None:
            raise ValueError("this model has no input shape: pass in_shape to init()")
        return tuple(shape)

    def _check_list(self, tree, what: str) -> None:
        if not isinstance(tree, (list, tuple)) or len(tree) != len(self.layers):
            got = len(tree) if isinstance(tree, (list, tuple)) else type(tree).__name__
            raise ValueError(
                f"{what} must be a list with one entry per layer ({len(self.layers)}), got {got}"
            )

    def _input_specs(self, residuals, dy) -> tuple[Any, ...]:
        """Each layer's input :class:`Spec` noted by the forward pass, with any extra leading
        axes that ``dy`` has over the output noted there (residuals carried out of a
        ``vmap``); ``None`` for each when unknown."""
        if not isinstance(residuals, Residuals):
            return (None,) * len(self.layers)
        out, shape = residuals.output.shape, tuple(dy.shape)
        lead = shape[:len(shape) - len(out)]
        if shape[len(lead):] != out:
            raise BackwardError(self.name, f"the backward pass got dy of shape {shape} but the "
                                           f"forward pass gave an output of shape {out}")
        return tuple(Spec(lead + s.shape, s.dtype) for s in residuals.inputs)

    def layer_states(self, state) -> tuple:
        """Each layer's entry of ``state`` (``None`` for each when there is no state)."""
        if state is None or (isinstance(state, (list, tuple)) and len(state) == 0):
            return (None,) * len(self.layers)
        self._check_list(state, "state")
        return state


def serial(*layers: Layer, in_shape: Sequence[int] | None = None) -> Model:
    """Compose layers (or models) in order. ``in_shape`` is one example's shape, e.g. ``(2,)``.

    The result is a :class:`Model`: a Layer whose params and state are lists with one entry
    per layer, whose ``forward`` gives each layer its own key (``jax.random.split`` of
    ``key``, once per layer) and whose ``couples_batch`` is set when any layer's is. A layer
    on integer ids (``integer_inputs``: an Embedding) may only come first; the model then takes
    integer ids too.
    """
    if not layers:
        raise ValueError("serial() needs at least one layer")
    for layer in layers:
        if not isinstance(layer, Layer):
            raise ValueError(f"serial() takes Layers or Models, got {type(layer).__name__}")
    layers = tuple(layers)
    for i, layer in enumerate(layers[1:], 1):
        if layer.integer_inputs:
            raise ValueError(f"serial(): layer {i} ({layer.name}) takes integer ids, which no "
                             "layer gives: it must come first")
    own_shape = None if in_shape is None else tuple(in_shape)

    def init_all(key, shape):
        params, states = [], []
        for layer, k in zip(layers, jax.random.split(key, len(layers))):
            p, s, shape = layer.init(k, shape)
            params.append(p)
            states.append(s)
        return params, states, shape

    def init(key, in_shape=None):
        if in_shape is not None:  # the Layer protocol
            return init_all(key, tuple(in_shape))
        params, state, _ = init_all(key, model._shape(None))
        if jax.tree.leaves(state):
            raise ValueError(
                "this model has state (e.g. BatchNorm statistics): use "
                "params, state = model.init_with_state(key)"
            )
        return params

    def forward(params, state, x, *, key=None, train=True):
        outputs, residuals, new_state = model.forward_trace(params, state, x, key=key,
                                                            train=train)
        return outputs[-1], residuals, new_state

    def backward(params, residuals, dy):
        dparams, dxs = model.backward_trace(params, residuals, dy)
        return dparams, dxs[0]

    spec = "-".join(layer.spec for layer in layers) if all(layer.spec for layer in layers) \
        else None
    decoders = [decoder(layer) for layer in layers]
    can_decode = all(decoders)

    def init_cache(params, n, context):
        return [start(p, n, context) for (start, _), p in zip(decoders, params)]

    def decode(params, state, cache, x, pos):
        # one position through every layer, each with its own cache
        new = []
        for (_, step), p, s, c in zip(decoders, params, model.layer_states(state), cache):
            x, c = step(p, s, c, x, pos)
            new.append(c)
        return x, new

    model = Model(
        init=init, forward=forward, backward=backward,
        name=" -> ".join(layer.name for layer in layers),
        couples_batch=any(layer.couples_batch for layer in layers),
        output_range=layers[-1].output_range, spec=spec, sublayers=layers, in_shape=own_shape,
        integer_inputs=layers[0].integer_inputs,
        init_cache=init_cache if can_decode else None, decode=decode if can_decode else None,
    )
    return model


def default_init(act: str | Layer) -> str:
    """The weight initializer for Dense layers before the activation ``act`` (a name or a
    Layer): the one it prefers (``preferred_init``: He for the ReLU family), Glorot otherwise."""
    return activation_layer(act).preferred_init or "glorot"


def output_for_loss(loss) -> str:
    """The output activation that gives ``loss`` what it expects: ``"identity"`` for logits
    and real values, ``"sigmoid"`` for a loss on probabilities."""
    from jaxprop.core.losses import get_loss

    loss = get_loss(loss)
    return "sigmoid" if not loss.from_logits and loss.input_range == (0, 1) else "identity"


def mlp(
    sizes: Sequence[int],
    activation: str | Sequence[str] = "sigmoid",
    output_activation: str | None = None,
    *,
    loss=None,
    init: str | None = None,
    bias_init="zeros",
    dtype=jnp.float32,
) -> Model:
    """A multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Dense layers, each followed by its activation. Shapes: ``x: (..., sizes[0]) ->
    y: (..., sizes[-1])`` (``x: (..., *sizes[0])`` when ``sizes[0]`` is a shape).

    Args:
      sizes: the widths, input first (at least two positive ints). ``sizes[0]`` may be an
        example's shape, e.g. an image's ``(8, 8, 1)``: the network then starts with a
        :func:`~jaxprop.core.layers.Flatten`.
      activation: one name for every hidden layer, or one name per hidden layer.
      output_activation: the last layer's activation; leave it out and give the ``loss``
        instead to get the one that suits it (:func:`output_for_loss`: identity for regression
        and logits, sigmoid for ``bce``). With both, they must suit each other.
      loss: a loss name or :class:`~jaxprop.Loss`, or ``None``.
      init: the weight initialiser's name (``normal``, ``glorot``, ``he``, ...); by default He
        for ReLU-like hidden activations and Glorot otherwise (:func:`default_init` of the
        first hidden activation, or of the output activation when there is no hidden layer).
      bias_init: the biases' initialiser (default zeros).
      dtype: the params' dtype.

    Returns:
      a :class:`Model` with its input shape (``(sizes[0],)``, or the shape given).
    """
    sizes = list(sizes)
    in_shape = tuple(sizes[0]) if sizes and isinstance(sizes[0], (tuple, list)) else None
    if in_shape is not None:
        if not in_shape or any(not is_int(s) or s < 1 for s in in_shape):
            raise ValueError(f"mlp: the input shape must be positive ints, got {in_shape}")
        sizes[0] = math.prod(in_shape)
    if len(sizes) < 2 or any(not is_int(s) or s < 1 for s in sizes):
        raise ValueError(f"mlp: sizes must be at least two positive ints, got {sizes}")
    n_hidden = len(sizes) - 2
    acts = [activation] * n_hidden if isinstance(activation, str) else list(activation)
    if len(acts) != n_hidden:
        raise ValueError(
            f"mlp: {n_hidden} hidden layers but {len(acts)} activations were given: {acts}"
        )
    hidden = [activation_layer(act) for act in acts]  # unknown names fail first
    if init is not None:
        get_initializer(init)
    if output_activation is None:
        if loss is None:
            raise ValueError(
                "mlp: name the output activation (output_activation='identity' for regression "
                "or logits, 'sigmoid' for probabilities) or pass the loss (loss='mse') to pick "
                "the one that suits it"
            )
        output_activation = output_for_loss(loss)
    w_init = init or default_init(hidden[0] if hidden else output_activation)
    layers: list[Layer] = []
    if in_shape is not None and len(in_shape) > 1:
        layers.append(Flatten(len(in_shape)))
    for width, act in zip(sizes[1:], hidden + [activation_layer(output_activation)]):
        layers += [Dense(width, W_init=w_init, b_init=bias_init, dtype=dtype), act]
    model = serial(*layers, in_shape=in_shape or (sizes[0],))
    if loss is not None:
        check_output_fits_loss(model, loss)
    return model


def Residual(block: Layer) -> Layer:
    """A skip connection around ``block``: ``y = x + block(x)``.

    ``block`` is any layer, a ``serial`` included, whose output has its input's shape. Its
    params and state are the block's; its key goes to the block. Backward: the gradient reaches
    ``x`` along both paths, ``dx = dy + d block(x)/dx``, and ``dparams`` is the block's.
    """
    if not isinstance(block, Layer):
        raise ValueError(f"Residual takes a Layer or Model, got {type(block).__name__}")
    if block.integer_inputs:
        raise ValueError(f"Residual({block.name}): the block takes integer ids; y = x + "
                         "block(x) needs a floating x")

    def init(key, in_shape):
        params, state, out_shape = block.init(key, tuple(in_shape))
        if tuple(out_shape) != tuple(in_shape):
            raise ValueError(f"Residual({block.name}): the block maps shape {tuple(in_shape)} "
                             f"to {tuple(out_shape)}; y = x + block(x) needs the same shape")
        return params, state, tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        y, residuals, state = block.forward(params, state, x, key=key, train=train)
        return x + y, residuals, state

    def backward(params, residuals, dy):
        dparams, dx = block.backward(params, residuals, dy)
        return dparams, dy + dx  # the identity path, plus the path through the block

    inner = decoder(block)

    def decode(params, state, cache, x, pos):
        y, cache = inner[1](params, state, cache, x, pos)
        return x + y, cache

    # The text of a one-layer serial would rebuild the bare layer (different params): no spec.
    one_layer_model = isinstance(block, Model) and len(block.layers) == 1
    spec = f"residual({block.spec})" if block.spec and not one_layer_model else None
    return Layer(init, forward, backward, f"Residual({block.name})",
                 couples_batch=block.couples_batch, spec=spec, sublayers=(block,),
                 init_cache=inner and inner[0], decode=inner and decode)


# The most copies Repeat makes (each is a layer of its own with its own params).
MAX_REPEAT = 1024


def Repeat(n: int, block: Layer) -> Model:
    """``n`` copies of ``block`` in a row, each with its own params: ``serial(block, ..., block)``.

    Shapes: the block's output shape must be its input shape (``x: (..., *in) -> (..., *in)``)
    for ``n > 1``. Params and state: lists with one entry per copy. Its text is
    ``repeat(n,<block's text>)``: ``repeat(4,residual(layernorm-attention(4)))``.
    """
    if not is_int(n) or not 1 <= n <= MAX_REPEAT:
        raise ValueError(f"Repeat: n must be an int in 1..{MAX_REPEAT}, got {n!r}")
    if not isinstance(block, Layer):
        raise ValueError(f"Repeat takes a Layer or Model, got {type(block).__name__}")
    if block.integer_inputs and n > 1:
        raise ValueError(f"Repeat({n}, {block.name}): the block takes integer ids, which no "
                         "copy of it gives")
    model = serial(*([block] * int(n)))
    one_layer_model = isinstance(block, Model) and len(block.layers) == 1
    spec = f"repeat({int(n)},{block.spec})" if block.spec and not one_layer_model else None
    return dataclasses.replace(model, name=f"{int(n)} x ({block.name})", spec=spec)
