"""``jaxprop predict`` on a run of every kind ``jaxprop train`` makes: XOR, the synthetic
datasets, digits (an MLP and a CNN of ``--model``), MNIST (tiny IDX files written here), a CSV
classification and a CSV regression.

Each run trains for an epoch or two (only the shapes and units are under test). Raw rows go in
(the training data's units), as a CSV file (images flattened in NHWC order) and as a ``.npy``
array; what comes out is compared with the run's model applied in Python to the rows the run
itself standardised: the standardisation is applied once, the same way.
"""

import csv
import io
import json

import jax
import numpy as np
import pytest

from jaxprop import data
from jaxprop.cli import main
from jaxprop.core.losses import get_loss
from jaxprop.predict import load_predictor, predict_rows
from jaxprop.runs import load_dataset

RNG = np.random.default_rng(0)
TABLE = RNG.normal(size=(60, 3)) * [1.0, 10.0, 0.1] + [0.0, 50.0, -3.0]  # far from standard
KINDS = {  # kind -> the train arguments (the data files, when any, are written by the fixture)
    "xor": ["--dataset", "xor", "--epochs", "3"],
    "spirals": ["--dataset", "spirals", "--epochs", "2", "--hidden", "4"],
    "moons": ["--dataset", "moons", "--epochs", "2", "--hidden", "4"],
    "digits": ["--dataset", "digits", "--epochs", "1", "--hidden", "8"],
    "digits-cnn": ["--dataset", "digits", "--epochs", "1", "--model",
                   "conv(2,3)-relu-maxpool(2)-flatten-dense(10)"],
    "mnist": ["--dataset", "mnist", "--data-dir", "{tmp}/mnist", "--epochs", "1", "--hidden",
              "4"],
    "csv": ["--dataset", "csv", "--csv", "{tmp}/animals.csv", "--label-column", "kind",
            "--epochs", "2", "--hidden", "4"],
    "csv-regression": ["--dataset", "csv", "--csv", "{tmp}/price.csv", "--label-column",
                       "price", "--task", "regression", "--epochs", "2", "--hidden", "4"],
}


def _write_data(tmp):
    kind = np.where(TABLE[:, 0] > 0.3, "cat", np.where(TABLE[:, 1] > 50, "dog", "eel"))
    price = TABLE @ [3.0, 0.2, -5.0] + 100
    for name, label, values in (("animals", "kind", kind), ("price", "price", price)):
        rows = [[f"{v:.5f}" for v in x] + [str(y)] for x, y in zip(TABLE, values, strict=True)]
        (tmp / f"{name}.csv").write_text(
            "\n".join(",".join(r) for r in [["w", "h", "d", label], *rows]) + "\n")
    mnist = tmp / "mnist"
    mnist.mkdir()
    for split, n in (("train", 40), ("t10k", 10)):
        data.write_idx(mnist / f"{split}-images-idx3-ubyte",
                       RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        data.write_idx(mnist / f"{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(kind)``: the folder of a run of ``kind``, trained on first use."""
    tmp = tmp_path_factory.mktemp("kinds")
    _write_data(tmp)
    folders = {}

    def run(kind):
        if kind not in folders:
            argv = [a.format(tmp=tmp) for a in KINDS[kind]]
            out = tmp / kind
            assert main(["train", *argv, "--no-plots", "--out", str(out)]) == 0
            folders[kind] = out
        return folders[kind]

    return run


def _datasets(run):
    """``(raw, standardised)``: the run's dataset in the units of its data files, and as the
    run trained on it (:func:`jaxprop.runs.load_dataset`, the run's own path)."""
    cfg = json.loads((run / "metrics.json").read_text())["config"]
    kwargs = {"seed": cfg["seed"]}
    if cfg["data_dir"] is not None:
        kwargs["data_dir"] = cfg["data_dir"]
    if cfg["dataset"] == "csv":
        kwargs.update(path=cfg["csv"], task=cfg["task"] or "classification",
                      label_column=cfg["label_column"])
    return data.load(cfg["dataset"], standardize=False, **kwargs), load_dataset(cfg)


def _expected(predictor, ds):
    """The model applied in Python to ``ds.x_test`` (already standardised), as the table's
    numbers: values in the target's units, or one probability (or score) per class."""
    y = np.asarray(predictor.model.apply(predictor.params, ds.x_test, predictor.state),
                   np.float64)
    if ds.task == "regression":
        return y * ds.scaling["y_std"] + ds.scaling["y_mean"]
    if get_loss(predictor.info["loss"]).from_logits:
        y = np.asarray(jax.nn.sigmoid(y) if y.shape[1] == 1 else jax.nn.softmax(y))
    return np.concatenate([1 - y, y], axis=1) if y.shape[1] == 1 else y


def _table(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


@pytest.mark.parametrize("kind", list(KINDS))
def test_predict_matches_the_model_on_the_runs_own_standardised_rows(runs, kind, capsys,
                                                                     tmp_path):
    """Raw rows in, through the library, a CSV file of flattened rows and a ``.npy`` array of
    examples: one prediction per row, of the right form, equal to the model applied to the
    rows the run standardised itself."""
    run = runs(kind)
    raw, trained = _datasets(run)
    predictor = load_predictor(run)
    assert predictor.model.in_shape == raw.example_shape == trained.example_shape
    if kind != "xor":  # the units differ: the run standardised its inputs
        assert not np.allclose(raw.x_test, trained.x_test, atol=1e-2)
    columns, rows = predict_rows(predictor, raw.x_test)
    assert len(rows) == len(raw.x_test)
    want = _expected(predictor, trained)
    got = np.array([r[1:] for r in rows]) if raw.task != "regression" else np.array(rows)
    if raw.task == "regression":
        assert columns == ["prediction"]
    else:
        classes = list(raw.class_names)
        assert columns == ["prediction", *[f"prob_{c}" for c in classes]]
        np.testing.assert_allclose(got.sum(axis=1), 1, rtol=1e-5)
        assert [r[0] for r in rows] == [classes[k] for k in np.argmax(want, axis=1)]
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)

    flat = raw.x_test.reshape(len(raw.x_test), -1)  # NHWC, row-major: H*W*C columns
    (tmp_path / "rows.csv").write_text("".join(",".join(f"{v:.9g}" for v in r) + "\n"
                                               for r in flat))
    np.save(tmp_path / "rows.npy", raw.x_test)
    capsys.readouterr()
    for flag, path in (("--csv", "rows.csv"), ("--npy", "rows.npy")):
        assert main(["predict", "--run", str(run), flag, str(tmp_path / path)]) == 0
        printed_columns, printed = _table(capsys.readouterr().out)
        assert printed_columns == columns and len(printed) == len(rows)
        labels = raw.task != "regression"  # a first column of class names
        if labels:
            assert [r[0] for r in printed] == [r[0] for r in rows]
        numbers = np.array([[float(v) for v in r[labels:]] for r in printed])
        np.testing.assert_allclose(numbers, got, rtol=1e-5, atol=1e-6)


def _touch(path):
    """What the pickle below runs when it is loaded: it leaves a file."""
    open(path, "w").close()


class _Trap:
    """An object that, unpickled, calls :func:`_touch`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return _touch, (self.path,)


def _write_bad(folder, name):
    """A bad input file ``name`` in ``folder`` (see the cases below); its path."""
    path = folder / name
    good = np.full((3, 8, 8, 1), 0.5)
    if name == "narrow.csv":
        path.write_text("".join(",".join(["0.5"] * 63) + "\n" for _ in range(3)))
    elif name == "narrow.npy":
        np.save(path, good.reshape(3, -1)[:, :63])
    elif name == "objects.npy":
        np.save(path, np.array([_Trap(str(folder / "touched"))] * 3, dtype=object),
                allow_pickle=True)
    elif name == "text.npy":
        np.save(path, np.full((3, 64), "0.5"))
    elif name == "complex.npy":
        np.save(path, good.astype(complex))
    elif name == "nan.npy":
        bad = good.copy()
        bad[1, 2, 3, 0] = np.nan
        np.save(path, bad)
    elif name == "truncated.npy":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:-100])
    elif name == "header.npy":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:9])
    elif name == "rows.npz":
        np.savez(path, x=good)
        path.rename(folder / "archive.npy")
        path = folder / "archive.npy"
    elif name == "empty.npy":
        path.write_bytes(b"")
    elif name == "pickle.npy":
        path.write_bytes(b"\x80\x04K\x01.")
    elif name == "digits.npy":
        np.save(path, good)
    return path


@pytest.mark.parametrize("flag, name, needle", [
    ("--csv", "narrow.csv", "the model takes (8, 8, 1) inputs: 64 columns per row in NHWC "
                            "(row-major) order;"),
    ("--npy", "narrow.npy", "the model takes (8, 8, 1) inputs: 64 columns per row in NHWC "
                            "(row-major) order; {path} has shape (3, 63), not (n, 64) nor "
                            "(n, 8, 8, 1)"),
    ("--npy", "objects.npy", "{path}: holds Python objects, which are never loaded"),
    ("--npy", "text.npy", "{path}: holds text (dtype <U3); the model takes numbers"),
    ("--npy", "complex.npy", "{path}: holds complex numbers"),
    ("--npy", "nan.npy", "{path}: 1 NaN/Inf value(s); first is nan at row 1, column "
                         "'pixel_2_3'"),
    ("--npy", "truncated.npy", "{path}: corrupt or truncated .npy file"),
    ("--npy", "header.npy", "{path}: corrupt .npy header"),
    ("--npy", "rows.npz", "archive.npy: an .npz archive, not a .npy array"),
    ("--npy", "empty.npy", "{path}: the file is empty"),
    ("--npy", "pickle.npy", "{path}: not a .npy file (no NumPy header)"),
    ("--npy", "missing.npy", ".npy file not found: {path}"),
    ("--csv", "digits.npy", "--csv {path} is a NumPy file, not a CSV file; give a .npy array "
                            "with --npy"),
])
def test_bad_rows_for_an_image_model_are_one_line(runs, tmp_path, capsys, flag, name, needle):
    """A wrong number of columns names the shape and the count; a .npy file that is not an
    array of finite numbers is refused (never unpickled), one line, exit 2."""
    run = runs("digits")
    path = _write_bad(tmp_path, name)
    capsys.readouterr()
    assert main(["predict", "--run", str(run), flag, str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle.format(path=path) in err[0], err
    if name == "narrow.csv":
        assert "63 columns" in err[0]
    assert not (tmp_path / "touched").exists()


def test_a_table_model_names_its_feature_count(runs, tmp_path):
    predictor = load_predictor(runs("spirals"))
    with pytest.raises(ValueError, match=r"^the model takes 2 features per row; x has shape "
                                         r"\(4, 3\), not \(n, 2\)$"):
        predict_rows(predictor, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"^x: holds text"):
        predict_rows(predictor, [["1", "2"]])


def test_a_population_run_says_it_keeps_no_model(tmp_path, capsys):
    out = tmp_path / "pop"
    assert main(["train", "--dataset", "xor", "--epochs", "2", "--population", "2",
                 "--no-plots", "--out", str(out)]) == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 2)))
    capsys.readouterr()
    assert main(["predict", "--run", str(out), "--npy", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a population run" in err[0], err
