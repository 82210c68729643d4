"""A bridge to the rest of JAX: a loss function whose ``jax.grad`` is the hand-written backward.

``as_jax_function(model, loss)`` returns ``f(params, x, t) -> scalar`` wrapped in
``jax.custom_vjp``. Its forward pass keeps the layers' residuals; its backward pass is the
network's own ``backward`` fed with the loss's own ``grad``, so ``jax.grad(f)`` (and
``jax.value_and_grad``, ``jax.vjp``, optax, ``jax.jit``, ``jax.vmap``) never differentiate
the network by autodiff. Gradients come for ``params``, ``x`` and ``t``.

The gradient with respect to the targets ``t`` is the loss's own ``target_grad`` (written out
for every built-in loss on float targets); a custom :class:`~jaxprop.Loss` without one gives
``t`` zeros, and integer class labels get JAX's ``float0`` zero cotangent.
Like every ``custom_vjp`` function, ``f`` supports reverse mode only (``jax.grad``, ``jax.vjp``,
``jax.jacrev``), not forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss


def as_jax_function(model: Layer, loss: str | Loss) -> Callable:
    """``f(params, x, t) -> loss(model(params, x), t)`` with the hand-written backward as its VJP.

    ``x: (..., *in_shape)``, ``t`` the shape of the output. ``jax.grad(f, argnums=(0, 1, 2))``
    gives ``(dL/dparams, dL/dx, dL/dt)``; ``dL/dt`` is zeros for a custom loss (see module doc).
    """
    loss = get_loss(loss)

    def value(params, x, t):
        return loss.value(model.forward(params, None, x)[0], t)

    def fwd(params, x, t):
        y, residuals, _ = model.forward(params, None, x)
        ids = None if jnp.issubdtype(x.dtype, jnp.inexact) else x  # an Embedding's inputs
        return loss.value(y, t), (params, residuals, y, t, ids)

    def bwd(saved, g):
        params, residuals, y, t, ids = saved
        dparams, dx = model.backward(params, residuals, loss.grad(y, t))
        scale = lambda a: (g * a).astype(a.dtype)  # noqa: E731  (g: the scalar cotangent)
        if not jnp.issubdtype(t.dtype, jnp.inexact):  # integer class labels: no gradient
            dt = np.zeros(t.shape, jax.dtypes.float0)
        else:
            dt = scale(jnp.zeros_like(t) if loss.target_grad is None else loss.target_grad(y, t))
        # integer token ids get no gradient (an Embedding's dx is None)
        dx = scale(dx) if ids is None else np.zeros(ids.shape, jax.dtypes.float0)
        return jax.tree.map(scale, dparams), dx, dt

    f = jax.custom_vjp(value)
    f.defvjp(fwd, bwd)
    return f
