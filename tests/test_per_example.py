"""Per-example gradients against a Python loop over examples; norms and DP-SGD clipping."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.scale.per_example import clip_per_example, per_example_grads, per_example_norms


def _setup(dtype=jnp.float64, out="identity"):
    model = jp.mlp([3, 5, 2], activation="tanh", output_activation=out, dtype=dtype)
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (6, 3), dtype)
    t = jax.random.normal(jax.random.key(2), (6, 2), dtype)
    return model, params, x, t


@pytest.mark.long
@pytest.mark.x64
@pytest.mark.parametrize("loss", ["mse", "sse_half", "softmax_cross_entropy"])
@pytest.mark.parametrize("jit", [False, True])
def test_per_example_grads_match_loop(loss, jit):
    model, params, x, t = _setup()
    if loss == "softmax_cross_entropy":
        t = jax.nn.softmax(t)
    fn = jax.jit(per_example_grads, static_argnums=(0, 1)) if jit else per_example_grads
    losses, grads = fn(model, loss, params, x, t)
    assert losses.shape == (6,)
    for i in range(6):  # one example at a time, with a batch of one
        v, g = jp.value_and_grad(model, loss, params, x[i : i + 1], t[i : i + 1])
        np.testing.assert_allclose(losses[i], v, rtol=1e-12)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], grads), g, rtol=1e-10, atol=1e-12)


@pytest.mark.long
def test_mean_of_per_example_grads_is_batch_grad_and_matches_autodiff():
    model, params, x, t = _setup(jnp.float32)
    losses, grads = per_example_grads(model, "mse", params, x, t)
    value, batch_grads = jp.value_and_grad(model, "mse", params, x, t)
    np.testing.assert_allclose(losses.mean(), value, rtol=1e-6)
    chex.assert_trees_all_close(jax.tree.map(lambda g: g.mean(0), grads), batch_grads, atol=1e-6)
    loss = jp.get_loss("mse")
    auto = jax.vmap(jax.grad(lambda p, xi, ti: loss.value(model.apply(p, xi), ti)),
                    in_axes=(None, 0, 0))(params, x, t)
    chex.assert_trees_all_close(grads, auto, rtol=1e-5, atol=1e-6)


@pytest.mark.long
@pytest.mark.x64
def test_norms_and_clipping_match_loop():
    model, params, x, t = _setup()
    _, grads = per_example_grads(model, "sse_half", params, x, t)
    norms = per_example_norms(grads)
    max_norm = float(np.median(norms))  # about half the examples get clipped
    clipped = clip_per_example(grads, max_norm)
    expected, n_clipped = None, 0
    for i in range(6):
        g = jax.tree.map(lambda a: a[i], grads)
        norm = np.sqrt(sum(np.sum(np.asarray(leaf) ** 2) for leaf in jax.tree.leaves(g)))
        np.testing.assert_allclose(norms[i], norm, rtol=1e-12)
        scale = min(1.0, max_norm / norm)
        n_clipped += scale < 1
        g = jax.tree.map(lambda a: a * scale / 6, g)
        expected = g if expected is None else jax.tree.map(jnp.add, expected, g)
    assert 0 < n_clipped < 6
    chex.assert_trees_all_close(clipped, expected, rtol=1e-12)
    clipped_norms = per_example_norms(jax.tree.map(
        lambda a: a * jnp.minimum(1, max_norm / norms).reshape((-1,) + (1,) * (a.ndim - 1)), grads))
    assert np.all(clipped_norms <= max_norm * (1 + 1e-12))
    # a huge max_norm clips nothing: the plain mean
    plain_mean = jax.tree.map(lambda a: a.mean(0), grads)
    chex.assert_trees_all_close(clip_per_example(grads, 1e9), plain_mean)


@pytest.mark.x64
def test_zero_gradient_is_not_nan_and_bad_input_is_reported():
    model, params, x, _ = _setup()
    t = model.apply(params, x)  # perfect fit: every gradient is exactly zero
    _, grads = per_example_grads(model, "sse_half", params, x, t)
    assert np.all(np.isfinite(jax.tree.leaves(clip_per_example(grads, 1.0))[0]))
    with pytest.raises(ValueError, match="max_norm"):
        clip_per_example(grads, -1.0)
    with pytest.raises(ValueError, match="batch axis"):
        per_example_grads(model, "mse", params, x[0], t[0])
    with pytest.raises(ValueError, match="NaN"):
        per_example_grads(model, "mse", params, x.at[2, 1].set(jnp.nan), t)
