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
    ("dense(16", "architecture 'dense(16': 1 '(' never closed"),
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


CNN = "conv(16,3)-relu-maxpool(2)-conv(32,3)-relu-flatten-dense(64)-relu-dropout(0.2)-dense(10)"


def test_the_issue_cnn_parses_into_the_layers_it_names():
    model = jp.parse_model(CNN, (8, 8, 1))
    assert [layer.name for layer in model.layers] == [
        "Conv2D(16, 3x3)", "relu", "MaxPool2D(2x2)", "Conv2D(32, 3x3)", "relu", "Flatten()",
        "Dense(64)", "relu", "Dropout(0.2)", "Dense(10)"]
    assert model.spec == CNN
    params = model.init(jax.random.key(0))
    assert params[0]["W"].shape == (3, 3, 1, 16) and params[6]["W"].shape == (4 * 4 * 32, 64)
    assert model.apply(params, np.ones((2, 8, 8, 1), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("text, in_shape", [
    ("conv(4,3,2,padding=valid,dilation=2,bias=0)-avgpool(2,1,padding=same)-flatten", (9, 9, 2)),
    ("conv(4,3,padding=1)-maxpool(3,2,padding=1)-flatten", (6, 6, 1)),
    ("dense(12)-reshape(2,3,2)-layernorm(eps=0.001)-flatten", (5,)),
    ("dense(8)-batchnorm(momentum=0.99,eps=0.0001)-residual(dense(8)-tanh-dense(8))", (3,)),
    ("residual(residual(dense(3)-relu)-dense(3))-reshape(3,1)-flatten(2)", (3,)),
    ("dense(6)-reshape(2,3)-reshape(3,2,in_ndim=2)-flatten(2)", (4,)),
    ("residual(layernorm)-dropout(0.5)-leaky_relu(0.2)", (4,)),
])
def test_every_new_layer_round_trips_through_its_text(text, in_shape):
    model = jp.parse_model(text, in_shape)
    assert model.spec == text
    again = jp.parse_model(model.spec, in_shape)
    assert again.describe() == model.describe()
    a = jax.eval_shape(lambda k: model.init(k, in_shape)[:2], jax.random.key(0))
    b = jax.eval_shape(lambda k: again.init(k, in_shape)[:2], jax.random.key(0))
    assert jax.tree.structure(a) == jax.tree.structure(b)


def test_python_layers_give_the_same_text():
    model = jp.serial(jp.Conv2D(8, 3, strides=2), jp.Relu(), jp.MaxPool2D(2), jp.Flatten(),
                      jp.Dense(4), jp.LayerNorm(), jp.Residual(jp.serial(jp.Dense(4), jp.Tanh())),
                      jp.Dropout(0.1), in_shape=(8, 8, 3))
    assert model.spec == ("conv(8,3,2)-relu-maxpool(2)-flatten-dense(4)-layernorm-"
                          "residual(dense(4)-tanh)-dropout(0.1)")
    # what text cannot say (non-square kernels) leaves no text rather than a wrong one
    assert jp.Conv2D(8, (3, 1)).spec is None and jp.MaxPool2D((2, 1)).spec is None
    assert jp.serial(jp.Conv2D(8, (3, 1)), jp.Relu()).spec is None


@pytest.mark.parametrize("text, message", [
    ("conv(16)", "missing 1 required positional argument: 'kernel'"),
    ("conv(16,3,foo=1)", "unexpected keyword argument 'foo'"),
    ("conv(16,3,padding=full)", "padding must be"),
    ("conv(16,3,bias=2)", "bias must be 0 or 1"),
    ("maxpool(0)", "window must be"),
    ("dropout(1.5)", "rate must be a number in [0, 1)"),
    ("dropout", "missing 1 required positional argument"),
    ("batchnorm(momentum=2)", "momentum must be"),
    ("residual", "give the layers inside"),
    ("residual(dense(3)-swish)", "unknown layer 'swish'"),
    ("flatten(0)", "ndim must be a positive int"),
])
def test_bad_layer_arguments_name_the_layer_and_its_usage(text, message):
    with pytest.raises(ValueError) as info:
        jp.parse_model(text, (8, 8, 1))
    assert message in str(info.value)
    if "unknown" not in message:
        assert "usage:" in str(info.value)
