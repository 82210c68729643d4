"""Backpropagation: forward keeping residuals, loss gradient, backward through every layer.

No autodiff is involved: every derivative comes from the layers' and losses' hand-written
``backward``/``grad`` functions.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from jaxprop.core.checks import check_labels_fit, checked_backward, require_model, validate_data
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss
from jaxprop.core.network import Model

Array = jax.Array


def loss_grad_state_fn(model: Layer, loss: str | Loss) -> Callable:
    """The pure function ``(params, state, x, t, key=None, train=True) -> (loss, dL/dparams,
    new_state)``: one forward pass keeping residuals, the loss's gradient, one backward pass.

    ``x: (..., *in_shape)``, ``t`` the shape of the model's output; ``state`` the model's state
    (``None``/``()`` for a model without), ``key`` the PRNG key of layers such as Dropout.
    """
    loss = get_loss(loss)

    def backward(params, residuals, dy, x):
        if isinstance(model, Model):  # a Model checks each layer's backward itself
            return model.backward(params, residuals, dy)
        return checked_backward(model, f"layer {model.name}", params, residuals, dy, x)

    def loss_grad_state(params, state, x, t, key=None, train=True):
        y, residuals, new_state = model.forward(params, state, x, key=key, train=train)
        dparams, _ = backward(params, residuals, loss.grad(y, t), x)
        return loss.value(y, t), dparams, new_state

    return loss_grad_state


def loss_and_grad_fn(model: Layer, loss: str | Loss) -> Callable:
    """The pure function ``(params, x, t, *, state=None, key=None, train=True) -> (loss,
    dL/dparams)``; jit, vmap or scan it freely. See :func:`loss_grad_state_fn`, which also
    returns the new model state."""
    inner = loss_grad_state_fn(model, loss)

    def loss_and_grad(params, x, t, *, state=None, key=None, train=True):
        value, grads, _ = inner(params, state, x, t, key, train)
        return value, grads

    return loss_and_grad


@partial(jax.jit, static_argnums=(0, 1), static_argnames=("train",))
def _value_and_grad(model, loss, params, x, t, state, key, train):
    return loss_and_grad_fn(model, loss)(params, x, t, state=state, key=key, train=train)


def value_and_grad(model: Layer, loss: str | Loss, params, x, t, *, state=None, key=None,
                   train: bool = True, check_finite: bool = True):
    """``(loss_value, grads)`` of ``loss(model(params, x), t)`` by hand-written backprop.

    Jit-compiled once per (model, loss, shapes). ``grads`` has the structure of ``params``.
    Works under ``jax.vmap`` (per-example gradients: map over ``x`` and ``t``) and on any device.
    Inputs are validated first: floating point (cast to the params' dtype), not empty, finite
    (when the arrays are concrete and ``check_finite``), shapes that fit the model and the
    targets (integer class labels for a loss on integer labels).

    Args:
      model: a Layer (``jp.mlp``, ``jp.serial``, ...).
      loss: a loss name or :class:`~jaxprop.Loss`.
      params, x, t: parameters, inputs ``(..., *in_shape)`` and targets.
      state: the model's state, for models with state (BatchNorm).
      key: PRNG key for layers that draw random numbers in training (Dropout).
      train: training mode (default) or evaluation mode.
      check_finite: check concrete ``x`` and ``t`` for NaN/Inf.

    Returns:
      ``(loss, grads)``.
    """
    require_model(model, "value_and_grad")
    loss = get_loss(loss)
    x, t = validate_data(params, x, t, check_finite=check_finite, loss=loss, model=model)
    if loss.integer_labels:
        check_labels_fit(model, params, state, x, t)
    return _value_and_grad(model, loss, params, x, t, state, key, train=train)


def hvp(model: Layer, loss: str | Loss, params, x, t, v, *, state=None, key=None,
        train: bool = True):
    """``(loss, grads, H v)``: the Hessian of the loss w.r.t. the params times ``v``, as the
    forward-mode derivative (``jax.jvp``) of the hand-written gradient along ``v``.

    The gradient is jaxprop's own (:func:`loss_and_grad_fn`: forward, the loss's ``grad``, every
    layer's ``backward``), plain JAX code, so ``jax.jvp`` differentiates the backward pass
    itself; ``v`` has the structure of ``params``. ``state`` stays fixed (BatchNorm's batch
    statistics still depend on ``x`` only), as does ``key`` (Dropout's mask).

    Args:
      model: a Layer (``jp.mlp``, ``jp.serial``, ...).
      loss: a loss name or :class:`~jaxprop.Loss`.
      params, x, t: parameters, inputs ``(..., *in_shape)`` and targets.
      v: the direction, a tree like ``params``.
      state, key, train: as for :func:`value_and_grad`.

    Returns:
      ``(loss, grads, hvp)``; ``grads`` and ``hvp`` have the structure of ``params``.

    Jit-compiled once per (model, loss, shapes); inputs are validated as for
    :func:`value_and_grad`, and ``v`` must have the params' structure and shapes (cast to
    their dtypes).
    """
    require_model(model, "hvp")
    loss = get_loss(loss)
    x, t = validate_data(params, x, t, loss=loss, model=model)
    if loss.integer_labels:
        check_labels_fit(model, params, state, x, t)
    p_leaves, p_tree = jax.tree.flatten(params)
    v_leaves, v_tree = jax.tree.flatten(v)
    if v_tree != p_tree or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(v_leaves, p_leaves)):
        raise ValueError("hvp: v must have the structure and shapes of params (e.g. "
                         "jax.tree.map(jnp.ones_like, params))")
    v = p_tree.unflatten([jnp.asarray(a, jnp.result_type(b)) for a, b in zip(v_leaves, p_leaves)])
    return _hvp(model, loss, params, x, t, v, state, key, train=train)


@partial(jax.jit, static_argnums=(0, 1), static_argnames=("train",))
def _hvp(model, loss, params, x, t, v, state, key, train):
    fn = loss_and_grad_fn(model, loss)
    (value, grads), (_, hv) = jax.jvp(
        lambda p: fn(p, x, t, state=state, key=key, train=train), (params,), (v,))
    return value, grads, hv
