"""Datasets: determinism, shapes, targets, splitting, standardisation, IDX, MNIST, CSV, errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from jaxprop import data

MULTICLASS_CSV = "f1,f2,species\n" + "".join(
    f"{i % 7}.5,{(i * 3) % 5},{('cat', 'dog', 'bird')[i % 3]}\n" for i in range(30)
)


# ---------------------------------------------------------------- fixtures: tiny files on disk


def _write_mnist(folder, n_train=20, n_test=10, side=28, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    for i, (name, a) in enumerate(arrays.items()):
        suffix = ".gz" if gz and i % 2 == 0 else ""  # a mix of raw and gzip files
        data.write_idx(folder / f"{name}{suffix}", a)
    return arrays


@pytest.fixture
def mnist_dir(tmp_path):
    arrays = _write_mnist(tmp_path / "mnist")
    return tmp_path / "mnist", arrays


@pytest.fixture
def csv_path(tmp_path):
    p = tmp_path / "animals.csv"
    p.write_text(MULTICLASS_CSV)
    return p


def _load(name, mnist_dir=None, csv_path=None, **kw):
    if name in ("mnist", "fashion-mnist"):
        kw["data_dir"] = mnist_dir[0]
    if name == "csv":
        kw["path"] = csv_path
    return data.load(name, **kw)


# ---------------------------------------------------------------- every dataset: shapes, targets


# (the sequence datasets, int32 tokens, have their own tests: tests/test_text_data.py)
@pytest.mark.parametrize("name", [n for n in data.DATASETS if n not in data.SEQUENCE_DATASETS])
@pytest.mark.parametrize("standardize", [True, False])
def test_every_dataset_shapes_dtypes_and_targets(name, standardize, mnist_dir, csv_path):
    ds = _load(name, mnist_dir, csv_path, standardize=standardize)
    assert isinstance(ds, data.Dataset) and ds.name == name
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.float32
        # tables (n, d); images (n, H, W, C) (issue 10 changed digits and MNIST from (n, 64/784))
        image = name in ("digits", "mnist", "fashion-mnist")
        assert x.ndim == (4 if image else 2) and y.ndim == 2 and x.shape[0] == y.shape[0] > 0
        assert x.shape[1:] == ds.x_train.shape[1:] == ds.example_shape
        assert np.prod(x.shape[1:]) == ds.num_features
        assert np.isfinite(x).all()
        assert set(np.unique(y)) <= {0.0, 1.0}
        if ds.num_classes == 2:
            assert y.shape[1] == 1
        else:
            assert y.shape[1] == ds.num_classes
            np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    assert ds.num_outputs == (1 if ds.num_classes == 2 else ds.num_classes)
    if ds.class_names is not None:
        assert len(ds.class_names) == ds.num_classes
    if ds.feature_names is not None:
        assert len(ds.feature_names) == ds.num_features


def test_expected_sizes(mnist_dir, csv_path):
    assert data.load("spirals", n_samples=101).x_train.shape[0] + \
        data.load("spirals", n_samples=101).x_test.shape[0] == 101
    d = data.load("digits")
    assert d.x_train.shape[1:] == (8, 8, 1) and d.num_features == 64 and d.num_classes == 10
    assert d.x_train.shape[0] + d.x_test.shape[0] == 1797
    m = _load("mnist", mnist_dir)
    assert m.x_train.shape == (20, 28, 28, 1) and m.x_test.shape == (10, 28, 28, 1)  # official
    c = _load("csv", csv_path=csv_path, test_fraction=0.2)
    assert (c.x_train.shape[0], c.x_test.shape[0]) == (24, 6)
    assert c.class_names == ("bird", "cat", "dog") and c.feature_names == ("f1", "f2")


def test_xor_is_the_four_patterns_with_test_equal_to_train():
    x, y = data.xor()
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [[0], [1], [1], [0]])
    ds = data.load("xor")  # standardize=True by default, but never for xor
    np.testing.assert_array_equal(ds.x_train, x)
    np.testing.assert_array_equal(ds.x_test, x)
    np.testing.assert_array_equal(ds.y_train, y)
    np.testing.assert_array_equal(ds.y_test, y)
    assert ds.num_classes == 2


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("gen", [data.two_spirals, data.moons])
def test_generators_are_deterministic_in_the_seed(gen):
    a, b, c = gen(200, 0.1, 3), gen(200, 0.1, 3), gen(200, 0.1, 4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.float32 and a[0].shape == (200, 2) and a[1].shape == (200, 1)


@pytest.mark.parametrize("name", ["spirals", "moons", "digits", "csv"])
def test_load_is_deterministic_in_the_seed(name, csv_path):
    a = _load(name, csv_path=csv_path, seed=7)
    b = _load(name, csv_path=csv_path, seed=7)
    c = _load(name, csv_path=csv_path, seed=8)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)


# ---------------------------------------------------------------- balance, stratification


@pytest.mark.parametrize("gen", [data.two_spirals, data.moons])
@pytest.mark.parametrize("n", [2, 9, 400])
def test_spirals_and_moons_are_balanced(gen, n):
    _, y = gen(n, 0.05, 0)
    assert int(y.sum()) in (n // 2, n - n // 2)
    assert set(np.unique(y)) == {0.0, 1.0}


def test_spirals_without_noise_lie_on_two_point_symmetric_spirals():
    x, y = data.two_spirals(300, 0.0, 1)
    r = np.linalg.norm(x, axis=1)
    assert r.min() >= 0.1 - 1e-6 and r.max() <= 1.0 + 1e-6
    # spiral 1 is spiral 0 rotated by pi: recover u from r, and the angle must match 3*pi*u
    u = (r - 0.1) / 0.9
    theta = 3 * np.pi * u + np.where(y[:, 0] == 1, np.pi, 0.0)
    np.testing.assert_allclose(x, np.stack([r * np.cos(theta), r * np.sin(theta)], 1), atol=1e-5)


@pytest.mark.parametrize("name", ["spirals", "moons"])
def test_synthetic_split_is_stratified(name):
    ds = data.load(name, n_samples=200, test_fraction=0.25)
    assert int(ds.y_test.sum()) == 25 and int(ds.y_train.sum()) == 75


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("test_fraction", [0.2, 0.5])
def test_digits_split_is_stratified(seed, test_fraction):
    ds = data.digits(seed=seed, test_fraction=test_fraction)
    train = ds.y_train.sum(axis=0)
    test = ds.y_test.sum(axis=0)
    total = train + test
    assert total.sum() == 1797
    # every class is represented in the test set in proportion, to within one example
    assert np.all(np.abs(test - total * test_fraction) <= 1), (test, total * test_fraction)
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1  # unstandardised pixels in [0, 1]


def test_train_test_split_accepts_labels_or_targets_and_is_stratified():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    x = np.arange(60, dtype=np.float32)[:, None]
    x_tr, x_te, l_tr, l_te = data.train_test_split(x, labels, 0.5, seed=0)
    np.testing.assert_array_equal(np.bincount(l_te), [5, 10, 15])
    np.testing.assert_array_equal(np.sort(np.concatenate([x_tr, x_te])[:, 0]), x[:, 0])
    np.testing.assert_array_equal(labels[x_te[:, 0].astype(int)], l_te)  # rows stay paired
    _, _, y_tr, y_te = data.train_test_split(x, data.one_hot(labels, 3), 0.5, seed=0)
    np.testing.assert_array_equal(y_te.sum(0), [5, 10, 15])


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.1, 1.5, "a", None, float("nan")])
def test_bad_test_fraction_is_rejected(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        data.train_test_split(np.zeros((10, 1)), np.arange(10) % 2, bad)
    with pytest.raises(ValueError, match="test_fraction"):
        data.load("moons", test_fraction=bad)


# ---------------------------------------------------------------- targets


def test_one_hot_and_encode_decode_targets():
    oh = data.one_hot(np.array([2, 0, 1, 2]), 3)
    np.testing.assert_array_equal(oh, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert oh.dtype == np.float32
    np.testing.assert_array_equal(data.encode_targets([0, 1, 1], 2), [[0], [1], [1]])
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    np.testing.assert_array_equal(data.decode_targets(data.encode_targets(labels, 10)), labels)
    np.testing.assert_array_equal(data.decode_targets(np.array([[0.2], [0.9]])), [0, 1])
    with pytest.raises(ValueError, match="0..2"):
        data.one_hot([0, 3], 3)
    with pytest.raises(ValueError, match="integers"):
        data.one_hot([0.5, 1], 3)
    with pytest.raises(ValueError, match="binary"):
        data.encode_targets([0, 2], 2)


# ---------------------------------------------------------------- standardisation


def test_standardize_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    x_train = rng.normal(3.0, 2.0, (100, 3)).astype(np.float32)
    x_train[:, 2] = 5.0  # zero-variance column
    x_test = rng.normal(-10.0, 7.0, (40, 3)).astype(np.float32)
    s_train, s_test = data.standardize(x_train, x_test)
    assert s_train.dtype == s_test.dtype == np.float32
    np.testing.assert_allclose(s_train[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s_train[:, :2].std(0), 1, atol=1e-5)
    np.testing.assert_array_equal(s_train[:, 2], 0.0)  # constant column: centred, finite
    mean, std = x_train[:, :2].mean(0), x_train[:, :2].std(0)
    np.testing.assert_allclose(s_test[:, :2], (x_test[:, :2] - mean) / std, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s_test[:, 2], x_test[:, 2] - 5.0, rtol=1e-5)
    # the test set has no influence on either result
    s_train2, _ = data.standardize(x_train, x_test * 100 + 1)
    np.testing.assert_array_equal(s_train, s_train2)


def test_load_standardizes_test_with_train_statistics():
    raw = data.load("moons", standardize=False, seed=2)
    std = data.load("moons", standardize=True, seed=2)
    mean, sd = raw.x_train.astype(np.float64).mean(0), raw.x_train.astype(np.float64).std(0)
    np.testing.assert_allclose(std.x_test, (raw.x_test - mean) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std.x_train.mean(0), 0, atol=1e-5)
    assert not np.allclose(std.x_test.mean(0), 0, atol=1e-3)


def test_images_are_standardised_per_channel_with_train_statistics():
    rng = np.random.default_rng(0)
    x_train = rng.normal([1.0, -3.0], [2.0, 0.5], (50, 4, 4, 2))
    x_test = rng.normal(size=(10, 4, 4, 2))
    s_train, s_test = data.standardize(x_train, x_test)
    assert s_train.shape == x_train.shape and s_test.shape == x_test.shape
    mean, std = x_train.mean((0, 1, 2)), x_train.std((0, 1, 2))
    np.testing.assert_allclose(s_test, (x_test - mean) / std, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s_train.mean((0, 1, 2)), 0, atol=1e-5)
    with pytest.raises(ValueError, match="one shape"):
        data.standardize(x_train, x_test[:, :3])


def test_nan_in_an_image_names_its_position():
    x = np.zeros((3, 2, 2, 1), np.float32)
    x[1, 0, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"row 1, position \(0, 1, 0\)"):
        data.check_finite(x, "images")


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),  # images
        np.array([7, 0, 9, 3], np.uint8),  # labels
        np.array([-3, 0, 127], np.int8),
        np.array([[-300, 2], [3, 40000 // 2]], np.int16),
        np.array([[1, -2], [3, 2**30]], np.int32),
        np.array([1.5, -2.25, 1e30], np.float32),
        pytest.param(np.array([[np.pi]], np.float64), marks=pytest.mark.x64),
    ],
    ids=["images", "labels", "int8", "int16", "int32", "float32", "float64"],
)
def test_idx_round_trip(tmp_path, array, suffix):
    path = data.write_idx(tmp_path / f"a-idx{suffix}", array)
    back = data.read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_idx_writes_the_standard_big_endian_layout(tmp_path):
    path = data.write_idx(tmp_path / "x", np.array([[1, 2, 3]], np.int32))
    raw = path.read_bytes()
    assert raw[:4] == b"\x00\x00\x0c\x02" and raw[4:12] == struct.pack(">II", 1, 3)
    assert raw[12:] == struct.pack(">3i", 1, 2, 3)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-5], "truncated"),  # payload cut short
        (lambda b: b[:10], "truncated header"),  # dimensions cut short
        (lambda b: b[:3], "too short"),
        (lambda b: b + b"\x00\x01", "unexpected bytes"),
        (lambda b: b"\x12\x34" + b[2:], "not an IDX file"),  # wrong magic
        (lambda b: b"PK\x03\x04" + b[4:], "not an IDX file"),  # a zip file, say
        (lambda b: b[:2] + b"\x42" + b[3:], "unknown IDX data type"),
        (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
        (lambda b: gzip.compress(b)[:-12], "gzip"),  # truncated .gz
    ],
    ids=["payload", "header", "tiny", "extra", "magic", "zip", "dtype", "ndim0", "gz"],
)
def test_corrupt_idx_is_a_value_error_naming_the_file(tmp_path, mutate, message):
    good = data.write_idx(tmp_path / "good", np.ones((3, 4, 4), np.uint8)).read_bytes()
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(mutate(good))
    with pytest.raises(ValueError, match=message) as info:
        data.read_idx(bad)
    assert str(bad) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- MNIST loader


@pytest.mark.parametrize("kind", ["mnist", "fashion-mnist"])
def test_mnist_loader_reads_tiny_generated_files(mnist_dir, kind):
    folder, arrays = mnist_dir
    ds = data.mnist(folder, kind=kind)
    assert ds.name == kind and ds.num_classes == 10 and len(ds.class_names) == 10
    np.testing.assert_allclose(
        ds.x_train, arrays["train-images-idx3-ubyte"][..., None] / 255.0, rtol=1e-6
    )
    np.testing.assert_allclose(
        ds.x_test, arrays["t10k-images-idx3-ubyte"][..., None] / 255.0, rtol=1e-6
    )
    labels = {split: data.decode_targets(getattr(ds, f"y_{split}")) for split in ("train", "test")}
    np.testing.assert_array_equal(labels["train"], arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(labels["test"], arrays["t10k-labels-idx1-ubyte"])
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    assert ds.class_names[0] == ("0" if kind == "mnist" else "T-shirt/top")


def test_mnist_files_are_found_in_a_kind_subfolder(tmp_path):
    _write_mnist(tmp_path / "fashion-mnist", gz=False)
    ds = data.load("fashion-mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (20, 28, 28, 1)


def test_mnist_missing_directory_or_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found") as info:
        data.mnist(tmp_path / "absent")
    assert "absent" in str(info.value)
    folder, _ = tmp_path / "m", _write_mnist(tmp_path / "m")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
        data.mnist(folder)
    assert str(folder) in str(info.value)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.mnist(tmp_path)  # an empty-handed folder names every file


def test_mnist_inconsistent_files(tmp_path):
    folder = tmp_path / "m"
    _write_mnist(folder, gz=False)
    data.write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match="10 images but .* 9 labels"):
        data.mnist(folder)
    data.write_idx(folder / "t10k-labels-idx1-ubyte", np.full(10, 11, np.uint8))
    with pytest.raises(ValueError, match="not a digit"):
        data.mnist(folder)
    data.write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros((10, 1), np.uint8))
    with pytest.raises(ValueError, match="labels of shape"):
        data.mnist(folder)


# ---------------------------------------------------------------- CSV


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_with_header_and_numeric_binary_labels(tmp_path):
    t = data.read_csv(_csv(tmp_path, "a,b,c,label\n1,2,3,0\n4,5,6,1\n7,8,9,1\n"))
    assert t.feature_names == ("a", "b", "c") and t.class_names == ("0", "1")
    np.testing.assert_array_equal(t.x, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(t.y, [[0], [1], [1]])
    assert t.x.dtype == t.y.dtype == np.float32 and t.num_classes == 2


def test_csv_without_header(tmp_path):
    t = data.read_csv(_csv(tmp_path, "1.5,-2,3\n4,5e-1,1\n\n7,8,2\n"))  # blank line skipped
    assert t.feature_names == ("x0", "x1")
    np.testing.assert_array_equal(t.x, [[1.5, -2], [4, 0.5], [7, 8]])
    assert t.class_names == ("1", "2", "3")
    np.testing.assert_array_equal(t.y, np.eye(3)[[2, 0, 1]])


def test_csv_string_labels_and_label_column_in_the_middle(tmp_path):
    text = "x,kind,y\n0.5,setosa,1\n1.5,virginica,2\n2.5,setosa,3\n3.5,versicolor,4\n"
    for label_column in (1, -2, "kind"):
        t = data.read_csv(_csv(tmp_path, text), label_column=label_column)
        assert t.feature_names == ("x", "y")
        np.testing.assert_array_equal(t.x, [[0.5, 1], [1.5, 2], [2.5, 3], [3.5, 4]])
        assert t.class_names == ("setosa", "versicolor", "virginica")
        np.testing.assert_array_equal(t.labels, [0, 2, 0, 1])
        np.testing.assert_array_equal(t.y, data.one_hot([0, 2, 0, 1], 3))
    t = data.read_csv(_csv(tmp_path, "1,no,2\n3,yes,4\n5,no,6\n"), label_column=1)
    assert t.class_names == ("no", "yes") and t.y.shape == (3, 1)
    np.testing.assert_array_equal(t.y[:, 0], [0, 1, 0])


@pytest.mark.parametrize("sep", [";", "\t"])
def test_csv_semicolon_or_tab_delimited(tmp_path, sep):
    rows = [["a", "b", "y"], ["1", "2", "u"], ["3", "4", "v"]]
    text = "\ufeff" + "\n".join(sep.join(r) for r in rows)
    t = data.read_csv(_csv(tmp_path, text))  # a byte-order mark is ignored too
    assert t.feature_names == ("a", "b") and t.class_names == ("u", "v")
    np.testing.assert_array_equal(t.x, [[1, 2], [3, 4]])


def test_csv_numeric_labels_are_sorted_by_value(tmp_path):
    t = data.read_csv(_csv(tmp_path, "1,10\n2,9\n3,10.0\n4,-1\n"))
    assert t.class_names == ("-1", "9", "10")
    np.testing.assert_array_equal(t.labels, [2, 1, 2, 0])


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("a,b,y\n1,2,0\n3,4\n5,6,1\n", 3, "expected 3 columns"),  # ragged (short)
        ("1,2,0\n3,4,1\n5,6,7,1\n", 3, "expected 3 columns"),  # ragged (long)
        ("a,b,y\n1,2,0\n\n3,abc,1\n", 4, "'abc' is not a number"),
        ("1,2,0\n3,,1\n", 2, "empty"),
        ("a,b,y\n1,2,0\n3,nan,1\n", 3, "NaN/Inf"),
        ("1,2,0\n3,4,1\n-inf,1,0\n", 3, "NaN/Inf"),
        ("1,2,0\n3,4,\n", 2, "empty label"),
        ("1,2,0\n3,4,nan\n", 2, "NaN/Inf"),
    ],
    ids=["short", "long", "text", "empty", "nan", "inf", "nolabel", "nanlabel"],
)
def test_bad_csv_is_a_value_error_naming_the_line(tmp_path, text, line, message):
    p = _csv(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        data.read_csv(p)
    assert f"{p}:{line}:" in str(info.value)


def test_nan_in_csv_names_the_column(tmp_path):
    p = _csv(tmp_path, "a,b,y\n1,2,0\n3,NaN,1\n")
    with pytest.raises(ValueError, match="column 'b'"):
        data.load("csv", path=p)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("a,b,y\n", "no data rows"),
        ("1,2,0\n3,4,0\n", "at least two classes"),
        ("1\n2\n", "at least one feature column"),
    ],
)
def test_unusable_csv(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        data.read_csv(_csv(tmp_path, text))


def test_csv_bad_label_column(tmp_path):
    p = _csv(tmp_path, "a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="out of range"):
        data.read_csv(p, label_column=3)
    with pytest.raises(ValueError, match="no column named 'z'"):
        data.read_csv(p, label_column="z")
    with pytest.raises(ValueError, match="no header"):
        data.read_csv(_csv(tmp_path, "1,2,0\n3,4,1\n", "n.csv"), label_column="y")


def test_csv_missing_or_binary_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        data.read_csv(tmp_path / "nope.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ValueError, match="UTF-8"):
        data.read_csv(p)


# ---------------------------------------------------------------- load() argument validation


def test_load_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*xor, spirals, moons, digits"):
        data.load("cifar")
    with pytest.raises(ValueError, match="needs path"):
        data.load("csv")
    with pytest.raises(ValueError, match="needs data_dir"):
        data.load("mnist")
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load("fashion-mnist", data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="n_samples applies only"):
        data.load("digits", n_samples=10)
    with pytest.raises(ValueError, match="path applies only"):
        data.load("moons", path="x.csv")
    with pytest.raises(ValueError, match="seed"):
        data.load("moons", seed=-1)
    with pytest.raises(ValueError, match="n_samples"):
        data.load("spirals", n_samples=1)
    with pytest.raises(ValueError, match="noise"):
        data.load("spirals", noise=-0.1)
    with pytest.raises(ValueError, match="cannot split"):
        data.load("spirals", n_samples=4, test_fraction=0.1)  # too few to stratify


def test_check_finite_names_where_row_and_column():
    x = np.zeros((5, 3), np.float32)
    x[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"digits: x_train.*row 3, column 'c'"):
        data.check_finite(x, "digits: x_train", columns=("a", "b", "c"))
    data.check_finite(np.zeros((2, 2)), "fine")
