"""Your own data as CSV: numeric feature columns plus one label column (numbers or strings).

A header row is detected automatically: the first row is a header when none of its feature
cells is a number. Blank lines are skipped. The delimiter is ``,`` (or ``;`` / tab when the first
row has no comma).
"""

from __future__ import annotations

import csv as _csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxprop.data.preprocessing import encode_targets


class Table(NamedTuple):
    """A whole CSV file: ``x: (n, d)`` float32, ``y`` training targets (``(n, 1)`` for two classes,
    one-hot ``(n, k)`` otherwise), ``labels: (n,)`` int64 in ``0..k-1``, and the names."""

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    num_classes: int
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]


def read_csv(path, label_column: int | str = -1) -> Table:
    """Read ``path``; ``label_column`` is an index (negative counts from the end) or a header name.

    Labels are mapped to ``0..k-1`` in sorted order (numerically when all are numbers);
    ``class_names`` keeps the original values. Raises ``ValueError`` naming the line for a ragged
    row, a non-numeric or NaN/Inf feature, or an empty label; ``FileNotFoundError`` if missing.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no data (the file is empty)")
    width = len(rows[0][1])
    if width < 2:
        raise ValueError(f"{path}:{rows[0][0]}: need at least one feature column and a label "
                         f"column; found {width} column(s) (is the delimiter a comma?)")
    for line, cells in rows:
        if len(cells) != width:
            raise ValueError(f"{path}:{line}: expected {width} columns (as on line {rows[0][0]}), "
                             f"found {len(cells)}")

    header = None
    first_line, first = rows[0]
    label_idx = _label_index(label_column, width, None, path)
    if not any(_is_number(c) for i, c in enumerate(first) if i != label_idx):
        header = [c.strip() for c in first]
        rows = rows[1:]
        label_idx = _label_index(label_column, width, header, path)
    elif isinstance(label_column, str):
        raise ValueError(f"{path}: label_column {label_column!r} is a name but the file has no "
                         "header row")
    if not rows:
        raise ValueError(f"{path}: no data rows after the header on line {first_line}")
    feature_idx = [i for i in range(width) if i != label_idx]
    feature_names = tuple(header[i] for i in feature_idx) if header else tuple(
        f"x{j}" for j in range(len(feature_idx)))

    raw_labels = [cells[label_idx].strip() for _, cells in rows]
    try:  # fast path; on any problem the loop below finds the first bad cell and its line
        x = np.array([[cells[i] for i in feature_idx] for _, cells in rows], np.float64)
        ok = bool(np.isfinite(x).all()) and all(raw_labels)
    except ValueError:
        ok = False
    if not ok:
        x = _parse_rows(rows, feature_idx, feature_names, label_idx, path)

    labels, class_names = _encode_labels(raw_labels, [line for line, _ in rows], path)
    k = len(class_names)
    if k < 2:
        raise ValueError(f"{path}: every row has the label {class_names[0]!r}; a classifier needs "
                         "at least two classes")
    return Table(x.astype(np.float32), encode_targets(labels, k), labels, k, feature_names,
                 class_names)


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
        if not cells[label_idx].strip():
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
    if isinstance(label_column, bool) or not isinstance(label_column, (int, np.integer)):
        raise ValueError(f"label_column must be a column index or name; got {label_column!r}")
    if not -width <= label_column < width:
        raise ValueError(f"{path}: label_column {label_column} is out of range for {width} columns")
    return int(label_column) % width


def _encode_labels(raw, lines, path):
    if all(_is_number(s) for s in raw):
        values = np.array([float(s) for s in raw])
        bad = ~np.isfinite(values)
        if bad.any():
            r = int(np.argmax(bad))
            raise ValueError(f"{path}:{lines[r]}: label {raw[r]!r} is NaN/Inf")
        classes, labels = np.unique(values, return_inverse=True)
        names = tuple(str(int(v)) if v == int(v) else repr(float(v)) for v in classes)
    else:
        classes, labels = np.unique(np.array(raw, dtype=object).astype(str), return_inverse=True)
        names = tuple(str(c) for c in classes)
    return labels.astype(np.int64).reshape(-1), names


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
