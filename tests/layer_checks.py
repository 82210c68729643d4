"""Helpers several test files share: the two checks every layer's hand-written backward faces
(tests/test_layers.py, tests/test_layers_cnn.py): jax.vjp of its own forward, and central finite
differences; and the FLOPs of a forward pass's products (tests/test_bench*.py)."""

import chex
import jax
from jax.test_util import check_vjp

from jaxprop.train.compile import jaxpr_flops


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


def product_flops(model, params, state, x_one) -> float:
    """FLOPs of the matmuls and convolutions alone in ``model``'s traced forward pass on
    ``x_one: (1, *in_shape)`` (what :func:`jaxprop.train.compile.forward_flops` counts, less the
    elementwise work)."""
    jaxpr = jax.make_jaxpr(lambda p, s, x: model.forward(p, s, x, train=False)[0])(
        params, state, x_one).jaxpr
    products = [e for e in jaxpr.eqns
                if e.primitive.name in ("dot_general", "conv_general_dilated")]
    return jaxpr_flops(jaxpr.replace(eqns=products))

