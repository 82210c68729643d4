"""Normalisation layers, each backward pass written out by hand: LayerNorm and BatchNorm.

Both normalise ``x`` to ``x_hat = (x - mean) / sqrt(var + eps)`` and return
``y = scale * x_hat + offset`` with a learnable ``scale`` and ``offset`` per feature (the last
axis). LayerNorm takes the statistics over each example's features; BatchNorm over everything
but the features (the batch, and the positions of an image), and keeps running averages for
evaluation.

The chain rule through a normalisation, with ``g = dy * scale`` and means over the axes the
statistics were taken on: ``dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps)``;
``d scale = sum(dy * x_hat)`` and ``d offset = sum(dy)`` over every axis but the features.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jaxprop.core.checks import require_dtype
from jaxprop.core.layers import Layer
from jaxprop.core.validate import is_number


class Normalized(NamedTuple):
    """Residuals of a normalisation whose statistics came from ``x`` itself (``dx`` flows back
    through the mean and variance too): ``x_hat`` and ``rstd = 1 / sqrt(var + eps)``."""

    x_hat: object
    rstd: object


class Frozen(NamedTuple):
    """Residuals of a normalisation by fixed statistics (BatchNorm in evaluation):
    ``y`` is affine in ``x``, ``dx = dy * scale * rstd``."""

    x_hat: object
    rstd: object


def _check_eps(eps, what):
    if not is_number(eps) or not eps > 0:
        raise ValueError(f"{what}: eps must be a positive number, got {eps!r}")
    return float(eps)


def _affine_init(in_shape, dtype, what):
    if len(in_shape) < 1:
        raise ValueError(f"{what}: input shape must have a feature axis, got {tuple(in_shape)}")
    require_dtype(dtype, what)
    n = in_shape[-1]
    return {"scale": jnp.ones((n,), dtype), "offset": jnp.zeros((n,), dtype)}


def _check_input(params, x, what):
    n = params["scale"].shape[0]
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"{what}: input has shape {tuple(x.shape)}, expected (..., {n})")


def _affine_backward(params, x_hat, dy):
    """``d scale`` and ``d offset`` (summed over every axis but the features), and
    ``g = dy * scale``."""
    axes = tuple(range(dy.ndim - 1))
    grads = {"scale": jnp.sum(dy * x_hat, axis=axes), "offset": jnp.sum(dy, axis=axes)}
    return grads, dy * params["scale"]


def _normalized_dx(g, res: Normalized, axes):
    """``dx`` through ``x_hat = (x - mean(x)) * rstd`` with statistics over ``axes``."""
    mean = lambda a: jnp.mean(a, axis=axes, keepdims=True)  # noqa: E731
    return res.rstd * (g - mean(g) - res.x_hat * mean(g * res.x_hat))


def LayerNorm(eps: float = 1e-5, *, dtype=jnp.float32) -> Layer:
    """Normalise each example over its last axis, then ``y = scale * x_hat + offset``.

    Shapes: ``x: (..., d) -> y: (..., d)``; params ``{"scale": (d,), "offset": (d,)}``
    (ones and zeros at init). Each example on its own: works under ``jax.vmap``.
    """
    eps = _check_eps(eps, "LayerNorm")

    def init(key, in_shape):
        del key
        return _affine_init(in_shape, dtype, "LayerNorm"), (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        del key, train
        _check_input(params, x, "LayerNorm")
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        rstd = 1 / jnp.sqrt(var + eps)
        x_hat = (x - mean) * rstd
        return params["scale"] * x_hat + params["offset"], Normalized(x_hat, rstd), state

    def backward(params, res, dy):
        grads, g = _affine_backward(params, res.x_hat, dy)
        return grads, _normalized_dx(g, res, axes=-1)

    spec = "layernorm" if eps == 1e-5 else f"layernorm(eps={eps!r})"
    return Layer(init, forward, backward, "LayerNorm", spec=spec, positionwise=True)


def BatchNorm(momentum: float = 0.9, eps: float = 1e-5, *, dtype=jnp.float32) -> Layer:
    """Normalise each feature (last axis) over the batch and an image's positions.

    Training: the batch's mean and (biased) variance; the state's running averages move
    towards them, ``running = momentum * running + (1 - momentum) * batch``. Evaluation
    (``train=False``): the running averages, and the state is unchanged. Then
    ``y = scale * x_hat + offset``. Shapes: ``x: (N, ..., d) -> y: (N, ..., d)``; params
    ``{"scale": (d,), "offset": (d,)}``; state ``{"mean": (d,), "var": (d,)}`` (zeros, ones).
    An example's output depends on its batch: ``couples_batch=True`` (no ``vmap`` per example,
    no padded minibatches).
    """
    if not is_number(momentum) or not 0 <= momentum < 1:
        raise ValueError(f"BatchNorm: momentum must be a number in [0, 1), got {momentum!r}")
    momentum, eps = float(momentum), _check_eps(eps, "BatchNorm")

    def init(key, in_shape):
        del key
        params = _affine_init(in_shape, dtype, "BatchNorm")
        state = {"mean": jnp.zeros(in_shape[-1:], dtype), "var": jnp.ones(in_shape[-1:], dtype)}
        return params, state, tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        del key
        _check_input(params, x, "BatchNorm")
        if not state:
            raise ValueError("BatchNorm needs its state (running mean and variance): "
                             "params, state = model.init_with_state(key)")
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            state = {"mean": momentum * state["mean"] + (1 - momentum) * mean,
                     "var": momentum * state["var"] + (1 - momentum) * var}
        else:
            mean, var = state["mean"], state["var"]
        rstd = 1 / jnp.sqrt(var + eps)
        x_hat = (x - mean) * rstd
        res = Normalized(x_hat, rstd) if train else Frozen(x_hat, rstd)
        return params["scale"] * x_hat + params["offset"], res, state

    def backward(params, res, dy):
        grads, g = _affine_backward(params, res.x_hat, dy)
        if isinstance(res, Frozen):
            return grads, g * res.rstd
        return grads, _normalized_dx(g, res, axes=tuple(range(dy.ndim - 1)))

    args = ([] if momentum == 0.9 else [f"momentum={momentum!r}"]) + \
        ([] if eps == 1e-5 else [f"eps={eps!r}"])
    spec = f"batchnorm({','.join(args)})" if args else "batchnorm"
    return Layer(init, forward, backward, "BatchNorm", couples_batch=True, spec=spec)
