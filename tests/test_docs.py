"""The examples of docs/layers.md run as written, and the facts the text states hold."""

from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from doc_blocks import python_blocks, run_blocks

import jaxprop as jp
from jaxprop.core import spec

DOC = Path(__file__).resolve().parents[1] / "docs" / "layers.md"


@pytest.fixture(scope="module")
def namespace():
    assert len(python_blocks("docs/layers.md")) == 6
    before = dict(spec.LAYER_SPECS)
    yield run_blocks("docs/layers.md", {})
    for name in set(spec.USER_LAYERS) - set(before):  # the page's "swish": not for other tests
        spec.LAYER_SPECS.pop(name, None)
        spec.USER_LAYERS.pop(name, None)
        spec.ARGUMENT_PARSERS.pop(name, None)


@pytest.mark.long
def test_every_custom_layer_trains_inside_fit(namespace):
    ns = namespace
    assert ns["history"].records[-1]["test_accuracy"] > 0.8
    mean = np.asarray(ns["state_after"].model_state[0]["mean"])
    assert mean.shape == (2,) and np.all(np.isfinite(mean))
    assert np.all(np.abs(mean) < 0.5)  # standardised inputs: the running mean stays near 0


def test_the_stateful_layer_refuses_a_padded_minibatch(namespace):
    ns = namespace
    model = jp.serial(ns["Center"](), jp.Dense(1), in_shape=(2,))
    with pytest.raises(ValueError, match="drop_last=True"):
        jp.fit(model, "bce_with_logits", optax.sgd(0.1), ns["data"], epochs=1, batch_size=48,
               key=jax.random.key(0))
    with pytest.raises(ValueError, match="couples the examples"):
        jp.per_example_grads(model, "bce_with_logits", model.init_with_state(
            jax.random.key(0))[0], ns["data"].x_train[:4], ns["data"].y_train[:4])


def test_dropout_example_is_the_identity_in_evaluation(namespace):
    ns = namespace
    layer = ns["MyDropout"](0.5)
    x = np.ones((4, 6), np.float32)
    y, _, _ = layer.forward((), (), x, key=jax.random.key(0), train=True)
    assert set(np.unique(np.asarray(y))) <= {0.0, 2.0}
    y_eval, _, _ = layer.forward((), (), x, train=False)
    np.testing.assert_array_equal(np.asarray(y_eval), x)


def test_the_cnn_example_is_its_own_text(namespace):
    ns = namespace
    assert ns["cnn"].spec == ("conv(16,3)-relu-maxpool(2)-conv(32,3)-relu-flatten-dense(64)-relu-"
                              "dropout(0.2)-dense(10)")
    assert ns["same"].describe() == ns["cnn"].describe()


def test_every_shipped_layer_has_a_row_in_the_table():
    text = DOC.read_text()
    for name in ("Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "Reshape", "LayerNorm",
                 "BatchNorm", "Dropout", "Residual", "Dense", "Repeat", "Embedding",
                 "PositionalEmbedding", "CausalSelfAttention"):
        assert f"| `{name}(" in text, name


def test_the_activation_facts_hold_as_documented():
    from jaxprop.core.network import default_init

    for layer in (jp.Relu(), jp.LeakyRelu(0.2), jp.Gelu(), jp.Gelu(approximate=True)):
        assert layer.is_activation and layer.preferred_init == "he", layer
    for layer in (jp.Sigmoid(), jp.Tanh()):
        assert layer.is_activation and layer.preferred_init is None, layer
    assert not jp.Dense(3).is_activation and not jp.Flatten().is_activation
    custom = jp.elementwise("cube", lambda x: (x ** 3, x), lambda x, dy: 3 * x * x * dy,
                            preferred_init="he")
    assert custom.is_activation and custom.preferred_init == "he"
    assert (default_init("relu"), default_init("tanh"), default_init(custom)) == (
        "he", "glorot", "he")
    text = DOC.read_text()
    assert "`is_activation=True`" in text and "`preferred_init`" in text


def test_a_registered_layer_round_trips_through_its_text(namespace):
    ns = namespace
    assert ns["again"].spec == ns["model"].spec == "dense(16)-swish(2.0)-dense(16)-swish-dense(1)"
    assert ns["Swish"](0.5).spec == "swish(0.5)"

