"""The custom_vjp bridge: jax.grad of it is the hand-written backward, equal to plain autodiff."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop.data import xor
from jaxprop.scale.bridge import as_jax_function

TOL = {jnp.float32: dict(rtol=2e-5, atol=2e-6), jnp.float64: dict(rtol=1e-10, atol=1e-12)}
CASES = [  # (loss, output activation, target maker)
    ("mse", "identity", lambda z: z),
    ("sse_half", "sigmoid", lambda z: jax.nn.sigmoid(z)),
    ("bce", "sigmoid", lambda z: jax.nn.sigmoid(z)),
    ("bce_with_logits", "identity", lambda z: jax.nn.sigmoid(z)),
    ("softmax_cross_entropy", "identity", lambda z: jax.nn.softmax(z)),
]


def _setup(out, make_t, dtype):
    model = jp.mlp([3, 4, 2], activation="tanh", output_activation=out, dtype=dtype)
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 3), dtype)
    t = make_t(jax.random.normal(jax.random.key(2), (5, 2), dtype))
    return model, params, x, t


def _plain(model, loss):
    loss = jp.get_loss(loss)
    return lambda p, x, t: loss.value(model.apply(p, x), t)


@pytest.mark.long
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("loss,out,make_t", CASES)
def test_grad_wrt_params_x_and_t_equals_autodiff(loss, out, make_t, dtype):
    model, params, x, t = _setup(out, make_t, dtype)
    f = as_jax_function(model, loss)
    value, grads = jax.value_and_grad(f, argnums=(0, 1, 2))(params, x, t)
    ref_value, ref = jax.value_and_grad(_plain(model, loss), argnums=(0, 1, 2))(params, x, t)
    np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    chex.assert_trees_all_close(grads, ref, **TOL[dtype])
    assert jax.tree.map(lambda a: a.dtype, grads) == jax.tree.map(lambda a: a.dtype, ref)


@pytest.mark.long
@pytest.mark.x64
def test_under_jit_and_vmap():
    model, params, x, t = _setup("identity", lambda z: z, jnp.float64)
    f, plain = as_jax_function(model, "mse"), _plain(model, "mse")
    g = jax.jit(jax.grad(f, argnums=(0, 1)))(params, x, t)
    chex.assert_trees_all_close(g, jax.grad(plain, argnums=(0, 1))(params, x, t), rtol=1e-10)
    # per-example gradients through the bridge, and vmap over stacked params (a population)
    per_ex = jax.vmap(jax.grad(f), in_axes=(None, 0, 0))(params, x, t)
    ref = jax.vmap(jax.grad(plain), in_axes=(None, 0, 0))(params, x, t)
    chex.assert_trees_all_close(per_ex, ref, rtol=1e-10, atol=1e-12)
    stacked = jax.vmap(model.init)(jax.random.split(jax.random.key(3), 4))
    pop = jax.jit(jax.vmap(jax.value_and_grad(f), in_axes=(0, None, None)))(stacked, x, t)
    ref = jax.vmap(jax.value_and_grad(plain), in_axes=(0, None, None))(stacked, x, t)
    chex.assert_trees_all_close(pop, ref, rtol=1e-10, atol=1e-12)
    # the cotangent is honoured (scaled loss, sum of two calls)
    h = lambda p: 3.0 * f(p, x, t) + f(p, 2 * x, t)  # noqa: E731
    href = lambda p: 3.0 * plain(p, x, t) + plain(p, 2 * x, t)  # noqa: E731
    chex.assert_trees_all_close(jax.grad(h)(params), jax.grad(href)(params), rtol=1e-10)


@pytest.mark.x64
def test_custom_loss_gets_zero_target_gradient():
    model, params, x, t = _setup("identity", lambda z: z, jnp.float64)
    base = jp.get_loss("mse")
    custom = jp.Loss(base.value, base.grad, "my_mse", reduction="mean_all", from_logits=False)
    gp, gt = jax.grad(as_jax_function(model, custom), argnums=(0, 2))(params, x, t)
    chex.assert_trees_all_close(gp, jax.grad(_plain(model, "mse"))(params, x, t), rtol=1e-10)
    assert not np.any(gt)


def test_optax_training_loop_with_jax_grad_trains():
    model = jp.mlp([2, 8, 1], activation="tanh", output_activation="identity")
    x, t = xor()
    f = as_jax_function(model, "bce_with_logits")
    opt = optax.adam(0.05)
    params = model.init(jax.random.key(0))

    @jax.jit
    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(f)(params, x, t)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), length=500)
    assert losses[-1] < 0.05 < losses[0]
    assert np.array_equal(model.apply(params, x) > 0, t > 0.5)
