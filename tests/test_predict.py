"""``jaxprop predict`` on a run folder, and CSV regression from ``jaxprop train``."""

import csv
import io
import json
import os
from pathlib import Path

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


def _out_target(kind, folder, new):
    """An ``--out`` path of ``kind`` in ``folder`` (``new`` is the input file), and the bytes
    it holds now (``None`` when it is no regular file of ours)."""
    if kind == "input":
        return new, None
    if kind == "link to input":
        (folder / "link.csv").symlink_to(new)
        return folder / "link.csv", None
    if kind in ("file", "file --force"):
        (folder / "old.csv").write_bytes(b"keep me\n")
        return folder / "old.csv", b"keep me\n"
    if kind == "link":
        (folder / "other.csv").write_bytes(b"other\n")
        (folder / "link.csv").symlink_to(folder / "other.csv")
        return folder / "link.csv", b"other\n"
    if kind == "fifo":
        os.mkfifo(folder / "pipe")
        return folder / "pipe", None
    if kind == "folder":
        (folder / "dir").mkdir()
        return folder / "dir", None
    return Path(os.devnull), None  # a character device


@pytest.mark.parametrize("kind, force, needle", [
    ("input", False, "is the input file --csv"),
    ("input", True, "is the input file --csv"),
    ("link to input", True, "is the input file --csv"),
    ("file", False, "already exists; replace it with --force"),
    ("link", True, "is a symbolic link, not a regular file"),
    ("fifo", True, "is a FIFO (named pipe), not a regular file"),
    ("folder", True, "is a folder, not a regular file"),
    ("device", True, "is a character device, not a regular file"),
])
def test_predict_out_never_loses_data(classifier, tmp_path, capsys, kind, force, needle):
    """``--out`` is refused (one line, exit 2) when it is the input file, an existing file
    without ``--force``, or no regular file at all (even with ``--force``); the input file and
    the target are left byte for byte as they were."""
    if kind == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    new = _write(tmp_path / "new.csv", "h,w", [(0.5, 1.0), (-1, -1)])
    before = new.read_bytes()
    out, held = _out_target(kind, tmp_path, new)
    capsys.readouterr()
    argv = ["predict", "--run", str(classifier / "run"), "--csv", str(new), "--out", str(out)]
    assert main(argv + ["--force"] * force) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and str(out) in err[0], err
    assert new.read_bytes() == before
    if held is not None:
        assert out.read_bytes() == held
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_predict_force_replaces_an_existing_file_atomically(classifier, tmp_path, capsys):
    """With ``--force`` an existing regular file is replaced by the predictions (written to a
    temporary file in the same folder, then renamed over it: no temporary file is left)."""
    new = _write(tmp_path / "new.csv", "h,w", [(0.5, 1.0), (-1, -1)])
    out = tmp_path / "preds.csv"
    out.write_text("old predictions\n")
    run = str(classifier / "run")
    assert main(["predict", "--run", run, "--csv", str(new), "--out", str(out), "--force"]) == 0
    columns, rows = _table(out.read_text())
    assert columns[0] == "prediction" and len(rows) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv", "preds.csv"]
