"""The :class:`Dataset` record every loader returns, and its validation split."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxprop.data.preprocessing import check_fraction, check_seed


class Dataset(NamedTuple):
    """A train/test split ready for training.

    ``x_*: (n, d)`` float32, or images ``(n, H, W, C)`` (NHWC); ``y_*: (n, 1)`` float32 in
    {0, 1} when ``num_classes == 2`` (one sigmoid/logit output), else ``(n, num_classes)``
    float32 one-hot. For a regression (``task == "regression"``, ``num_classes == 0``)
    ``y_*: (n, 1)`` float32 values. ``scaling``: what standardisation did, to undo it or
    repeat it on new data: ``{"x_mean", "x_std"}`` (float64, one entry per column, or per
    channel for images) and, for a regression, ``{"y_mean", "y_std"}`` (floats; the targets
    are standardised too); ``None`` when nothing was rescaled. ``solved_accuracy``: the
    training accuracy at which a network counts as having solved the problem (XOR: 1.0, all
    four patterns right), so a population reports how many did; ``None``: not counted.
    ``x_val``, ``y_val``: a validation split held out of the training set
    (:func:`validation_split`), or ``None``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    feature_names: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    task: str = "classification"
    scaling: dict | None = None
    label_index: int | None = None  # a CSV's label column (resolved from its name or index)
    solved_accuracy: float | None = None  # a member at this training accuracy "solved" it
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def num_features(self) -> int:
        """Values per example: ``d``, or ``H * W * C`` for images."""
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def example_shape(self) -> tuple[int, ...]:
        """One example's shape: ``(d,)`` or ``(H, W, C)`` (the ``in_shape`` of a model)."""
        return tuple(int(n) for n in self.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        """Width of the network's output layer: 1 for two classes, else ``num_classes``."""
        return int(self.y_train.shape[1])


def validation_split(ds: Dataset, fraction: float, seed: int | None = None) -> Dataset:
    """``ds`` with ``ceil(fraction x n)`` of its ``n`` training examples held out as its
    validation split (``x_val``, ``y_val``); the test set is untouched.

    ``fit`` evaluates a Dataset's validation split after each chunk (``val_loss``, early
    stopping) instead of its test set, which is left for the final figures. What was computed
    from the whole training set before the split (the standardisation of ``load``) stays.

    Args:
      ds: the :class:`Dataset` (without a validation split).
      fraction: the share of the training set held out, strictly between 0 and 1.
      seed: ``None``: the last rows are held out; an int: a random choice seeded by it (both
        parts keep the order of the rows).

    Returns:
      the :class:`Dataset` with the shorter training set and the validation split.
    """
    fraction = check_fraction("validation_fraction", fraction)
    if ds.x_val is not None:
        raise ValueError("the dataset already has a validation split")
    n = len(ds.x_train)
    n_val = int(np.ceil(fraction * n))
    if n_val >= n:
        raise ValueError(f"validation_fraction={fraction} of {n} training examples leaves none "
                         "to train on")
    if seed is None:
        held = np.arange(n - n_val, n)
    else:
        held = np.sort(np.random.default_rng(check_seed(seed)).permutation(n)[:n_val])
    keep = np.setdiff1d(np.arange(n), held)
    return ds._replace(x_train=ds.x_train[keep], y_train=ds.y_train[keep],
                       x_val=ds.x_train[held], y_val=ds.y_train[held])
