"""Layers: small records of pure functions, each with its chain rule written by hand.

A :class:`Layer` is three pure functions (in the spirit of ``jax.example_libraries.stax``, with
equinox-style state)::

    init(key, in_shape)                                -> (params, state, out_shape)
    forward(params, state, x, *, key=None, train=True) -> (y, residuals, new_state)
    backward(params, residuals, dy)                    -> (dparams, dx)

``in_shape``/``out_shape`` are the shapes of ONE example (no batch axis). ``x`` may carry any
number of leading batch axes, or none at all, so every layer that does not couple the examples
of a batch also works under ``jax.vmap``. ``state`` is ``()`` for layers without state (they pass
whatever they are given straight through); ``key`` is a PRNG key for layers that draw random
numbers in training (Dropout) and is ignored by the others, as is ``train``.
``residuals`` hold the cheapest values the backward pass needs (a sigmoid keeps its output, a
ReLU a boolean mask). ``backward`` receives ``dy = dL/dy`` with the shape of ``y`` and returns
``dL/dparams`` (the pytree structure, shapes and dtypes of ``params``) and ``dL/dx`` (the shape
of ``x``).

Sequence models can also run one position at a time with a cache (``jp.generate(cache=True)``,
a KV cache): a layer that acts on each position alone says so (``positionwise``), one that
mixes positions (attention, position embeddings) gives ``init_cache`` and ``decode``; composites
(``serial``, ``Residual``) chain their layers' (:func:`decoder`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxprop.core.checks import require_dtype
from jaxprop.core.registry import lookup
from jaxprop.core.validate import is_int, is_number

Array = jax.Array
Params = Any
State = Any
Shape = tuple[int, ...]

UNBOUNDED = (-float("inf"), float("inf"))


@dataclasses.dataclass(frozen=True, eq=False)
class Layer:
    """A layer: ``init``, ``forward`` and ``backward`` (see the module docstring).

    Args:
      init: ``(key, in_shape) -> (params, state, out_shape)``.
      forward: ``(params, state, x, *, key=None, train=True) -> (y, residuals, new_state)``.
      backward: ``(params, residuals, dy) -> (dparams, dx)``.
      name: a short name for reports and error messages.
      couples_batch: True when an example's output depends on the other examples of its batch
        (BatchNorm): such a layer cannot be trained on padded minibatches or under
        ``per_example_grads``.
      output_range: ``(low, high)`` bounds of the outputs (a sigmoid's ``(0, 1)``), used to
        check that a loss gets the kind of prediction it expects; ``None`` for any real value.
      spec: the textual form that rebuilds the layer (``"dense(64)"``, ``"relu"``), or ``None``.
      sublayers: the layers this one is made of (``serial``'s), for reports and checks.
      is_activation: True for an activation (made by :func:`elementwise`): a parameter-free,
        shape-preserving layer that can end a network as its output activation.
      preferred_init: the weight initializer (a name in ``INITIALIZERS``) that suits the Dense
        layers feeding this activation (``"he"`` for the ReLU family), or ``None`` for no
        preference (:func:`~jaxprop.core.network.default_init` then picks Glorot).
      integer_inputs: for a layer whose input is not differentiable, integer ids in
        ``0..integer_inputs-1`` (an Embedding's vocabulary size); ``None`` (the default) for a
        layer on floating inputs. Such a layer's ``backward`` returns ``dx=None``; ``serial``
        takes it only first, and data checks give it integer ``x`` (docs/layers.md).
      positionwise: True when each position of a sequence ``(..., T, D)`` is mapped alone (Dense,
        LayerNorm, activations, Dropout in evaluation, Embedding): one position at a time is
        then its ``forward`` on that position, with no cache.
      init_cache: ``(params, n, context) -> cache``, the empty cache of :attr:`decode`.
      decode: ``(params, state, cache, x, pos) -> (y, cache)``: evaluation-mode output at the
        one position ``pos`` (a traced int) of ``n`` sequences, ``x: (n, 1, D) -> y: (n, 1,
        D')``, given the positions before it as kept in ``cache``; ``None`` for a layer that
        cannot (or is ``positionwise``).

    Layers compare and hash by identity, so they can be static arguments of ``jax.jit``.
    """

    init: Callable[..., tuple[Params, State, Shape]]
    forward: Callable[..., tuple[Array, Any, State]]
    backward: Callable[[Params, Any, Array], tuple[Params, Array]]
    name: str = "layer"
    couples_batch: bool = False
    output_range: tuple[float, float] | None = None
    spec: str | None = None
    sublayers: tuple["Layer", ...] = ()
    is_activation: bool = False
    preferred_init: str | None = None
    integer_inputs: int | None = None
    positionwise: bool = False
    init_cache: Callable[..., Any] | None = None
    decode: Callable[..., tuple[Array, Any]] | None = None

    def __repr__(self) -> str:
        return f"Layer({self.name})"

    def summary(self, in_shape=None):
        """A table of the layers (output shape, params, forward FLOPs, state) and the totals,
        for inputs of per-example shape ``in_shape`` (default: a model's own); nothing runs.
        ``print`` it, or read ``.rows`` and the totals (:class:`~jaxprop.core.summary.Summary`)."""
        from jaxprop.core.summary import summarize  # imports this module

        return summarize(self, in_shape)


def decoder(layer: Layer):
    """``(init_cache, decode)`` of ``layer`` (see :class:`Layer`), or ``None`` when it cannot
    run one position at a time: a ``positionwise`` layer's are its ``forward`` and no cache."""
    if layer.decode is not None and layer.init_cache is not None:
        return layer.init_cache, layer.decode
    if not layer.positionwise:
        return None

    def decode(params, state, cache, x, pos):
        del pos
        return layer.forward(params, state, x, train=False)[0], cache

    return (lambda params, n, context: ()), decode


# --------------------------------------------------------------------------------------------
# Initialisers (jax.nn.initializers does the work; these are the names the CLI and specs use).

INITIALIZERS: dict[str, Callable] = {
    # The classic NumPy XOR program: np.random.normal(size=(in, out)).
    "normal": jax.nn.initializers.normal(stddev=1.0),
    "glorot": jax.nn.initializers.glorot_uniform(),
    "glorot_normal": jax.nn.initializers.glorot_normal(),
    "he": jax.nn.initializers.he_normal(),
    "he_uniform": jax.nn.initializers.he_uniform(),
    "zeros": jax.nn.initializers.zeros,
}


def get_initializer(init: str | Callable) -> Callable:
    """Return a ``jax.nn.initializers``-style function ``(key, shape, dtype) -> array``.

    The function raises ``ValueError`` when asked for float64 without ``jax_enable_x64``
    (JAX would silently give float32)."""
    fn = init if callable(init) else lookup(INITIALIZERS, init, "initializer",
                                            known=sorted(INITIALIZERS))

    label = init if isinstance(init, str) else getattr(fn, "__name__", repr(fn))

    def initializer(key, shape, dtype=jnp.float32):
        require_dtype(dtype, f"initializer {label!r}")
        return fn(key, shape, dtype)

    return initializer


# --------------------------------------------------------------------------------------------
# Dense

# A product with at most this many entries in its right factor and this many terms per sum runs
# as unrolled multiply-adds instead of a matmul call. A 2-4-1 network's matmuls do 8 multiply-adds;
# as library calls they cost more than everything else in a training step, and they keep XLA from
# fusing the step. As multiply-adds, XLA CPU compiles a whole scan of such steps into one
# function (its "small call"): XOR's 10,000 epochs run ~5x faster (benchmarks/README.md).
SMALL_MATMUL_ENTRIES = 64
SMALL_MATMUL_TERMS = 16


def matmul(a: Array, b: Array) -> Array:
    """``a @ b`` for ``a: (..., k)`` and ``b: (k, n)``; tiny ``b`` as ``k`` multiply-adds."""
    k = b.shape[0]
    if b.size > SMALL_MATMUL_ENTRIES or k > SMALL_MATMUL_TERMS:
        return a @ b
    out = a[..., 0:1] * b[0]
    for i in range(1, k):
        out = out + a[..., i:i + 1] * b[i]
    return out



def Dense(
    out_dim: int,
    *,
    W_init: str | Callable = "glorot",
    b_init: str | Callable = "zeros",
    dtype=jnp.float32,
) -> Layer:
    """Fully connected layer ``y = x @ W + b`` with ``W: (in, out)`` and ``b: (out,)``.

    Row ``i`` of ``W`` holds the weights leaving input ``i``. Params: ``{"W", "b"}``.
    Shapes: ``x: (..., in) -> y: (..., out)``.

    Args:
      out_dim: ``out``, the number of outputs (a positive int).
      W_init: the weights' initializer: a name from ``INITIALIZERS`` or a function
        ``(key, shape, dtype) -> array``.
      b_init: the biases' initializer, likewise.
      dtype: the params' dtype; float64 needs ``jax_enable_x64`` when ``init`` runs
        (``ValueError`` otherwise, never a silent float32).

    Returns:
      the :class:`Layer`.
    """
    if not is_int(out_dim) or out_dim < 1:
        raise ValueError(f"Dense: out_dim must be a positive int, got {out_dim!r}")
    out_dim = int(out_dim)
    W_init_fn, b_init_fn = get_initializer(W_init), get_initializer(b_init)

    def init(key, in_shape):
        if len(in_shape) < 1:
            raise ValueError(f"Dense: input shape must have a feature axis, got {in_shape}")
        require_dtype(dtype, f"Dense({out_dim})")
        k_w, k_b = jax.random.split(key)
        params = {
            "W": W_init_fn(k_w, (in_shape[-1], out_dim), dtype),
            "b": b_init_fn(k_b, (out_dim,), dtype),
        }
        return params, (), tuple(in_shape[:-1]) + (out_dim,)

    def forward(params, state, x, *, key=None, train=True):
        del key, train
        W, b = _dense_params(params)
        if x.ndim < 1 or x.shape[-1] != W.shape[0]:
            raise ValueError(
                f"Dense: input has shape {tuple(x.shape)} but W has shape {tuple(W.shape)}; "
                f"the last axis of the input must be {W.shape[0]}"
            )
        return matmul(x, W) + b, x, state

    def backward(params, x, dy):
        # z = x W + b  =>  dL/dW = x^T dz,  dL/db = sum_batch dz,  dL/dx = dz W^T
        W = params["W"]
        x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        return {"W": matmul(x2.T, dy2), "b": dy2.sum(axis=0)}, matmul(dy, W.T)

    return Layer(init, forward, backward, f"Dense({out_dim})", spec=f"dense({out_dim})",
                 positionwise=True)


def _dense_params(params):
    """``(W, b)`` from Dense params, or a ``ValueError`` saying what is wrong with them."""
    if not isinstance(params, dict) or set(params) != {"W", "b"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"Dense: params must be a dict with keys 'W' and 'b'; got {got}")
    W, b = params["W"], params["b"]
    if getattr(W, "ndim", None) != 2 or tuple(getattr(b, "shape", ())) != (W.shape[1],):
        raise ValueError(
            f"Dense: W must be (in, out) and b (out,); got W {tuple(getattr(W, 'shape', ()))} "
            f"and b {tuple(getattr(b, 'shape', ()))}"
        )
    return W, b


# --------------------------------------------------------------------------------------------
# Activations: parameter-free elementwise (or row-wise, for softmax) layers.


def elementwise(name: str, forward: Callable, backward: Callable, *,
                output_range: tuple[float, float] | None = None,
                preferred_init: str | None = None) -> Layer:
    """An activation: a parameter-free, shape-preserving layer from a forward function and its
    chain rule.

    stax's ``elementwise`` with the chain rule beside it. Shapes: ``x: (..., *shape) -> y``
    of the same shape. Its params and state are ``()``; it ignores ``key`` and ``train``.

    Args:
      name: the layer's name, also its textual spec.
      forward: ``forward(x) -> (y, residuals)``.
      backward: ``backward(residuals, dy) -> dx``.
      output_range: ``(low, high)`` bounds of the outputs (a sigmoid's ``(0, 1)``), or ``None``
        for any real value.
      preferred_init: the initializer that suits the weights before it (``"he"``), or ``None``.

    Returns:
      the :class:`Layer`, with ``is_activation`` set.
    """

    def init(key, in_shape):
        del key
        return (), (), tuple(in_shape)

    def fwd(params, state, x, *, key=None, train=True):
        del params, key, train
        y, residuals = forward(x)
        return y, residuals, state

    def bwd(params, residuals, dy):
        del params
        return (), backward(residuals, dy)

    return Layer(init, fwd, bwd, name, output_range=output_range, spec=name,
                 is_activation=True, preferred_init=preferred_init, positionwise=True)


def Sigmoid() -> Layer:
    """``s = 1 / (1 + exp(-x))``; ``ds/dx = s (1 - s)``, kept from the output alone."""

    def forward(x):
        s = jax.nn.sigmoid(x)
        return s, s

    return elementwise("sigmoid", forward, lambda s, dy: dy * s * (1 - s), output_range=(0, 1))


def Tanh() -> Layer:
    """``t = tanh(x)``; ``dt/dx = 1 - t^2``, kept from the output alone."""

    def forward(x):
        t = jnp.tanh(x)
        return t, t

    return elementwise("tanh", forward, lambda t, dy: dy * (1 - t * t), output_range=(-1, 1))


def Relu() -> Layer:
    """``max(x, 0)``; the derivative is the mask ``x > 0`` (0 at x = 0, as ``jax.nn.relu``)."""

    def forward(x):
        mask = x > 0
        return jnp.where(mask, x, 0), mask

    return elementwise("relu", forward, lambda mask, dy: jnp.where(mask, dy, 0),
                       output_range=(0, float("inf")), preferred_init="he")


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    """``x if x >= 0 else slope * x`` (as ``jax.nn.leaky_relu``); derivative from the mask."""
    if not is_number(negative_slope) or not math.isfinite(negative_slope):
        raise ValueError(f"LeakyRelu: negative_slope must be a finite number, "
                         f"got {negative_slope!r}")

    def forward(x):
        mask = x >= 0
        return jnp.where(mask, x, negative_slope * x), mask

    layer = elementwise(
        "leaky_relu", forward, lambda mask, dy: jnp.where(mask, dy, negative_slope * dy),
        preferred_init="he",
    )
    if negative_slope != 0.01:
        layer = dataclasses.replace(layer, spec=f"leaky_relu({float(negative_slope)!r})")
    return layer


def Gelu(approximate: bool = False) -> Layer:
    """GELU ``x * Phi(x)`` (exact, with erf) or its tanh approximation.

    Exact: ``d/dx = Phi(x) + x * phi(x)``.
    Tanh:  ``g = x/2 (1 + tanh(u))``, ``u = c (x + 0.044715 x^3)``, ``c = sqrt(2/pi)``;
           ``d/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 * 0.044715 x^2)``.
    """
    c = math.sqrt(2.0 / math.pi)  # a Python float: takes the dtype of x (float64 stays float64)

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
        return elementwise("gelu_tanh", forward, backward_tanh, preferred_init="he")
    return elementwise("gelu", forward, backward_exact, preferred_init="he")


def Softplus() -> Layer:
    """``y = log(1 + exp(x))``; ``dy/dx = sigmoid(x) = 1 - exp(-y)``, kept from the output."""

    def forward(x):
        y = jax.nn.softplus(x)
        return y, y

    return elementwise("softplus", forward, lambda y, dy: dy * -jnp.expm1(-y),
                       output_range=(0, float("inf")))


def Identity() -> Layer:
    """``y = x``; passes ``dy`` through."""
    return elementwise("identity", lambda x: (x, None), lambda _, dy: dy)


def Softmax() -> Layer:
    """Softmax over the last axis; ``dx = s * (dy - sum(dy * s))`` from the output ``s``.

    For classification prefer an identity output with the fused ``softmax_cross_entropy``.
    """

    def forward(x):
        s = jax.nn.softmax(x, axis=-1)
        return s, s

    def backward(s, dy):
        return s * (dy - jnp.sum(dy * s, axis=-1, keepdims=True))

    return elementwise("softmax", forward, backward, output_range=(0, 1))


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
    return lookup(ACTIVATIONS, name, "activation")()


# --------------------------------------------------------------------------------------------
# Shapes and regularisation: Flatten, Reshape, Dropout (no params, no state).


def _reshape_layer(name: str, spec: str, in_ndim: int, out_shape_of: Callable) -> Layer:
    """A layer that gives each example (its last ``in_ndim`` axes) the shape
    ``out_shape_of(in_shape)``; its backward gives ``dy`` the input's shape back."""

    def init(key, in_shape):
        del key
        in_shape = tuple(in_shape)
        if len(in_shape) != in_ndim:
            raise ValueError(f"{name} takes examples with {in_ndim} axes; got input shape "
                             f"{in_shape} ({len(in_shape)} axes)")
        out = tuple(out_shape_of(in_shape))
        if math.prod(out) != math.prod(in_shape):
            raise ValueError(f"{name}: cannot reshape an input of shape {in_shape} "
                             f"({math.prod(in_shape)} values) to {out}")
        return (), (), out

    def forward(params, state, x, *, key=None, train=True):
        del params, key, train
        if x.ndim < in_ndim:
            raise ValueError(f"{name}: input has shape {tuple(x.shape)}, fewer than the "
                             f"{in_ndim} axes of one example")
        lead, example = x.shape[:x.ndim - in_ndim], x.shape[x.ndim - in_ndim:]
        return x.reshape(lead + tuple(out_shape_of(example))), x, state

    def backward(params, x, dy):
        del params
        return (), dy.reshape(x.shape)  # x is kept for its shape only (XLA drops its values)

    return Layer(init, forward, backward, name, spec=spec)


def Flatten(ndim: int = 3) -> Layer:
    """Each example's last ``ndim`` axes as one: ``(..., H, W, C) -> (..., H * W * C)``.

    ``ndim`` is how many axes one example has (3 for an image, the default); init checks it,
    so a Flatten never merges batch axes, with or without ``jax.vmap``. ``dx`` is ``dy``
    reshaped back.
    """
    if not is_int(ndim) or ndim < 1:
        raise ValueError(f"Flatten: ndim must be a positive int, got {ndim!r}")
    return _reshape_layer("Flatten()", "flatten" if ndim == 3 else f"flatten({ndim})", ndim,
                          lambda shape: (math.prod(shape),))


def Reshape(shape, *, in_ndim: int = 1) -> Layer:
    """Each example reshaped to ``shape``: ``(..., d) -> (..., *shape)`` for a flat example
    (``in_ndim`` is how many axes one input example has, 1 by default). One entry of ``shape``
    may be ``-1``. ``dx`` is ``dy`` reshaped back."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if (not shape or any(not is_int(n) or (n < 1 and n != -1) for n in shape)
            or shape.count(-1) > 1):
        raise ValueError(f"Reshape: shape must be positive ints (one may be -1), got {shape!r}")
    if not is_int(in_ndim) or in_ndim < 1:
        raise ValueError(f"Reshape: in_ndim must be a positive int, got {in_ndim!r}")

    def out_shape_of(example):
        if -1 not in shape:
            return shape
        known = -math.prod(shape)
        return tuple(math.prod(example) // known if n == -1 else n for n in shape)

    args = ",".join(map(str, shape)) + ("" if in_ndim == 1 else f",in_ndim={in_ndim}")
    return _reshape_layer(f"Reshape({shape})", f"reshape({args})", in_ndim, out_shape_of)


def Dropout(rate: float) -> Layer:
    """In training, zero each value with probability ``rate`` and scale the rest by
    ``1 / (1 - rate)`` (inverted dropout); in evaluation (``train=False``) the identity.

    The mask comes from the ``key`` the training step gives the layer, and travels in the
    residuals as the scale ``keep / (1 - rate)``: ``dx = dy * scale``. Shapes: any.
    """
    if not is_number(rate) or not 0 <= rate < 1:
        raise ValueError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")
    rate = float(rate)

    def init(key, in_shape):
        del key
        return (), (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        del params
        if not train or rate == 0:
            return x, None, state
        if key is None:
            raise ValueError(f"Dropout({rate}) needs a PRNG key in training: pass key=..., "
                             "or train=False to evaluate")
        scale = jax.random.bernoulli(key, 1 - rate, x.shape).astype(x.dtype) / (1 - rate)
        return x * scale, scale, state

    def backward(params, scale, dy):
        del params
        return (), dy if scale is None else dy * scale

    return Layer(init, forward, backward, f"Dropout({rate:g})", spec=f"dropout({rate!r})",
                 positionwise=True)
