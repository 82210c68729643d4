"""Per-example gradients: jax.vmap of the hand-written value_and_grad equals a Python loop."""

import chex
import jax
import jax.numpy as jnp
import pytest

import jaxprop as jp


@pytest.mark.long
@pytest.mark.x64
@pytest.mark.parametrize(
    "sizes, act, out_act, loss",
    [
        ([3, 5, 2], "tanh", "identity", "mse"),
        ([2, 4, 1], "sigmoid", "sigmoid", "sse_half"),
        ([4, 6, 6, 3], "relu", "identity", "softmax_cross_entropy"),
        ([3, 4, 2], "gelu", "sigmoid", "bce"),
    ],
)
def test_vmap_per_example_gradients_equal_a_loop(sizes, act, out_act, loss):
    model = jp.mlp(sizes, act, out_act, dtype=jnp.float64)
    kp, kx, kt = jax.random.split(jax.random.key(3), 3)
    params = model.init(kp)
    n = 6
    x = jax.random.normal(kx, (n, sizes[0]), jnp.float64)
    t = jax.random.uniform(kt, (n, sizes[-1]), jnp.float64)
    if loss == "softmax_cross_entropy":
        t = t / t.sum(-1, keepdims=True)

    per_example = jax.vmap(
        lambda p, x, t: jp.value_and_grad(model, loss, p, x, t), in_axes=(None, 0, 0)
    )
    values, grads = per_example(params, x, t)
    assert values.shape == (n,)
    for i in range(n):
        value_i, grads_i = jp.value_and_grad(model, loss, params, x[i], t[i])
        chex.assert_trees_all_close(values[i], value_i, rtol=1e-12)
        chex.assert_trees_all_close(
            jax.tree.map(lambda g: g[i], grads), grads_i, rtol=1e-12, atol=1e-15
        )

    # the same through the pure function, jitted, and its sum over examples is the batch gradient
    fn = jax.jit(jax.vmap(jp.loss_and_grad_fn(model, loss), in_axes=(None, 0, 0)))
    values2, grads2 = fn(params, x, t)
    chex.assert_trees_all_close((values2, grads2), (values, grads), rtol=1e-12, atol=1e-15)
    if loss == "sse_half":  # a sum over examples: per-example gradients add up to the batch's
        _, batch_grads = jp.value_and_grad(model, loss, params, x, t)
        chex.assert_trees_all_close(
            jax.tree.map(lambda g: g.sum(0), grads), batch_grads, rtol=1e-12, atol=1e-15
        )
