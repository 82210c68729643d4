"""The one registry lookup (jaxprop/core/registry.py) and the registries that use it."""

import jax.numpy as jnp
import pytest

import jaxprop as jp
from jaxprop.core.registry import lookup, unknown
from jaxprop.core.spec import parse_layer
from jaxprop.data import load
from jaxprop.tools import explain, presets

TABLE = {"b": 2, "a": 1}


def test_lookup_finds_a_name():
    assert lookup(TABLE, "a", "thing") == 1


@pytest.mark.parametrize("name, shown", [("c", "'c'"), (3, "3"), (["a"], r"\['a'\]"),
                                         (None, "None")])
def test_lookup_names_what_is_unknown_and_what_is_known(name, shown):
    with pytest.raises(ValueError, match=rf"^unknown thing {shown}; known: b, a$"):
        lookup(TABLE, name, "thing")


def test_the_wording_can_be_adapted():
    message = str(unknown("layer", "x", ["n(1)", "m"], where=" here", known_as="known layers"))
    assert message == "unknown layer 'x' here; known layers: n(1), m"
    with pytest.raises(ValueError, match=r"^unknown thing <c>; known: a, b$"):
        lookup(TABLE, "c", "thing", known=sorted(TABLE), show=lambda v: f"<{v}>")


@pytest.mark.parametrize("find, message", [
    (lambda: jp.activation("swish"), "unknown activation 'swish'; known: sigmoid, tanh"),
    (lambda: jp.get_loss("hinge"), "unknown loss 'hinge'; known: sse_half, mse"),
    (lambda: jp.Dense(2, W_init="xavier"), "unknown initializer 'xavier'; known: glorot, "),
    (lambda: presets.preset("nope"), "unknown preset 'nope'; known: mixed, xor"),
    (lambda: explain.load_example("nope"), "unknown example 'nope'; known: 2-2-1, 2-2-2"),
    (lambda: load("CIFAR"), "unknown dataset 'CIFAR'; known datasets: xor, spirals"),
    (lambda: parse_layer("swish"), "unknown layer 'swish' in the architecture; known layers: "
                                   "dense(n), sigmoid"),
])
def test_every_registry_says_the_same(find, message):
    with pytest.raises(ValueError) as e:
        find()
    assert str(e.value).startswith(message), str(e.value)


def test_presets_are_found_by_name():
    model, loss, data = presets.preset("xor", jnp.float32)
    assert loss == "sse_half" and data[0].shape == (4, 2)
    assert presets.preset("mixed")[2] is None
