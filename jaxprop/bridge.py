"""A bridge to the rest of JAX: a loss function whose ``jax.grad`` is the hand-written backward.

``as_jax_function(model, loss)`` returns ``f(params, x, t) -> scalar`` wrapped in
``jax.custom_vjp``. Its forward pass keeps the layers' residuals; its backward pass is the
network's own ``backward`` fed with the loss's own ``grad``, so ``jax.grad(f)`` (and
``jax.value_and_grad``, ``jax.vjp``, optax, ``jax.jit``, ``jax.vmap``) never differentiate
the network by autodiff. Gradients come for ``params``, ``x`` and ``t``.

The gradient with respect to the targets ``t`` is written out below for every built-in loss;
a custom :class:`~jaxprop.losses.Loss` has no target gradient, so ``t`` gets zeros there.
Like every ``custom_vjp`` function, ``f`` supports reverse mode only (``jax.grad``, ``jax.vjp``,
``jax.jacrev``), not forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxprop.losses import LOSSES, Loss, _clip, _rows, get_loss
from jaxprop.network import Model

# dL/dt for each built-in loss, from the prediction y and the target t (shapes of y).
_TARGET_GRADS: dict[str, Callable] = {
    "sse_half": lambda y, t: t - y,
    "mse": lambda y, t: 2 * (t - y) / y.size,
    # d/dt [-t log p - (1 - t) log(1 - p)] = log(1 - p) - log(p), at the clipped p
    "bce": lambda p, t: (jnp.log1p(-_clip(p)) - jnp.log(_clip(p))) / p.size,
    # d/dt [softplus(z) - t z] = -z
    "bce_with_logits": lambda z, t: -z / z.size,
    "softmax_cross_entropy": lambda z, t: -jax.nn.log_softmax(z, axis=-1) / _rows(z),
}


def as_jax_function(model: Model, loss: str | Loss) -> Callable:
    """``f(params, x, t) -> loss(model(params, x), t)`` with the hand-written backward as its VJP.

    ``x: (..., *in_shape)``, ``t`` the shape of the output. ``jax.grad(f, argnums=(0, 1, 2))``
    gives ``(dL/dparams, dL/dx, dL/dt)``; ``dL/dt`` is zeros for a custom loss (see module doc).
    """
    loss = get_loss(loss)
    target_grad = _TARGET_GRADS.get(loss.name) if LOSSES.get(loss.name) is loss else None

    def value(params, x, t):
        return loss.value(model.apply(params, x), t)

    def fwd(params, x, t):
        y, residuals = model.forward(params, x)
        return loss.value(y, t), (params, residuals, y, t)

    def bwd(saved, g):
        params, residuals, y, t = saved
        dparams, dx = model.backward(params, residuals, loss.grad(y, t))
        dt = jnp.zeros_like(t) if target_grad is None else target_grad(y, t)
        scale = lambda a: (g * a).astype(a.dtype)  # noqa: E731  (g: the scalar cotangent)
        return jax.tree.map(scale, dparams), scale(dx), scale(dt)

    f = jax.custom_vjp(value)
    f.defvjp(fwd, bwd)
    return f
