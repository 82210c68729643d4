"""``model.summary(in_shape)`` and ``jaxprop summary``: the rows, the totals, XLA's FLOPs, the
rendering at 80 columns and the command's exit codes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest

import jaxprop as jp
from jaxprop.cli import main

TEXT = ("conv(4,3)-batchnorm-relu-maxpool(2)-residual(conv(4,3)-relu-conv(4,3))-flatten-"
        "dense(16)-relu-dropout(0.1)-dense(3)")


def _size(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def cnn():
    model = jp.parse_model(TEXT, (8, 8, 1))
    return model, model.summary()


def test_totals_are_the_sizes_of_the_params_and_state_leaves(cnn):
    model, s = cnn
    params, state = jax.eval_shape(lambda k: model.init_with_state(k), jax.random.key(0))
    assert s.params == _size(params) == sum(r["params"] for r in s.rows if r["depth"] == 0)
    assert s.state == _size(state) == 2 * 4  # BatchNorm's running mean and variance
    assert s.param_bytes == 4 * s.params and s.dtypes == ("float32",)
    assert s.flops == sum(r["flops"] for r in s.rows if r["depth"] == 0)
    residual = next(i for i, r in enumerate(s.rows) if r["layer"].startswith("Residual"))
    inner = s.rows[residual + 1:residual + 4]
    assert [r["depth"] for r in inner] == [1, 1, 1]
    assert s.rows[residual]["params"] == sum(r["params"] for r in inner)


def test_shapes_are_eval_shape_of_the_forward_pass(cnn):
    model, s = cnn
    params, state = jax.eval_shape(lambda k: model.init_with_state(k), jax.random.key(0))
    x = jax.ShapeDtypeStruct((5, 8, 8, 1), jnp.float32)
    outputs = jax.eval_shape(
        lambda p, st, x: model.forward_trace(p, st, x, train=False)[0], params, state, x)
    top = [r for r in s.rows if r["depth"] == 0]
    assert [r["layer"] for r in top] == [layer.name if not layer.sublayers else "Residual(…)"
                                         for layer in model.layers]
    assert [r["output_shape"] for r in top] == [o.shape[1:] for o in outputs]


def test_dense_flops_are_xlas_count_2_in_out_plus_bias_per_example():
    n_in, n_out = 100, 70  # big enough for a matmul (tiny ones are written as multiply-adds)
    s = jp.Dense(n_out).summary((n_in,))
    assert s.rows[0]["flops"] == s.flops == 2 * n_in * n_out + n_out
    layer = jp.Dense(n_out)
    params, _, _ = layer.init(jax.random.key(0), (n_in,))
    xla = jax.jit(lambda p, x: layer.forward(p, (), x)[0]).lower(
        params, jnp.zeros((1, n_in))).cost_analysis()["flops"]
    assert s.flops == xla


def test_a_big_mlp_is_summarised_without_allocating_it():
    s = jp.mlp([784, 4096, 4096, 10], "relu", "identity").summary()
    assert s.params == 784 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
    assert s.param_bytes == 4 * s.params
    assert [r["output_shape"] for r in s.rows] == [(4096,), (4096,), (4096,), (4096,), (10,),
                                                   (10,)]


def test_nested_serial_is_a_row_with_its_layers_under_it():
    model = jp.serial(jp.serial(jp.Dense(3), jp.Relu()), jp.Dense(2), in_shape=(4,))
    rows = model.summary().rows
    assert [(r["layer"], r["depth"], r["output_shape"]) for r in rows] == [
        ("serial", 0, (3,)), ("Dense(3)", 1, (3,)), ("relu", 1, (3,)), ("Dense(2)", 0, (2,))]
    assert rows[0]["params"] == 4 * 3 + 3 and rows[0]["flops"] == rows[1]["flops"] + \
        rows[2]["flops"]


def test_a_bare_layer_and_its_block_are_rows():
    rows = jp.Residual(jp.Dense(4)).summary((4,)).rows
    assert [(r["layer"], r["depth"]) for r in rows] == [("Residual(…)", 0), ("Dense(4)", 1)]
    assert rows[0]["flops"] == rows[1]["flops"] + 4  # the skip connection's addition


def test_printed_it_fits_80_columns_and_says_what_flops_mean(cnn):
    text = str(cnn[1])
    assert max(map(len, text.splitlines())) <= 80
    assert "Total" in text and "Conv2D" in text and "forward and backward" in text
    assert "  Conv2D" in text  # the residual block's layers, indented


@pytest.mark.parametrize("shape, message", [(None, "no input shape"), ((0, 2), "positive"),
                                            ("8", "positive"), ((), "positive")])
def test_bad_input_shapes_are_one_line_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        jp.Dense(2).summary(shape)


def test_cli_prints_the_table_for_a_model_text(capsys):
    assert main(["summary", "--model", "flatten-dense(5)-relu-dense(2)",
                 "--in-shape", "3,3,1"]) == 0
    out = capsys.readouterr().out
    assert "Dense(5)" in out and "50" in out and "Total" in out
    assert max(map(len, out.splitlines())) <= 80


def test_cli_dataset_shows_what_train_trains(capsys):
    assert main(["summary", "--dataset", "xor"]) == 0
    out = capsys.readouterr().out
    assert "Dense(4)" in out and "sigmoid" in out and "17" in out


def test_cli_run_reads_the_saved_model(tmp_path, capsys):
    model = jp.mlp([2, 3, 1], "tanh", "sigmoid")
    params = model.init(jax.random.key(0))
    jp.save(tmp_path / "model.npz", model, params, task="classification", loss="bce",
            feature_names=["a", "b"])
    assert main(["summary", "--run", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Dense(3)" in out and "tanh" in out


@pytest.mark.parametrize("args, message", [
    (["--model", "dense(3)", "--in-shape", "0,2"], "--in-shape must be positive ints"),
    (["--model", "dense(3)", "--in-shape", "a"], "--in-shape must be positive ints"),
    (["--model", "densse(3)", "--in-shape", "4"], "unknown layer 'densse'"),
    (["--model", "dense(3)"], "--model needs --in-shape"),
    (["--run", "no/such/folder"], "no such run folder"),
    (["--run", "x", "--model", "dense(3)"], "--run takes its model from the run folder"),
    (["--dataset", "xor", "--in-shape", "2"], "--dataset gives the input shape"),
    ([], "give --run DIR"),
])
def test_cli_bad_arguments_exit_2_with_one_line(args, message, capsys):
    assert main(["summary", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_repeat_row_says_how_many_copies():
    rows = jp.parse_model("repeat(2,dense(4)-relu)-dense(1)", (4,)).summary().rows
    assert [(r["layer"], r["depth"]) for r in rows] == [
        ("2 x (…)", 0), ("serial", 1), ("Dense(4)", 2), ("relu", 2), ("serial", 1),
        ("Dense(4)", 2), ("relu", 2), ("Dense(1)", 0)]


def test_a_serial_that_starts_with_a_repeat_is_labelled_serial():
    block = jp.serial(jp.Repeat(2, jp.serial(jp.Dense(4), jp.activation("relu"))), jp.Dense(3))
    rows = jp.serial(block, jp.Dense(1), in_shape=(4,)).summary().rows
    assert [r["layer"] for r in rows if r["depth"] <= 1] == ["serial", "2 x (…)", "Dense(3)",
                                                            "Dense(1)"]
