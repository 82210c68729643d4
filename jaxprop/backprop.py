"""Backpropagation: forward keeping residuals, loss gradient, backward through every layer.

No autodiff is involved: every derivative comes from the layers' and losses' hand-written
``backward``/``grad`` functions.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.losses import Loss, get_loss
from jaxprop.network import Model

Array = jax.Array


def loss_and_grad_fn(model: Model, loss: str | Loss) -> Callable:
    """The pure function ``(params, x, t) -> (loss, dL/dparams)``; jit, vmap or scan it freely.

    ``x: (..., *in_shape)``, ``t`` the shape of the model's output.
    """
    loss = get_loss(loss)

    def loss_and_grad(params, x, t):
        y, residuals = model.forward(params, x)
        value = loss.value(y, t)
        dparams, _ = model.backward(params, residuals, loss.grad(y, t))
        return value, dparams

    return loss_and_grad


@partial(jax.jit, static_argnums=(0, 1))
def _value_and_grad(model, loss, params, x, t):
    return loss_and_grad_fn(model, loss)(params, x, t)


def value_and_grad(model: Model, loss: str | Loss, params, x, t, *, check_finite: bool = True):
    """``(loss_value, grads)`` of ``loss(model.apply(params, x), t)`` by hand-written backprop.

    Jit-compiled once per (model, loss, shapes). ``grads`` has the structure of ``params``.
    Works under ``jax.vmap`` (per-example gradients: map over ``x`` and ``t``) and on any device.
    Inputs are validated first: floating dtype matching the params, finite values (when the
    arrays are concrete and ``check_finite``), shapes that fit the model and the targets.
    """
    loss = get_loss(loss)
    x, t = validate_data(params, x, t, check_finite=check_finite)
    return _value_and_grad(model, loss, params, x, t)


def _float_dtype(params):
    leaves = [leaf for leaf in jax.tree.leaves(params) if hasattr(leaf, "dtype")]
    return jnp.result_type(*leaves) if leaves else None


def validate_data(params, x, t=None, *, check_finite: bool = True):
    """Check ``x`` (and ``t``) are floating arrays of the params' dtype, finite when concrete.

    Returns them as JAX arrays. Raises ``ValueError`` naming the problem.
    """
    out = []
    want = _float_dtype(params)
    for name, a in (("x", x), ("t", t)):
        if a is None:
            continue
        if not isinstance(a, jax.Array):
            a = np.asarray(a)
            if a.dtype == object:
                raise ValueError(f"{name} is not a numeric array (ragged or mixed types?)")
            if np.issubdtype(a.dtype, np.floating) and want is not None:
                a = a.astype(want)  # host float data follows the params' precision
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(
                f"{name} has dtype {a.dtype}; inputs and targets must be floating point "
                f"(cast with .astype({want or 'float32'}))"
            )
        if want is not None and a.dtype != want:
            raise ValueError(
                f"{name} has dtype {a.dtype} but the parameters are {want}; cast one to the other"
            )
        if check_finite and not isinstance(a, jax.core.Tracer):
            bad = ~np.isfinite(np.asarray(a))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(
                    f"{name} contains {int(bad.sum())} NaN/Inf value(s) (first at index {idx}, "
                    f"shape {tuple(a.shape)})"
                )
        out.append(jnp.asarray(a))
    return tuple(out) if t is not None else out[0]
