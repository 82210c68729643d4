"""What ``fit`` and ``mlp`` check before training: outputs that suit the loss, NaN params, the
epoch counter, outputs that can reach the targets, no accuracy for a regression; plain SGD from
a number; ``bias_init``; bad params and batches in the API."""

import copy
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop.train import fit, fit_state

X = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
SIN = np.sin(3 * X)  # a regression in [-1, 1]


@pytest.mark.parametrize("out, loss, match", [
    ("identity", "bce", "takes probabilities"),
    ("relu", "bce", r"takes probabilities .* relu"),
    ("softmax", "softmax_cross_entropy", "takes logits"),
    ("sigmoid", "bce_with_logits", "takes logits"),
])
def test_fit_refuses_an_output_that_does_not_suit_the_loss(out, loss, match):
    width = 3 if loss == "softmax_cross_entropy" else 1
    model = jp.mlp([1, 4, width], "tanh", out)
    t = np.eye(width, dtype=np.float32)[np.arange(16) % width] if width > 1 else (X > 0) * 1.0
    with pytest.raises(ValueError, match=match):
        fit(model, loss, 0.1, (X, t.astype(np.float32)), epochs=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=match):  # and at construction, when mlp knows both
        jp.mlp([1, 4, width], "tanh", out, loss=loss)


def test_mlp_picks_the_output_from_the_loss_or_asks_for_it():
    with pytest.raises(ValueError, match="name the output activation"):
        jp.mlp([1, 8, 1], "tanh")
    last = lambda m: m.layers[-1].name  # noqa: E731
    assert last(jp.mlp([1, 8, 1], "tanh", loss="mse")) == "identity"
    assert last(jp.mlp([1, 8, 1], "tanh", loss="sse_half")) == "identity"
    assert last(jp.mlp([1, 8, 1], "tanh", loss="bce")) == "sigmoid"
    assert last(jp.mlp([1, 8, 1], "tanh", loss="bce_with_logits")) == "identity"
    assert last(jp.mlp([1, 8, 3], "tanh", loss="softmax_cross_entropy")) == "identity"
    # the regression from the issue: tanh hidden layers, sin(3x), mse -> it fits
    model = jp.mlp([1, 32, 32, 1], "tanh", loss="mse")
    params, history = fit(model, "mse", optax.adam(0.01), (X, SIN), epochs=300,
                          key=jax.random.key(0), log_every=300)
    assert history.records[-1]["train_loss"] < 0.01


def test_fit_warns_when_targets_lie_outside_the_output_range():
    model = jp.mlp([1, 8, 1], "tanh", "sigmoid")
    with pytest.warns(UserWarning, match=r"targets lie in \[-0.9854, 0.9854\].*sigmoid"):
        fit(model, "mse", 0.1, (X, SIN), epochs=1, key=jax.random.key(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # targets inside (0, 1): no warning
        fit(model, "mse", 0.1, (X, (SIN + 1) / 2), epochs=1, key=jax.random.key(0))


def test_no_accuracy_for_a_regression():
    model = jp.mlp([1, 8, 1], "tanh", "identity")
    _, history = fit(model, "mse", 0.1, (X, SIN, X, SIN), epochs=2, key=jax.random.key(0))
    assert "train_accuracy" not in history.records[-1]
    assert "test_accuracy" not in history.records[-1] and "test_loss" in history.records[-1]
    _, history = fit(model, "mse", 0.1, (X, (X > 0) * 1.0), epochs=2, key=jax.random.key(0))
    assert "train_accuracy" in history.records[-1]  # 0/1 targets: a classification


def test_a_number_as_optimizer_is_plain_sgd():
    model = jp.mlp([1, 8, 1], "tanh", "identity")
    common = dict(epochs=5, key=jax.random.key(0), batch_size=4)
    p_number, _ = fit(model, "mse", 0.1, (X, SIN), **common)
    p_sgd, _ = fit(model, "mse", optax.sgd(0.1), (X, SIN), **common)
    chex.assert_trees_all_equal(p_number, p_sgd)
    for bad in (0, -0.1, "fast", True):
        with pytest.raises(ValueError, match="positive learning rate"):
            fit(model, "mse", bad, (X, SIN), **common)


def test_bias_init_reaches_every_dense_layer():
    model = jp.mlp([2, 3, 1], "tanh", "identity", bias_init=jax.nn.initializers.constant(0.5))
    params = model.init(jax.random.key(0))
    assert all(np.all(np.asarray(p["b"]) == 0.5) for p in params if p)
    ones = jp.mlp([2, 3, 1], "tanh", "identity", bias_init="zeros").init(jax.random.key(0))
    assert all(np.all(np.asarray(p["b"]) == 0) for p in ones if p)


def test_nan_params_are_named_before_training():
    model = jp.mlp([1, 4, 1], "tanh", "identity")
    params = model.init(jax.random.key(0))
    params[2]["W"] = params[2]["W"].at[1, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"params contain NaN/Inf: params\[2\]\['W'\]"):
        fit(model, "mse", 0.1, (X, SIN), epochs=3, key=jax.random.key(0), params=params)


def test_the_epoch_counter_is_never_overrun():
    model = jp.mlp([1, 4, 1], "tanh", "identity")
    with pytest.raises(ValueError, match="more than the epoch counter holds"):
        fit(model, "mse", 0.1, (X, SIN), epochs=2**31, key=jax.random.key(0))


# --------------------------------------------------------------------------------------------
# bad params and batches in the API: one clear ValueError each

@pytest.fixture(scope="module")
def net():
    model = jp.mlp([3, 4, 2], "tanh", "identity")
    return model, model.init(jax.random.key(0)), np.ones((5, 3), np.float32), np.zeros(
        (5, 2), np.float32)


@pytest.mark.parametrize("damage, match", [
    (lambda p: p[0].update(b=np.zeros(5, np.float32)), r"b \(out,\); got W \(3, 4\) and b \(5,\)"),
    (lambda p: p[0].update(w=p[0].pop("W")), r"keys 'W' and 'b'; got \['b', 'w'\]"),
    (lambda p: p[2].update(W=np.ones((4, 2), np.int32)),
     r"params\[2\]\['W'\] has dtype int32; parameters must be floating point"),
], ids=["bias-length", "misspelt-key", "int-params"])
def test_bad_params_say_what_is_wrong(net, damage, match):
    model, params, x, t = net
    params = copy.deepcopy(jax.device_get(params))
    damage(params)
    with pytest.raises(ValueError, match=match):
        jp.value_and_grad(model, "mse", params, x, t)
    with pytest.raises(ValueError, match=match):
        fit(model, "mse", 0.1, (x, t), epochs=1, key=jax.random.key(0), params=params)


def test_an_empty_batch_is_an_error_not_nan(net):
    model, params, _, _ = net
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 3\)\)"):
        jp.value_and_grad(model, "mse", params, np.ones((0, 3), np.float32),
                          np.ones((0, 2), np.float32))


@pytest.mark.x64
def test_jax_float64_targets_are_cast_like_numpy_ones():
    model = jp.mlp([3, 4, 2], "tanh", "identity")  # float32 params
    x = np.random.default_rng(0).normal(size=(6, 3))
    t = jax.nn.one_hot(jnp.arange(6) % 2, 2)  # float64 under x64, as in the issue
    assert t.dtype == jnp.float64
    state, _ = fit_state(model, "softmax_cross_entropy", 0.1, (x, t), epochs=2,
                         key=jax.random.key(0))
    ref, _ = fit_state(model, "softmax_cross_entropy", 0.1,
                       (x.astype(np.float32), np.asarray(t, np.float32)), epochs=2,
                       key=jax.random.key(0))
    chex.assert_trees_all_equal(state.params, ref.params)
    assert jax.tree.leaves(state.params)[0].dtype == jnp.float32
