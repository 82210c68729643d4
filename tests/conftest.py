"""Shared test setup. The suite runs in JAX's default float32 mode, as users do; a test gets
float64 (``jax_enable_x64``) only when it asks: the ``x64`` marker, or a float64 ``dtype``
parameter (a unittest-style case enters ``layer_checks.x64_if_float64`` itself). A test's name
asks for nothing."""

import jax
import numpy as np
import pytest


def _wants_float64(request) -> bool:
    if request.node.get_closest_marker("x64") is not None:
        return True
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    return any(isinstance(value, (type, np.dtype)) and np.dtype(value) == np.float64
               for value in params.values())


@pytest.fixture(autouse=True)
def _float64_when_asked(request):
    if _wants_float64(request):
        with jax.enable_x64(True):
            yield
    else:
        yield
