"""Helpers several test files share: the two checks every layer's hand-written backward faces
(tests/test_layers.py, tests/test_layers_cnn.py): jax.vjp of its own forward, and central finite
differences; the test layer ``Scale`` with its planted bugs (tests/test_gradcheck_catalogue.py,
tests/test_cli_check_user_code.py); and the FLOPs of a forward pass's products
(tests/test_bench*.py)."""

import contextlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_vjp

import jaxprop as jp

from jaxprop.train.compile import jaxpr_flops


def x64_if_float64(dtype):
    """``jax.enable_x64`` for a float64 ``dtype``, else nothing: the x64 marker of a
    unittest-style case (a pytest mark cannot pick its float64 parameters)."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def assert_backward_matches_vjp(variant, layer, params, state, x, dy, tol, **kw):
    """``layer.backward`` (run through ``variant``: with or without jit) equals ``jax.vjp`` of
    ``layer.forward``, and its gradients have the params' and the input's shapes and dtypes."""

    def hand(params, x, dy):
        y, residuals, _ = layer.forward(params, state, x, **kw)
        return y, layer.backward(params, residuals, dy)

    def reference(params, x, dy):
        y, vjp = jax.vjp(lambda p, x: layer.forward(p, state, x, **kw)[0], params, x)
        return y, vjp(dy)

    with jax.default_matmul_precision("highest"):
        y, (dparams, dx) = variant(hand)(params, x, dy)
        y_ref, (dparams_ref, dx_ref) = jax.jit(reference)(params, x, dy)
    chex.assert_trees_all_equal_shapes_and_dtypes(dparams, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(dx, x)
    chex.assert_trees_all_close(y, y_ref, **tol)
    chex.assert_trees_all_close(dparams, dparams_ref, **tol)
    chex.assert_trees_all_close(dx, dx_ref, **tol)


def assert_backward_matches_finite_differences(layer, params, state, x, *, rtol, atol, **kw):
    """``layer.backward`` against central finite differences of ``layer.forward`` (float64)."""

    def f(params, x):
        return layer.forward(params, state, x, **kw)[0]

    def f_vjp(params, x):
        y, residuals, _ = layer.forward(params, state, x, **kw)
        return y, lambda dy: layer.backward(params, residuals, dy)

    with jax.default_matmul_precision("highest"):
        check_vjp(f, f_vjp, (params, x), eps=1e-6, rtol=rtol, atol=atol)


def Scale(bug=None, *, name=None):
    """y = x * s, one learnable s per feature, s starting at 1 (docs/layers.md).

    ``bug`` plants a slip in the backward pass: ``"forgets_s"`` (dL/dx = dy: right only while
    s == 1), ``"first_example_only"`` (the batch sum dropped: right only for batch 1),
    ``"wrong_shaped_dparams"`` ((1, n) for an (n,) parameter), ``"none_grads"``,
    ``"wrong_dtype"`` (dx in bfloat16). The layer is named ``name``, by default ``scale``, or
    ``scale[bug]`` with a bug."""

    def init(key, in_shape):
        return {"s": jnp.ones(in_shape[-1:])}, (), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        return x * params["s"], x, state

    def backward(params, x, dy):
        ds = (dy * x).reshape(-1, x.shape[-1]).sum(0)
        dx = dy * params["s"]
        if bug == "forgets_s":
            dx = dy
        elif bug == "first_example_only":
            ds = (dy * x).reshape(-1, x.shape[-1])[0]
        elif bug == "wrong_shaped_dparams":
            ds = ds[None]
        elif bug == "none_grads":
            return None, dx
        elif bug == "wrong_dtype":
            dx = dx.astype(jnp.bfloat16)
        return {"s": ds}, dx

    name = name or ("scale" if bug is None else f"scale[{bug}]")
    return jp.Layer(init, forward, backward, name=name)


def product_flops(model, params, state, x_one) -> float:
    """FLOPs of the matmuls and convolutions alone in ``model``'s traced forward pass on
    ``x_one: (1, *in_shape)`` (what :func:`jaxprop.train.compile.forward_flops` counts, less the
    elementwise work)."""
    jaxpr = jax.make_jaxpr(lambda p, s, x: model.forward(p, s, x, train=False)[0])(
        params, state, x_one).jaxpr
    products = [e for e in jaxpr.eqns
                if e.primitive.name in ("dot_general", "conv_general_dilated")]
    return jaxpr_flops(jaxpr.replace(eqns=products))

