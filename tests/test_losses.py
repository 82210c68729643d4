"""Every loss: value and hand-written gradient against jax.grad (float32/float64) and against
central finite differences in float64; soft targets; bce's documented clipping."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp

TOL = {np.float32: dict(rtol=1e-5, atol=1e-7), np.float64: dict(rtol=1e-10, atol=1e-14)}
SHAPES = [(3,), (5, 3), (2, 4, 3)]


def make(name, shape, dtype, key=0, targets="default"):
    """Predictions and targets that suit loss ``name`` (probabilities for bce)."""
    rng = np.random.default_rng(key)  # NumPy: eager jax.random compiles per shape and dtype
    y = rng.normal(size=shape)
    if name == "bce":
        y = 1 / (1 + np.exp(-y))  # probabilities well inside (eps, 1 - eps)
        t = rng.uniform(size=shape)
    elif name == "bce_with_logits":
        t = rng.uniform(size=shape)
    elif name == "softmax_cross_entropy":
        if targets == "default":
            t = np.eye(shape[-1])[rng.integers(0, shape[-1], size=shape[:-1])]
        elif targets == "soft":  # rows of a probability distribution
            e = np.exp(rng.normal(size=shape))
            t = e / e.sum(-1, keepdims=True)
        else:  # "unnormalised": non-negative rows that do not sum to 1
            t = rng.uniform(size=shape) * 2
    elif name == "sparse_softmax_cross_entropy":  # integer class labels, one per example
        return jnp.asarray(y, dtype), jnp.asarray(rng.integers(0, shape[-1], size=shape[:-1]))
    else:
        t = rng.normal(size=shape)
    return jnp.asarray(y, dtype), jnp.asarray(t, dtype)


def central_differences(f, y, h=1e-6):
    """Central differences of the scalar ``f`` w.r.t. every entry of ``y`` (float64)."""
    eye = jnp.eye(y.size, dtype=y.dtype).reshape(y.size, *y.shape)
    central = jax.jit(jax.vmap(lambda e: (f(y + h * e) - f(y - h * e)) / (2 * h)))
    return central(eye).reshape(y.shape)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3,), (2, 4, 3)], ids=str)
@pytest.mark.parametrize("name", list(jp.LOSSES))
def test_value_and_grad_match_jax_grad(name, shape, dtype, jit):
    loss = jp.get_loss(name)
    y, t = make(name, shape, dtype)
    value_fn, grad_fn = (jax.jit(f) if jit else f for f in (loss.value, loss.grad))
    ref_value, ref_grad = jax.jit(jax.value_and_grad(loss.value))(y, t)
    value, grad = value_fn(y, t), grad_fn(y, t)
    assert value.shape == () and value.dtype == dtype and grad.dtype == dtype
    chex.assert_trees_all_close(value, ref_value, **TOL[dtype])
    chex.assert_trees_all_close(grad, ref_grad, **TOL[dtype])


@pytest.mark.long
@pytest.mark.x64
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(jp.LOSSES))
def test_grad_matches_finite_differences(name, shape):
    loss = jp.get_loss(name)
    y, t = make(name, shape, np.float64, key=1)
    fd = central_differences(lambda y: loss.value(y, t), y)
    chex.assert_trees_all_close(loss.grad(y, t), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("targets", ["soft", "unnormalised"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_softmax_cross_entropy_non_one_hot_targets(targets, dtype):
    loss = jp.get_loss("softmax_cross_entropy")
    y, t = make("softmax_cross_entropy", (6, 4), dtype, key=2, targets=targets)
    chex.assert_trees_all_close(loss.grad(y, t), jax.grad(loss.value)(y, t), **TOL[dtype])
    if dtype == np.float64:
        fd = central_differences(lambda y: loss.value(y, t), y)
        chex.assert_trees_all_close(loss.grad(y, t), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_bce_clips_saturated_probabilities(dtype):
    """losses.py: p is clipped to [eps, 1 - eps]; the gradient is the formula at the clipped p
    (straight through the clip, so saturated units keep learning); inside the range it equals
    jax.grad exactly."""
    loss = jp.get_loss("bce")
    eps = np.finfo(dtype).eps
    p = jnp.array([0.0, 1.0, 0.3, 0.9], dtype)
    t = jnp.array([1.0, 0.0, 1.0, 0.0], dtype)
    value, grad = loss.value(p, t), loss.grad(p, t)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    pc = jnp.clip(p, eps, 1 - eps)
    expected = (pc - t) / (pc * (1 - pc)) / p.size
    chex.assert_trees_all_close(grad, expected, **TOL[dtype])
    assert grad[0] < 0 and grad[1] > 0  # saturated wrong answers still get pushed back
    # jax.grad sees the clip as flat outside the range; inside, the two agree
    ref = jax.grad(loss.value)(p, t)
    assert ref[0] == 0 and ref[1] == 0
    chex.assert_trees_all_close(grad[2:], ref[2:], **TOL[dtype])
    chex.assert_trees_all_close(value, loss.value(pc, t), **TOL[dtype])


@pytest.mark.x64
def test_bce_with_logits_is_stable_for_large_logits():
    loss = jp.get_loss("bce_with_logits")
    z = jnp.array([-800.0, 800.0, 0.0], jnp.float64)
    t = jnp.array([1.0, 0.0, 0.5], jnp.float64)
    value, grad = loss.value(z, t), loss.grad(z, t)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    chex.assert_trees_all_close(value, (800.0 + 800.0 + np.log(2.0)) / 3, rtol=1e-12)
    chex.assert_trees_all_close(grad, jnp.array([-1.0, 1.0, 0.0]) / 3, rtol=1e-12)


@pytest.mark.parametrize("name", list(jp.LOSSES))
def test_loss_rejects_mismatched_shapes(name):
    loss = jp.get_loss(name)
    y, t = jnp.zeros((4, 3), jnp.float32) + 0.5, jnp.zeros((4, 2), jnp.float32)
    for fn in (loss.value, loss.grad):
        with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 2\)"):
            fn(y, t)
