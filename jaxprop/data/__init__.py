"""Datasets for training: generated (XOR, spirals, moons), bundled (digits), downloaded by you
(MNIST, Fashion-MNIST as IDX files), your own CSV files, and sequences of tokens (text, the
``reverse`` and ``sort`` digit tasks; :mod:`jaxprop.data.text`). Nothing is ever downloaded.

``load(name, ...)`` returns a :class:`Dataset` split into train and test, float32 (images as
``(n, H, W, C)``, tables as ``(n, d)``), with targets ``(n, 1)`` in {0, 1} for two classes and
one-hot ``(n, k)`` otherwise (or ``(n, 1)`` values for a CSV regression); a sequence dataset
has int32 ``(n, T)`` tokens and next tokens instead. The building blocks
it uses are exported too.
"""

from __future__ import annotations

from pathlib import Path

from jaxprop.core.registry import unknown
from jaxprop.data import preprocessing as _preprocessing
from jaxprop.data.csv import TASKS, Table, read_csv, read_features
from jaxprop.data.dataset import Dataset, validation_split
from jaxprop.data.idx import find_mnist_files, mnist, read_idx, write_idx
from jaxprop.data.preprocessing import (
    check_finite,
    check_seed,
    check_test_fraction,
    decode_targets,
    encode_targets,
    one_hot,
    standardization,
    standardize,
    train_test_split,
)
from jaxprop.data.sklearn import digits
from jaxprop.data.synthetic import DEFAULT_N_SAMPLES, DEFAULT_NOISE, moons, two_spirals, xor
from jaxprop.data.text import (
    DEFAULT_CONTEXT,
    DEFAULT_SEQUENCES,
    SEQUENCE,
    default_corpus,
    digit_task,
    read_text,
    text_dataset,
)

__all__ = [
    "DATASETS", "Dataset", "SEQUENCE_DATASETS", "Table", "check_finite", "decode_targets",
    "default_corpus", "digit_task", "digits", "encode_targets",
    "find_mnist_files", "load", "mnist", "moons", "one_hot", "read_csv", "read_features",
    "read_idx", "read_text", "standardize", "standardization", "text_dataset",
    "train_test_split", "two_spirals", "validation_split", "write_idx", "xor",
]

def _load_xor(key, **_):
    x, y = xor()
    return Dataset("xor", x, y, x.copy(), y.copy(), 2, ("x1", "x2"), ("0", "1"),
                   solved_accuracy=1.0)  # solved: all four patterns right


def _load_synthetic(key, *, seed, test_fraction, n_samples, noise, **_):
    make = {"spirals": two_spirals, "moons": moons}[key]
    n = DEFAULT_N_SAMPLES if n_samples is None else n_samples
    nz = DEFAULT_NOISE[key] if noise is None else noise
    x, y = make(n, nz, seed)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction, seed)
    return Dataset(key, x_train, y_train, x_test, y_test, 2, ("x1", "x2"), ("0", "1"))


def _load_digits(key, *, seed, test_fraction, **_):
    return digits(seed=seed, test_fraction=test_fraction)


def _load_idx(key, *, data_dir, **_):
    if data_dir is None:
        raise ValueError(
            f"dataset {key!r} needs data_dir: a folder with the four IDX files "
            "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte, each raw or .gz); jaxprop never downloads"
        )
    return mnist(data_dir, kind=key)


def _load_csv(key, *, path, label_column, seed, test_fraction, task, **_):
    if path is None:
        raise ValueError("dataset 'csv' needs path: the CSV file to read")
    table = read_csv(path, label_column=label_column, task=task)
    x_train, x_test, y_train, y_test = train_test_split(
        table.x, table.y, test_fraction, seed, stratify=task == "classification")
    return Dataset("csv", x_train, y_train, x_test, y_test, table.num_classes,
                   table.feature_names, table.class_names, task, label_index=table.label_index)


def _load_text(key, *, path, context, test_fraction, **_):
    context = DEFAULT_CONTEXT[key] if context is None else context
    if path is None:
        return text_dataset(None, context=context, test_fraction=test_fraction)
    return text_dataset(read_text(path), context=context, test_fraction=test_fraction,
                        source=f"--text {Path(path)}")


def _load_digit_task(key, *, seed, test_fraction, n_samples, context, **_):
    return digit_task(key, DEFAULT_SEQUENCES if n_samples is None else n_samples,
                      context=DEFAULT_CONTEXT[key] if context is None else context,
                      test_fraction=test_fraction, seed=seed)


# The dataset registry: name -> loader(name, **load's keyword arguments).
LOADERS = {
    "xor": _load_xor,
    "spirals": _load_synthetic,
    "moons": _load_synthetic,
    "digits": _load_digits,
    "mnist": _load_idx,
    "fashion-mnist": _load_idx,
    "csv": _load_csv,
    "text": _load_text,
    "reverse": _load_digit_task,
    "sort": _load_digit_task,
}
# The datasets of token sequences (int32 (n, T) inputs and next-token targets).
SEQUENCE_DATASETS = ("text", "reverse", "sort")
DATASETS = tuple(LOADERS)


def load(
    name: str,
    *,
    data_dir=None,
    path=None,
    label_column: int | str = -1,
    seed: int = 0,
    test_fraction: float = 0.2,
    standardize: bool = True,
    n_samples: int | None = None,
    noise: float | None = None,
    task: str = "classification",
    context: int | None = None,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`) as a train/test :class:`Dataset`.

    - ``xor``: the 4 patterns; test set = training set; never standardised.
    - ``spirals``, ``moons``: ``n_samples`` points (default 400) with Gaussian ``noise``
      (defaults 0.05 and 0.1), generated from ``seed``; stratified split.
    - ``digits``: scikit-learn's 8x8 digits as ``(n, 8, 8, 1)`` images, stratified split.
    - ``mnist``, ``fashion-mnist``: IDX files in ``data_dir`` as ``(n, 28, 28, 1)`` images;
      the official split (``test_fraction`` and ``seed`` do not apply).
    - ``csv``: the file at ``path`` with labels in ``label_column``; stratified split. With
      ``task="regression"`` the label column is a numeric target: one output, a plain split.
    - ``text``: the UTF-8 file at ``path`` (``None``: the default corpus, Python's help
      topics) as windows of ``context`` characters (default 64), split by position.
    - ``reverse``, ``sort``: ``n_samples`` (default 10,000) strings of ``context // 2``
      digits (default 16: 8 digits) and their answers; see :mod:`jaxprop.data.text`.
      Sequence datasets are never standardised.

    Raises ``ValueError`` for bad arguments or data (naming the file/column/row), or for an
    argument given to a dataset it does not apply to; ``FileNotFoundError`` for missing files.

    Args:
      name: the dataset (any case; ``_`` counts as ``-``).
      data_dir: the folder of the IDX files (``mnist``, ``fashion-mnist`` only).
      path: the CSV file (``csv``) or the text file (``text``).
      label_column: the CSV's label column: an index (negative counts from the end) or a header
        name.
      seed: makes generation and splitting deterministic.
      test_fraction: the share of the examples in the test set.
      standardize: rescale features with the training set's mean and std (test set uses the
        same; a table per column, images per channel), and a regression's targets likewise;
        ``Dataset.scaling`` keeps the statistics.
      n_samples: points to generate (``spirals``, ``moons``; ``None``: 400) or strings
        (``reverse``, ``sort``; ``None``: 10,000).
      noise: the Gaussian noise (``spirals``, ``moons`` only; ``None``: 0.05 and 0.1).
      task: ``"classification"`` or ``"regression"`` (``csv`` only).
      context: tokens per example (``text``, ``reverse``, ``sort`` only; ``None``: 64, 16, 16).

    Returns:
      the :class:`Dataset`: float32 features, targets ``(n, 1)`` in {0, 1} for two classes,
      one-hot ``(n, k)`` otherwise, ``(n, 1)`` values for a regression.
    """
    key = str(name).lower().replace("_", "-")
    if key not in LOADERS:
        raise unknown("dataset", name, LOADERS, known_as="known datasets")
    test_fraction = check_test_fraction(test_fraction)
    seed = check_seed(seed)
    _only_for(key, "n_samples", n_samples, ("spirals", "moons", "reverse", "sort"))
    _only_for(key, "noise", noise, ("spirals", "moons"))
    _only_for(key, "path", path, ("csv", "text"))
    _only_for(key, "context", context, SEQUENCE_DATASETS)
    _only_for(key, "data_dir", data_dir, ("mnist", "fashion-mnist"))
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    _only_for(key, "task='regression'", task if task == "regression" else None, ("csv",))

    ds = LOADERS[key](key, seed=seed, test_fraction=test_fraction, data_dir=data_dir,
                      path=path, label_column=label_column, n_samples=n_samples, noise=noise,
                      task=task, context=context)
    if key == "xor" or ds.task == SEQUENCE:
        return ds  # never standardised; token ids are finite

    where = f"dataset {key!r}" + (f" ({Path(path)})" if key == "csv" else "")
    for field in ("x_train", "y_train", "x_test", "y_test"):
        check_finite(getattr(ds, field), f"{where}: {field}", columns=(
            ds.feature_names if field.startswith("x") else None))
    return _standardized(ds) if standardize else ds


def _standardized(ds: Dataset) -> Dataset:
    """``ds`` with features rescaled by the training set's mean and std (a regression's
    targets too), the statistics kept in ``Dataset.scaling``."""
    mean, std = _preprocessing.standardization(ds.x_train)
    scaling = {"x_mean": mean, "x_std": std}
    rescale = _preprocessing.rescale
    ds = ds._replace(x_train=rescale(ds.x_train, mean, std), x_test=rescale(ds.x_test, mean, std))
    if ds.task == "regression":
        y_mean, y_std = (float(v[0]) for v in _preprocessing.standardization(ds.y_train))
        scaling.update(y_mean=y_mean, y_std=y_std)
        ds = ds._replace(y_train=rescale(ds.y_train, y_mean, y_std),
                         y_test=rescale(ds.y_test, y_mean, y_std))
    return ds._replace(scaling=scaling)


def _only_for(key, arg, value, names):
    if value is not None and key not in names:
        raise ValueError(f"{arg} applies only to dataset(s) {', '.join(names)}, not {key!r}")
