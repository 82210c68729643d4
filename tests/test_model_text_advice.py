"""An architecture text whose output does not fit the task says how to mend it: `flatten`
where one example's output has more than one axis, the output `dense` otherwise."""

from types import SimpleNamespace

import pytest

from jaxprop.runs import build_model

DIGITS = SimpleNamespace(name="digits", example_shape=(8, 8, 1), num_classes=10, num_outputs=10)


def config(text):
    return {"model": text, "output_activation": None, "loss": None, "hidden": None,
            "activation": "relu", "init": None}


@pytest.mark.parametrize("text, advice", [
    ("dense(64)-relu-dense(10)",
     "put flatten before the first dense, e.g. flatten-dense(64)-relu-dense(10)"),
    ("conv(4,3)-relu-dense(10)",
     "put flatten before the first dense, e.g. conv(4,3)-relu-flatten-dense(10)"),
    ("dense(64)-relu", "e.g. flatten-dense(64)-relu-dense(10)"),
    ("conv(4,3)-relu", "end it with flatten-dense(10)"),
    ("residual(dense(1)-relu)-dense(10)", "e.g. residual(dense(1)-relu)-flatten-dense(10)"),
])
def test_an_output_of_several_axes_is_told_to_flatten(text, advice):
    with pytest.raises(ValueError, match="gives outputs of shape") as info:
        build_model(config(text), DIGITS)
    assert str(info.value).endswith(advice), str(info.value)


def test_an_output_of_the_wrong_width_is_told_its_last_dense():
    with pytest.raises(ValueError) as info:
        build_model(config("flatten-dense(9)"), DIGITS)
    assert str(info.value).endswith("end it with dense(10)") and "flatten" not in str(
        info.value).split(":")[-1], str(info.value)
