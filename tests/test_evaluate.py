"""Evaluation (``jp.evaluate``, ``jaxprop evaluate``), R²/RMSE in a regression's history, and
the plots of runs and evaluations (checked on the matplotlib objects, not pixels)."""

import json

import jax
import numpy as np
import pytest
from sklearn import metrics as skm

import jaxprop as jp
from jaxprop import plots, runs
from jaxprop.cli import main
from jaxprop.data import Dataset
from jaxprop.evaluation import confusion_matrix
from jaxprop.train.step import regression_metrics

RNG = np.random.default_rng(0)
X = RNG.normal(size=(90, 2))
KIND = np.where(X[:, 0] + X[:, 1] > 0.3, "cat", np.where(X[:, 0] > -0.5, "dog", "eel"))
PRICE = 3 * X[:, 0] - 2 * X[:, 1] + 50


def _write(path, header, rows):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def _identity(width):
    """A model whose outputs are its inputs: evaluating it on known outputs."""
    model = jp.serial(jp.Identity(), in_shape=(width,))
    return model, model.init(jax.random.key(0))


# --------------------------------------------------------------------------------------------
# The library


def test_the_confusion_matrix_is_numpys_and_accuracy_its_trace():
    y = RNG.normal(size=(37, 4)).astype(np.float32)
    true = RNG.integers(0, 4, size=37)
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (true, y.argmax(1)), 1)
    model, params = _identity(4)
    one_hot = np.eye(4, dtype=np.float32)[true]
    # batches of 8 rows: the last one padded, its padding never counted
    result = jp.evaluate(model, params, (y, one_hot), loss="softmax_cross_entropy",
                         batch_size=8)
    np.testing.assert_array_equal(result.confusion, expected)
    np.testing.assert_array_equal(confusion_matrix(true, y.argmax(1), 4), expected)
    assert result.task == "classification" and result.n == 37
    assert result.accuracy == pytest.approx(np.mean(y.argmax(1) == true))
    whole = jp.get_loss("softmax_cross_entropy").value(y, one_hot)
    assert result.loss == pytest.approx(float(whole), rel=1e-5)
    # integer labels (a loss on them), and one output thresholded as the loss says
    labels = jp.evaluate(model, params, (y, true.astype(np.int32)),
                         loss="sparse_softmax_cross_entropy", batch_size=5)
    np.testing.assert_array_equal(labels.confusion, expected)
    logits = y[:, :1]
    binary = jp.evaluate(*_identity(1), (logits, (true[:, None] > 1).astype(np.float32)),
                         loss="bce_with_logits")
    assert binary.confusion.sum() == 37 and binary.class_names == ("0", "1")
    np.testing.assert_array_equal(binary.predicted, (logits[:, 0] > 0).astype(int))
    assert json.loads(json.dumps(result.to_dict()))["confusion"] == expected.tolist()
    with pytest.raises(ValueError, match=r"true classes must lie in 0..3"):
        confusion_matrix([4], [0], 4)


def test_regression_figures_are_sklearns_per_output_and_overall():
    t = RNG.normal(size=(50, 2)) * [1.0, 10.0]
    y = (t + RNG.normal(size=(50, 2)) * [0.3, 4.0]).astype(np.float32)
    model, params = _identity(2)
    result = jp.evaluate(model, params, (y, t.astype(np.float32)), loss="mse", batch_size=16)
    y64, t32 = y.astype(np.float64), t.astype(np.float32).astype(np.float64)
    close = dict(rel=1e-5, abs=1e-6)
    assert result.task == "regression"
    assert result.r2_outputs == pytest.approx(
        skm.r2_score(t32, y64, multioutput="raw_values"), **close)
    assert result.r2 == pytest.approx(skm.r2_score(t32, y64), **close)
    assert result.rmse_outputs == pytest.approx(
        skm.root_mean_squared_error(t32, y64, multioutput="raw_values"), **close)
    assert result.rmse == pytest.approx(skm.root_mean_squared_error(t32, y64), **close)
    assert result.mae_outputs == pytest.approx(
        skm.mean_absolute_error(t32, y64, multioutput="raw_values"), **close)
    assert result.mae == pytest.approx(skm.mean_absolute_error(t32, y64), **close)
    assert result.loss == pytest.approx(np.mean((y64 - t32) ** 2), rel=1e-5)
    assert [o["name"] for o in result.to_dict()["outputs"]] == ["y0", "y1"]


def test_a_datasets_standardised_targets_are_put_back_in_the_data_units():
    t = RNG.normal(size=(30, 1)) * 4 + 100
    y = t + RNG.normal(size=(30, 1))
    mean, std = 100.0, 4.0
    ds = Dataset("prices", np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32),
                 ((y - mean) / std).astype(np.float32), ((t - mean) / std).astype(np.float32),
                 0, task="regression", scaling={"y_mean": mean, "y_std": std})
    result = jp.evaluate(*_identity(1), ds, loss="mse")
    assert result.rmse == pytest.approx(skm.root_mean_squared_error(t, y), rel=1e-4)
    assert result.mae == pytest.approx(skm.mean_absolute_error(t, y), rel=1e-4)
    assert result.r2 == pytest.approx(skm.r2_score(t, y), rel=1e-4)
    assert result.loss == pytest.approx(np.mean(((y - t) / std) ** 2), rel=1e-4)  # as trained
    np.testing.assert_allclose(result.actual, t, rtol=1e-5)


def test_regression_metrics_count_only_the_masked_rows_and_stay_finite():
    y, t = RNG.normal(size=(12, 1)), RNG.normal(size=(12, 1))
    mask = np.arange(12) < 9
    masked = jax.jit(regression_metrics)(y, t, mask)
    plain = jax.jit(regression_metrics)(y[:9], t[:9])
    for a, b in zip(masked, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    constant = np.ones((5, 1))
    r2 = jax.jit(lambda y, t: regression_metrics(y, t)[0][0])
    assert float(r2(constant, constant)) == 1.0  # exact: R² 1
    assert float(r2(constant * 2, constant)) == 0.0  # as sklearn's force_finite


# --------------------------------------------------------------------------------------------
# Runs and the command


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    animals = _write(tmp / "animals.csv", "w,h,kind", [(f"{a:.4f}", f"{b:.4f}", k)
                                                       for (a, b), k in zip(X, KIND)])
    price = _write(tmp / "price.csv", "w,h,price", [(f"{a:.4f}", f"{b:.4f}", f"{p:.4f}")
                                                    for (a, b), p in zip(X, PRICE)])
    assert main(["train", "--dataset", "csv", "--csv", str(animals), "--label-column", "kind",
                 "--epochs", "20", "--lr", "0.01", "--no-plots", "--out", str(tmp / "cls")]) == 0
    assert main(["train", "--dataset", "csv", "--csv", str(price), "--label-column", "price",
                 "--task", "regression", "--epochs", "20", "--lr", "0.01",
                 "--out", str(tmp / "reg")]) == 0
    return tmp


def _json(capsys, *argv):
    capsys.readouterr()
    assert main(["evaluate", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_a_classification_run(trained, capsys):
    metrics = json.loads((trained / "cls" / "metrics.json").read_text())
    got = _json(capsys, "--run", trained / "cls")
    assert got["data"] == "animals.csv (test split)" and got["class_names"] == ["cat", "dog",
                                                                                 "eel"]
    assert np.sum(got["confusion"]) == got["n"] == 18  # the test split: 20% of 90
    assert got["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert got["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)
    whole = _json(capsys, "--run", trained / "cls", "--csv", trained / "animals.csv")
    assert whole["n"] == 90 and whole["data"] == "animals.csv"
    capsys.readouterr()
    plot = trained / "out" / "confusion.png"
    assert main(["evaluate", "--run", str(trained / "cls"), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "cat" in out and "eel" in out and "true \\ predicted" in out
    assert plot.stat().st_size > 0


def test_evaluate_a_regression_run_in_the_data_units(trained, capsys):
    metrics = json.loads((trained / "reg" / "metrics.json").read_text())
    got = _json(capsys, "--run", trained / "reg")
    assert got["task"] == "regression" and got["outputs"][0]["name"] == "price"
    assert got["r2"] == pytest.approx(metrics["test_r2"], rel=1e-4)
    assert got["rmse"] == pytest.approx(metrics["test_rmse"], rel=1e-4)
    assert got["mae"] > 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(trained / "reg")]) == 0
    out = capsys.readouterr().out
    assert "R²" in out and "RMSE" in out and "MAE" in out and "accuracy" not in out
    assert (trained / "reg" / "predicted_vs_actual.png").exists()
    assert not (trained / "reg" / "decision_boundary.png").exists()


def test_the_history_of_a_regression_has_r2_and_rmse(trained):
    records = [json.loads(line) for line in
               (trained / "reg" / "history.jsonl").read_text().splitlines()]
    for record in records:
        assert {"train_r2", "train_rmse", "test_r2", "test_rmse"} <= set(record)
        assert "train_accuracy" not in record
    # R² does not depend on the units: the last record's is metrics.json's
    metrics = json.loads((trained / "reg" / "metrics.json").read_text())
    assert records[-1]["test_r2"] == pytest.approx(metrics["test_r2"], abs=1e-4)


def test_evaluate_on_npy_files_and_on_a_few_rows_of_one_class(trained, capsys):
    np.save(trained / "x.npy", X[:10])
    np.save(trained / "y.npy", KIND[:10])
    got = _json(capsys, "--run", trained / "cls", "--npy", trained / "x.npy", "--labels",
                trained / "y.npy")
    # the same rows as a CSV, its columns in another order: the same matrix
    csv = _write(trained / "ten.csv", "kind,h,w", [(k, f"{b:.4f}", f"{a:.4f}")
                                                    for (a, b), k in zip(X[:10], KIND[:10])])
    assert got["confusion"] == _json(capsys, "--run", trained / "cls", "--csv", csv)["confusion"]
    np.save(trained / "i.npy", np.searchsorted(["cat", "dog", "eel"], KIND[:10]))  # indices
    assert got["confusion"] == _json(capsys, "--run", trained / "cls", "--npy",
                                     trained / "x.npy", "--labels", trained / "i.npy")["confusion"]
    cats = X[KIND == "cat"][:2]
    one = _write(trained / "cats.csv", "w,h,kind", [(a, b, "cat") for a, b in cats])
    got = _json(capsys, "--run", trained / "cls", "--csv", one)
    assert np.sum(got["confusion"][0]) == 2 and np.sum(got["confusion"]) == 2


@pytest.mark.parametrize("argv, needle", [
    (["--run", "nowhere"], "no such run folder"),
    (["--run", "RUN", "--csv", "wrong.csv"], "no column named 'h'"),
    (["--run", "RUN", "--csv", "moose.csv"], "class 'moose' is not one the model was trained"),
    (["--run", "RUN", "--npy", "x.npy"], "--npy and --labels go together"),
    (["--run", "RUN", "--plot", ""], "--plot is empty"),
    (["--run", "RUN", "--csv", "wrong.csv", "--npy", "x.npy"], "not allowed with argument"),
])
def test_bad_input_is_one_line_and_exit_2(trained, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(trained)
    _write(trained / "wrong.csv", "w,height,kind", [(1, 2, "cat"), (2, 1, "dog")])
    _write(trained / "moose.csv", "w,h,kind", [(1, 2, "cat"), (2, 1, "moose")])
    argv = [str(trained / "cls") if a == "RUN" else a for a in argv]
    capsys.readouterr()
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


# --------------------------------------------------------------------------------------------
# Plots


def test_the_decision_boundary_names_its_axes_and_classes():
    x = RNG.normal(size=(20, 2)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(int)
    fig = plots.decision_boundary(lambda g: (g[:, 0] > 0).astype(int), x, labels,
                                  x_test=x[:4], labels_test=labels[:4], resolution=20,
                                  feature_names=("width", "height"),
                                  class_names=("small", "large"))
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("width", "height")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["small", "large", "test"]
    plain = plots.decision_boundary(lambda g: (g[:, 0] > 0).astype(int), x, labels,
                                    resolution=20).axes[0]
    assert (plain.get_xlabel(), plain.get_ylabel()) == ("x1", "x2")
    assert [t.get_text() for t in plain.get_legend().get_texts()] == ["class 0", "class 1"]


def test_the_evaluation_plots_label_what_they_show():
    cm = plots.confusion_matrix(np.array([[3, 1], [0, 4]]), class_names=["cat", "dog"],
                                title="t.csv: confusion matrix").axes[0]
    assert (cm.get_xlabel(), cm.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in cm.get_xticklabels()] == ["cat", "dog"]
    assert sorted(t.get_text() for t in cm.texts) == ["0", "1", "3", "4"]
    assert cm.get_title() == "t.csv: confusion matrix"
    pva = plots.predicted_vs_actual([1.0, 2.1, 2.9], [1.0, 2.0, 3.0], names=["price"]).axes[0]
    assert (pva.get_xlabel(), pva.get_ylabel()) == ("actual price", "predicted price")
    assert [t.get_text() for t in pva.get_legend().get_texts()] == ["y = x"]
    loss = plots.loss_curve([1.0, 0.5], ylabel=plots.loss_label(jp.get_loss("sse_half"), True))
    assert loss.axes[0].get_ylabel() == "sse_half (summed over examples, standardised targets)"


def test_run_plots_name_the_data_file_the_units_and_the_classes(tmp_path, monkeypatch):
    drawn = {}

    def keep(name):
        real = getattr(plots, name)

        def draw(*args, **kwargs):
            drawn[name] = real(*args, **kwargs)
            return drawn[name]

        monkeypatch.setattr(plots, name, draw)

    for name in ("loss_curve", "decision_boundary", "predicted_vs_actual"):
        keep(name)
    data = _write(tmp_path / "animals.csv", "w,h,kind", [(f"{a:.4f}", f"{b:.4f}", k)
                                                         for (a, b), k in zip(X, KIND)])
    cfg = {"dataset": "csv", "csv": str(data), "label_column": "kind", "seed": 0,
           "task": None}
    ds = runs.load_dataset(cfg)
    model = jp.mlp([2, 4, 3], "tanh", "identity")
    state = jp.init_state(model, jp.OPTIMIZERS["sgd"](0.1), jax.random.key(0))
    assert runs.run_plots(tmp_path, model, "softmax_cross_entropy", state, ds, [1.0, 0.5], [],
                          cfg=cfg) is None
    curve = drawn["loss_curve"].axes[0]
    assert curve.get_title() == "animals.csv: training loss"
    assert curve.get_ylabel() == "softmax_cross_entropy (mean per example)"
    boundary = drawn["decision_boundary"].axes[0]
    assert boundary.get_title() == "animals.csv: decision boundary"
    assert (boundary.get_xlabel(), boundary.get_ylabel()) == ("w", "h")
    assert [t.get_text() for t in boundary.get_legend().get_texts()] == ["cat", "dog", "eel",
                                                                          "test"]
    price = _write(tmp_path / "price.csv", "w,h,price", [(f"{a:.4f}", f"{b:.4f}", f"{p:.4f}")
                                                         for (a, b), p in zip(X, PRICE)])
    cfg = {**cfg, "csv": str(price), "label_column": "price", "task": "regression"}
    ds = runs.load_dataset(cfg)
    model = jp.mlp([2, 4, 1], "tanh", "identity")
    state = jp.init_state(model, jp.OPTIMIZERS["sgd"](0.1), jax.random.key(0))
    assert runs.run_plots(tmp_path, model, "mse", state, ds, [1.0, 0.5], [], cfg=cfg) is None
    assert drawn["loss_curve"].axes[0].get_ylabel() == "mse (mean per value, standardised targets)"
    scatter = drawn["predicted_vs_actual"].axes[0]
    assert scatter.get_title() == "price.csv: predicted vs actual (test split)"
    assert scatter.get_xlabel() == "actual price"
    actual = scatter.collections[0].get_offsets()[:, 0]
    assert 40 < actual.min() and actual.max() < 60  # in the data's units (PRICE ~ 50)
    assert (tmp_path / "predicted_vs_actual.png").exists()
