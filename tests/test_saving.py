"""jp.save / jp.load: the architecture as text, params as arrays, never a pickle."""

import pickle

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprop as jp
from jaxprop import checkpoint
from jaxprop.data import xor
from jaxprop.train import init_state

X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)


def test_round_trip_rebuilds_the_model_and_keeps_extra(tmp_path):
    model = jp.mlp([3, 8, 8, 2], ["relu", "tanh"], "identity")
    params = model.init(jax.random.key(0))
    mean = np.arange(3, dtype=np.float64)
    path = jp.save(tmp_path / "m.npz", model, params, classes=["cat", "dog"], mean=mean,
                   epochs=7, notes={"lr": 0.1})
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickle
        assert "__header__" in z.files
    loaded, p2, extra = jp.load(path)
    assert loaded.spec == model.spec == "dense(8)-relu-dense(8)-tanh-dense(2)-identity"
    assert loaded.in_shape == (3,)
    chex.assert_trees_all_equal(p2, params)
    np.testing.assert_array_equal(loaded.apply(p2, X), model.apply(params, X))
    assert extra["classes"] == ["cat", "dog"] and extra["epochs"] == 7
    assert extra["notes"] == {"lr": 0.1}
    np.testing.assert_array_equal(extra["mean"], mean)
    assert extra["mean"].dtype == np.float64


def test_a_model_built_from_text_and_a_trained_one(tmp_path):
    model = jp.parse_model("dense(4)-sigmoid-dense(1)-sigmoid", (2,))
    x, t = xor()
    params, _ = jp.fit(model, "sse_half", optax.sgd(0.5), (x, t), epochs=50,
                       key=jax.random.key(1))
    jp.save(tmp_path / "xor.npz", model, params)
    loaded, p2, extra = jp.load(tmp_path / "xor.npz")
    assert extra == {}
    np.testing.assert_array_equal(loaded.apply(p2, x), model.apply(params, x))


def _running_mean_layer():
    """A custom layer with state (no spec): passes x through, keeps the mean of its inputs."""
    def init(key, in_shape):
        return (), jnp.zeros(in_shape), tuple(in_shape)

    def forward(params, state, x, *, key=None, train=True):
        new = 0.9 * state + 0.1 * x.mean(0) if train else state
        return x, None, new

    return jp.Layer(init, forward, lambda p, r, dy: ((), dy), name="running_mean")


def test_a_custom_model_with_state_needs_its_model(tmp_path):
    model = jp.serial(jp.Dense(4), _running_mean_layer(), jp.Dense(1), in_shape=(3,))
    assert model.spec is None
    params, state = model.init_with_state(jax.random.key(0))
    state = [s + 1.5 if hasattr(s, "shape") else s for s in state]
    jp.save(tmp_path / "c.npz", model, params, state=state, name="mine")
    with pytest.raises(ValueError, match=r"layers of its own .* jp.load\(path, model=model\)"):
        jp.load(tmp_path / "c.npz")
    loaded, p2, extra = jp.load(tmp_path / "c.npz", model=model)
    assert loaded is model and extra["name"] == "mine"
    chex.assert_trees_all_equal(p2, params)
    chex.assert_trees_all_equal(extra["state"], state)
    jp.save(tmp_path / "nostate.npz", model, params)
    with pytest.raises(ValueError, match="has state .* holds none"):
        jp.load(tmp_path / "nostate.npz", model=model)


def test_a_custom_elementwise_layer_names_itself(tmp_path):
    def backward(x, dy):
        s = jax.nn.sigmoid(x)
        return dy * s * (1 + x * (1 - s))

    swish = jp.elementwise("swish", lambda x: (x * jax.nn.sigmoid(x), x), backward)
    model = jp.serial(jp.Dense(2), swish, in_shape=(3,))
    jp.save(tmp_path / "s.npz", model, model.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"unknown layer 'swish'.*model=model"):
        jp.load(tmp_path / "s.npz")
    assert jp.load(tmp_path / "s.npz", model=model)[0] is model


def test_the_wrong_model_and_bad_extras_are_clear_errors(tmp_path):
    model = jp.mlp([3, 4, 2], "tanh", "identity")
    jp.save(tmp_path / "m.npz", model, model.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] has shape \(3, 4\), expected"):
        jp.load(tmp_path / "m.npz", model=jp.mlp([3, 5, 2], "tanh", "identity"))
    with pytest.raises(ValueError, match="do not match"):
        jp.load(tmp_path / "m.npz", model=jp.mlp([3, 4, 4, 2], "tanh", "identity"))
    with pytest.raises(ValueError, match="extra 'fn' is neither an array nor a JSON value"):
        jp.save(tmp_path / "x.npz", model, model.init(jax.random.key(0)), fn=print)
    with pytest.raises(ValueError, match="no input shape"):
        jp.save(tmp_path / "y.npz", jp.serial(jp.Dense(2)), [{"W": np.ones((3, 2)),
                                                               "b": np.ones(2)}])


def test_double_precision_params_need_x64_to_load(tmp_path):
    with jax.enable_x64(True):
        model = jp.mlp([3, 2], output_activation="identity", dtype=jnp.float64)
        jp.save(tmp_path / "f64.npz", model, model.init(jax.random.key(0)))
        params = jp.load(tmp_path / "f64.npz")[1]
        assert params[0]["W"].dtype == jnp.float64
    with pytest.raises(ValueError, match=r"is float64; enable float64 first"):
        jp.load(tmp_path / "f64.npz")


@pytest.mark.parametrize("kind", ["pickle", "text", "npy", "checkpoint", "missing"])
def test_foreign_files_are_refused_without_unpickling(tmp_path, kind):
    path = tmp_path / "m.npz"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"W": np.ones(3)}))
        match = "a Python pickle"
    elif kind == "text":
        path.write_text("W,b\n1,2\n")
        match = "not a zip archive"
    elif kind == "npy":
        np.save(open(path, "wb"), np.ones(3))
        match = "a single .npy array"
    elif kind == "checkpoint":
        model = jp.mlp([3, 2], output_activation="identity")
        checkpoint.save(path, init_state(model, optax.sgd(0.1), jax.random.key(0)))
        match = "not a jaxprop model file .format 'jaxprop-checkpoint'"
    else:
        with pytest.raises(FileNotFoundError, match="no saved model"):
            jp.load(path)
        return
    with pytest.raises(ValueError, match=match) as info:
        jp.load(path)
    assert str(path) in str(info.value) and "allow_pickle" not in str(info.value)
