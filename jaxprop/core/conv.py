"""Convolution and pooling on NHWC images, each backward pass written out by hand.

An image is ``(H, W, C)``; ``x`` may carry any leading batch axes ``(..., H, W, C)``, or none
under ``jax.vmap``. Kernels are ``HWIO``: ``W: (KH, KW, C_in, C_out)``. Padding is ``"SAME"``
(the output has ``ceil(H / stride)`` rows), ``"VALID"`` (no padding), an int ``p`` (``p`` rows
and columns of zeros on every side), a pair ``(ph, pw)``, or ``((top, bottom), (left, right))``.
A window (kernel or pool) with dilation ``d`` covers ``(K - 1) * d + 1`` rows; the output has
``floor((H + top + bottom - that) / stride) + 1`` rows.

The forward passes use ``lax.conv_general_dilated`` and strided slices; the backward passes are
the chain rule spelled out: a convolution's input gradient is the transposed convolution of
``dy`` with the kernel, its kernel gradient the correlation of the input with ``dy``; a pool's
gradient goes back through the same window slices (``lax.pad`` with interior padding is the
adjoint of a strided slice).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxprop.core.checks import require_dtype
from jaxprop.core.layers import Layer, get_initializer
from jaxprop.core.validate import is_int

Pads = tuple[tuple[int, int], tuple[int, int]]


# --------------------------------------------------------------------------------------------
# Arguments and geometry


def _pair(value, what: str, minimum: int = 1) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 2)`` stays; anything else is a ValueError naming ``what``."""
    pair = (value, value) if is_int(value) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(is_int(v) and v >= minimum for v in pair)):
        raise ValueError(f"{what} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _padding(padding, what: str) -> str | Pads:
    """``"SAME"``/``"VALID"`` (any case), or explicit ``((top, bottom), (left, right))``."""
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
        return padding.upper()
    if is_int(padding) or (isinstance(padding, (tuple, list)) and len(padding) == 2
                           and all(is_int(p) for p in padding)):
        ph, pw = _pair(padding, f"{what}: padding", minimum=0)
        return (ph, ph), (pw, pw)
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        return _pair(padding[0], f"{what}: padding", 0), _pair(padding[1], f"{what}: padding", 0)
    raise ValueError(f"{what}: padding must be 'SAME', 'VALID', an int, (ph, pw) or "
                     f"((top, bottom), (left, right)); got {padding!r}")


def _pads(padding: str | Pads, hw, window, strides) -> Pads:
    """Explicit ``((top, bottom), (left, right))`` for an image of spatial size ``hw``."""
    if padding == "VALID":
        return (0, 0), (0, 0)
    if padding == "SAME":
        (a, b), (c, d) = lax.padtype_to_pads(hw, window, strides, "SAME")
        return (a, b), (c, d)
    return padding


def _padding_spec(pad: str | Pads, default: str) -> list[str] | None:
    """The ``padding=`` argument of a layer's text (``[]`` for the default), or ``None`` when
    the text cannot say it (different paddings on different sides)."""
    if pad == default:
        return []
    if isinstance(pad, str):
        return [f"padding={pad.lower()}"]
    values = set(sum(pad, ()))
    return [f"padding={values.pop()}"] if len(values) == 1 else None


def _out_hw(hw, pads, window, strides) -> tuple[int, int]:
    return tuple((n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(hw, pads, window, strides))


def _image(in_shape, what: str) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"{what} takes images of shape (H, W, C); got input shape "
                         f"{tuple(in_shape)} (image datasets are NHWC; flat data needs "
                         f"reshape(H,W,C) first)")
    return tuple(int(n) for n in in_shape)


def _as_batch(x, what: str, channels: int | None = None):
    """``x: (..., H, W, C)`` as ``(N, H, W, C)`` and the leading axes ``...``."""
    if x.ndim < 3 or (channels is not None and x.shape[-1] != channels):
        want = "(..., H, W, C)" if channels is None else f"(..., H, W, {channels})"
        raise ValueError(f"{what}: input has shape {tuple(x.shape)}, expected {want}")
    return x.reshape((-1,) + x.shape[-3:]), x.shape[:-3]


# --------------------------------------------------------------------------------------------
# Conv2D


def Conv2D(
    features: int,
    kernel_size,
    *,
    strides=1,
    padding="SAME",
    dilation=1,
    use_bias: bool = True,
    W_init: str | Callable = "glorot",
    b_init: str | Callable = "zeros",
    dtype=jnp.float32,
) -> Layer:
    """2-D convolution (cross-correlation, as in every deep-learning library) plus a bias.

    ``y[n, p, q, f] = b[f] + sum_{i, j, c} x_pad[n, p*s + i*d, q*s + j*d, c] W[i, j, c, f]``
    with strides ``s`` and dilation ``d`` (each an int or a pair for rows and columns).
    Shapes: ``x: (..., H, W, C) -> y: (..., H', W', features)``; params
    ``{"W": (KH, KW, C, features), "b": (features,)}`` (no ``"b"`` with ``use_bias=False``).

    Args:
      features: output channels (a positive int).
      kernel_size: ``KH x KW``: an int or a pair ``(KH, KW)``.
      strides: ``s``: an int or a pair for rows and columns (default 1).
      padding: ``"SAME"`` (default), ``"VALID"`` (any case), an int, ``(ph, pw)`` or
        ``((top, bottom), (left, right))`` (the module docstring).
      dilation: ``d``: an int or a pair for rows and columns (default 1).
      use_bias: add the bias ``b``.
      W_init: the kernel's initializer: a name from ``INITIALIZERS`` or a function
        ``(key, shape, dtype) -> array``.
      b_init: the bias's initializer, likewise.
      dtype: the params' dtype (float64 needs ``jax_enable_x64`` when ``init`` runs).

    Returns:
      the :class:`~jaxprop.Layer`.
    """
    if not is_int(features) or features < 1:
        raise ValueError(f"Conv2D: features must be a positive int, got {features!r}")
    k = _pair(kernel_size, "Conv2D: kernel_size")
    s, d = _pair(strides, "Conv2D: strides"), _pair(dilation, "Conv2D: dilation")
    pad = _padding(padding, "Conv2D")
    span = tuple((ki - 1) * di + 1 for ki, di in zip(k, d))  # rows/columns a window covers
    W_init_fn, b_init_fn = get_initializer(W_init), get_initializer(b_init)
    name = f"Conv2D({features}, {k[0]}x{k[1]})"

    def init(key, in_shape):
        require_dtype(dtype, name)
        h, w, c = _image(in_shape, name)
        out = _out_hw((h, w), _pads(pad, (h, w), span, s), span, s)
        if min(out) < 1:
            raise ValueError(f"{name}: a {h}x{w} input is smaller than the kernel's "
                             f"{span[0]}x{span[1]} window (padding {padding!r})")
        k_w, k_b = jax.random.split(key)
        params = {"W": W_init_fn(k_w, (*k, c, features), dtype)}
        if use_bias:
            params["b"] = b_init_fn(k_b, (features,), dtype)
        return params, (), (*out, features)

    def forward(params, state, x, *, key=None, train=True):
        del key, train
        x4, lead = _as_batch(x, name, params["W"].shape[2])
        pads = _pads(pad, x4.shape[1:3], span, s)
        y = lax.conv_general_dilated(x4, params["W"], s, pads, rhs_dilation=d,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if use_bias:
            y = y + params["b"]
        return y.reshape(lead + y.shape[1:]), x, state

    def backward(params, x, dy):
        x4, _ = _as_batch(x, name)
        dy4 = dy.reshape((-1,) + dy.shape[-3:])
        hw, out = x4.shape[1:3], dy4.shape[1:3]
        pads = _pads(pad, hw, span, s)
        # dL/dW[i, j, c, f] = sum_{n, p, q} x_pad[n, p*s + i*d, q*s + j*d, c] dy[n, p, q, f]:
        # x correlated with dy (the batch axis contracted), dy spread out by the stride,
        # stepping by the dilation; the bottom/right padding makes exactly KH x KW outputs.
        dW = lax.conv_general_dilated(
            x4, dy4, window_strides=d,
            padding=[(lo, (ki - 1) * di + (o - 1) * si + 1 - n - lo)
                     for (lo, _), ki, di, o, si, n in zip(pads, k, d, out, s, hw)],
            rhs_dilation=s, dimension_numbers=("CHWN", "IHWO", "HWNC"))
        # dL/dx = the transposed convolution: dy spread out by the stride (zeros between),
        # correlated with the kernel flipped in space, its in/out channels swapped (HWOI).
        dx = lax.conv_general_dilated(
            dy4, params["W"][::-1, ::-1], window_strides=(1, 1),
            padding=[(sp - 1 - lo, n + lo - (o - 1) * si - 1)
                     for (lo, _), sp, o, si, n in zip(pads, span, out, s, hw)],
            lhs_dilation=s, rhs_dilation=d, dimension_numbers=("NHWC", "HWOI", "NHWC"))
        grads = {"W": dW}
        if use_bias:
            grads["b"] = dy4.sum(axis=(0, 1, 2))  # the bias is added at every position
        return grads, dx.reshape(x.shape)

    spec = None
    pad_arg = _padding_spec(pad, "SAME")
    if k[0] == k[1] and s[0] == s[1] and d[0] == d[1] and pad_arg is not None:
        args = [str(features), str(k[0])] + ([str(s[0])] if s[0] != 1 else []) + pad_arg
        args += ([f"dilation={d[0]}"] if d[0] != 1 else []) + ([] if use_bias else ["bias=0"])
        spec = f"conv({','.join(args)})"
    return Layer(init, forward, backward, name, spec=spec)


# --------------------------------------------------------------------------------------------
# Pooling: the window slices and their adjoint


def _slices(xp, window, strides, out):
    """``[(i, j), xp[:, i::s, j::s] cut to out]`` for every offset ``(i, j)`` of the window,
    in row-major order: slice ``(i, j)`` holds element ``(i, j)`` of every window."""
    n, _, _, c = xp.shape
    return [((i, j), lax.slice(xp, (0, i, j, 0),
                               (n, i + (out[0] - 1) * strides[0] + 1,
                                j + (out[1] - 1) * strides[1] + 1, c),
                               (1, strides[0], strides[1], 1)))
            for i in range(window[0]) for j in range(window[1])]


def _unslice(g, offset, strides, padded_hw):
    """The adjoint of one window slice: ``g`` put back at rows ``i, i + s, ...`` and columns
    ``j, j + s, ...`` of a zero image of size ``padded_hw`` (``lax.pad`` with interior zeros)."""
    (i, j), (hp, wp), (sh, sw) = offset, padded_hw, strides
    ho, wo = g.shape[1:3]
    return lax.pad(g, jnp.zeros((), g.dtype), (
        (0, 0, 0), (i, hp - i - (ho - 1) * sh - 1, sh - 1),
        (j, wp - j - (wo - 1) * sw - 1, sw - 1), (0, 0, 0)))


# The most positions a pooling window may have: the forward and backward take one slice of the
# input per position, so the program grows with the window's area (100x100: 10,000 slices and
# minutes of compiling for a 1x1 output).
MAX_POOL_WINDOW = 1024


def _pool(kind: str, spec_name: str, fill: float, window, strides, padding, forward_fn,
          backward_fn) -> Layer:
    """A pooling layer: geometry, shapes and batching shared by max and average pooling.

    ``kind`` names the layer in messages, ``spec_name`` in the architecture text; ``fill`` is
    the value of padding.

    ``forward_fn(slices) -> (y, aux)`` combines the window slices (``aux``: what its backward
    needs); ``backward_fn(aux, dy, n) -> [dy_1, ..., dy_n]`` gives each of the ``n`` slices its
    gradient, which goes back to the input through ``_unslice``. The residuals are ``(x,
    aux)``; ``x`` is kept for its shape only (under ``jit`` XLA drops its values).
    """
    k = _pair(window, f"{kind}: window")
    s = k if strides is None else _pair(strides, f"{kind}: strides")
    pad = _padding(padding, kind)
    name = f"{kind}({k[0]}x{k[1]})"
    if k[0] * k[1] > MAX_POOL_WINDOW:
        raise ValueError(f"{name}: a window of {k[0] * k[1]:,} positions is more than pooling "
                         f"handles ({MAX_POOL_WINDOW:,}, e.g. 32x32: each position is a slice "
                         "of the input in the compiled program); use a smaller window or a "
                         "strided conv")

    def geometry(hw):
        pads = _pads(pad, hw, k, s)
        if any(p >= ki for pair, ki in zip(pads, k) for p in pair):
            raise ValueError(f"{name}: padding {pads} must be smaller than the window on every "
                             "side (a window of padding alone has no value)")
        return pads, _out_hw(hw, pads, k, s)

    def init(key, in_shape):
        del key
        h, w, c = _image(in_shape, name)
        _, out = geometry((h, w))
        if min(out) < 1:
            raise ValueError(f"{name}: a {h}x{w} input is smaller than the window")
        return (), (), (*out, c)

    def forward(params, state, x, *, key=None, train=True):
        del params, key, train
        x4, lead = _as_batch(x, name)
        pads, out = geometry(x4.shape[1:3])
        xp = jnp.pad(x4, ((0, 0), *pads, (0, 0)), constant_values=fill)
        y, aux = forward_fn([v for _, v in _slices(xp, k, s, out)])
        return y.reshape(lead + y.shape[1:]), (x, aux), state

    def backward(params, residuals, dy):
        del params
        x, aux = residuals
        x4, _ = _as_batch(x, name)
        h, w = x4.shape[1:3]
        ((top, bottom), (left, right)), _ = geometry((h, w))
        padded = (top + h + bottom, left + w + right)
        offsets = [(i, j) for i in range(k[0]) for j in range(k[1])]
        grads = backward_fn(aux, dy.reshape((-1,) + dy.shape[-3:]), len(offsets))
        dxp = sum(_unslice(g, offset, s, padded) for offset, g in zip(offsets, grads))
        return (), dxp[:, top:top + h, left:left + w].reshape(x.shape)

    spec = None
    pad_arg = _padding_spec(pad, "VALID")
    if k[0] == k[1] and s[0] == s[1] and pad_arg is not None:
        args = [str(k[0])] + ([str(s[0])] if s != k else []) + pad_arg
        spec = f"{spec_name}({','.join(args)})"
    return Layer(init, forward, backward, name, spec=spec)


def MaxPool2D(window, strides=None, padding="VALID") -> Layer:
    """The maximum over each ``window`` (an int or a pair), ``strides`` defaulting to the window.

    The gradient goes to the arg-max of each window only. Ties: to the first maximal position
    in row-major window order (top row first, then left to right), once per window; windows
    that overlap add up. Padding is ``-inf`` and must be smaller than the window on every side.
    Shapes: ``x: (..., H, W, C) -> y: (..., H', W', C)``; no params.
    """

    def forward(slices):
        # the maximum and which slice holds it (a strict > keeps the first of equal values)
        best = slices[0]
        arg = jnp.zeros(best.shape, jnp.int8 if len(slices) < 128 else jnp.int32)
        for n, v in enumerate(slices[1:], 1):
            arg = jnp.where(v > best, jnp.asarray(n, arg.dtype), arg)
            best = jnp.maximum(best, v)
        return best, arg

    def backward(arg, dy, n_slices):
        return [jnp.where(arg == n, dy, 0) for n in range(n_slices)]

    return _pool("MaxPool2D", "maxpool", -jnp.inf, window, strides, padding, forward, backward)


def AvgPool2D(window, strides=None, padding="VALID") -> Layer:
    """The mean over each ``window``, ``strides`` defaulting to the window.

    Padded positions count as zeros and the divisor is always the window size
    (PyTorch's ``count_include_pad=True``). ``dx``: each window spreads ``dy / (KH * KW)``
    evenly over its positions. Shapes: ``x: (..., H, W, C) -> y: (..., H', W', C)``; no params.
    """

    def forward(slices):
        return sum(slices) / len(slices), None

    def backward(_, dy, n_slices):
        return [dy / n_slices] * n_slices

    return _pool("AvgPool2D", "avgpool", 0.0, window, strides, padding, forward, backward)
