"""Losses: each owns its value, its hand-written gradient and the facts other code needs.

A :class:`Loss` is ``value(y, t) -> scalar`` and ``grad(y, t) -> dL/dy`` (shape of ``y``), plus
its reduction over examples, whether it takes logits, the range of predictions it accepts and
its gradient with respect to the targets. ``y`` and ``t`` have the same shape ``(..., out)``
(for a loss on integer labels ``t`` has ``y``'s shape without the last axis); any leading axes
are batch axes (none at all under ``jax.vmap``).

================================  ==================================================  ==========
name                              value                                               reduction
================================  ==================================================  ==========
``sse_half``                      ``1/2 * sum((y - t)^2)``                            ``sum``
``mse``                           ``mean((y - t)^2)``                                 ``mean_all``
``bce``                           ``mean(-t log p - (1 - t) log(1 - p))``, ``p=y``    ``mean_all``
``bce_with_logits``               same on ``p = sigmoid(y)``, computed stably         ``mean_all``
``softmax_cross_entropy``         ``mean_rows(-sum(t * log_softmax(y), -1))``         ``mean_rows``
``sparse_softmax_cross_entropy``  ``mean_rows(-log_softmax(y)[t])``, ``t`` integer    ``mean_rows``
                                  class labels ``(...,)`` instead of one-hot rows
================================  ==================================================  ==========

A row is everything but the last axis: for a sequence model's logits ``(B, T, V)`` against
integer targets ``(B, T)``, ``sparse_softmax_cross_entropy`` is the mean over all ``B T``
tokens, its gradient ``(softmax(y) - one_hot(t)) / (B T)``, and accuracy the token accuracy.

``bce`` takes probabilities and clips them to ``[eps, 1 - eps]`` (``eps`` = machine epsilon of
the dtype) so a saturated sigmoid never gives ``log(0)``; its gradient is the formula evaluated
at the clipped probability (straight through the clip), which keeps saturated units learning.
Inside the clip range it equals ``jax.grad`` exactly.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxprop.core.registry import lookup

Array = jax.Array

REDUCTIONS = ("sum", "mean_rows", "mean_all")


class Loss(NamedTuple):
    """A loss and its facts.

    Args:
      value: ``(y, t) -> scalar``.
      grad: ``(y, t) -> dL/dy``, the shape of ``y``.
      name: the name used by the CLI, specs and reports.
      reduction: how examples combine: ``"sum"`` (every element summed), ``"mean_rows"``
        (summed over the output axis, averaged over examples) or ``"mean_all"`` (averaged over
        every element). Padded minibatches and per-example gradients rely on it.
      from_logits: True when ``y`` is a logit (the loss applies the sigmoid/softmax itself):
        accuracy then thresholds at 0, and a bounded output activation is a mistake.
      categorical: True when each row of targets is a distribution over the classes on the
        last axis (one-hot labels), which needs at least two outputs.
      input_range: ``(low, high)`` that predictions must lie in (``bce``'s probabilities:
        ``(0, 1)``), or ``None`` for any real value.
      target_grad: ``(y, t) -> dL/dt``, for ``jax.grad`` through :func:`jaxprop.as_jax_function`
        with respect to the targets; ``None`` when not defined (the bridge then gives zeros).
      integer_labels: True when the targets are integer class indices ``t: y.shape[:-1]``
        (one per example) rather than arrays shaped like ``y``; needs at least two outputs.
      target_range: ``(low, high)`` that targets belong in (probabilities: ``(0, 1)``), or
        ``None``; ``fit`` warns about targets outside it (the loss is then no longer a
        cross-entropy, and its minimum is not at ``y == t``).
    """

    value: Callable[[Array, Array], Array]
    grad: Callable[[Array, Array], Array]
    name: str
    reduction: str
    from_logits: bool
    categorical: bool = False
    input_range: tuple[float, float] | None = None
    target_grad: Callable[[Array, Array], Array] | None = None
    integer_labels: bool = False
    target_range: tuple[float, float] | None = None


def _check(name: str, y: Array, t: Array, *, classes: bool, labels: bool) -> None:
    if labels:
        if tuple(t.shape) != tuple(y.shape[:-1]) or not jnp.issubdtype(t.dtype, jnp.integer):
            raise ValueError(
                f"loss {name} takes integer class labels of shape {tuple(y.shape[:-1])} (one "
                f"per example) for outputs of shape {tuple(y.shape)}; got {t.dtype} targets of "
                f"shape {tuple(t.shape)}"
            )
    elif tuple(y.shape) != tuple(t.shape):
        raise ValueError(
            f"loss {name}: outputs have shape {tuple(y.shape)} but targets have shape "
            f"{tuple(t.shape)}; they must match"
        )
    if classes and (y.ndim == 0 or y.shape[-1] < 2):
        raise ValueError(
            f"loss {name} needs one output per class (at least two); the outputs have shape "
            f"{tuple(y.shape)}. With one output and 0/1 targets use bce_with_logits"
        )


def make_loss(name: str, value: Callable, grad: Callable, *, reduction: str, from_logits: bool,
              categorical: bool = False, input_range=None,
              target_grad: Callable | None = None, integer_labels: bool = False,
              target_range=None) -> Loss:
    """A :class:`Loss` whose ``value``, ``grad`` and ``target_grad`` check ``y`` and ``t`` first.

    The checks: the same shape (integer labels: ``t: y.shape[:-1]``), and at least two outputs
    for a loss over classes (``categorical`` or ``integer_labels``); a failed one raises
    ``ValueError`` naming the loss.

    Args:
      name: the name used by the CLI, specs, reports and error messages.
      value: ``(y, t) -> scalar``.
      grad: ``(y, t) -> dL/dy``, the shape of ``y``.
      reduction: ``"sum"``, ``"mean_rows"`` or ``"mean_all"`` (:class:`Loss`); anything else
        raises ``ValueError``.
      from_logits: True when ``y`` is a logit (the loss applies the sigmoid/softmax itself).
      categorical: True when each row of targets is a distribution over the classes.
      input_range: ``(low, high)`` that predictions must lie in, or ``None`` for any real value.
      target_grad: ``(y, t) -> dL/dt``, or ``None`` when not defined.
      integer_labels: True when the targets are integer class indices ``t: y.shape[:-1]``.
      target_range: ``(low, high)`` that targets belong in, or ``None``.

    Returns:
      the :class:`Loss`.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss {name}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    classes = categorical or integer_labels

    def checked(fn):
        if fn is None:
            return None

        def f(y, t):
            _check(name, y, t, classes=classes, labels=integer_labels)
            return fn(y, t)

        return f

    return Loss(checked(value), checked(grad), name, reduction, from_logits, categorical,
                input_range, checked(target_grad), integer_labels, target_range)


def rows(y: Array) -> int:
    """Number of examples: all axes but the last (1 for a single example)."""
    return max(1, y.size // y.shape[-1]) if y.ndim else 1


def clip_probabilities(p: Array) -> Array:
    """``p`` clipped to ``[eps, 1 - eps]`` for its dtype (what ``bce`` evaluates at)."""
    eps = jnp.finfo(p.dtype).eps
    return jnp.clip(p, eps, 1 - eps)


def _sse_half() -> Loss:
    return make_loss(
        "sse_half", lambda y, t: 0.5 * jnp.sum((y - t) ** 2), lambda y, t: y - t,
        reduction="sum", from_logits=False, target_grad=lambda y, t: t - y)


def _mse() -> Loss:
    return make_loss(
        "mse", lambda y, t: jnp.mean((y - t) ** 2), lambda y, t: 2 * (y - t) / y.size,
        reduction="mean_all", from_logits=False, target_grad=lambda y, t: 2 * (t - y) / y.size)


def _bce() -> Loss:
    def value(p, t):
        p = clip_probabilities(p)
        return jnp.mean(-t * jnp.log(p) - (1 - t) * jnp.log1p(-p))

    def grad(p, t):
        p = clip_probabilities(p)
        return (p - t) / (p * (1 - p)) / p.size

    def target_grad(p, t):
        # d/dt [-t log p - (1 - t) log(1 - p)] = log(1 - p) - log(p), at the clipped p
        p = clip_probabilities(p)
        return (jnp.log1p(-p) - jnp.log(p)) / p.size

    return make_loss("bce", value, grad, reduction="mean_all", from_logits=False,
                     input_range=(0, 1), target_grad=target_grad, target_range=(0, 1))


def _bce_with_logits() -> Loss:
    def value(z, t):
        # softplus(z) - t z, written so exp never overflows
        return jnp.mean(jnp.maximum(z, 0) - t * z + jnp.log1p(jnp.exp(-jnp.abs(z))))

    return make_loss(
        "bce_with_logits", value, lambda z, t: (jax.nn.sigmoid(z) - t) / z.size,
        reduction="mean_all", from_logits=True, target_range=(0, 1),
        target_grad=lambda z, t: -z / z.size)  # d/dt [softplus(z) - t z] = -z


def _softmax_cross_entropy() -> Loss:
    def value(z, t):
        return -jnp.sum(t * jax.nn.log_softmax(z, axis=-1)) / rows(z)

    def grad(z, t):
        # d/dz of -sum(t * (z - lse(z))) = softmax(z) * sum(t) - t  (= p - t for one-hot t),
        # each term scaled by 1/rows on its own: scaling the difference made XLA CPU fuse the
        # row sum, the products and the difference into one YNNPACK fusion, 5% of a
        # 784-1024-1024-10 gradient at batch 512 (benchmarks/README.md, "mlp-grad")
        p = jax.nn.softmax(z, axis=-1)
        return p * (jnp.sum(t, axis=-1, keepdims=True) / rows(z)) - t / rows(z)

    return make_loss(
        "softmax_cross_entropy", value, grad, reduction="mean_rows", from_logits=True,
        categorical=True, target_range=(0, 1),
        target_grad=lambda z, t: -jax.nn.log_softmax(z, axis=-1) / rows(z))


def _sparse_softmax_cross_entropy() -> Loss:
    """optax's ``softmax_cross_entropy_with_integer_labels``: ``t`` holds class indices."""

    def value(z, labels):
        logp = jax.nn.log_softmax(z, axis=-1)
        return -jnp.sum(jnp.take_along_axis(logp, labels[..., None], axis=-1)) / rows(z)

    def grad(z, labels):
        # d/dz of -(z[label] - lse(z)) = softmax(z) - one_hot(label)
        p = jax.nn.softmax(z, axis=-1)
        return (p - jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)) / rows(z)

    return make_loss("sparse_softmax_cross_entropy", value, grad, reduction="mean_rows",
                     from_logits=True, integer_labels=True)


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (_sse_half(), _mse(), _bce(), _bce_with_logits(), _softmax_cross_entropy(),
                 _sparse_softmax_cross_entropy())
}


def get_loss(loss: str | Loss) -> Loss:
    """The loss called ``loss`` (see ``LOSSES``); a :class:`Loss` passes through."""
    if isinstance(loss, Loss):
        return loss
    return lookup(LOSSES, loss, "loss")
