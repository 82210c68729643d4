"""Integer class labels: ``sparse_softmax_cross_entropy`` and its hand-written gradient against
jax.grad (float32/float64) and finite differences, and ``fit`` on labels."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop.train import fit_state

SPARSE = jp.get_loss("sparse_softmax_cross_entropy")
DENSE = jp.get_loss("softmax_cross_entropy")
TOL = {np.float32: dict(rtol=1e-5, atol=1e-7), np.float64: dict(rtol=1e-10, atol=1e-14)}


def _logits_and_labels(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=shape) * 3, dtype)
    return z, jnp.asarray(rng.integers(0, shape[-1], size=shape[:-1]), jnp.int32)


@pytest.mark.long
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(4,), (6, 3), (2, 5, 4)], ids=str)
def test_equals_softmax_cross_entropy_on_one_hot_rows_and_jax_grad(shape, dtype):
    z, labels = _logits_and_labels(shape, dtype)
    one_hot = jax.nn.one_hot(labels, shape[-1], dtype=dtype)
    chex.assert_trees_all_close(SPARSE.value(z, labels), DENSE.value(z, one_hot), **TOL[dtype])
    chex.assert_trees_all_close(SPARSE.grad(z, labels), DENSE.grad(z, one_hot), **TOL[dtype])
    ref = jax.jit(jax.grad(SPARSE.value))(z, labels)
    chex.assert_trees_all_close(jax.jit(SPARSE.grad)(z, labels), ref, **TOL[dtype])
    assert SPARSE.grad(z, labels).dtype == dtype


@pytest.mark.x64
def test_gradient_matches_central_finite_differences():
    z, labels = _logits_and_labels((5, 4), np.float64, seed=3)
    h = 1e-6
    eye = jnp.eye(z.size, dtype=z.dtype).reshape(z.size, *z.shape)
    fd = jax.vmap(lambda e: (SPARSE.value(z + h * e, labels)
                             - SPARSE.value(z - h * e, labels)) / (2 * h))(eye)
    chex.assert_trees_all_close(SPARSE.grad(z, labels), fd.reshape(z.shape), rtol=1e-6,
                                atol=1e-9)


@pytest.mark.long
def test_network_gradient_and_bridge_match_jax_grad():
    model = jp.mlp([3, 6, 4], "tanh", loss=SPARSE)
    params = model.init(jax.random.key(0))
    x = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    value, grads = jp.value_and_grad(model, SPARSE, params, x, labels)
    ref = jax.value_and_grad(lambda p: SPARSE.value(model.apply(p, x), jnp.asarray(labels)))
    with jax.default_matmul_precision("highest"):
        chex.assert_trees_all_close((value, grads), ref(params), rtol=1e-5, atol=1e-6)
        f = jp.as_jax_function(model, SPARSE)
        chex.assert_trees_all_close(jax.grad(f)(params, x, labels), grads, rtol=1e-5,
                                    atol=1e-6)
    per_example, _ = jp.per_example_grads(model, SPARSE, params, x, labels)
    assert per_example.shape == (8,)


def test_fit_on_labels_trains_like_one_hot_targets():
    x, labels = np.random.default_rng(2).normal(size=(30, 3)).astype(np.float32), None
    labels = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)  # classes 0, 1, 2
    model = jp.mlp([3, 8, 3], "tanh", loss=SPARSE)
    opt = optax.adam(0.05)
    common = dict(epochs=40, key=jax.random.key(0), log_every=20)
    s_sparse, h_sparse = fit_state(model, SPARSE, opt, (x, labels), **common)
    s_dense, h_dense = fit_state(model, DENSE, opt, (x, np.eye(3, dtype=np.float32)[labels]),
                                 **common)
    chex.assert_trees_all_close(s_sparse.params, s_dense.params, rtol=1e-4, atol=1e-5)
    assert h_sparse.records[-1]["train_accuracy"] == h_dense.records[-1]["train_accuracy"]
    assert h_sparse.records[-1]["train_accuracy"] > 0.8


def test_bad_labels_are_clear_errors():
    model = jp.mlp([3, 4, 3], "tanh", loss=SPARSE)
    params = model.init(jax.random.key(0))
    x = np.ones((4, 3), np.float32)
    for labels, match in (([0, 1, 3, 0], "class label 3 but the model has 3 outputs"),
                          ([0, -1, 2, 0], "negative class label"),
                          ([0.5, 1, 2, 0], "fractional values"),
                          (np.zeros((4, 3), np.float32), "fractional|integer class labels")):
        with pytest.raises(ValueError, match=match):
            jp.value_and_grad(model, SPARSE, params, x, np.asarray(labels))
    with pytest.raises(ValueError, match=r"integer class labels of shape \(4,\)"):
        SPARSE.value(jnp.zeros((4, 3)), jnp.zeros((4, 3)))


def test_a_loss_over_classes_needs_two_outputs():
    z = jnp.zeros((5, 1))
    for loss, t in ((DENSE, jnp.ones((5, 1))), (SPARSE, jnp.zeros(5, jnp.int32))):
        for fn in (loss.value, loss.grad):
            with pytest.raises(ValueError, match="one output per class .* bce_with_logits"):
                fn(z, t)


def test_test_set_labels_are_checked_like_the_training_set():
    model = jp.mlp([3, 4, 3], "tanh", loss=SPARSE)
    x, labels = np.ones((4, 3), np.float32), np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="class label 7 but the model has 3 outputs"):
        jp.fit(model, SPARSE, 0.1, (x, labels, x, np.full(4, 7)), epochs=1,
               key=jax.random.key(0))
