"""``jaxprop predict`` on a run folder, and CSV regression from ``jaxprop train``."""

import csv
import io
import json

import numpy as np
import pytest

from jaxprop.cli import main
from jaxprop.predict import load_predictor, predict_rows

RNG = np.random.default_rng(0)
X = RNG.normal(size=(240, 2))
KIND = np.where(X[:, 0] + X[:, 1] > 0.3, "cat", np.where(X[:, 0] > -0.5, "dog", "eel"))
PRICE = 3 * X[:, 0] - 2 * X[:, 1] + 50


def _write(path, header, rows):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def _table(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    data = _write(tmp / "animals.csv", "w,h,kind", [(f"{a:.4f}", f"{b:.4f}", k)
                                                     for (a, b), k in zip(X, KIND, strict=True)])
    assert main(["train", "--dataset", "csv", "--csv", str(data), "--label-column", "kind",
                 "--epochs", "60", "--no-plots", "--out", str(tmp / "run")]) == 0
    return tmp


def test_predict_names_the_classes_as_in_the_training_csv(classifier, capsys):
    capsys.readouterr()
    new = _write(classifier / "new.csv", "h,w", [(0.5, 1.0), (-1, -1), (-1.0, 0.0)])
    assert main(["predict", "--run", str(classifier / "run"), "--csv", str(new)]) == 0
    columns, rows = _table(capsys.readouterr().out)
    assert columns == ["prediction", "prob_cat", "prob_dog", "prob_eel"]
    assert [r[0] for r in rows] == ["cat", "eel", "dog"]
    for r in rows:
        assert abs(sum(map(float, r[1:])) - 1) < 1e-4
    # a label column in the new CSV is ignored; columns are matched by name
    labelled = _write(classifier / "labelled.csv", "kind,w,h",
                      [("eel", 1.0, 0.5), ("cat", -1, -1), ("x", 0.0, -1.0)])
    out = classifier / "preds.csv"
    assert main(["predict", "--run", str(classifier / "run"), "--csv", str(labelled),
                 "--out", str(out)]) == 0
    assert _table(out.read_text()) == (columns, rows)
    # the same numbers through the library, from raw rows
    cols, lib_rows = predict_rows(load_predictor(classifier / "run"), [[1.0, 0.5]])
    assert cols == columns and lib_rows[0][0] == "cat"


@pytest.mark.parametrize("argv, needle", [
    (["--run", "nowhere", "--csv", "new.csv"], "no such run folder"),
    (["--run", ".", "--csv", "new.csv"], "holds no model.npz"),
    (["--run", "RUN", "--csv", "missing.csv"], "CSV file not found"),
    (["--run", "RUN", "--csv", "wide.csv"], "4 columns, but the model takes 2 features"),
    (["--run", "RUN", "--csv", "named.csv"], "no column named 'h'"),
    (["--run", "RUN", "--csv", "new.csv", "--out", ""], "--out is empty"),
])
def test_predict_bad_input_is_one_line(classifier, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(classifier)
    (classifier / "wide.csv").write_text("1,2,3,4\n4,5,6,7\n")
    _write(classifier / "named.csv", "w,height", [(1, 2)])
    _write(classifier / "new.csv", "h,w", [(1, 2)])
    argv = [str(classifier / "run") if a == "RUN" else a for a in argv]
    assert main(["predict", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_csv_regression_trains_reports_rmse_and_r2_and_predicts_values(tmp_path, capsys):
    data = _write(tmp_path / "price.csv", "w,h,price",
                  [(f"{a:.4f}", f"{b:.4f}", f"{p:.4f}")
                   for (a, b), p in zip(X, PRICE, strict=True)])
    # a float label without --task: one sentence suggesting it
    assert main(["train", "--dataset", "csv", "--csv", str(data), "--out",
                 str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--task regression" in err[0] and "fractional numbers" in err[0]
    assert not (tmp_path / "no").exists()
    assert main(["train", "--dataset", "csv", "--csv", str(data), "--task", "regression",
                 "--epochs", "150", "--lr", "0.01", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "RMSE" in out and "R²" in out and "accuracy" not in out
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["loss"] == "mse" and m["config"]["output_activation"] == "identity"
    assert "train_accuracy" not in m and m["test_r2"] > 0.95 and m["test_rmse"] < 1.0
    assert (tmp_path / "run" / "loss_curve.png").exists()
    assert not (tmp_path / "run" / "decision_boundary.png").exists()
    history = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert all("accuracy" not in line for line in history)
    new = _write(tmp_path / "new.csv", "w,h,price", [(1.0, 0.5, 0), (-1.0, 1.0, 0)])
    assert main(["predict", "--run", str(tmp_path / "run"), "--csv", str(new)]) == 0
    columns, rows = _table(capsys.readouterr().out)
    assert columns == ["prediction"]
    np.testing.assert_allclose([float(r[0]) for r in rows], [52.0, 45.0], atol=1.0)
    # no stratified split: a regression target is not a class
    assert m["config"]["task"] == "regression"


def test_a_headerless_file_drops_the_label_column_named_in_training(tmp_path, capsys):
    """Trained with the label column given by name (here the first column), a new file
    without a header and with the label column still in place loses that column, not the
    last feature."""
    data = _write(tmp_path / "first.csv", "kind,w,h", [(k, f"{a:.4f}", f"{b:.4f}")
                                                       for (a, b), k in zip(X, KIND, strict=True)])
    assert main(["train", "--dataset", "csv", "--csv", str(data), "--label-column", "kind",
                 "--epochs", "60", "--no-plots", "--out", str(tmp_path / "run")]) == 0
    new = tmp_path / "new.csv"
    new.write_text("cat,0.5,1.0\nx,-1,-1\ny,0.0,-1.0\n")
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "run"), "--csv", str(new)]) == 0
    _, rows = _table(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["cat", "eel", "dog"]
