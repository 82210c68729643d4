"""Library calls an adversary makes (issue #22): each gets one clear ValueError or a warning,
never a raw XLA error, a wrapped label or a silent NaN."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.cli import main

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
ONE_HOT = np.eye(2, dtype=np.float32)[[0, 1, 1, 0]]
MODEL = jp.mlp([2, 3, 2], output_activation="identity")
PARAMS = MODEL.init(jax.random.key(0), (2,))[0]


def fit(model, loss, t, **options):
    return jp.fit(model, loss, 0.1, (X, t), epochs=1, key=jax.random.key(0), **options)


def test_an_unknown_xla_option_is_named():
    with pytest.raises(ValueError, match="compiler_options: No such compile option: "
                                         "'xla_bogus_option'"):
        fit(MODEL, "softmax_cross_entropy", ONE_HOT, compiler_options={"xla_bogus_option": 1})


@pytest.mark.parametrize("call, who", [
    (lambda: jp.value_and_grad("mlp", "mse", PARAMS, X, ONE_HOT), "value_and_grad"),
    (lambda: fit("dense(3)", "mse", ONE_HOT), "fit"),
    (lambda: jp.per_example_grads("mlp", "mse", PARAMS, X, ONE_HOT), "per_example_grads"),
])
def test_a_name_where_a_model_belongs_is_refused(call, who):
    with pytest.raises(ValueError, match=rf"^{who} takes a model .* got str; build it first"):
        call()


def test_per_example_grads_refuses_a_label_past_the_outputs():
    with pytest.raises(ValueError, match="class label 5 but the model has 2 outputs"):
        jp.per_example_grads(MODEL, "sparse_softmax_cross_entropy", PARAMS, X,
                             np.array([0, 1, 5, 1]))


def test_a_label_that_would_wrap_as_int32_is_refused():
    with pytest.raises(ValueError, match="class label 1099511627776, more than any model"):
        fit(MODEL, "sparse_softmax_cross_entropy", np.array([0, 1, 2**40, 1]))


def test_targets_outside_a_losss_range_are_warned_about():
    with pytest.warns(UserWarning, match=r"targets lie in \[0, 2\] but bce_with_logits takes "
                                         r"targets in \[0, 1\]"):
        fit(jp.mlp([2, 3, 1], output_activation="identity"), "bce_with_logits",
            np.array([[2.0], [0], [1], [0]], np.float32))
    with pytest.warns(UserWarning, match=r"1 of 4 target rows do not sum to 1 \(row 0 sums "
                                         r"to 1.4\)"):
        fit(MODEL, "softmax_cross_entropy",
            np.array([[0.5, 0.9], [1, 0], [0, 1], [1, 0]], np.float32))


def test_targets_that_suit_the_loss_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(MODEL, "softmax_cross_entropy", np.array([[0.25, 0.75], [1, 0], [0, 1], [1, 0]],
                                                     np.float32))
        fit(jp.mlp([2, 3, 1], output_activation="identity"), "bce_with_logits",
            np.array([[0.5], [0], [1], [0]], np.float32))


def test_a_header_that_names_a_column_twice_is_refused(tmp_path, capsys):
    path = tmp_path / "dup.csv"
    path.write_text("a,a,label\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(10)))
    assert main(["train", "--dataset", "csv", "--csv", str(path), "--label-column", "label",
                 "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert "names column 'a' twice (columns 1 and 2)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_predictor_with_too_few_class_names_is_refused(tmp_path):
    from jaxprop.predict import load_predictor

    jp.save(tmp_path / "model.npz", MODEL, PARAMS, task="classification",
            loss="softmax_cross_entropy", feature_names=["a", "b"], class_names=["only"])
    with pytest.raises(ValueError, match=r"1 class names for a model of 2 output\(s\)"):
        load_predictor(tmp_path / "model.npz")


def test_the_same_infinite_gradient_on_both_sides_is_no_disagreement():
    """d cbrt(x)/dx is +inf at 0 for the hand-written rule and for jax.vjp alike (inf - inf
    was reported as a disagreement)."""
    import jax.numpy as jnp

    def forward(params, state, x, *, key=None, train=True):
        return jnp.cbrt(x), x, state

    def backward(params, x, dy):
        return (), dy / (3 * jnp.cbrt(x) ** 2)

    layer = jp.Layer(lambda key, shape: ((), (), shape), forward, backward, name="cbrt")
    x = np.array([[0.0, 1.0, -2.0]], np.float32)
    report = jp.check_layer(layer, (3,), x=x, batch=1)
    # jax.vjp agrees in float32 and float64; finite differences cannot see an infinite slope
    assert "jax.vjp" not in report.verdict(), report.verdict()


def test_predict_refuses_values_beyond_the_models_dtype(tmp_path, capsys):
    """1e39 became inf in float32 and could come out as NaN probabilities with exit 0."""
    run = tmp_path / "xor"
    assert main(["train", "--epochs", "2", "--out", str(run), "--no-plots"]) == 0
    rows = tmp_path / "rows.csv"
    rows.write_text("x1,x2\n0,1\n1e39,0\n")
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--csv", str(rows)]) == 2
    assert "row 2 holds 1e+39" in capsys.readouterr().err
