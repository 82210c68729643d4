"""Textual architectures: parse, round trip through Layer.spec, clear errors."""

import jax
import numpy as np
import pytest

import jaxprop as jp


def test_parse_model_builds_the_described_network():
    model = jp.parse_model("dense(16)-relu-dense(8)-leaky_relu(0.2)-dense(3)", (5,))
    assert [layer.name for layer in model.layers] == [
        "Dense(16)", "relu", "Dense(8)", "leaky_relu", "Dense(3)"]
    params = model.init(jax.random.key(0))
    assert model.apply(params, np.ones((2, 5), np.float32)).shape == (2, 3)
    assert model.spec == "dense(16)-relu-dense(8)-leaky_relu(0.2)-dense(3)"


def test_spec_round_trips_for_mlp_and_nested_serial():
    model = jp.mlp([4, 8, 8, 2], ["tanh", "gelu_tanh"], "sigmoid")
    assert model.spec == "dense(8)-tanh-dense(8)-gelu_tanh-dense(2)-sigmoid"
    again = jp.parse_model(model.spec, (4,))
    assert again.spec == model.spec and again.describe() == model.describe()
    nested = jp.serial(jp.mlp([4, 3], "relu", "relu"), jp.Dense(2), in_shape=(4,))
    assert nested.spec == "dense(3)-relu-dense(2)"


@pytest.mark.parametrize("text, message", [
    ("dense(16)-swish", "unknown layer 'swish'"),
    ("dense(x)", "not a number"),
    ("dense()", "usage: dense(n)"),
    ("relu(3)", "usage: relu"),
    ("dense(16", "cannot read layer"),
    ("", "non-empty"),
])
def test_bad_architectures_are_named(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        jp.parse_model(text, (4,))
    if "unknown" in message:
        assert "dense(n)" in str(info.value) and "sigmoid" in str(info.value)


def test_a_custom_layer_has_no_spec():
    layer = jp.Layer(lambda k, s: ((), (), s), lambda p, s, x, **kw: (x, None, s),
                     lambda p, r, dy: ((), dy), name="mine")
    assert jp.serial(layer, jp.Dense(2)).spec is None
