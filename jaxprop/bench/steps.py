"""The JAX steps every workload times: the hand-written gradient and its ``jax.grad`` twin.

``jaxprop`` rows use the library's own gradient (:func:`jaxprop.loss_and_grad_fn`, or
``make_train_step`` with its hand-written ``grad_fn``); ``jax.grad`` rows the same forward pass
and loss differentiated by JAX (:func:`autodiff_grad_fn`). :func:`jax_step` compiles either as
a no-argument call for :meth:`~jaxprop.bench.harness.Harness.jax_job`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

import jaxprop as jp
from jaxprop.bench.harness import Entry
from jaxprop.bench.timing import compile_jax
from jaxprop.core.losses import get_loss
from jaxprop.train import make_train_step


def autodiff_grad_fn(model, loss) -> Callable:
    """``(params, state, x, t, key=None, train=True[, mask]) -> (loss, grads, new_state)`` by
    ``jax.value_and_grad``: the ``grad_fn`` the ``jax.grad`` rows train with (the same value as
    the hand-written gradient's, padded batches included)."""
    loss = get_loss(loss)
    row_value = jax.vmap(lambda y, t: loss.value(y[None], t[None]))

    def grad_fn(params, state, x, t, key=None, train=True, *mask):
        def value(p):
            y, _, new_state = model.forward(p, state, x, key=key, train=train)
            if not mask:
                return loss.value(y, t), new_state
            w = mask[0].astype(y.dtype)
            if loss.reduction != "sum":
                w = w / jnp.maximum(jnp.sum(w), 1)
            return jnp.sum(w * row_value(y, t)), new_state

        (v, new_state), grads = jax.value_and_grad(value, has_aux=True)(params)
        return v, grads, new_state

    return grad_fn


def grad_fn_for(impl: str, model, loss) -> Callable | None:
    """The ``grad_fn`` an implementation trains with: ``None`` (the library's own, hand-written)
    for ``"jaxprop"``, :func:`autodiff_grad_fn` for ``"jax.grad"``."""
    return None if impl == "jaxprop" else autodiff_grad_fn(model, loss)


def jax_step(bench, impl, model, loss, params0, x, t, dtype, dev, step):
    """A compiled gradient, or a compiled ``make_train_step`` with Adam (params and optimizer
    state donated), as a no-argument call; and its compile seconds.

    Args:
      bench: the :class:`~jaxprop.bench.harness.Harness` (its matmul precision for ``dtype``).
      impl: ``"jaxprop"`` or ``"jax.grad"``.
      model: the model.
      loss: the loss name or :class:`~jaxprop.Loss`.
      params0: the starting params (never donated).
      x: the inputs, cast to ``dtype`` (integer token ids stay integers).
      t: the targets, likewise (integer labels stay integers).
      dtype: the working dtype's name.
      dev: the JAX device.
      step: ``"grad"`` for one gradient, ``"adam"`` for an Adam training step (lr 1e-3).

    Returns:
      ``(call, compile_seconds)``.
    """
    params, xd, td = jax.device_put((params0, _cast(x, dtype), _cast(t, dtype)), dev)
    with bench.precision(dtype):
        if step == "grad":
            fn = jp.loss_and_grad_fn(model, loss) if impl == "jaxprop" else \
                _autodiff_loss_and_grad(model, loss)
            compiled, c = compile_jax(fn, params, xd, td)
            return (lambda: compiled(params, xd, td)), c
        opt = optax.adam(1e-3)
        train_step = make_train_step(model, loss, opt, grad_fn=grad_fn_for(impl, model, loss))
        params = jax.tree.map(jnp.copy, params)  # donated below: never params0's buffers
        state = [params, jax.device_put(opt.init(params), dev)]
        key = jax.device_put(jax.random.key(0), dev)
        compiled, c = compile_jax(train_step, *state, None, xd, td, key, donate_argnums=(0, 1))

    def call():
        state[0], state[1], _, value = compiled(state[0], state[1], None, xd, td, key)
        return value, state

    return call, c


def _cast(a, dtype):
    """``a`` in ``dtype``, or unchanged when it holds integers (token ids, class labels)."""
    return a if jnp.issubdtype(a.dtype, jnp.integer) else a.astype(dtype)


def _autodiff_loss_and_grad(model, loss):
    """``(params, x, t) -> (loss, grads)`` by :func:`autodiff_grad_fn`, for a model without
    state: what ``jp.loss_and_grad_fn`` returns, differentiated by JAX."""
    grad_fn = autodiff_grad_fn(model, loss)
    return lambda params, x, t: grad_fn(params, None, x, t)[:2]


def jax_entries(bench, model, loss, params0, x, t, dtype, step, *, skip=None, **work) -> list:
    """The ``jaxprop`` and ``jax.grad`` rows of a cell: a :func:`jax_step` per implementation
    the run asks for on each device (``skip(device)``: true for a device to leave out), as
    :class:`~jaxprop.bench.harness.Entry` records with ``work`` (flops, samples, ...) and the
    device's peak."""
    variant = "gradient" if step == "grad" else "adam step"
    entries = []
    for dname, dev in bench.devices.items():
        if skip is not None and skip(dev):
            continue
        for impl in ("jaxprop", "jax.grad"):
            if bench.has(impl):
                call, c = jax_step(bench, impl, model, loss, params0, x, t, dtype, dev, step)
                entries.append(Entry(impl, variant, dname, bench.jax, bench.jax_job(call),
                                     bench.config.warmup, c, **work,
                                     peak=bench.jax_peak(dname)))
    return entries
