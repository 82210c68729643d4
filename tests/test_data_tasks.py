"""CSV regression, columns that are not class labels, numeric headers, new rows for
prediction, empty IDX files and seeds: what the data layer says about each."""

import numpy as np
import pytest

from jaxprop import data


def _regression_csv(path, n=60, header=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = 3 * x[:, 0] - x[:, 1] + 100 + 0.01 * rng.normal(size=n)
    rows = [",".join(f"{v:.6f}" for v in row) for row in np.c_[x, y]]
    path.write_text(("a,b,price\n" if header else "") + "\n".join(rows) + "\n")
    return x, y


def test_csv_regression_standardises_features_and_targets_and_keeps_the_statistics(tmp_path):
    x, y = _regression_csv(tmp_path / "r.csv")
    ds = data.load("csv", path=tmp_path / "r.csv", label_column="price", task="regression")
    assert ds.task == "regression" and ds.num_classes == 0 and ds.class_names == ()
    assert ds.y_train.shape == (48, 1) and ds.y_test.shape == (12, 1)
    s = ds.scaling
    np.testing.assert_allclose(ds.y_train.mean(), 0, atol=1e-6)
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-6)
    # undoing the scaling gives the file's values back
    back = np.r_[ds.y_train, ds.y_test][:, 0] * s["y_std"] + s["y_mean"]
    np.testing.assert_allclose(np.sort(back), np.sort(y), rtol=1e-5)
    xs = np.r_[ds.x_train, ds.x_test] * s["x_std"] + s["x_mean"]
    np.testing.assert_allclose(np.sort(xs[:, 0]), np.sort(x[:, 0]), atol=1e-5)
    table = data.read_csv(tmp_path / "r.csv", label_column="price", task="regression")
    assert table.label_name == "price" and table.label_index == 2
    with pytest.raises(ValueError, match="applies only to dataset"):
        data.load("moons", task="regression")
    with pytest.raises(ValueError, match="task must be one of classification, regression"):
        data.load("csv", path=tmp_path / "r.csv", task="ranking")


def test_a_float_label_column_gets_one_sentence_suggesting_regression(tmp_path):
    _regression_csv(tmp_path / "r.csv", n=497)
    with pytest.raises(ValueError) as info:
        data.load("csv", path=tmp_path / "r.csv")
    message = str(info.value)
    assert "'price' holds fractional numbers (497 distinct values in 497 rows)" in message
    assert "--task regression" in message and message.count("\n") == 0 and len(message) < 300


def test_a_column_with_a_new_value_on_every_row_is_not_a_label(tmp_path):
    (tmp_path / "ids.csv").write_text("x,name\n" + "".join(f"{i / 2},id{i}\n" for i in range(8)))
    with pytest.raises(ValueError, match="'name' has a different value on every row"):
        data.read_csv(tmp_path / "ids.csv")
    (tmp_path / "n.csv").write_text("x,y\n" + "".join(f"{i / 2},{i}\n" for i in range(8)))
    with pytest.raises(ValueError, match="'y' holds a different number on every row"):
        data.read_csv(tmp_path / "n.csv")


def test_a_regression_target_must_be_numeric(tmp_path):
    (tmp_path / "t.csv").write_text("a,y\n1,2\n3,four\n5,6\n")
    with pytest.raises(ValueError, match=r"t.csv:3: the target 'y' is 'four', not a number"):
        data.read_csv(tmp_path / "t.csv", task="regression")


@pytest.mark.parametrize("header, labels", [("1,2,label", ("1", "0")), ("1,2,3", ("cat", "dog"))],
                         ids=["text-label-over-numbers", "number-label-over-text"])
def test_a_header_of_numbers_is_refused(tmp_path, header, labels):
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{labels[i % 2]}" for i, (a, b) in enumerate(rng.normal(size=(9, 2)))]
    (tmp_path / "h.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"h.csv:1: the first row looks like a header .* "
                                         r"names its columns with numbers"):
        data.read_csv(tmp_path / "h.csv")


def test_read_features_matches_the_training_columns(tmp_path):
    x, _ = _regression_csv(tmp_path / "r.csv", n=5)
    names = ("a", "b")
    np.testing.assert_allclose(data.read_features(tmp_path / "r.csv", names), x, atol=1e-6)
    (tmp_path / "swapped.csv").write_text("b,extra,a\n1,9,2\n3,9,4\n")
    np.testing.assert_array_equal(data.read_features(tmp_path / "swapped.csv", names),
                                  [[2, 1], [4, 3]])
    (tmp_path / "bare.csv").write_text("1,2\n3,4\n")
    np.testing.assert_array_equal(data.read_features(tmp_path / "bare.csv", names),
                                  [[1, 2], [3, 4]])
    (tmp_path / "labelled.csv").write_text("cat,1,2\ndog,3,4\n")  # label first, as trained
    np.testing.assert_array_equal(
        data.read_features(tmp_path / "labelled.csv", names, label_index=0), [[1, 2], [3, 4]])
    (tmp_path / "other.csv").write_text("a,c\n1,2\n")
    with pytest.raises(ValueError, match="no column named 'b'"):
        data.read_features(tmp_path / "other.csv", names)
    (tmp_path / "wide.csv").write_text("1,2,3,4\n")
    with pytest.raises(ValueError, match="4 columns, but the model takes 2 features"):
        data.read_features(tmp_path / "wide.csv", names)
    (tmp_path / "bad.csv").write_text("a,b\n1,x\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: column 'b' \(column 2\): 'x' is not"):
        data.read_features(tmp_path / "bad.csv", names)


def test_an_idx_file_with_zero_images_is_named(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data.write_idx(folder / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    data.write_idx(folder / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
    data.write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 255, (3, 28, 28), np.uint8))
    data.write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(3, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: holds zero images"):
        data.load("mnist", data_dir=folder)


@pytest.mark.parametrize("seed", [2**32, 2**64, -1])
def test_seeds_beyond_32_bits_are_refused(seed):
    with pytest.raises(ValueError, match="seed must be"):
        data.load("moons", seed=seed)
