"""Your own data as CSV: numeric feature columns plus one label column (numbers or strings) or,
for a regression, one numeric target column.

A header row is detected automatically: the first row is a header when none of its feature
cells is a number (a header whose names are numbers is refused: it cannot be told from data).
Blank lines are skipped. The delimiter is ``,`` (or ``;`` / tab when the first row has no
comma). :func:`read_features` reads new rows for prediction, matching the training columns;
:func:`read_labels` their label column, for evaluation.
"""

from __future__ import annotations

import csv as _csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxprop.core.validate import is_int
from jaxprop.data.preprocessing import encode_targets


TASKS = ("classification", "regression")


class Table(NamedTuple):
    """A whole CSV file: ``x: (n, d)`` float32, ``y`` training targets (``(n, 1)`` for two classes,
    one-hot ``(n, k)`` otherwise; ``(n, 1)`` values for a regression), ``labels: (n,)`` int64 in
    ``0..k-1`` (a regression: the float64 values), and the names. ``num_classes`` is 0 for a
    regression; ``label_name``/``label_index`` say which column held the labels."""

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    num_classes: int
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    label_name: str | None = None
    label_index: int = -1


def read_csv(path, label_column: int | str = -1, task: str = "classification") -> Table:
    """Read ``path``; ``label_column`` is an index (negative counts from the end) or a header name.

    ``task="classification"``: labels are mapped to ``0..k-1`` in sorted order (numerically
    when all are numbers); ``class_names`` keeps the original values. A column of fractional
    numbers, or one with a different value on every row, is not a class label: one sentence
    says so (and suggests ``task="regression"``). ``task="regression"``: the label column
    holds the numeric target. Raises ``ValueError`` naming the line for a ragged row, a
    non-numeric or NaN/Inf feature or target, or an empty label; ``FileNotFoundError`` if missing.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    path = Path(path).expanduser()
    rows, header, label_idx = _rows_and_header(path, label_column)
    width = len(rows[0][1])
    if width < 2:
        raise ValueError(f"{path}:{rows[0][0]}: need at least one feature column and a label "
                         f"column; found {width} column(s) (is the delimiter a comma?)")
    feature_idx = [i for i in range(width) if i != label_idx]
    feature_names = tuple(header[i] for i in feature_idx) if header else tuple(
        f"x{j}" for j in range(len(feature_idx)))
    label_name = header[label_idx] if header else f"column {label_idx + 1}"

    raw_labels = [cells[label_idx].strip() for _, cells in rows]
    try:  # fast path; on any problem the loop below finds the first bad cell and its line
        x = np.array([[cells[i] for i in feature_idx] for _, cells in rows], np.float64)
        ok = bool(np.isfinite(x).all()) and all(raw_labels)
    except ValueError:
        ok = False
    if not ok:
        x = _parse_rows(rows, feature_idx, feature_names, label_idx, path)

    lines = [line for line, _ in rows]
    if task == "regression":
        values = _numeric_labels(raw_labels, lines, path, label_name)
        return Table(x.astype(np.float32), values.astype(np.float32)[:, None], values, 0,
                     feature_names, (), label_name, label_idx)
    labels, class_names = _encode_labels(raw_labels, lines, path, label_name)
    k = len(class_names)
    if k < 2:
        raise ValueError(f"{path}: every row has the label {class_names[0]!r}; a classifier needs "
                         "at least two classes")
    return Table(x.astype(np.float32), encode_targets(labels, k), labels, k, feature_names,
                 class_names, label_name, label_idx)


def read_features(path, feature_names: tuple[str, ...], label_index: int = -1) -> np.ndarray:
    """The feature columns of a CSV of new rows, ``(n, d)`` float64, in the order of
    ``feature_names`` (the training table's).

    With a header, columns are matched by name (others, such as a label column, are ignored);
    without one, the file has either the ``d`` features or the training file's ``d + 1``
    columns (the label column, at ``label_index``, is then dropped).
    """
    path = Path(path).expanduser()
    d = len(feature_names)
    rows, header, _ = _rows_and_header(path, -1, names=set(feature_names))
    width = len(rows[0][1])
    if header is not None:
        missing = [name for name in feature_names if name not in header]
        if missing:
            raise ValueError(f"{path}: no column named {', '.join(map(repr, missing))}; the "
                             f"model was trained on columns {', '.join(feature_names)}")
        feature_idx = [header.index(name) for name in feature_names]
    elif width == d:
        feature_idx = list(range(d))
    elif width == d + 1:
        label_idx = label_index % width
        feature_idx = [i for i in range(width) if i != label_idx]
    else:
        raise ValueError(f"{path}: {width} columns, but the model takes {d} features (give "
                         f"{d} columns, or {d + 1} with the label column as in training)")
    return _parse_rows(rows, feature_idx, tuple(feature_names), None, path)


def read_labels(path, label_column: int | str = -1) -> tuple[str, ...]:
    """The label column of a CSV file as text, one (stripped) cell per data row, the header
    detected as :func:`read_csv` detects it; ``ValueError`` naming the line of an empty label.
    For evaluating a model on labelled rows (any classes, any number of each)."""
    path = Path(path).expanduser()
    rows, _, label_idx = _rows_and_header(path, label_column)
    labels = tuple(cells[label_idx].strip() for _, cells in rows)
    for (line, _), label in zip(rows, labels):
        if not label:
            raise ValueError(f"{path}:{line}: empty label (column {label_idx + 1})")
    return labels


def _rows_and_header(path: Path, label_column, names=None):
    """``(rows, header, label_idx)``: the data rows ``[(line, cells)]`` (header removed), the
    header's cells or ``None``, and the label column's index."""
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no data (the file is empty)")
    width = len(rows[0][1])
    for line, cells in rows:
        if len(cells) != width:
            raise ValueError(f"{path}:{line}: expected {width} columns (as on line {rows[0][0]}), "
                             f"found {len(cells)}")
    first_line, first = rows[0]
    label_idx = _label_index(label_column, width, None, path)
    if names is None:
        is_header = not any(_is_number(c) for i, c in enumerate(first) if i != label_idx)
    else:  # new rows for a model: a header names a feature, or holds no number at all
        is_header = any(c.strip() in names for c in first) or not any(map(_is_number, first))
    if not is_header:
        if isinstance(label_column, str):
            raise ValueError(f"{path}: label_column {label_column!r} is a name but the file has "
                             "no header row")
        _refuse_numeric_header(path, rows, label_idx)
        return rows, None, label_idx
    header = [c.strip() for c in first]
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in seen:  # which of the two would a name mean?
            raise ValueError(f"{path}:{first_line}: the header names column {name!r} twice "
                             f"(columns {seen[name] + 1} and {i + 1}); give every column its "
                             "own name")
        seen[name] = i
    if len(rows) < 2:
        raise ValueError(f"{path}: no data rows after the header on line {first_line}")
    return rows[1:], header, _label_index(label_column, width, header, path)


def _refuse_numeric_header(path, rows, label_idx):
    """A first row of numbers whose label kind (number or text) differs from every other
    row's is a header with numbers for names: refuse it rather than train on it."""
    if len(rows) < 3:
        return
    (line, first), rest = rows[0], rows[1:]
    numeric = [_is_number(cells[label_idx]) for _, cells in rest]
    if all(numeric) != _is_number(first[label_idx]) and len(set(numeric)) == 1:
        raise ValueError(
            f"{path}:{line}: the first row looks like a header (its label "
            f"{first[label_idx].strip()!r} is {'a number' if not all(numeric) else 'text'} "
            f"unlike every other row's) but names its columns with numbers; give the columns "
            "names that are not numbers, or remove the row")


def _parse_rows(rows, feature_idx, feature_names, label_idx, path):
    """Cell-by-cell parse that names the line and column of the first bad value."""
    x = np.empty((len(rows), len(feature_idx)), np.float64)
    for r, (line, cells) in enumerate(rows):
        for j, i in enumerate(feature_idx):
            cell = cells[i].strip()
            try:
                value = float(cell)
            except ValueError:
                what = "empty" if not cell else f"{cell!r} is not a number"
                raise ValueError(f"{path}:{line}: column {feature_names[j]!r} (column {i + 1}): "
                                 f"{what}") from None
            if not np.isfinite(value):
                raise ValueError(f"{path}:{line}: column {feature_names[j]!r} (column {i + 1}) "
                                 f"is {cell!r}; NaN/Inf values are not allowed")
            x[r, j] = value
        if label_idx is not None and not cells[label_idx].strip():
            raise ValueError(f"{path}:{line}: empty label (column {label_idx + 1})")
    return x


def _read_rows(path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delimiter = ","
    if "," not in first:
        delimiter = "\t" if "\t" in first else (";" if ";" in first else ",")
    rows = []
    try:
        reader = _csv.reader(lines, delimiter=delimiter)
        for cells in reader:
            if cells and any(c.strip() for c in cells):
                rows.append((reader.line_num, cells))
    except _csv.Error as e:
        raise ValueError(f"{path}: malformed CSV ({e})") from None
    return rows


def _label_index(label_column, width, header, path):
    if isinstance(label_column, str):
        if header is None:
            return width - 1  # decided once the header is known
        if label_column not in header:
            raise ValueError(f"{path}: no column named {label_column!r}; columns are "
                             f"{', '.join(header)}")
        return header.index(label_column)
    if not is_int(label_column):
        raise ValueError(f"label_column must be a column index or name; got {label_column!r}")
    if not -width <= label_column < width:
        raise ValueError(f"{path}: label_column {label_column} is out of range for {width} columns")
    return int(label_column) % width


def _numeric_labels(raw, lines, path, label_name):
    """The label column as float64 numbers (a regression target), or a ``ValueError`` naming
    the first line whose label is not a finite number."""
    for r, s in enumerate(raw):
        if not _is_number(s):
            raise ValueError(f"{path}:{lines[r]}: the target {label_name!r} is {s!r}, not a "
                             "number (a regression needs numeric targets)")
    values = np.array([float(s) for s in raw])
    bad = ~np.isfinite(values)
    if bad.any():
        r = int(np.argmax(bad))
        raise ValueError(f"{path}:{lines[r]}: label {raw[r]!r} is NaN/Inf")
    return values


def _encode_labels(raw, lines, path, label_name):
    if all(_is_number(s) for s in raw):
        values = _numeric_labels(raw, lines, path, label_name)
        classes, labels = np.unique(values, return_inverse=True)
        fractional = not np.all(classes == np.round(classes))
        if fractional or (len(classes) == len(values) and len(values) > 3):
            what = "fractional numbers" if fractional else "a different number on every row"
            raise ValueError(
                f"{path}: the label column {label_name!r} holds {what} ({len(classes)} distinct "
                f"values in {len(values)} rows), so it is not a class label: for regression use "
                "--task regression (task='regression'), or pick the label with --label-column")
        names = tuple(str(int(v)) for v in classes)
    else:
        classes, labels = np.unique(np.array(raw, dtype=object).astype(str), return_inverse=True)
        if len(classes) == len(raw) and len(raw) > 3:
            raise ValueError(
                f"{path}: the label column {label_name!r} has a different value on every row "
                f"({len(raw)} rows), so it is not a class label; pick the label with "
                "--label-column (label_column=...)")
        names = tuple(str(c) for c in classes)
    return labels.astype(np.int64).reshape(-1), names


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
