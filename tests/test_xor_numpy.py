"""The classic NumPy XOR program and jaxprop, from the same initial weights, agree to 1e-8.

2-4-1 sigmoid network, standard-normal weights, zero biases, gradient of the sum of squared
errors (1/2 sum (out - y)^2), learning rate 0.1, 10,000 full-batch epochs.
"""

import jax
import jax.numpy as jnp
import pytest
import numpy as np

import jaxprop as jp

from jaxprop.bench.numpy_baseline import XOR_T as Y
from jaxprop.bench.numpy_baseline import XOR_X as X
from jaxprop.bench.numpy_baseline import classic_xor

LR, EPOCHS, SEED = 0.1, 10_000, 0  # seed 0 solves XOR (some seeds get stuck in a local minimum)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_xor(W1, b1, W2, b2):
    """The textbook program (forward, deltas, in-place updates), in float64."""
    return classic_xor(*(np.array(a, np.float64) for a in (W1, b1, W2, b2)), lr=LR,
                       epochs=EPOCHS)


@pytest.mark.x64
def test_jaxprop_matches_numpy_xor_and_solves_it():
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal", dtype=jnp.float64)
    params = model.init(jax.random.key(SEED))
    assert np.all(np.asarray(params[0]["b"]) == 0) and np.all(np.asarray(params[2]["b"]) == 0)
    loss_and_grad = jp.loss_and_grad_fn(model, "sse_half")

    @jax.jit
    def train(params):
        def epoch(_, p):
            _, g = loss_and_grad(p, X, Y)
            return jax.tree.map(lambda w, dw: w - LR * dw, p, g)

        return jax.lax.fori_loop(0, EPOCHS, epoch, params)

    with jax.default_matmul_precision("highest"):
        trained = train(params)
        predictions = np.asarray(model.apply(trained, X))

    reference = numpy_xor(params[0]["W"], params[0]["b"], params[2]["W"], params[2]["b"])
    ours = (trained[0]["W"], trained[0]["b"], trained[2]["W"], trained[2]["b"])
    for name, a, b in zip(("W1", "b1", "W2", "b2"), ours, reference, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=0, atol=1e-8, err_msg=name)

    np.testing.assert_array_equal(np.round(predictions), Y)
    hidden = sigmoid(X @ reference[0] + reference[1])
    numpy_predictions = sigmoid(hidden @ reference[2] + reference[3])
    np.testing.assert_allclose(predictions, numpy_predictions, atol=1e-8)
