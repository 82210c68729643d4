"""The shared argument policies (jaxprop/core/validate.py)."""

import numpy as np
import pytest

from jaxprop.core.validate import check_int, check_number, is_int, is_number


@pytest.mark.parametrize("v", [0, 3, -2, np.int32(4), np.int64(-1)])
def test_integers(v):
    assert is_int(v) and is_number(v)


@pytest.mark.parametrize("v", [True, False, np.bool_(True), 1.0, "3", None, np.float32(2)])
def test_not_integers(v):
    assert not is_int(v)


@pytest.mark.parametrize("v", [True, np.bool_(False), "1", None, [1]])
def test_not_numbers(v):
    assert not is_number(v)


def test_check_int_range_and_message():
    assert check_int("epochs", np.int64(3), minimum=1) == 3
    with pytest.raises(ValueError, match=r"^epochs must be an integer, got True$"):
        check_int("epochs", True)
    with pytest.raises(ValueError, match=r"^epochs must be >= 1, got 0$"):
        check_int("epochs", 0, minimum=1)
    with pytest.raises(ValueError, match=r"^n must be <= 5, got 6$"):
        check_int("n", 6, maximum=5)


def test_check_number():
    assert check_number("lr", 1, minimum=0) == 1.0
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be finite"):
            check_number("lr", bad)
    assert check_number("x", float("inf"), finite=False) == float("inf")
    with pytest.raises(ValueError, match="lr must be a number, got True"):
        check_number("lr", True)
