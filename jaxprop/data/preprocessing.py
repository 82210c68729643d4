"""Preprocessing shared by every dataset: targets, splitting, standardisation, finiteness checks.

Conventions: features ``x: (n, d) float32`` (a table) or ``(n, H, W, C)`` (images); integer
class ``labels: (n,)`` in ``0..k-1``; training targets ``y: (n, 1)`` in ``{0, 1}`` for two
classes (one sigmoid/logit output) and
``y: (n, k)`` one-hot for ``k > 2`` classes, both float32.
"""

from __future__ import annotations

import numpy as np

from jaxprop.core.validate import check_int


def one_hot(labels, k: int) -> np.ndarray:
    """``labels: (n,)`` integers in ``0..k-1`` -> ``(n, k)`` float32 one-hot rows."""
    labels = _as_labels(labels)
    k = check_int("k", k, minimum=1)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}; found {labels.min()}..{labels.max()}")
    out = np.zeros((labels.shape[0], k), np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def encode_targets(labels, num_classes: int) -> np.ndarray:
    """Training targets for ``labels: (n,)``: ``(n, 1)`` in {0, 1} when ``num_classes == 2``,
    else ``(n, num_classes)`` one-hot. float32."""
    num_classes = check_int("num_classes", num_classes, minimum=2)
    if num_classes == 2:
        labels = _as_labels(labels)
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise ValueError(f"binary labels must be 0 or 1; found {labels.min()}..{labels.max()}")
        return labels.astype(np.float32)[:, None]
    return one_hot(labels, num_classes)


def decode_targets(y) -> np.ndarray:
    """Inverse of :func:`encode_targets` (also for predictions): ``(n, 1)`` -> ``y > 0.5``
    (probabilities; threshold logits at 0 yourself), ``(n, k)`` -> ``argmax``.
    Returns ``(n,)`` int64.
    """
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"targets must be 2-D (n, 1) or (n, k); got shape {y.shape}")
    if y.shape[1] == 1:
        return (y[:, 0] > 0.5).astype(np.int64)
    return np.argmax(y, axis=1).astype(np.int64)


def train_test_split(x, y, test_fraction: float = 0.2, seed: int = 0, stratify: bool = True):
    """Shuffle and split ``x`` and ``y`` into ``(x_train, x_test, y_train, y_test)``.

    scikit-learn's order. ``x: (n, ...)``; ``y``: labels ``(n,)`` or targets ``(n, 1)``/``(n, k)``.
    Raises ``ValueError`` when the split is impossible (fewer than two examples, a class too
    small to stratify, ...).

    Args:
      x: the features.
      y: the labels or targets, one row per example of ``x``.
      test_fraction: the share of the examples in the test part, strictly between 0 and 1.
      seed: the shuffle's seed (an int in ``0..MAX_SEED``); deterministic in ``seed``.
      stratify: every class keeps its proportion in both parts (to within one example); the
        classes are ``y`` itself for labels, :func:`decode_targets` of targets.

    Returns:
      ``(x_train, x_test, y_train, y_test)``.
    """
    from sklearn.model_selection import train_test_split as sk_split

    test_fraction = check_test_fraction(test_fraction)
    seed = check_seed(seed)
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"cannot split {n} example(s) into a training and a test set")
    strata = None
    if stratify:
        strata = y if y.ndim == 1 else decode_targets(y)
    try:
        return tuple(sk_split(x, y, test_size=test_fraction, random_state=seed, stratify=strata))
    except ValueError as e:
        raise ValueError(
            f"cannot split {n} examples with test_fraction={test_fraction}"
            f"{' (stratified by class)' if stratify else ''}: {e}"
        ) from None


def standardize(x_train, x_test):
    """Shift and scale every feature (the last axis) to zero mean, unit variance using the
    *training* statistics only; the same transform is applied to ``x_test``. A table ``(n, d)``
    is standardised per column; images ``(n, H, W, C)`` per channel, over every image and
    position. Constant features are only centred. Returns ``(x_train, x_test)`` as float32
    (:func:`standardization` gives the statistics)."""
    x_train = np.asarray(x_train, np.float64)
    x_test = np.asarray(x_test, np.float64)
    if x_train.ndim < 2 or x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            "standardize needs (n, d) or (n, H, W, C) arrays whose examples have one shape; "
            f"got {x_train.shape} and {x_test.shape}"
        )
    mean, std = standardization(x_train)
    return rescale(x_train, mean, std), rescale(x_test, mean, std)


def rescale(x, mean, std) -> np.ndarray:
    """``(x - mean) / std`` as float32: the transform :func:`standardize` applies."""
    return ((np.asarray(x, np.float64) - mean) / std).astype(np.float32)


def standardization(x_train) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` per feature (last axis) of ``x_train: (n, d)`` or ``(n, H, W, C)``,
    float64, that :func:`standardize` applies as ``(x - mean) / std`` (``std`` is 1 for a
    constant feature)."""
    x_train = np.asarray(x_train, np.float64)
    if x_train.shape[0] == 0:
        raise ValueError("standardize needs at least one training example")
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes)
    std = x_train.std(axis=axes)
    std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # zero-variance safe
    return mean, std


def check_finite(a, where: str, *, columns=None, row_offset: int = 0, row_word: str = "row"):
    """Raise ``ValueError`` naming ``where``, the first bad row and column if ``a`` has NaN/Inf.

    ``a: (n,)``, ``(n, d)`` (rows and columns) or ``(n, ...)`` (rows and positions); arrays that
    are not floating point are not checked.

    Args:
      a: the array to check.
      where: what ``a`` is, at the start of the message.
      columns: optional column names (for ``(n, d)``), else columns are reported by index.
      row_offset: rows are reported as ``row_offset + index``.
      row_word: the word for a row in the message (``"row"``).

    Returns:
      ``None`` when ``a`` is finite (or not floating point).
    """
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        return
    bad = ~np.isfinite(a)
    if not bad.any():
        return
    first = np.argwhere(bad)[0]
    row = int(first[0]) + row_offset
    col = int(first[1]) if a.ndim > 1 else 0
    col_name = f"'{columns[col]}'" if columns is not None else str(col)
    at = f"column {col_name}" if a.ndim <= 2 else f"position {tuple(int(i) for i in first[1:])}"
    raise ValueError(
        f"{where}: {int(bad.sum())} NaN/Inf value(s); first is {a[tuple(first)]} "
        f"at {row_word} {row}, {at}"
    )


def check_test_fraction(test_fraction) -> float:
    return check_fraction("test_fraction", test_fraction)


def check_fraction(name: str, fraction) -> float:
    """``fraction`` as a float strictly between 0 and 1; a ``ValueError`` naming ``name``."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1); got {fraction!r}") from None
    if not 0.0 < f < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1; got {fraction!r}")
    return f


# scikit-learn's random_state and NumPy's legacy seeds take 32 bits; JAX keys take 64.
MAX_SEED = 2**32 - 1


def check_seed(seed) -> int:
    """``seed`` as an int in ``0..MAX_SEED`` (what every consumer of a seed accepts)."""
    seed = check_int("seed", seed, minimum=0)
    if seed > MAX_SEED:
        raise ValueError(f"seed must be at most {MAX_SEED} (2**32 - 1); got {seed}")
    return seed


def _as_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (n,); got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(labels == np.round(labels)):
            raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
    return labels.astype(np.int64)
