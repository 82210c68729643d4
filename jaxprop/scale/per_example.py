"""Per-example gradients: ``jax.vmap`` of the hand-written gradient, their norms, DP-SGD clipping.

Each example is pushed through the network on its own (no batch axis), so its loss is the loss
of a batch of one: ``mse``/``bce``/``bce_with_logits`` average over that example's outputs,
``sse_half`` sums them, ``softmax_cross_entropy`` is that example's cross-entropy. For the
mean-reduced losses the batch gradient is the mean of the per-example gradients; for ``sse_half``
it is their sum.
"""

from __future__ import annotations

from typing import Callable

import jax
import optax

from jaxprop.core.backprop import loss_and_grad_fn
from jaxprop.core.cache import remember
from jaxprop.core.checks import check_labels_fit, require_model, validate_data
from jaxprop.core.layers import Layer
from jaxprop.core.losses import Loss, get_loss


def per_example_grads_fn(model: Layer, loss: str | Loss) -> Callable:
    """The pure function ``(params, x, t) -> (losses (B,), grads)``; jit it, vmap it further.

    ``x: (B, *in_shape)``, ``t: (B, *out_shape)``; every leaf of ``grads`` is the matching
    param leaf with a leading ``B`` axis. Only the hand-written backward is used.
    """
    if model.couples_batch:
        raise ValueError(
            f"per_example_grads: {model.name} couples the examples of a batch (e.g. "
            "BatchNorm), so an example's gradient on its own is not defined"
        )
    return jax.vmap(loss_and_grad_fn(model, loss), in_axes=(None, 0, 0))


def per_example_grads(model: Layer, loss: str | Loss, params, x, t):
    """``(losses (B,), grads)``: each example's loss and gradient (see ``per_example_grads_fn``).

    ``x: (B, *in_shape)``, ``t: (B, *out_shape)`` (integer labels: ``(B,)``), validated first:
    cast to the params' dtype, finite when concrete, the same leading batch axis
    (``ValueError`` otherwise).

    Args:
      model: a Layer that does not couple the examples of a batch (no BatchNorm).
      loss: a loss name or :class:`~jaxprop.Loss`.
      params: the model's params.
      x: the inputs.
      t: the targets.

    Returns:
      ``(losses, grads)``: ``losses: (B,)``; every leaf of ``grads`` is the matching param leaf
      with a leading ``B`` axis.
    """
    require_model(model, "per_example_grads")
    x, t = validate_data(params, x, t, loss=loss, model=model)  # the params' dtype, finite when concrete
    if x.ndim < 2 or t.ndim < (1 if get_loss(loss).integer_labels else 2) \
            or x.shape[0] != t.shape[0]:
        raise ValueError(
            f"per_example_grads: x and t need a leading batch axis of the same length, got "
            f"x {tuple(x.shape)} and t {tuple(t.shape)}"
        )
    if get_loss(loss).integer_labels:  # a label past the outputs would give NaN silently
        check_labels_fit(model, params, None, x, t)
    return _compiled(model, get_loss(loss))(params, x, t)


@remember(maxsize=16)
def _compiled(model: Layer, loss: Loss) -> Callable:
    """``per_example_grads_fn(model, loss)``, jitted once per model and loss (run eagerly, a
    small GPT's per-example backward took seconds of dispatch)."""
    return jax.jit(per_example_grads_fn(model, loss))


def per_example_norms(grads) -> jax.Array:
    """Global L2 norm of each example's gradient, over all leaves: ``(B,)``."""
    return jax.vmap(optax.tree.norm)(grads)


def clip_per_example(grads, max_norm: float):
    """Mean of the per-example gradients after scaling each to norm ``<= max_norm``.

    Example ``i`` is multiplied by ``min(1, max_norm / ||g_i||)`` (DP-SGD's clipping step,
    Abadi et al. 2016; the arithmetic is ``optax.per_example_global_norm_clip``), then the
    examples are averaged. Returns a gradient with the params' structure (no batch axis).
    """
    if not isinstance(max_norm, jax.core.Tracer) and not float(max_norm) >= 0:
        raise ValueError(f"clip_per_example: max_norm must be >= 0, got {max_norm}")
    leaves = jax.tree.leaves(grads)
    if not leaves:
        raise ValueError("clip_per_example: grads has no arrays")
    batch = leaves[0].shape[0] if leaves[0].ndim else None
    if batch is None or any(leaf.ndim == 0 or leaf.shape[0] != batch for leaf in leaves):
        raise ValueError("clip_per_example: every gradient leaf needs the same leading batch axis")
    clipped_sum, _ = optax.per_example_global_norm_clip(grads, max_norm)
    return jax.tree.map(lambda g: g / batch, clipped_sum)
