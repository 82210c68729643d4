"""Bad input: each mistake is a ValueError whose message names the problem and the shapes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.cli import main


@pytest.fixture(scope="module")
def net():
    model = jp.mlp([3, 4, 2], "tanh", "identity")  # float32
    params = model.init(jax.random.key(0))
    x = np.ones((5, 3), np.float32)
    t = np.zeros((5, 2), np.float32)
    return model, params, x, t


@pytest.mark.parametrize("entry", ["value_and_grad", "check_gradients"])
def test_input_width_mismatch(net, entry):
    model, params, _, t = net
    fn = getattr(jp, entry)
    msg = r"Dense: input has shape \(5, 7\) but W has shape \(3, 4\)"
    with pytest.raises(ValueError, match=msg):
        fn(model, "mse", params, np.ones((5, 7), np.float32), t)


def test_outputs_and_targets_disagree(net):
    model, params, x, _ = net
    with pytest.raises(
        ValueError, match=r"loss mse: outputs have shape \(5, 2\) but targets have shape \(5, 3\)"
    ):
        jp.value_and_grad(model, "mse", params, x, np.zeros((5, 3), np.float32))


def test_unknown_names():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; known: sigmoid, tanh"):
        jp.mlp([2, 3, 1], "swish")
    with pytest.raises(ValueError, match=r"unknown activation 'nope'"):
        jp.activation("nope")
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; known: sse_half, mse"):
        jp.get_loss("hinge")
    with pytest.raises(ValueError, match=r"unknown initializer 'xavier'; known: .*glorot"):
        jp.Dense(3, W_init="xavier")
    with pytest.raises(ValueError, match=r"unknown initializer 'xavier'"):
        jp.mlp([2, 3, 1], init="xavier")


@pytest.mark.parametrize("where", ["x", "t"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_data(net, where, bad):
    model, params, x, t = net
    x, t = x.copy(), t.copy()
    (x if where == "x" else t)[2, 1] = bad
    with pytest.raises(
        ValueError, match=rf"{where} contains 1 NaN/Inf value\(s\) \(first at index \(2, 1\), shape"
    ):
        jp.value_and_grad(model, "mse", params, x, t)


def test_integer_x(net):
    model, params, _, t = net
    with pytest.raises(ValueError, match=r"x has dtype int64; inputs and targets must be floating"):
        jp.value_and_grad(model, "mse", params, np.ones((5, 3), np.int64), t)


@pytest.mark.x64
def test_float64_data_is_cast_to_float32_params(net):
    # NumPy and JAX arrays alike follow the params' dtype (issue 11: a JAX float64 array used
    # to be refused while a NumPy one was cast)
    model, params, x, t = net
    ref = jp.value_and_grad(model, "mse", params, x, t)
    for x64, t64 in ((jnp.asarray(x, jnp.float64), jnp.asarray(t, jnp.float64)),
                     (x.astype(np.float64), t.astype(np.float64))):
        value, grads = jp.value_and_grad(model, "mse", params, x64, t64)
        assert value.dtype == jnp.float32
        chex.assert_trees_all_equal((value, grads), ref)


@pytest.mark.parametrize("cut", [1, 3], ids=["too-short", "too-long"])
def test_params_list_of_wrong_length(net, cut):
    model, params, x, t = net
    wrong = params[:cut] if cut < len(params) else params + [()]
    with pytest.raises(
        ValueError, match=rf"one entry per layer \({len(params)}\), got {len(wrong)}"
    ):
        jp.value_and_grad(model, "mse", wrong, x, t)


def test_params_not_a_list(net):
    model, _, x, t = net
    with pytest.raises(ValueError, match=r"params must be a list .* got dict"):
        jp.value_and_grad(model, "mse", {"W": 1.0}, x, t)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "--loss", "nope"], "unknown loss 'nope'"),
        (["check", "--sizes", "4,8,3", "--activation", "swish"], "unknown activation 'swish'"),
        (["check", "--sizes", "4,x"], "--sizes must be comma-separated ints"),
        (["check", "--preset", "nope"], "invalid choice: 'nope'"),
        (["check", "--sizes", "4,3", "--loss", "bce"], "loss bce takes probabilities"),
        (["check", "--batch", "0"], "--batch must be >= 1"),
    ],
)
def test_cli_check_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
