"""Precision policies: which dtype the parameters are kept in, which one the network computes in,
which one the loss is evaluated in, and how precise float32 matmuls are.

==========  ===========  ============  ==========  ===============================================
name        parameters   computation   loss        float32 matmuls
==========  ===========  ============  ==========  ===============================================
``f32``     float32      float32       float32     the backend's default: full float32 on CPU,
                                                   TF32 on NVIDIA Ampere/Hopper GPUs, bf16 passes
                                                   on TPU
``highest`` float32      float32       float32     ``jax.default_matmul_precision("highest")``:
                                                   full float32 everywhere
``bf16``    float32      bfloat16      float32     (bfloat16 matmuls)
``f64``     float64      float64       float64     needs ``jax_enable_x64``
==========  ===========  ============  ==========  ===============================================

``None`` (the default of ``fit`` and :func:`~jaxprop.train.make_train_step`) casts nothing: the
network computes in whatever dtype its parameters have.

Under a policy the one training step casts the parameters, the inputs and the model state to the
compute dtype, runs the hand-written forward and backward passes there, evaluates the loss and
its gradient ``dL/dy`` in the loss dtype (float32 for ``bf16``: a softmax or a sum over a batch
in bfloat16 loses digits), and casts the gradients and the new model state back to the dtypes of
the parameters. The optimizer (and its state) therefore only ever sees float32.

The design is that of DeepMind's ``jmp`` (``Policy(param_dtype, compute_dtype, output_dtype)``
and its ``cast_to_*`` methods, which cast floating leaves only); jmp itself is not a dependency
(its last release, 0.0.4, is from January 2023 and it has no notion of matmul precision), but a
``jmp.Policy`` is accepted wherever a precision is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxprop.core.checks import require_dtype
from jaxprop.core.losses import Loss
from jaxprop.core.registry import lookup


@dataclasses.dataclass(frozen=True)
class Precision:
    """A precision policy (module docstring). ``None`` dtypes keep whatever the arrays have.

    Args:
      name: the name the CLI and reports use.
      param_dtype: the dtype parameters must have (checked when the step is traced).
      compute_dtype: the dtype of the forward and backward passes.
      output_dtype: the dtype of the loss value and of ``dL/dy``.
      matmul_precision: ``None`` (the backend's default) or a value for
        ``jax.default_matmul_precision`` (``"highest"``).
    """

    name: str
    param_dtype: Any = None
    compute_dtype: Any = None
    output_dtype: Any = None
    matmul_precision: str | None = None

    # -- casts (jmp's semantics: only floating-point leaves change) --------------------------

    def cast_to_compute(self, tree):
        """Floating leaves of ``tree`` in the compute dtype."""
        return cast_floating(tree, self.compute_dtype)

    def cast_to_output(self, tree):
        """Floating leaves of ``tree`` in the loss dtype."""
        return cast_floating(tree, self.output_dtype)

    def cast_like(self, tree, like):
        """Floating leaves of ``tree`` cast to the dtypes of the matching leaves of ``like``
        (gradients back to their parameters' dtypes)."""
        return jax.tree.map(
            lambda a, b: a.astype(b.dtype) if is_float(a) and is_float(b) else a, tree, like)

    # -- matmul precision --------------------------------------------------------------------

    def matmul(self):
        """A context in which traced matmuls get this policy's precision (a no-op for None)."""
        if self.matmul_precision is None:
            return contextlib.nullcontext()
        return jax.default_matmul_precision(self.matmul_precision)

    # -- the loss and the gradient function --------------------------------------------------

    def loss(self, loss: Loss) -> Loss:
        """``loss`` evaluated in the loss dtype: ``value`` in it, ``grad`` (``dL/dy``) computed
        in it and returned in ``y``'s dtype, so the backward pass stays in the compute dtype."""
        out = self.output_dtype
        if out is None:
            return loss
        value, grad, target_grad = loss.value, loss.grad, loss.target_grad
        cast = functools.partial(cast_floating, dtype=out)  # integer labels stay as they are
        return loss._replace(
            value=lambda y, t: value(cast(y), cast(t)),
            grad=lambda y, t: grad(cast(y), cast(t)).astype(y.dtype),
            target_grad=None if target_grad is None
            else lambda y, t: target_grad(cast(y), cast(t)).astype(t.dtype),
        )

    def wrap(self, grad_fn: Callable) -> Callable:
        """``grad_fn(params, state, x, t, *rest) -> (loss, grads, new_state)`` under this
        policy: params, state and ``x`` cast to the compute dtype, matmuls at the policy's
        precision, ``grads`` and ``new_state`` cast back to the dtypes of ``params`` and
        ``state``, the loss in the loss dtype. ``t`` is passed as given (the loss casts it).
        ``grad_fn`` should use :meth:`loss` for its loss."""
        if self.is_identity():
            return grad_fn

        def wrapped(params, state, x, t, *rest):
            self.check_params(params)
            with self.matmul():
                value, grads, new_state = grad_fn(
                    self.cast_to_compute(params), self.cast_to_compute(state),
                    self.cast_to_compute(x), t, *rest)
            new_state = self.cast_like(new_state, state) if jax.tree.leaves(state) \
                else new_state
            return self.cast_to_output(value), self.cast_like(grads, params), new_state

        return wrapped

    def is_identity(self) -> bool:
        """True when the policy changes nothing (no casts, default matmul precision)."""
        return (self.param_dtype is None and self.compute_dtype is None
                and self.output_dtype is None and self.matmul_precision is None)

    def check_params(self, params) -> None:
        """Raise ``ValueError`` when a floating parameter is not in ``param_dtype``, or when
        the policy needs float64 and ``jax_enable_x64`` is off."""
        for dtype in (self.param_dtype, self.compute_dtype, self.output_dtype):
            if dtype is not None:
                require_dtype(dtype, f"precision {self.name!r}")
        if self.param_dtype is None:
            return
        want = jnp.dtype(self.param_dtype)
        got = sorted({str(a.dtype) for a in jax.tree.leaves(params) if is_float(a)
                      and a.dtype != want})
        if got:
            raise ValueError(
                f"precision {self.name!r} keeps parameters in {want.name}, but the model's are "
                f"{', '.join(got)}; build the model with dtype=jnp.{want.name} or pick another "
                f"precision")

    def __str__(self) -> str:
        return self.name


def is_float(a) -> bool:
    """Whether ``a`` is an array (anything with a ``dtype``) of a floating-point dtype."""
    return hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)


def cast_floating(tree, dtype):
    """The floating leaves of ``tree`` cast to ``dtype`` (others as they are); ``None`` casts
    nothing (jmp's semantics)."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda a: a.astype(dtype) if is_float(a) else a, tree)


PRECISIONS: dict[str, Precision] = {
    "f32": Precision("f32", jnp.float32, jnp.float32, jnp.float32),
    "highest": Precision("highest", jnp.float32, jnp.float32, jnp.float32, "highest"),
    "bf16": Precision("bf16", jnp.float32, jnp.bfloat16, jnp.float32),
    "f64": Precision("f64", jnp.float64, jnp.float64, jnp.float64),
}
_ALIASES = {"float32": "f32", "bfloat16": "bf16", "float64": "f64"}
NO_POLICY = Precision("none")


def get_precision(precision) -> Precision:
    """A :class:`Precision` from a name in ``PRECISIONS`` (or ``float32``/``bfloat16``/
    ``float64``), a :class:`Precision`, a ``jmp.Policy``, or ``None`` (no policy)."""
    if precision is None:
        return NO_POLICY
    if isinstance(precision, Precision):
        return precision
    if isinstance(precision, str):  # an alias resolves to a name PRECISIONS holds
        return lookup(PRECISIONS, _ALIASES.get(precision, precision), "precision")
    if all(hasattr(precision, a) for a in ("param_dtype", "compute_dtype", "output_dtype")):
        return Precision(str(precision), precision.param_dtype, precision.compute_dtype,
                         precision.output_dtype)  # a jmp.Policy
    raise ValueError(f"precision must be a name ({', '.join(PRECISIONS)}), a Precision or "
                     f"None, got {type(precision).__name__}")
