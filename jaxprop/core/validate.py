"""The one home of the argument policies every entry point shares: what counts as an integer
(``True`` does not), a number, and the one-line ``ValueError`` for a value out of range.

A leaf module (NumPy only), so any module may import it.
"""

from __future__ import annotations

import math

import numpy as np


def is_int(value) -> bool:
    """Whether ``value`` is a Python or NumPy integer, and not a ``bool``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """Whether ``value`` is a real Python or NumPy number (int or float), and not a ``bool``."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int``; a ``ValueError`` naming ``name`` when it is not an integer or
    lies outside ``[minimum, maximum]``."""
    if not is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    _check_range(name, value, minimum, maximum)
    return int(value)


def check_number(name: str, value, *, minimum: float | None = None,
                 maximum: float | None = None, finite: bool = True) -> float:
    """``value`` as a ``float``; a ``ValueError`` naming ``name`` when it is not a number, not
    finite (with ``finite``) or outside ``[minimum, maximum]``."""
    if not is_number(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    _check_range(name, value, minimum, maximum)
    return float(value)


def _check_range(name, value, minimum, maximum) -> None:
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
