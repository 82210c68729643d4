import jax
import jax.numpy as jnp
import pytest

import jaxprop as jp


@pytest.mark.x64
def test_mlp_gradient_matches_jax_grad():
    model = jp.mlp([3, 5, 2], activation="tanh", output_activation="identity", dtype=jnp.float64)
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    t = jax.random.normal(jax.random.key(2), (4, 2), jnp.float64)
    value, grads = jp.value_and_grad(model, "mse", params, x, t)
    loss = jp.get_loss("mse")
    ref_value, ref_grads = jax.value_and_grad(lambda p: loss.value(model.apply(p, x), t))(params)
    assert jnp.allclose(value, ref_value)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        assert jnp.allclose(g, r, rtol=1e-10, atol=1e-12)
