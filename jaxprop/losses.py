"""Losses: each owns its value and its hand-written gradient with respect to the prediction.

A :class:`Loss` is ``value(y, t) -> scalar`` and ``grad(y, t) -> dL/dy`` (shape of ``y``).
``y`` and ``t`` have the same shape ``(..., out)``; any leading axes are batch axes (none at all
under ``jax.vmap``). Reductions:

==========================  =================================================  ================
name                        value                                              reduction
==========================  =================================================  ================
``sse_half``                ``1/2 * sum((y - t)^2)``                           sum over all
``mse``                     ``mean((y - t)^2)``                                mean over all
``bce``                     ``mean(-t log p - (1 - t) log(1 - p))``, ``p=y``   mean over all
``bce_with_logits``         same on ``p = sigmoid(y)``, computed stably        mean over all
``softmax_cross_entropy``   ``mean_rows(-sum(t * log_softmax(y), -1))``        mean over rows
==========================  =================================================  ================

``bce`` takes probabilities and clips them to ``[eps, 1 - eps]`` (``eps`` = machine epsilon of
the dtype) so a saturated sigmoid never gives ``log(0)``; its gradient is the formula evaluated
at the clipped probability (straight through the clip), which keeps saturated units learning.
Inside the clip range it equals ``jax.grad`` exactly.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Loss(NamedTuple):
    """A loss: ``value(y, t) -> scalar`` and its gradient ``grad(y, t) -> dL/dy``."""

    value: Callable[[Array, Array], Array]
    grad: Callable[[Array, Array], Array]
    name: str


def _check(name: str, y: Array, t: Array) -> None:
    if tuple(y.shape) != tuple(t.shape):
        raise ValueError(
            f"loss {name}: outputs have shape {tuple(y.shape)} but targets have shape "
            f"{tuple(t.shape)}; they must match"
        )


def _loss(name: str, value, grad) -> Loss:
    """Build a Loss whose value and grad both check that ``y`` and ``t`` agree in shape."""

    def checked(fn):
        def f(y, t):
            _check(name, y, t)
            return fn(y, t)

        return f

    return Loss(checked(value), checked(grad), name)


def _rows(y: Array) -> int:
    """Number of examples: all axes but the last (1 for a single example)."""
    return max(1, y.size // y.shape[-1]) if y.ndim else 1


def _sse_half() -> Loss:
    def value(y, t):
        return 0.5 * jnp.sum((y - t) ** 2)

    return _loss("sse_half", value, lambda y, t: y - t)


def _mse() -> Loss:
    def value(y, t):
        return jnp.mean((y - t) ** 2)

    return _loss("mse", value, lambda y, t: 2 * (y - t) / y.size)


def _clip(p):
    eps = jnp.finfo(p.dtype).eps
    return jnp.clip(p, eps, 1 - eps)


def _bce() -> Loss:
    def value(p, t):
        p = _clip(p)
        return jnp.mean(-t * jnp.log(p) - (1 - t) * jnp.log1p(-p))

    def grad(p, t):
        p = _clip(p)
        return (p - t) / (p * (1 - p)) / p.size

    return _loss("bce", value, grad)


def _bce_with_logits() -> Loss:
    def value(z, t):
        # softplus(z) - t z, written so exp never overflows
        return jnp.mean(jnp.maximum(z, 0) - t * z + jnp.log1p(jnp.exp(-jnp.abs(z))))

    return _loss("bce_with_logits", value, lambda z, t: (jax.nn.sigmoid(z) - t) / z.size)


def _softmax_cross_entropy() -> Loss:
    def value(z, t):
        return -jnp.sum(t * jax.nn.log_softmax(z, axis=-1)) / _rows(z)

    def grad(z, t):
        # d/dz of -sum(t * (z - lse(z))) = softmax(z) * sum(t) - t  (= p - t for one-hot t)
        p = jax.nn.softmax(z, axis=-1)
        return (p * jnp.sum(t, axis=-1, keepdims=True) - t) / _rows(z)

    return _loss("softmax_cross_entropy", value, grad)


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (_sse_half(), _mse(), _bce(), _bce_with_logits(), _softmax_cross_entropy())
}


def get_loss(loss: str | Loss) -> Loss:
    """The loss called ``loss`` (see ``LOSSES``); a :class:`Loss` passes through."""
    if isinstance(loss, Loss):
        return loss
    try:
        return LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}") from None
