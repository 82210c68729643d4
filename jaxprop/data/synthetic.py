"""Small two-class problems generated from a seed: XOR, two interleaved spirals, two moons.

Each returns ``(x, y)``: ``x: (n, 2)`` float32 points and ``y: (n, 1)`` float32 targets in {0, 1},
shuffled, with the two classes as equal as ``n`` allows (sizes ``n // 2`` and ``n - n // 2``).
"""

from __future__ import annotations

import numpy as np

from jaxprop.core.validate import check_int
from jaxprop.data.preprocessing import check_seed

DEFAULT_N_SAMPLES = 400
DEFAULT_NOISE = {"spirals": 0.05, "moons": 0.1}


def xor():
    """The four XOR patterns, in the classic order: ``x: (4, 2)``, ``y: (4, 1)`` = x1 XOR x2."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    return x, y


def two_spirals(n: int = DEFAULT_N_SAMPLES, noise: float = DEFAULT_NOISE["spirals"], seed: int = 0):
    """Two interleaved spirals of ``n`` points in total, 1.5 turns each, radius up to 1.

    Spiral 0 is ``r (cos th, sin th)``, ``th = 3 pi u``, ``r = 0.1 + 0.9 u`` for ``u ~ U(0, 1)``;
    spiral 1 is the same curve rotated by pi. Gaussian noise of std ``noise`` is added to both
    coordinates. Deterministic in ``seed`` (numpy ``Generator``).
    """
    n, noise, seed = _check_args(n, noise, seed)
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(n)
    u = rng.uniform(0.0, 1.0, n)
    theta = 3.0 * np.pi * u
    r = 0.1 + 0.9 * u
    sign = np.where(labels == 0, 1.0, -1.0)  # rotation by pi = point reflection
    x = sign[:, None] * np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    x = x + noise * rng.standard_normal(x.shape)
    order = rng.permutation(n)
    return x[order].astype(np.float32), labels[order, None].astype(np.float32)


def moons(n: int = DEFAULT_N_SAMPLES, noise: float = DEFAULT_NOISE["moons"], seed: int = 0):
    """Two interleaving half circles (scikit-learn's ``make_moons``, ``random_state=seed``)."""
    from sklearn.datasets import make_moons

    n, noise, seed = _check_args(n, noise, seed)
    x, labels = make_moons(n_samples=n, noise=noise, shuffle=True, random_state=seed)
    return x.astype(np.float32), labels[:, None].astype(np.float32)


def _balanced_labels(n):
    return (np.arange(n) >= n // 2).astype(np.int64)


def _check_args(n, noise, seed):
    n = check_int("n_samples", n, minimum=2)
    try:
        noise = float(noise)
    except (TypeError, ValueError):
        raise ValueError(f"noise must be a number >= 0; got {noise!r}") from None
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0; got {noise!r}")
    return n, noise, check_seed(seed)
