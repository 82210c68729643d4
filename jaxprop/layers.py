"""Layers: small records of pure functions, each with its chain rule written by hand.

A :class:`Layer` is three pure functions (in the spirit of ``jax.example_libraries.stax``)::

    init(key, in_shape)            -> (params, out_shape)
    forward(params, x)             -> (y, residuals)
    backward(params, residuals, dy) -> (dparams, dx)

``in_shape``/``out_shape`` are the shapes of ONE example (no batch axis). ``x`` may carry any
number of leading batch axes, or none at all, so every layer also works under ``jax.vmap``.
``residuals`` hold the cheapest values the backward pass needs (a sigmoid keeps its output, a
ReLU a boolean mask). ``backward`` receives ``dy = dL/dy`` with the shape of ``y`` and returns
``dL/dparams`` (same pytree as ``params``) and ``dL/dx`` (same shape as ``x``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Params = Any
Shape = tuple[int, ...]


class Layer(NamedTuple):
    """A layer: ``init``, ``forward`` and ``backward``, plus a short ``name`` for reports."""

    init: Callable[[Array, Shape], tuple[Params, Shape]]
    forward: Callable[[Params, Array], tuple[Array, Any]]
    backward: Callable[[Params, Any, Array], tuple[Params, Array]]
    name: str


# --------------------------------------------------------------------------------------------
# Initialisers (jax.nn.initializers does the work; these are the names the CLI and specs use).

_INITIALIZERS: dict[str, Callable] = {
    # The classic NumPy XOR program: np.random.normal(size=(in, out)).
    "normal": jax.nn.initializers.normal(stddev=1.0),
    "glorot": jax.nn.initializers.glorot_uniform(),
    "glorot_normal": jax.nn.initializers.glorot_normal(),
    "he": jax.nn.initializers.he_normal(),
    "he_uniform": jax.nn.initializers.he_uniform(),
    "zeros": jax.nn.initializers.zeros,
}


def get_initializer(init: str | Callable) -> Callable:
    """Return a ``jax.nn.initializers``-style function ``(key, shape, dtype) -> array``."""
    if callable(init):
        return init
    try:
        return _INITIALIZERS[init]
    except KeyError:
        raise ValueError(
            f"unknown initializer {init!r}; known: {', '.join(sorted(_INITIALIZERS))}"
        ) from None


# --------------------------------------------------------------------------------------------
# Dense


def Dense(
    out_dim: int,
    *,
    W_init: str | Callable = "glorot",
    b_init: str | Callable = "zeros",
    dtype=jnp.float32,
) -> Layer:
    """Fully connected layer ``y = x @ W + b`` with ``W: (in, out)`` and ``b: (out,)``.

    Row ``i`` of ``W`` holds the weights leaving input ``i``. Params: ``{"W", "b"}``.
    """
    if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim < 1:
        raise ValueError(f"Dense: out_dim must be a positive int, got {out_dim!r}")
    W_init_fn, b_init_fn = get_initializer(W_init), get_initializer(b_init)

    def init(key, in_shape):
        if len(in_shape) < 1:
            raise ValueError(f"Dense: input shape must have a feature axis, got {in_shape}")
        in_dim = in_shape[-1]
        k_w, k_b = jax.random.split(key)
        params = {
            "W": W_init_fn(k_w, (in_dim, out_dim), dtype),
            "b": b_init_fn(k_b, (out_dim,), dtype),
        }
        return params, tuple(in_shape[:-1]) + (out_dim,)

    def forward(params, x):
        W, b = params["W"], params["b"]
        if x.ndim < 1 or x.shape[-1] != W.shape[0]:
            raise ValueError(
                f"Dense: input has shape {tuple(x.shape)} but W has shape {tuple(W.shape)}; "
                f"the last axis of the input must be {W.shape[0]}"
            )
        return x @ W + b, x

    def backward(params, x, dy):
        # z = x W + b  =>  dL/dW = x^T dz,  dL/db = sum_batch dz,  dL/dx = dz W^T
        W = params["W"]
        x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        dparams = {"W": x2.T @ dy2, "b": dy2.sum(axis=0)}
        return dparams, dy @ W.T

    return Layer(init, forward, backward, f"Dense({out_dim})")


# --------------------------------------------------------------------------------------------
# Activations: parameter-free elementwise (or row-wise, for softmax) layers.


def _activation(name: str, forward, backward) -> Layer:
    """An activation: no params (``()``), shape preserved."""

    def init(key, in_shape):
        del key
        return (), tuple(in_shape)

    def fwd(params, x):
        del params
        return forward(x)

    def bwd(params, residuals, dy):
        del params
        return (), backward(residuals, dy)

    return Layer(init, fwd, bwd, name)


def Sigmoid() -> Layer:
    """``s = 1 / (1 + exp(-x))``; ``ds/dx = s (1 - s)``, kept from the output alone."""

    def forward(x):
        s = jax.nn.sigmoid(x)
        return s, s

    return _activation("sigmoid", forward, lambda s, dy: dy * s * (1 - s))


def Tanh() -> Layer:
    """``t = tanh(x)``; ``dt/dx = 1 - t^2``, kept from the output alone."""

    def forward(x):
        t = jnp.tanh(x)
        return t, t

    return _activation("tanh", forward, lambda t, dy: dy * (1 - t * t))


def Relu() -> Layer:
    """``max(x, 0)``; the derivative is the mask ``x > 0`` (0 at x = 0, as ``jax.nn.relu``)."""

    def forward(x):
        mask = x > 0
        return jnp.where(mask, x, 0), mask

    return _activation("relu", forward, lambda mask, dy: jnp.where(mask, dy, 0))


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """``x if x >= 0 else slope * x`` (as ``jax.nn.leaky_relu``); derivative from the mask."""

    def forward(x):
        mask = x >= 0
        return jnp.where(mask, x, negative_slope * x), mask

    return _activation(
        "leaky_relu", forward, lambda mask, dy: jnp.where(mask, dy, negative_slope * dy)
    )


def Gelu(approximate: bool = False) -> Layer:
    """GELU ``x * Phi(x)`` (exact, with erf) or its tanh approximation.

    Exact: ``d/dx = Phi(x) + x * phi(x)``.
    Tanh:  ``g = x/2 (1 + tanh(u))``, ``u = c (x + 0.044715 x^3)``, ``c = sqrt(2/pi)``;
           ``d/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 * 0.044715 x^2)``.
    """
    c = jnp.sqrt(2.0 / jnp.pi)

    def forward(x):
        return jax.nn.gelu(x, approximate=approximate), x

    def backward_exact(x, dy):
        cdf = 0.5 * (1 + jax.lax.erf(x / jnp.sqrt(2.0).astype(x.dtype)))
        pdf = jnp.exp(-0.5 * x * x) / jnp.sqrt(2 * jnp.pi).astype(x.dtype)
        return dy * (cdf + x * pdf)

    def backward_tanh(x, dy):
        t = jnp.tanh(c * (x + 0.044715 * x**3))
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x))

    if approximate:
        return _activation("gelu_tanh", forward, backward_tanh)
    return _activation("gelu", forward, backward_exact)


def Softplus() -> Layer:
    """``y = log(1 + exp(x))``; ``dy/dx = sigmoid(x) = 1 - exp(-y)``, kept from the output."""

    def forward(x):
        y = jax.nn.softplus(x)
        return y, y

    return _activation("softplus", forward, lambda y, dy: dy * -jnp.expm1(-y))


def Identity() -> Layer:
    """``y = x``; passes ``dy`` through."""
    return _activation("identity", lambda x: (x, None), lambda _, dy: dy)


def Softmax() -> Layer:
    """Softmax over the last axis; ``dx = s * (dy - sum(dy * s))`` from the output ``s``.

    For classification prefer an identity output with the fused ``softmax_cross_entropy``.
    """

    def forward(x):
        s = jax.nn.softmax(x, axis=-1)
        return s, s

    def backward(s, dy):
        return s * (dy - jnp.sum(dy * s, axis=-1, keepdims=True))

    return _activation("softmax", forward, backward)


ACTIVATIONS: dict[str, Callable[[], Layer]] = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": Relu,
    "leaky_relu": LeakyRelu,
    "gelu": Gelu,
    "gelu_tanh": lambda: Gelu(approximate=True),
    "softplus": Softplus,
    "identity": Identity,
    "softmax": Softmax,
}


def activation(name: str | Layer) -> Layer:
    """The activation layer called ``name`` (see ``ACTIVATIONS``); a Layer passes through."""
    if isinstance(name, Layer):
        return name
    try:
        return ACTIVATIONS[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}"
        ) from None
