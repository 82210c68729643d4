"""A bridge to the rest of JAX: a loss function whose derivative is the hand-written backward.

``as_jax_function(model, loss)`` returns ``f(params, x, t) -> scalar`` wrapped in
``jax.custom_jvp``. Its JVP rule runs the network's forward keeping the layers' residuals, then
its own ``backward`` fed with the loss's own ``grad``, and returns ``<dL/dparams, dparams> +
<dL/dx, dx> + <dL/dt, dt>``: a tangent linear in the inputs' tangents, whose transpose JAX
takes for reverse mode. So ``jax.grad(f)`` (and ``jax.value_and_grad``, ``jax.vjp``,
``jax.jacrev``, optax, ``jax.jit``, ``jax.vmap``) gives the hand-written gradient and never
differentiates the network by autodiff; gradients come for ``params``, ``x`` and ``t``.

Forward mode and second order work too (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``,
``jax.grad`` of ``jax.grad``): the hand-written gradient inside the JVP rule is plain JAX code
(the layers' ``backward`` functions), and a second derivative differentiates *it*. A Hessian of
``f`` is therefore the derivative of jaxprop's gradient, exactly what :func:`jaxprop.hvp`
computes and :func:`jaxprop.check_hvp` checks against ``jax.jvp(jax.grad(...))``. (A
``jax.custom_vjp`` would refuse forward mode: JAX cannot push tangents through a rule it only
knows how to transpose.)

The gradient with respect to the targets ``t`` is the loss's own ``target_grad`` (written out
for every built-in loss on float targets); a custom :class:`~jaxprop.Loss` without one gives
``t`` zeros; integer class labels and integer token ids (an Embedding's input, whose
``dx`` is ``None``) have no tangent (JAX's ``float0``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss


def _inner(a, b, dtype):
    """``<a, b>`` summed over the leaves of two trees of the same structure, in ``dtype``."""
    return sum((jnp.sum(u * v).astype(dtype) for u, v in zip(jax.tree.leaves(a),
                                                             jax.tree.leaves(b))),
               jnp.zeros((), dtype))


def as_jax_function(model: Layer, loss: str | Loss) -> Callable:
    """``f(params, x, t) -> loss(model(params, x), t)`` with the hand-written backward as its
    derivative (a ``jax.custom_jvp``; see the module docstring).

    ``x: (..., *in_shape)``, ``t`` the shape of the output. ``jax.grad(f, argnums=(0, 1, 2))``
    gives ``(dL/dparams, dL/dx, dL/dt)``; ``dL/dt`` is zeros for a custom loss (see module doc).
    ``jax.jvp``, ``jax.jacfwd`` and ``jax.hessian`` differentiate the hand-written gradient.
    """
    loss = get_loss(loss)

    @jax.custom_jvp
    def f(params, x, t):
        return loss.value(model.forward(params, None, x)[0], t)

    @f.defjvp
    def f_jvp(primals, tangents):
        params, x, t = primals
        d_params, d_x, d_t = tangents
        y, residuals, _ = model.forward(params, None, x)
        value = loss.value(y, t)
        g_params, g_x = model.backward(params, residuals, loss.grad(y, t))
        tangent = _inner(g_params, d_params, value.dtype)
        if jnp.issubdtype(x.dtype, jnp.inexact):  # integer token ids (an Embedding's) have no dx
            tangent = tangent + _inner(g_x, d_x, value.dtype)
        if jnp.issubdtype(t.dtype, jnp.inexact) and loss.target_grad is not None:
            tangent = tangent + _inner(loss.target_grad(y, t), d_t, value.dtype)
        return value, tangent
    return f
