"""Hypothesis: random architectures, activations, losses and batch sizes; the hand-written
gradient equals jax.grad in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprop as jp

ACTS = list(jp.ACTIVATIONS)
# output activations each loss accepts (bce needs probabilities; sigmoid keeps them inside the
# clip range, where bce's gradient is jax.grad's)
OUTPUT_ACTS = {
    "sse_half": ACTS,
    "mse": ACTS,
    "bce": ["sigmoid"],
    "bce_with_logits": ["identity", "tanh", "softplus", "gelu"],
    "softmax_cross_entropy": ["identity", "tanh", "leaky_relu", "gelu_tanh"],
}


@st.composite
def problems(draw):
    depth = draw(st.integers(1, 5))  # Dense layers
    sizes = draw(st.lists(st.integers(1, 64), min_size=depth + 1, max_size=depth + 1))
    hidden = draw(st.lists(st.sampled_from(ACTS), min_size=depth - 1, max_size=depth - 1))
    loss = draw(st.sampled_from(list(OUTPUT_ACTS)))
    out_act = draw(st.sampled_from(OUTPUT_ACTS[loss]))
    if jp.get_loss(loss).categorical:  # one output per class: a single output is refused
        sizes[-1] = max(sizes[-1], 2)
    batch = draw(st.integers(1, 32))
    seed = draw(st.integers(0, 2**31 - 1))
    return sizes, hidden, out_act, loss, batch, seed


def targets(loss, rng, shape):
    if loss in ("bce", "bce_with_logits"):
        return rng.uniform(size=shape)
    if loss == "softmax_cross_entropy":
        z = np.exp(3 * rng.normal(size=shape))
        return z / z.sum(-1, keepdims=True)
    return rng.normal(size=shape)


def random_params(model, rng):
    """Glorot-scaled float64 params drawn with NumPy (jax.random would compile per shape)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0))

    def draw(leaf):
        if len(leaf.shape) == 2:
            return rng.normal(size=leaf.shape) * np.sqrt(2.0 / sum(leaf.shape))
        return 0.1 * rng.normal(size=leaf.shape)

    return jax.tree.map(draw, shapes)


@pytest.mark.long
@pytest.mark.x64
@settings(max_examples=25, deadline=None)
@given(problems())
def test_hand_written_gradient_equals_jax_grad(problem):
    sizes, hidden, out_act, loss_name, batch, seed = problem
    model = jp.mlp(sizes, hidden, out_act, dtype=jnp.float64)
    loss = jp.get_loss(loss_name)

    rng = np.random.default_rng(seed)
    params = random_params(model, rng)
    x = rng.normal(size=(batch, sizes[0]))
    t = targets(loss_name, rng, (batch, sizes[-1]))

    @jax.jit  # one compilation per example
    def both(params, x, t):
        hand = jp.loss_and_grad_fn(model, loss)(params, x, t)
        ref = jax.value_and_grad(lambda p: loss.value(model.apply(p, x), t))(params)
        return hand, ref

    with jax.default_matmul_precision("highest"):
        (value, grads), (ref_value, ref_grads) = both(params, x, t)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13 * scale + 1e-300,
                                   err_msg=f"{model.describe()} loss {loss_name} batch {batch}")
    assert jax.tree.structure(grads) == jax.tree.structure(params)
