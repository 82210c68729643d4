"""The :class:`Dataset` record every loader returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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
