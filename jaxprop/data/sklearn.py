"""Datasets bundled with scikit-learn (no download): the 8x8 handwritten digits."""

from __future__ import annotations

import numpy as np

from jaxprop.data.dataset import Dataset
from jaxprop.data.preprocessing import encode_targets, train_test_split


def digits(*, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 1797 8x8 digit images: ``x: (n, 8, 8, 1)`` (NHWC) pixel intensities scaled
    to [0, 1], 10 classes one-hot; train/test split stratified by class, deterministic in
    ``seed``. ``feature_names`` name the 64 pixels in row-major order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images[..., None] / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, l_train, l_test = train_test_split(x, labels, test_fraction, seed)
    names = getattr(bunch, "feature_names", None)
    return Dataset(
        name="digits",
        x_train=x_train,
        y_train=encode_targets(l_train, 10),
        x_test=x_test,
        y_test=encode_targets(l_test, 10),
        num_classes=10,
        feature_names=tuple(names) if names is not None else None,
        class_names=tuple(str(c) for c in bunch.target_names),
    )
